"""Node pools, instance lifecycle and the autoscaler (spec §13): request conservation while the
fleet changes, no instance serving before it is ready, cost as the integral of provisioned GPUs
times price, scaling behaviour, warm-up, drains, and config errors."""

import copy
import heapq

import numpy as np
import pytest
from conftest import MODEL
from conservation import check_conservation

from blis.config.options import build_config
from blis.errors import ConfigError
from blis.fleet.lifecycle import ACTIVE, WARMING_UP
from blis.fleet.node_pools import NODE_TERMINATED
from blis.simulation import run_simulation

BUNDLE = {
    "node_pools": [{"name": "h100", "gpu_type": "H100", "gpus_per_node": 2, "gpu_memory_gib": 80,
                    "initial_nodes": 1, "min_nodes": 1, "max_nodes": 4,
                    "provisioning_delay": {"mean": 5, "stddev": 1}, "cost_per_hour": 8.0}],
    "instance_lifecycle": {"loading_delay": {"mean": 3, "stddev": 0.5},
                           "warm_start_initial_instances": True},
    "autoscaler": {"interval_us": 1_000_000, "scale_down_stabilization_window_us": 5_000_000,
                   "analyzer": {"avg_input_tokens": 256}},
}


def bundle(**changes):
    b = copy.deepcopy(BUNDLE)
    for path, value in changes.items():
        node = b
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[keys[-1]] = value
    return b


def bursty_options(seed: int = 1, **extra) -> dict:
    """A burst that needs several instances, then a trickle that lets the fleet shrink."""
    spec = {"version": "2", "seed": seed, "aggregate_rate": 1.0, "num_requests": 900,
            "clients": [{"id": "c", "rate_fraction": 1.0, "arrival": {"process": "poisson"},
                         "input_distribution": {"type": "constant", "params": {"value": 600}},
                         "output_distribution": {"type": "constant", "params": {"value": 300}}}]}
    rng = np.random.default_rng(seed)
    return {"model": MODEL, "num_instances": 1, "workload_spec": spec, "rate": 1,
            "policy_config": bundle(), "routing_policy": "least-loaded",
            "total_kv_blocks": int(rng.choice([800, 2000])), "max_num_seqs": 64, **extra}


def run_bursty(seed=1, **extra):
    opts = bursty_options(seed, **extra)
    cfg = build_config(opts)
    from blis.workload import generate_requests
    reqs = generate_requests(cfg.workload, cfg.max_requests, cfg.horizon, cfg.timeout_override_us)
    # burst: the first 600 arrive at 120 req/s, the rest at 1 req/s
    t = 0
    for i, r in enumerate(reqs):
        t += 8_333 if i < 600 else 1_000_000
        r.arrival_time = t
        if r.deadline:
            r.deadline = t + 300_000_000
    return run_simulation(cfg, requests=reqs)


@pytest.fixture
def injections(monkeypatch):
    """Records, for every request handed to an instance, the instance's lifecycle state then."""
    import blis.fleet.lifecycle

    seen, holder = [], {}
    orig_inject = blis.engine.instance.Instance.inject
    orig_fleet = blis.fleet.lifecycle.Fleet.__init__

    def fleet_init(self, *a, **k):
        holder["fleet"] = self
        orig_fleet(self, *a, **k)

    def inject(self, req, t):
        fleet = holder["fleet"]
        seen.append((self.index, t, fleet.state[self.index], fleet.ready_at[self.index]))
        return orig_inject(self, req, t)

    monkeypatch.setattr(blis.fleet.lifecycle.Fleet, "__init__", fleet_init)
    monkeypatch.setattr(blis.engine.instance.Instance, "inject", inject)
    return seen


