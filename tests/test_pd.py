"""Prefill/decode disaggregation (spec §12): INV-1 across pools, INV-PD-1..6b, INV-P2-1/2,
the deciders, the transfer-time formula, metric projection, output and config errors."""

import math

import numpy as np
import pytest
from conftest import MODEL
from conservation import check_conservation

from blis.cli import main
from blis.cluster.snapshot import RouterState, Snapshot
from blis.config.kv_capacity import kv_bytes_per_token
from blis.config.options import build_config
from blis.errors import ConfigError
from blis.fleet.pd import ROLE_DECODE, ROLE_PREFILL, ROLE_SHARED, PrefixThresholdDecider
from blis.request import COMPLETED, Request
from blis.simulation import run_simulation

UNBOUNDED = (1 << 63) - 1


def random_pd_options(seed: int) -> dict:
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(2, 6))
    shared = int(rng.choice([0, 0, 1]))
    p = int(rng.integers(1, n - shared)) if n - shared > 1 else 0
    d = n - shared - p if shared == 0 else int(rng.integers(0, n - shared - p + 1))
    if shared == 0 and (p == 0 or d == 0):
        p, d = 1, n - 1
    opts = {
        "model": MODEL, "seed": int(rng.integers(1, 10_000)), "num_instances": n,
        "prefill_instances": p, "decode_instances": d, "prefill_decode_instances": shared,
        "pd_decider": str(rng.choice(["always", "always", "never", "prefix-threshold"])),
        "pd_prefix_threshold": int(rng.choice([0, 16, 200])),
        "pd_transfer_contention": bool(rng.random() < 0.5),
        "pd_transfer_bandwidth": float(rng.choice([0.5, 25.0])),
        "rate": float(rng.choice([5, 40, 200])),
        "num_requests": int(rng.integers(20, 100)),
        "prompt_tokens": int(rng.integers(16, 600)), "prompt_tokens_stdev": 0,
        "output_tokens": int(rng.integers(2, 100)), "output_tokens_stdev": 0,
        "prefix_tokens": int(rng.choice([0, 64, 200])),
        "max_num_seqs": int(rng.choice([4, 32, 256])),
        "max_num_batched_tokens": int(rng.choice([256, 2048])),
        "routing_policy": str(rng.choice(["round-robin", "least-loaded", "weighted"])),
        "scheduler": str(rng.choice(["fcfs", "priority-fcfs"])),
        "snapshot_refresh_interval": int(rng.choice([0, 50_000])),
        "cache_signal_delay": int(rng.choice([0, 50_000])),
    }
    if rng.random() < 0.4:  # small caches: decode-pod preemption and decode-KV drops
        need = -(-(opts["prompt_tokens"] + opts["prefix_tokens"]) // 16) + 2
        opts["total_kv_blocks"] = int(need + rng.integers(0, 60))
    if rng.random() < 0.25:
        opts["timeout"] = float(rng.choice([0.3, 2.0]))
    if rng.random() < 0.2:
        opts["horizon"] = int(rng.integers(1, 4)) * 1_000_000
    return opts


@pytest.mark.parametrize("seed", range(30))
def test_pd_invariants_on_random_configs(seed):
    opts = random_pd_options(seed)
    cfg = build_config(opts)
    res = run_simulation(cfg)
    sim = res.sim
    pd = sim.pd
    check_conservation(res)
    assert sim.clock_regressions == 0
    for inst in sim.instances:
        if inst.kv.total_blocks <= 5000:
            assert inst.kv.check_conservation()  # INV-4 on every pool

    roles = pd.roles
    assert roles == [ROLE_PREFILL] * opts["prefill_instances"] + [ROLE_DECODE] * opts["decode_instances"] \
        + [ROLE_SHARED] * opts["prefill_decode_instances"] \
        + [""] * (opts["num_instances"] - opts["prefill_instances"] - opts["decode_instances"]
                  - opts["prefill_decode_instances"])
    ids = [inst.id for inst in sim.instances]
    completed_parents = 0
    for p in pd.parents:
        if p.prefill_idx < 0:
            continue
        # INV-PD-2 pool exclusivity
        assert roles[p.prefill_idx] in (ROLE_PREFILL, ROLE_SHARED)
        assert roles[p.decode_idx] in (ROLE_DECODE, ROLE_SHARED)
        assert p.prefill.assigned_instance == ids[p.prefill_idx]
        r = p.req
        if p.decode is not None and p.transfer_complete >= 0:
            assert p.decode.assigned_instance == ids[p.decode_idx]
            # INV-PD-1 and INV-PD-4 phase causality
            assert (r.arrival_time <= p.prefill_enqueue <= p.prefill.enqueue_time
                    <= p.prefill_complete <= p.transfer_start <= p.transfer_complete
                    <= p.decode_enqueue == p.decode.enqueue_time)
            if r.state == COMPLETED:
                assert p.decode_enqueue <= p.decode.schedule_time <= r.completion_time
                completed_parents += 1
    # INV-PD-3 transfer conservation
    if cfg.horizon >= UNBOUNDED:
        assert pd.transfers_initiated == pd.transfers_completed
    # INV-PD-6: only parent ids in the per-request maps; completed parents have one entry each
    s = res.req_stats
    for m in (s.ttft, s.e2e, s.itl_mean, s.sched_delay):
        assert not any(k.endswith("_prefill") or k.endswith("_decode") for k in m)
    rows = res.request_rows()
    assert len({row["requestID"] for row in rows}) == len(rows)
    assert all(not row["requestID"].endswith(("_prefill", "_decode")) for row in rows)
    done = [r for r in sim.routed.values() if r.state == COMPLETED]
    assert len(done) == res.cluster["completed_requests"]
    assert all(r.id in s.e2e for r in done)
    if opts["pd_decider"] == "never":
        assert not pd.parents
        assert all(roles[int(r.assigned_instance.rsplit("_", 1)[1])] in (ROLE_DECODE, ROLE_SHARED)
                   for r in sim.routed.values())


def test_parent_metrics_are_reconstructed_from_the_decode_sub_request():
    opts = {"model": MODEL, "num_instances": 2, "prefill_instances": 1, "decode_instances": 1,
            "pd_decider": "always", "rate": 5, "num_requests": 20, "prompt_tokens": 300,
            "prompt_tokens_stdev": 0, "output_tokens": 20, "output_tokens_stdev": 0}
    res = run_simulation(build_config(opts))
    pd = res.sim.pd
    dec_inst = res.sim.instances[1]
    alpha1 = dec_inst.post_decode_overhead
    s = res.req_stats
    assert len(pd.parents) == 20
    for p in pd.parents:
        r, d = p.req, p.decode
        dec_sd = d.schedule_time - r.arrival_time
        # INV-PD-6b: parent E2E = decode scheduling delay + decode's own E2E (Σ ITL + α1)
        assert s.e2e[r.id] == dec_sd + sum(d.itl) + alpha1
        assert s.ttft[r.id] == dec_sd + d.itl[0]
        assert s.sched_delay[r.id] == p.prefill.schedule_time - r.arrival_time
        # clock-based parent completion (last step end + α1) vs E2E-based record, which also
        # carries one α2 per decode token, as for colocated requests (spec §3.3)
        assert r.completion_time == r.arrival_time + s.e2e[r.id]
        assert p.completion_time + (r.output_len - 1) * dec_inst.output_token_time == r.completion_time
        assert len(d.itl) == r.output_len - 1
    # the decode pod produced every output token, the prefill pod none
    assert res.instances[0]["total_output_tokens"] == 0
    assert res.cluster["total_output_tokens"] == 20 * 20
    assert res.cluster["total_input_tokens"] == sum(p.req.input_len for p in pd.parents)


def test_transfer_duration_follows_bandwidth_and_base_latency():
    opts = {"model": MODEL, "num_instances": 2, "prefill_instances": 1, "decode_instances": 1,
            "pd_decider": "always", "rate": 1, "num_requests": 5, "prompt_tokens": 1000,
            "prompt_tokens_stdev": 0, "output_tokens": 4, "output_tokens_stdev": 0,
            "pd_transfer_bandwidth": 2.0, "pd_transfer_base_latency": 0.5}
    res = run_simulation(build_config(opts))
    dep = res.sim.instances[0].deployment
    per_token = kv_bytes_per_token(dep.model_config, dep.tp)
    for p in res.sim.pd.parents:
        nbytes = -(-p.req.input_len // 16) * 16 * per_token
        want = max(1, math.ceil(500.0 + nbytes / 2000.0))
        assert p.transfer_complete - p.transfer_start == want
    assert res.pd["kv_transfer_us"]["count"] == 5


def test_contention_shares_bandwidth_among_active_transfers():
    base = {"model": MODEL, "num_instances": 3, "prefill_instances": 2, "decode_instances": 1,
            "pd_decider": "always", "rate": 400, "num_requests": 40, "prompt_tokens": 2000,
            "prompt_tokens_stdev": 0, "output_tokens": 4, "output_tokens_stdev": 0,
            "pd_transfer_bandwidth": 0.2}
    free = run_simulation(build_config(base))
    shared = run_simulation(build_config({**base, "pd_transfer_contention": True}))
    pd = shared.sim.pd
    assert pd.peak_transfers >= 2  # INV-P2-2 exercised: overlapping transfers
    assert shared.pd["mean_transfer_queue_depth"] > 1.0
    assert shared.pd["kv_transfer_us"]["max"] > free.pd["kv_transfer_us"]["max"]
    assert pd.active_transfers == 0
    assert "peak_concurrent_transfers" not in free.pd


def test_prefix_threshold_decider_counts_uncached_tokens():
    dec = PrefixThresholdDecider(threshold=32, block_size=16)
    req = Request("r", list(range(100)), [1, 2], 0)
    snaps = [Snapshot(index=0, id="instance_0"), Snapshot(index=1, id="instance_1")]
    cached = {0: 0, 1: 5}
    state = RouterState(snapshots=snaps, cached_blocks=lambda i, r: cached[i])
    assert dec.disaggregate(req, state, 0)            # 100 uncached > 32
    assert dec.disaggregate(req, state, 1) is False   # 100 - 80 = 20 <= 32
    assert dec.disaggregate(Request("e", [], [1], 0), state, 0) is False


def test_per_pool_hardware_and_tp_leave_the_global_config_alone():
    cfg = build_config({"model": MODEL, "num_instances": 3, "prefill_instances": 1,
                        "decode_instances": 2, "decode_tp": 2, "prefill_hardware": "A100-80",
                        "pd_decider": "always", "num_requests": 10, "rate": 5})
    res = run_simulation(cfg)
    deps = [inst.deployment for inst in res.sim.instances]
    assert (deps[0].gpu, deps[0].tp) == ("A100-80", 1)
    assert (deps[1].gpu, deps[1].tp) == ("H100", 2) and deps[2] is deps[1]
    assert deps[1].total_kv_blocks > res.deployment.total_kv_blocks  # own KV sizing (INV-P2-1)
    assert cfg.deployment.tp == 0 and cfg.deployment.hardware == ""
    assert res.cluster["completed_requests"] == 10


def test_never_decider_keeps_default_metrics_shape_and_no_pd_section():
    opts = {"model": MODEL, "num_instances": 2, "prefill_instances": 1, "decode_instances": 1,
            "num_requests": 20, "rate": 10}
    res = run_simulation(build_config(opts))
    out = res.render_stdout()
    assert "=== PD Metrics ===" not in out
    assert res.instances[0]["injected_requests"] == 0  # nothing reaches the prefill pool
    assert res.cluster["completed_requests"] == 20


def test_pd_run_is_deterministic():
    opts = {"model": MODEL, "num_instances": 4, "prefill_instances": 2, "decode_instances": 2,
            "pd_decider": "always", "routing_policy": "weighted", "rate": 30, "num_requests": 80,
            "prefix_tokens": 64, "pd_transfer_contention": True}
    a = run_simulation(build_config(opts))
    b = run_simulation(build_config(opts))
    assert a.render_stdout() == b.render_stdout()
    assert a.to_dict() == b.to_dict()
    assert a.to_dict()["pd"]["disaggregated_requests"] == 80


@pytest.mark.parametrize("opts, field", [
    ({"num_instances": 2, "prefill_instances": 2, "decode_instances": 1}, "prefill-instances"),
    ({"num_instances": 2, "prefill_instances": 1}, "decode-instances"),
    ({"num_instances": 2, "decode_instances": 1}, "prefill-instances"),
    ({"num_instances": 2, "prefill_instances": 1, "decode_instances": 1, "pd_decider": "maybe"},
     "pd-decider"),
    ({"pd_decider": "always"}, "pd-decider"),
    ({"decode_tp": 2}, "decode-tp"),
    ({"num_instances": 2, "prefill_instances": 1, "decode_instances": 1,
      "pd_transfer_bandwidth": 0}, "pd-transfer-bandwidth"),
    ({"num_instances": 2, "prefill_instances": 1, "decode_instances": 1,
      "pd_transfer_contention": "sometimes"}, "pd-transfer-contention"),
    ({"num_instances": 2, "prefill_instances": -1, "decode_instances": 1}, "prefill-instances"),
])
def test_bad_pd_configs_name_the_field(opts, field):
    with pytest.raises(ConfigError) as exc:
        build_config({"model": MODEL, **opts})
    assert exc.value.field == field


def test_bad_pool_hardware_is_reported_per_pool():
    """Caught while validating (build_config resolves every pool), before anything runs."""
    with pytest.raises(ConfigError) as exc:
        build_config({"model": MODEL, "num_instances": 2, "prefill_instances": 1,
                      "decode_instances": 1, "prefill_hardware": "TPU9"})
    assert exc.value.field == "prefill-hardware"
    assert "prefill pool" in str(exc.value)


def test_cli_prints_pd_section_and_accepts_bare_boolean_flag(capsys):
    code = main(["run", "--model", MODEL, "--num-instances", "3", "--prefill-instances", "1",
                 "--decode-instances", "2", "--pd-decider", "always", "--pd-transfer-contention",
                 "--num-requests", "20", "--rate", "20"])
    out, err = capsys.readouterr()
    assert code == 0, err
    section = out.split("=== PD Metrics ===\n")[1].splitlines()
    assert section[0] == "Disaggregated Requests: 20"
    assert section[1] == "Dropped at Decode KV: 0"
    assert any(line.startswith("Parent TTFT (μs): mean=") for line in section)
    assert any(line.startswith("Peak Concurrent Transfers: ") for line in section)


def test_decode_pod_pressure_preempts_and_drops_but_conserves_requests():
    opts = {"model": MODEL, "num_instances": 2, "prefill_instances": 1, "decode_instances": 1,
            "pd_decider": "always", "rate": 20, "num_requests": 30, "prompt_tokens": 200,
            "prompt_tokens_stdev": 0, "output_tokens": 300, "output_tokens_stdev": 0,
            "total_kv_blocks": 70}
    res = run_simulation(build_config(opts))
    pd, s = res.sim.pd, res.req_stats
    check_conservation(res)
    assert res.instances[1]["preemption_count"] > 0
    assert pd.dropped_at_decode_kv > 0
    assert res.cluster["dropped_unservable"] == pd.dropped_at_decode_kv
    reprefilled = [p for p in pd.parents if p.decode is not None and p.decode.ttft_set]
    assert reprefilled
    for p in reprefilled:  # preempted on the decode pod: the decode's own record is used
        assert s.ttft[p.req.id] == p.decode.first_token_time
        assert s.e2e[p.req.id] == p.decode.first_token_time + sum(p.decode.itl) \
            + res.sim.instances[1].post_decode_overhead
    assert all(r.id not in s.e2e for r in res.sim.requests
               if r.id not in res.sim.routed)  # dropped parents leave no record
