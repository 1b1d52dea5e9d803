"""Runs without per-request output: lazily drawn tokens and dropped payloads change nothing."""

import json

import numpy as np
import pytest
from conftest import MODEL

from blis.config.options import build_config
from blis.simulation import run_simulation
from blis.workload import generate_requests


def _workload(seed: int):
    rng = np.random.default_rng(seed)
    opts = {"model": MODEL, "seed": int(rng.integers(1, 1000)), "rate": 50,
            "num_requests": int(rng.integers(1, 5000)),
            "prompt_tokens": int(rng.integers(1, 400)), "output_tokens": int(rng.integers(1, 300)),
            "prefix_tokens": int(rng.choice([0, 0, 37, 300]))}
    return build_config(opts)


@pytest.mark.parametrize("seed", range(6))
def test_lazy_tokens_equal_eager_tokens(seed):
    cfg = _workload(seed)
    args = (cfg.workload, cfg.max_requests, cfg.horizon, cfg.timeout_override_us)
    eager = generate_requests(*args)
    lazy = generate_requests(*args, lazy_tokens=True)
    assert len(lazy) == len(eager)
    rng = np.random.default_rng(seed)
    skipped = set(rng.choice(len(lazy), size=len(lazy) // 5).tolist())
    for i, (a, b) in enumerate(zip(eager, lazy)):
        assert (b.input_len, b.output_len, b.arrival_time) == (a.input_len, a.output_len,
                                                               a.arrival_time)
        if i in skipped:  # finished without ever touching its tokens
            b.drop_payload()
            continue
        assert np.array_equal(a.input_tokens, b.input_tokens)
        assert np.array_equal(a.output_tokens, b.output_tokens)
        assert b.block_hashes(16) == a.block_hashes(16)


def test_lazy_stream_holds_only_chunks_still_needed():
    cfg = _workload(3)
    reqs = generate_requests(cfg.workload, 5000, cfg.horizon, lazy_tokens=True)
    stream = reqs[0]._token_source[0]
    for r in reqs[:3 * stream.CHUNK]:
        r.input_tokens
        r.drop_payload()
    assert len(stream.live) == 0  # every drawn chunk was fully served
    reqs[3500].output_tokens  # later chunks are drawn on demand, earlier ones not kept
    assert sorted(stream.live) == [3500 // stream.CHUNK]


# ---- summaries folded as requests finish (lean runs) equal the per-request path --------------

_CLASSES_SPEC = {
    "version": "2", "seed": 11, "aggregate_rate": 120, "num_requests": 900,
    "clients": [
        {"id": "chat", "rate_fraction": 0.5, "slo_class": "critical", "tenant_id": "a",
         "arrival": {"process": "poisson"}, "timeout": 1_500_000,
         "input_distribution": {"type": "gaussian",
                                "params": {"mean": 200, "std_dev": 120, "min": 2, "max": 700}},
         "output_distribution": {"type": "gaussian",
                                 "params": {"mean": 90, "std_dev": 60, "min": 1, "max": 300}}},
        {"id": "api", "rate_fraction": 0.3, "slo_class": "standard", "tenant_id": "b",
         "arrival": {"process": "gamma", "cv": 2.0},
         "input_distribution": {"type": "constant", "params": {"value": 64}},
         "output_distribution": {"type": "constant", "params": {"value": 40}}},
        {"id": "bulk", "rate_fraction": 0.2, "slo_class": "batch",
         "arrival": {"process": "poisson"}, "timeout": 800_000,
         "input_distribution": {"type": "gaussian",
                                "params": {"mean": 500, "std_dev": 200, "min": 2, "max": 1200}},
         "output_distribution": {"type": "gaussian",
                                 "params": {"mean": 150, "std_dev": 90, "min": 1, "max": 500}}},
    ],
}
_TARGETS = {"slo_ttft": "critical=150ms,standard=400ms,batch=2s",
            "slo_itl": "critical=12ms", "slo_e2e": "standard=1.5s,batch=6s"}

LEAN_CONFIGS = {
    "classes_goodput": dict(model=MODEL, workload_spec=_CLASSES_SPEC, num_instances=3,
                            routing_policy="weighted", **_TARGETS),
    "classes_tight_kv_preemption": dict(model=MODEL, workload_spec=_CLASSES_SPEC, num_instances=2,
                                        total_kv_blocks=120, scheduler="priority-fcfs",
                                        preemption_policy="priority", **_TARGETS),
    "classes_horizon": dict(model=MODEL, workload_spec=_CLASSES_SPEC, num_instances=2,
                            horizon=3_000_000, max_num_seqs=16, **_TARGETS),
    "default_class_targets_timeout": dict(model=MODEL, num_instances=2, rate=400,
                                          num_requests=700, timeout=0.5, max_num_seqs=32,
                                          slo_ttft="default=100ms", slo_e2e="default=1s"),
    "dropped_and_capped": dict(model=MODEL, num_instances=2, rate=200, num_requests=500,
                               prompt_tokens=300, prompt_tokens_stdev=200, prompt_tokens_min=1,
                               output_tokens=100, max_model_len=420, total_kv_blocks=200,
                               slo_ttft="default=300ms"),
}


@pytest.mark.parametrize("name", sorted(LEAN_CONFIGS))
def test_lean_summaries_equal_full(name):
    opts = LEAN_CONFIGS[name]
    full = run_simulation(build_config(opts))
    lean = run_simulation(build_config(opts), keep_requests=False)
    assert lean.sim.lean and not full.sim.lean
    assert lean.sim.fold is not None and full.sim.fold is None
    assert lean.render_stdout() == full.render_stdout()
    assert json.dumps(lean.to_dict(), sort_keys=True) == json.dumps(full.to_dict(), sort_keys=True)


@pytest.mark.parametrize("seed", range(3))
def test_lazy_requests_equal_eager_requests(seed):
    opts = dict(LEAN_CONFIGS["classes_goodput"], seed=seed + 1)
    cfg = build_config(opts)
    args = (cfg.workload, cfg.max_requests, cfg.horizon, cfg.timeout_override_us)
    eager = generate_requests(*args)
    lazy = generate_requests(*args, lazy_tokens=True, lazy_requests=True)
    assert getattr(lazy, "in_arrival_order", False) and len(lazy) == len(eager)
    for a, b in zip(eager, lazy):
        assert (a.id, a.arrival_time, a.input_len, a.output_len, a.max_output_len, a.deadline,
                a.slo_class, a.tenant_id, a.client_id) == (
                    b.id, b.arrival_time, b.input_len, b.output_len, b.max_output_len,
                    b.deadline, b.slo_class, b.tenant_id, b.client_id)
        assert np.array_equal(a.input_tokens, b.input_tokens)
        assert np.array_equal(a.output_tokens, b.output_tokens)