def test_autoscaler_scales_up_and_down_and_conserves_requests(injections):
    res = run_bursty()
    fleet = res.sim.fleet
    check_conservation(res)
    assert res.cluster["completed_requests"] == 900
    assert fleet.autoscaler.scale_ups > 0 and fleet.autoscaler.scale_downs > 0
    assert res.fleet["peak_instances"] > 1 and res.fleet["peak_nodes"] > 1
    # no instance serves before it is ready (and none after it stopped being routable)
    assert len(injections) == 900
    for idx, t, state, ready in injections:
        assert state in (ACTIVE, WARMING_UP)
        assert 0 <= ready <= t
    for inst in res.sim.instances:
        if inst.stats.sched_delay:
            first_sched = min(r.schedule_time for r in res.sim.routed.values()
                              if r.assigned_instance == inst.id)
            assert first_sched >= fleet.ready_at[inst.index]
    # every GPU allocation was returned or is held by a live instance
    for node in fleet.nodes.nodes:
        assert node.free + sum(node.allocated.values()) == node.pool.gpus_per_node
        for idx in node.allocated:
            assert fleet.ended_at[idx] < 0


def test_cost_is_the_integral_of_provisioned_gpus_times_price(monkeypatch):
    """Sample the provisioned GPUs before every event the loop pops, integrate the step function
    independently of the node ledger, and compare with the reported GPU-hours and dollars."""
    samples = []
    holder = {}
    real_pop = heapq.heappop

    def pop(heap):
        sim = holder.get("sim")
        item = real_pop(heap)
        if sim is not None and sim.fleet is not None:
            live = [n for n in sim.fleet.nodes.nodes if n.state != NODE_TERMINATED]
            samples.append((item[0], sum(n.pool.gpus_per_node for n in live),
                            sum(n.pool.cost_per_hour for n in live)))
        return item

    import blis.cluster.simulator
    orig_init = blis.cluster.simulator.ClusterSimulator.__init__

    def init(self, *a, **k):
        holder["sim"] = self
        orig_init(self, *a, **k)

    monkeypatch.setattr(blis.cluster.simulator.heapq, "heappop", pop)
    monkeypatch.setattr(blis.cluster.simulator.ClusterSimulator, "__init__", init)
    res = run_bursty(seed=3)
    t_end = int(round(res.duration_s * 1e6))
    live = [n for n in res.sim.fleet.nodes.nodes if n.state != NODE_TERMINATED]
    samples.append((t_end, sum(n.pool.gpus_per_node for n in live),
                    sum(n.pool.cost_per_hour for n in live)))
    # a sample taken when event i is popped holds the state left by event i-1, i.e. the state
    # over [t_(i-1), t_i)
    gpu_us = dollar_us = 0.0
    prev_t = 0
    for t, g, c in samples:
        lo, hi = min(prev_t, t_end), min(t, t_end)
        gpu_us += (hi - lo) * g
        dollar_us += (hi - lo) * c
        prev_t = t
    assert res.fleet["gpu_hours"] == pytest.approx(gpu_us / 3600e6, rel=1e-9)
    assert res.fleet["cost_usd"] == pytest.approx(dollar_us / 3600e6, rel=1e-9)
    assert res.cluster["cost_usd"] == res.fleet["cost_usd"]
    assert res.fleet["gpu_hours"] > 2 * res.duration_s / 3600  # more than the initial node


def test_fixed_pool_cost_closed_form():
    b = {"node_pools": [{"name": "a", "gpu_type": "H100", "gpus_per_node": 4,
                         "gpu_memory_gib": 80, "initial_nodes": 2, "max_nodes": 2,
                         "cost_per_hour": 10.0}]}
    res = run_simulation(build_config({"model": MODEL, "num_instances": 3, "rate": 20,
                                       "num_requests": 100, "policy_config": b}))
    hours = res.duration_s / 3600
    assert res.cluster["cost_usd"] == pytest.approx(2 * 10.0 * hours)
    assert res.cluster["gpu_hours"] == pytest.approx(2 * 4 * hours)
    assert res.cluster["peak_instances"] == 3
    assert res.to_dict()["deployment"]["cost_usd"] == res.cluster["cost_usd"]
    check_conservation(res)


