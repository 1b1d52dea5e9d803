"""System invariants (spec §17.4) on many random configurations of the full pipeline."""

import numpy as np
import pytest
from conftest import MODEL

from blis.config.options import build_config
from blis.engine.instance import Instance
from blis.request import COMPLETED, QUEUED, RUNNING, TIMED_OUT
from blis.simulation import run_simulation


def random_options(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    opts = {
        "model": MODEL, "seed": int(rng.integers(1, 10_000)),
        "num_instances": int(rng.integers(1, 5)),
        "rate": float(rng.choice([5, 40, 200, 800])),
        "num_requests": int(rng.integers(20, 120)),
        "prompt_tokens": int(rng.integers(16, 600)), "prompt_tokens_stdev": 0,
        "output_tokens": int(rng.integers(2, 200)), "output_tokens_stdev": 0,
        "prefix_tokens": int(rng.choice([0, 0, 64, 200])),
        "max_num_seqs": int(rng.choice([1, 4, 32, 256])),
        "max_num_batched_tokens": int(rng.choice([64, 512, 2048])),
        "long_prefill_token_threshold": int(rng.choice([0, 0, 128])),
        "routing_policy": str(rng.choice(["round-robin", "least-loaded", "weighted"])),
        "admission_policy": str(rng.choice(["always-admit", "always-admit", "token-bucket"])),
        "scheduler": str(rng.choice(["fcfs", "priority-fcfs", "sjf"])),
        "preemption_policy": str(rng.choice(["fcfs", "priority"])),
        "snapshot_refresh_interval": int(rng.choice([0, 50_000])),
        "cache_signal_delay": int(rng.choice([0, 50_000])),
    }
    stdev = int(rng.choice([0, 50]))
    if stdev:
        opts["prompt_tokens_stdev"] = min(stdev, opts["prompt_tokens"])
        opts["output_tokens_stdev"] = min(stdev, opts["output_tokens"])
        opts["prompt_tokens_min"] = 2
        opts["output_tokens_min"] = 2
    if rng.random() < 0.5:  # tiny KV caches force preemption
        need = -(-(opts["prompt_tokens"] + opts["prefix_tokens"] + 3 * stdev) // 16) + 2
        opts["total_kv_blocks"] = int(need + rng.integers(0, 40))
    if rng.random() < 0.25:
        opts["timeout"] = float(rng.choice([0.5, 2.0]))
    if rng.random() < 0.2:
        opts["horizon"] = int(rng.integers(1, 5)) * 1_000_000
    return opts


class Checked(Instance):
    """Instance that asserts KV conservation and work conservation after every step."""

    violations: list = []

    def step(self, now):
        super().step(now)
        if self.kv.total_blocks <= 5000 and not self.kv.check_conservation():
            Checked.violations.append(("INV-4", self.id, now))
        if self.wait_q and not self.step_pending:
            Checked.violations.append(("INV-8", self.id, now))


@pytest.fixture
def checked_instances(monkeypatch):
    import blis.cluster.simulator

    Checked.violations = []
    monkeypatch.setattr(blis.cluster.simulator, "Instance", Checked)
    return Checked


@pytest.mark.parametrize("seed", range(40))
def test_invariants_hold_on_random_configs(seed, checked_instances):
    opts = random_options(seed)
    cfg = build_config(opts)
    res = run_simulation(cfg)
    sim = res.sim
    c = res.cluster
    assert checked_instances.violations == []
    assert sim.clock_regressions == 0  # INV-3

    # INV-1 at every level, and the full pipeline
    for m in res.instances + [c]:
        assert m["injected_requests"] == (m["completed_requests"] + m["still_queued"] + m["still_running"]
                                          + m["dropped_unservable"] + m["timed_out_requests"])
    routed = sum(inst.stats.completed + inst.stats.dropped_unservable + inst.stats.timed_out
                 + len(inst.wait_q) + len(inst.running) for inst in sim.instances)
    pending = len(sim.requests) - len(sim.arrived)
    if cfg.horizon >= (1 << 63) - 1:
        assert pending == 0
        assert len(sim.requests) == c["injected_requests"] + sim.rejected + sim.routing_rejections
    assert routed == c["injected_requests"]

    completed = [r for r in sim.routed.values() if r.state == COMPLETED]
    assert len(completed) == c["completed_requests"]
    # token conservation: outputs counted at completion, inputs at enqueue
    expected_out = 0
    for r in completed:
        produced = r.progress_index - r.input_len
        if produced < r.output_len:
            produced += 1
        expected_out += max(produced, 0)
        if not r.length_capped:
            assert produced == r.output_len
            assert len(r.itl) == max(r.output_len - 1, 0)
    assert c["total_output_tokens"] == expected_out
    enqueued = [r for r in sim.routed.values() if r.enqueue_time >= 0]
    assert c["total_input_tokens"] == sum(r.input_len for r in enqueued)

    # INV-2 lifecycle: only the lifecycle's states, and unfinished requests keep theirs
    states = [r.state for r in sim.routed.values()]
    assert set(states) <= {QUEUED, RUNNING, COMPLETED, TIMED_OUT}
    assert states.count(RUNNING) == c["still_running"]
    assert states.count(TIMED_OUT) == c["timed_out_requests"]

    # INV-5 causality
    for r in completed:
        assert r.arrival_time <= r.enqueue_time <= r.schedule_time <= r.completion_time
        assert r.first_token_time <= r.completion_time - r.arrival_time

    # work conservation: with no horizon nothing is left behind
    if cfg.horizon >= (1 << 63) - 1:
        assert c["still_queued"] == 0 and c["still_running"] == 0
    assert sum(len(i.stats.itl_samples) for i in sim.instances) == sum(len(r.itl) for r in completed)


def _const_client(cid):
    return {"id": cid, "rate_fraction": 1.0, "arrival": {"process": "constant"},
            "input_distribution": {"type": "constant", "params": {"value": 100}},
            "output_distribution": {"type": "constant", "params": {"value": 10}}}


def test_two_simultaneous_arrivals_with_one_sequence_slot_are_served_back_to_back():
    spec = {"version": "2", "seed": 1, "aggregate_rate": 2.0, "num_requests": 2,
            "clients": [_const_client("a"), _const_client("b")]}
    res = run_simulation(build_config({"model": MODEL, "workload_spec": spec, "max_num_seqs": 1}))
    first, second = sorted(res.sim.routed.values(), key=lambda r: r.schedule_time)
    assert first.arrival_time == second.arrival_time
    assert res.cluster["completed_requests"] == 2
    lat = res.deployment.latency
    # work conservation (INV-8): the second starts exactly when the first leaves the batch.
    # completion = last step end + alpha1 + one alpha2 per output token (TTFT and each ITL)
    first_left = (first.completion_time - lat.post_decode_fixed_overhead()
                  - first.output_len * lat.output_token_processing_time())
    assert second.schedule_time == first_left


def test_same_seed_gives_byte_identical_output_and_other_seed_differs():
    opts = {"model": MODEL, "num_instances": 3, "routing_policy": "weighted", "rate": 50,
            "num_requests": 150, "prefix_tokens": 64}
    a = run_simulation(build_config(opts)).render_stdout()
    b = run_simulation(build_config(opts)).render_stdout()
    c = run_simulation(build_config({**opts, "seed": 7})).render_stdout()
    assert a == b
    assert a != c


def test_overload_shows_large_scheduling_delay():
    light = run_simulation(build_config({"model": MODEL, "rate": 5, "num_requests": 200}))
    heavy = run_simulation(build_config({"model": MODEL, "rate": 500, "num_requests": 400}))
    assert heavy.cluster["scheduling_delay_p99_ms"] > 20 * light.cluster["scheduling_delay_p99_ms"]
    assert heavy.cluster["ttft_p99_ms"] > light.cluster["ttft_p99_ms"]