def test_instances_wait_for_provisioned_nodes_and_loading():
    b = {"node_pools": [{"name": "a", "gpu_type": "H100", "gpus_per_node": 1,
                         "gpu_memory_gib": 80, "initial_nodes": 0, "max_nodes": 2,
                         "provisioning_delay": {"mean": 2, "stddev": 0}, "cost_per_hour": 3.0}],
         "instance_lifecycle": {"loading_delay": {"mean": 1, "stddev": 0}}}
    res = run_simulation(build_config({"model": MODEL, "num_instances": 2, "rate": 50,
                                       "num_requests": 100, "policy_config": b}))
    fleet = res.sim.fleet
    assert fleet.ready_at == [3_000_000, 3_000_000]
    # requests arriving before anything is ready are routing rejections
    assert res.sim.routing_rejections == sum(1 for r in res.sim.requests
                                             if r.arrival_time < 3_000_000)
    assert all(r.schedule_time >= 3_000_000 for r in res.sim.routed.values())
    check_conservation(res)


def test_placement_failures_are_counted_at_max_nodes():
    b = {"node_pools": [{"name": "a", "gpu_type": "H100", "gpus_per_node": 1,
                         "gpu_memory_gib": 80, "initial_nodes": 1, "max_nodes": 1}]}
    res = run_simulation(build_config({"model": MODEL, "num_instances": 3, "rate": 20,
                                       "num_requests": 30, "policy_config": b}))
    assert res.fleet["placement_failures"] == 2
    assert len(res.sim.instances) == 1
    check_conservation(res)


def test_stabilization_window_holds_back_scale_up():
    res = run_bursty(policy_config=bundle(autoscaler__scale_up_stabilization_window_us=10**12))
    assert res.sim.fleet.autoscaler.scale_ups == 0
    assert res.fleet["peak_instances"] == 1
    check_conservation(res)


def test_immediate_drain_drops_work_and_counts_it():
    b = bundle(instance_lifecycle__drain_policy="IMMEDIATE",
               autoscaler__scale_down_stabilization_window_us=0)
    res = run_bursty(seed=2, policy_config=b)
    check_conservation(res)
    fleet = res.sim.fleet
    assert fleet.autoscaler.scale_downs > 0
    assert res.cluster["dropped_unservable"] == res.fleet["drained_dropped"]
    assert all(fleet.ended_at[i] >= 0 for i, s in enumerate(fleet.state) if s == "Terminated")


def test_warm_up_multiplies_the_first_requests_ttft():
    b = {"instance_lifecycle": {"warm_up_request_count": 3, "warm_up_ttft_factor": 2.0}}
    res = run_simulation(build_config({"model": MODEL, "num_instances": 2, "rate": 10,
                                       "num_requests": 40, "policy_config": b}))
    fleet = res.sim.fleet
    assert len(fleet.warm_ids) == 6
    raw = {}
    for inst in res.sim.instances:
        raw.update(inst.stats.ttft)
    for rid, v in res.req_stats.ttft.items():
        assert v == (2.0 * raw[rid] if rid in fleet.warm_ids else raw[rid])
    assert fleet.state == [ACTIVE, ACTIVE]
    assert "cost_usd" not in res.cluster  # no node pools, no bill


def test_pool_memory_sizes_the_kv_cache():
    small = {"node_pools": [{"name": "a", "gpu_type": "H100", "gpus_per_node": 1,
                             "gpu_memory_gib": 40, "initial_nodes": 1, "max_nodes": 1}]}
    res = run_simulation(build_config({"model": MODEL, "num_instances": 1, "rate": 10,
                                       "num_requests": 5, "policy_config": small}))
    assert res.sim.instances[0].kv.total_blocks < res.deployment.total_kv_blocks


def test_autoscaled_run_is_deterministic():
    a = run_bursty(seed=4)
    b = run_bursty(seed=4)
    assert a.render_stdout() == b.render_stdout()
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize("change, field", [
    ({"node_pools": []}, "node_pools"),
    ({"node_pools": [{"name": "a", "gpu_type": "H100", "gpus_per_node": 8}]}, "node_pools[0].gpu_memory_gib"),
    ({"node_pools": [{"name": "a", "gpu_type": "H100", "gpus_per_node": 8, "gpu_memory_gib": 80,
                      "max_nodes": 1, "initial_nodes": 2}]}, "node_pools[0].max_nodes"),
    ({"node_pools": [{"name": "a", "gpu_type": "H100", "gpus_per_node": 8, "gpu_memory_gib": 80,
                      "max_nodes": 1, "min_nodes": 2}]}, "node_pools[0].min_nodes"),
    ({"node_pools": [{"name": "a", "gpu_type": "H100", "gpus_per_node": 0, "gpu_memory_gib": 80,
                      "max_nodes": 1}]}, "node_pools[0].gpus_per_node"),
    ({"node_pools": [{"name": "a", "gpu_type": "H100", "gpus_per_node": 8, "gpu_memory_gib": 80,
                      "max_nodes": 1, "cost_per_hour": -1}]}, "node_pools[0].cost_per_hour"),
    ({"node_pools": [{"name": "a", "gpu_type": "H100", "gpus_per_node": 8, "gpu_memory_gib": 80,
                      "max_nodes": 1, "provisioning_delay": {"mean": -1}}]},
     "node_pools[0].provisioning_delay.mean"),
    ({"node_pools": [{"name": "a", "gpu_type": "H100", "gpus_per_node": 8, "gpu_memory_gib": 80,
                      "max_nodes": 1, "zone": "x"}]}, "node_pools[0].zone"),
    ({"instance_lifecycle": {"drain_policy": "REDIRECT"}}, "instance_lifecycle.drain_policy"),
    ({"instance_lifecycle": {"drain_policy": "SOMETIMES"}}, "instance_lifecycle.drain_policy"),
    ({"instance_lifecycle": {"warm_up_ttft_factor": 0.5}}, "instance_lifecycle.warm_up_ttft_factor"),
    ({"autoscaler": {"interval_us": 1000}}, "autoscaler"),
    ({"autoscaler": {"interval_us": 1000, "analyzer": {"scale_down_boundary": 0.9}},
      "node_pools": BUNDLE["node_pools"]}, "autoscaler.analyzer.scale_down_boundary"),
    ({"autoscaler": {"interval_us": 1000, "analyzer": {"kv_cache_threshold": 1.5}},
      "node_pools": BUNDLE["node_pools"]}, "autoscaler.analyzer.kv_cache_threshold"),
    ({"autoscaler": {"interval_us": -5}, "node_pools": BUNDLE["node_pools"]}, "autoscaler.interval_us"),
])
def test_bad_infra_configs_name_the_field(change, field):
    with pytest.raises(ConfigError) as exc:
        build_config({"model": MODEL, "policy_config": change})
    assert exc.value.field == field


def test_infra_combinations_that_are_refused():
    with pytest.raises(ConfigError) as exc:
        build_config({"model": MODEL, "num_instances": 2, "prefill_instances": 1,
                      "decode_instances": 1, "policy_config": {"node_pools": BUNDLE["node_pools"]}})
    assert exc.value.field == "node_pools"
    with pytest.raises(ConfigError) as exc:
        build_config({"model": MODEL, "num_instances": 2, "prefill_instances": 1,
                      "decode_instances": 1,
                      "policy_config": {"instance_lifecycle": {"warm_up_request_count": 2}}})
    assert exc.value.field == "instance_lifecycle"
    with pytest.raises(ConfigError) as exc:
        build_config({"model": MODEL, "policy_config": BUNDLE}, replay=True)
    assert "replay" in str(exc.value)
    cfg = build_config({"model": MODEL, "hardware": "A100-80", "policy_config": BUNDLE})
    with pytest.raises(ConfigError) as exc:
        run_simulation(cfg)
    assert "no pool has GPU type 'A100-80'" in str(exc.value)
