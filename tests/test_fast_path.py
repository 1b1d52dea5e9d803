"""Differential tests: the lazy decode path (``blis.engine.instance``) against the reference step loop.

Every configuration is simulated twice, once with ``BLIS_REFERENCE_STEPS=1`` (every running
request visited every step) and once with the lazy path, and everything a user or a caller can
see must be identical: stdout, ``to_dict()``, the per-request rows, the trace rows, and the final
state of every request (progress, ITL samples, first-token and completion times).
"""

import json

import numpy as np
import pytest
from conftest import MODEL

from blis.config.options import build_config
from blis.simulation import run_simulation
from blis.workload import generate_requests
from blis.workload.tracev2 import trace_rows_from_requests


def random_options(seed: int) -> dict:
    rng = np.random.default_rng(77_000 + seed)
    opts = {
        "model": MODEL, "seed": int(rng.integers(1, 10_000)),
        "num_instances": int(rng.integers(1, 5)),
        "rate": float(rng.choice([5, 40, 150, 600])),
        "num_requests": int(rng.integers(20, 160)),
        "prompt_tokens": int(rng.integers(8, 900)),
        "output_tokens": int(rng.integers(1, 300)),
        "prefix_tokens": int(rng.choice([0, 0, 48, 200])),
        "block_size_in_tokens": int(rng.choice([16, 16, 16, 1, 2, 7, 32])),
        "max_num_seqs": int(rng.choice([1, 4, 32, 256])),
        "max_num_batched_tokens": int(rng.choice([8, 64, 512, 2048, 2048])),
        "long_prefill_token_threshold": int(rng.choice([0, 0, 0, 64, 300])),
        "routing_policy": str(rng.choice(["round-robin", "least-loaded", "weighted"])),
        "admission_policy": str(rng.choice(["always-admit", "always-admit", "token-bucket"])),
        "scheduler": str(rng.choice(["fcfs", "fcfs", "priority-fcfs", "sjf"])),
        "preemption_policy": str(rng.choice(["fcfs", "priority"])),
        "snapshot_refresh_interval": int(rng.choice([0, 50_000])),
        "cache_signal_delay": int(rng.choice([0, 50_000])),
    }
    stdev = int(rng.choice([0, 0, 60]))
    opts["prompt_tokens_stdev"] = min(stdev, opts["prompt_tokens"])
    opts["output_tokens_stdev"] = min(stdev, opts["output_tokens"])
    opts["prompt_tokens_min"] = 1
    opts["output_tokens_min"] = 1
    if rng.random() < 0.4:  # tight KV: preemption storms, head-of-line blocking, bail-outs
        bs = opts["block_size_in_tokens"]
        longest = opts["prompt_tokens"] + opts["prefix_tokens"] + opts["output_tokens"] + 6 * stdev
        need = -(-longest // bs) + 2
        opts["total_kv_blocks"] = int(need + rng.integers(0, 80))
    if rng.random() < 0.25:
        opts["timeout"] = float(rng.choice([0.3, 1.0, 3.0]))
    if rng.random() < 0.25:
        opts["horizon"] = int(rng.integers(1, 6)) * 700_000
    if rng.random() < 0.2:  # mostly servable; a few requests dropped as too long
        opts["max_model_len"] = int(opts["prompt_tokens"] + opts["prefix_tokens"] + 3 * stdev
                                    + opts["output_tokens"] + rng.integers(-30 if stdev else 0, 60))
        if "total_kv_blocks" in opts:
            opts["total_kv_blocks"] = max(opts["total_kv_blocks"],
                                          -(-opts["max_model_len"] // opts["block_size_in_tokens"]))
    if rng.random() < 0.15:
        opts["latency_model"] = "roofline"
        opts["hardware"], opts["tp"] = "H100", 1
    if "total_kv_blocks" not in opts and opts["block_size_in_tokens"] < 16:
        # room for the whole workload at once (no KV pressure), without the default cache's
        # million tiny blocks per instance
        bs = opts["block_size_in_tokens"]
        longest = opts["prompt_tokens"] + opts["prefix_tokens"] + opts["output_tokens"] + 6 * stdev
        opts["total_kv_blocks"] = opts["num_requests"] * -(-longest // bs) + 16
    return opts


KINDS = ("roofline", "kv_pressure", "preemption", "chunked_prefill")


def small_options(seed: int, kind: str) -> dict:
    """A small random configuration (tens of requests) aimed at one engine regime."""
    rng = np.random.default_rng(53_000 + 1000 * KINDS.index(kind) + seed)
    bs = int(rng.choice([16, 16, 4, 7, 1]))
    opts = {
        "model": MODEL, "seed": int(rng.integers(1, 10_000)),
        "num_instances": int(rng.integers(1, 3)),
        "rate": float(rng.choice([20, 100, 400])),
        "num_requests": int(rng.integers(12, 45)),
        "prompt_tokens": int(rng.integers(8, 400)),
        "output_tokens": int(rng.integers(1, 150)),
        "prefix_tokens": int(rng.choice([0, 0, 32, 128])),
        "block_size_in_tokens": bs,
        "max_num_seqs": int(rng.choice([4, 16, 64, 256])),
        "max_num_batched_tokens": int(rng.choice([64, 512, 2048, 2048])),
        "routing_policy": str(rng.choice(["round-robin", "least-loaded", "weighted"])),
        "scheduler": str(rng.choice(["fcfs", "fcfs", "priority-fcfs", "sjf"])),
        "preemption_policy": str(rng.choice(["fcfs", "priority"])),
        "snapshot_refresh_interval": int(rng.choice([0, 0, 20_000])),
        "cache_signal_delay": int(rng.choice([0, 0, 20_000])),
    }
    stdev = int(rng.choice([0, 40]))
    opts["prompt_tokens_stdev"] = min(stdev, opts["prompt_tokens"])
    opts["output_tokens_stdev"] = min(stdev, opts["output_tokens"])
    opts["prompt_tokens_min"] = opts["output_tokens_min"] = 1
    longest = opts["prompt_tokens"] + opts["prefix_tokens"] + opts["output_tokens"] + 6 * stdev
    need = -(-longest // bs) + 2
    opts["total_kv_blocks"] = opts["num_requests"] * need + 16  # no pressure unless set below
    if kind == "roofline":
        opts["latency_model"] = "roofline"
        opts["hardware"], opts["tp"] = str(rng.choice(["H100", "A100-80"])), int(rng.choice([1, 2]))
        if rng.random() < 0.3:
            opts["total_kv_blocks"] = int(need + rng.integers(0, 60))
    elif kind == "kv_pressure":  # blocks run short: bail-outs to the reference step, HOL waits
        opts["total_kv_blocks"] = int(need + rng.integers(0, 4 * need))
    elif kind == "preemption":  # busy and tight: decode growth evicts the batch tail
        opts.update(rate=float(rng.choice([200, 600])), max_num_seqs=int(rng.choice([64, 256])),
                    max_num_batched_tokens=2048, output_tokens=int(rng.integers(60, 200)))
        longest = opts["prompt_tokens"] + opts["prefix_tokens"] + opts["output_tokens"] + 6 * stdev
        need = -(-longest // bs) + 2
        opts["total_kv_blocks"] = int(need + rng.integers(need, 3 * need))
    else:  # continuing chunked prefills next to lazy decoders
        opts.update(prompt_tokens=int(rng.integers(150, 900)),
                    long_prefill_token_threshold=int(rng.choice([16, 64, 128, 0])),
                    max_num_batched_tokens=int(rng.choice([32, 128, 256, 512])))
        longest = opts["prompt_tokens"] + opts["prefix_tokens"] + opts["output_tokens"] + 6 * stdev
        opts["total_kv_blocks"] = opts["num_requests"] * (-(-longest // bs) + 2) + 16
    if rng.random() < 0.2:
        opts["timeout"] = float(rng.choice([0.3, 1.0]))
    return opts


def pd_options(seed: int) -> dict:
    rng = np.random.default_rng(91_000 + seed)
    opts = random_options(seed)
    opts.pop("latency_model", None)
    opts.pop("hardware", None)
    opts.pop("tp", None)
    n = int(rng.integers(2, 5))
    opts.update(num_instances=n, prefill_instances=1, decode_instances=n - 1,
                pd_decider=str(rng.choice(["always", "prefix-threshold"])),
                pd_transfer_contention=bool(rng.random() < 0.5))
    return opts


SESSION_SPEC = {
    "version": "2", "seed": 5, "aggregate_rate": 80, "num_requests": 160,
    "clients": [
        {"id": "chat", "rate_fraction": 0.6, "slo_class": "critical", "tenant_id": "a",
         "arrival": {"process": "poisson"}, "closed_loop": False,
         "input_distribution": {"type": "constant", "params": {"value": 40}},
         "output_distribution": {"type": "constant", "params": {"value": 50}},
         "prefix_group": "sys", "prefix_length": 32,
         "reasoning": {"multi_turn": {"max_rounds": 4, "think_time_us": 30_000,
                                      "context_growth": "accumulate"}}},
        {"id": "bulk", "rate_fraction": 0.4, "slo_class": "batch", "tenant_id": "b",
         "arrival": {"process": "gamma", "cv": 2.0}, "timeout": 2_000_000,
         "input_distribution": {"type": "gaussian",
                                "params": {"mean": 300, "std_dev": 150, "min": 2, "max": 900}},
         "output_distribution": {"type": "gaussian",
                                 "params": {"mean": 120, "std_dev": 80, "min": 1, "max": 400}}},
    ],
}

HAND_PICKED = {
    # sessions whose inputs contain earlier outputs: decode-filled blocks become prefix hits
    "sessions": {"model": MODEL, "workload_spec": SESSION_SPEC, "num_instances": 2,
                 "routing_policy": "weighted", "snapshot_refresh_interval": 0,
                 "cache_signal_delay": 0},
    "sessions_tight_kv": {"model": MODEL, "workload_spec": SESSION_SPEC, "num_instances": 2,
                          "total_kv_blocks": 60, "routing_policy": "weighted"},
    # the quickstart's shape: mostly idle instances, long runs of quiet chained steps
    "sparse_timeouts": {"model": MODEL, "num_instances": 3, "routing_policy": "weighted",
                        "rate": 2, "num_requests": 40, "output_tokens": 120, "timeout": 1.5,
                        "snapshot_refresh_interval": 0, "cache_signal_delay": 0},
    "busy_weighted": {"model": MODEL, "num_instances": 4, "routing_policy": "weighted",
                      "rate": 100, "num_requests": 500},
    "large_batch": {"model": MODEL, "rate": 150, "num_requests": 700, "output_tokens": 300,
                    "output_tokens_stdev": 100, "prompt_tokens": 200, "prompt_tokens_stdev": 100},
    "overloaded": {"model": MODEL, "num_instances": 2, "rate": 500, "num_requests": 600,
                   "max_num_seqs": 64, "scheduler": "priority-fcfs"},
}


def _run(opts: dict, monkeypatch, reference: bool, capped: bool = False):
    if reference:
        monkeypatch.setenv("BLIS_REFERENCE_STEPS", "1")
    else:
        monkeypatch.delenv("BLIS_REFERENCE_STEPS", raising=False)
    cfg = build_config(opts)
    requests = None
    if capped:  # no output limit: the request runs until max-model-len caps it
        requests = generate_requests(cfg.workload, cfg.max_requests, cfg.horizon,
                                     cfg.timeout_override_us)
        for r in requests[::2]:
            r.max_output_len = 0
    return run_simulation(cfg, requests=requests)


def _observable(res) -> dict:
    for inst in res.sim.instances:  # pending decode-block hashes: the map eager hashing builds
        inst.kv.materialize_all()
    reqs = {}
    for r in res.sim.routed.values():
        reqs[r.id] = (r.state, r.progress_index, r.computed_tokens, r.first_token_time,
                      r.completion_time, r.schedule_time, r.length_capped, list(r.itl))
    return {"stdout": res.render_stdout(), "dict": json.dumps(res.to_dict(), sort_keys=True),
            "rows": res.request_rows(), "trace": trace_rows_from_requests(res.sim.arrived),
            "requests": reqs, "steps": [i.step_count for i in res.sim.instances],
            "kv": [(i.kv.cache_hits, i.kv.cache_misses, dict(i.kv.hash_to_block),
                    list(i.kv.block_hash), list(i.kv.free)) for i in res.sim.instances]}


def _lazy_steps_taken(res) -> int:
    return sum(i.run_keys for i in res.sim.instances)


def _compare(opts, monkeypatch, capped=False) -> int:
    ref = _observable(_run(opts, monkeypatch, reference=True, capped=capped))
    fast_res = _run(opts, monkeypatch, reference=False, capped=capped)
    fast = _observable(fast_res)
    for key in ref:
        assert fast[key] == ref[key], key
    return _lazy_steps_taken(fast_res)


@pytest.mark.parametrize("seed", range(48))
def test_lazy_path_matches_reference_on_random_configs(seed, monkeypatch):
    _compare(random_options(seed), monkeypatch)


@pytest.mark.parametrize("seed", range(6))
def test_lazy_path_matches_reference_with_length_capping(seed, monkeypatch):
    opts = random_options(seed)
    opts.pop("latency_model", None)
    opts.pop("hardware", None)
    opts.pop("tp", None)
    opts["max_model_len"] = (opts["prompt_tokens"] + opts["prefix_tokens"]
                             + 3 * opts["prompt_tokens_stdev"] + opts["output_tokens"] // 2 + 40)
    if "total_kv_blocks" in opts:
        opts["total_kv_blocks"] = max(opts["total_kv_blocks"],
                                      -(-opts["max_model_len"] // opts["block_size_in_tokens"]))
    _compare(opts, monkeypatch, capped=True)


@pytest.mark.parametrize("seed", range(8))
def test_lazy_path_matches_reference_with_pd_disaggregation(seed, monkeypatch):
    _compare(pd_options(seed), monkeypatch)


@pytest.mark.parametrize("name", sorted(HAND_PICKED))
def test_lazy_path_matches_reference_on_hand_picked_configs(name, monkeypatch):
    assert _compare(HAND_PICKED[name], monkeypatch) > 0  # the lazy path really ran


@pytest.mark.parametrize("kind", KINDS)
def test_lazy_path_matches_reference_per_regime(kind, monkeypatch):
    """60 small random configurations of each regime, byte-identical on both engine paths."""
    for seed in range(60):
        opts = small_options(seed, kind)
        try:
            _compare(opts, monkeypatch)
        except AssertionError as e:
            raise AssertionError(f"{kind} seed {seed}: {e}") from None


def test_step_chaining_really_happens(monkeypatch):
    """Quiet steps run without heap events (``Instance.step``), also past other instances'."""
    opts = HAND_PICKED["sparse_timeouts"]
    ref = _run(opts, monkeypatch, reference=True)
    fast = _run(opts, monkeypatch, reference=False)
    steps = sum(i.step_count for i in fast.sim.instances)
    assert steps == sum(i.step_count for i in ref.sim.instances)
    assert ref.sim.seq > steps  # the reference pushes one event per step
    assert fast.sim.seq < steps / 4


def test_regimes_really_happen(monkeypatch):
    """Each regime's configurations exercise what they are named for, on the lazy path."""
    monkeypatch.delenv("BLIS_REFERENCE_STEPS", raising=False)
    seen = {}
    for kind in KINDS:
        lazy = preempted = chunked = 0
        for seed in range(0, 60, 5):
            res = run_simulation(build_config(small_options(seed, kind)))
            lazy += _lazy_steps_taken(res) > 0
            preempted += sum(i.stats.preemptions for i in res.sim.instances) > 0
            chunked += any(r.scheduled_step_idx < r.finished_step_idx and r.input_len >
                           res.sim.cfg.engine.max_num_batched_tokens
                           for r in res.sim.routed.values())
        seen[kind] = (lazy, preempted, chunked)
    assert all(v[0] >= 6 for v in seen.values()), seen
    assert seen["preemption"][1] >= 6 and seen["kv_pressure"][1] >= 2, seen
    assert seen["chunked_prefill"][2] >= 6, seen


def test_preemption_runs_on_the_lazy_path(monkeypatch):
    """The preemption regime's configurations evict inside lazy steps (``_evict_for``), under
    both policies and also mid-batch, so the differential test above covers that path, not only
    the reference step's. The wrappers go on ``Instance``: a compiled ``FastPath`` is immutable."""
    from blis.engine.instance import Instance

    monkeypatch.delenv("BLIS_REFERENCE_STEPS", raising=False)
    evicted = []
    plain = Instance._evict_for

    def counting(self, r, step):
        n = plain(self, r, step)
        evicted.append((self.preemption_policy, n))
        return n

    monkeypatch.setattr(Instance, "_evict_for", counting)
    cut = []  # the evicted request was not the batch tail: the requests after it wait a step
    plain_unserved = Instance._unserved

    def recording(self, key, step):
        cut.append(plain_unserved(self, key, step))
        return cut[-1]

    monkeypatch.setattr(Instance, "_unserved", recording)
    configs = {"fcfs": 0, "priority": 0}
    for seed in range(0, 60, 2):
        opts = small_options(seed, "preemption")
        before = len(evicted)
        run_simulation(build_config(opts))
        configs[opts["preemption_policy"]] += len(evicted) > before
    total = {p: sum(n for q, n in evicted if q == p) for p in configs}
    assert min(configs.values()) >= 4 and min(total.values()) >= 20, (configs, total)
    assert sum(1 for u in cut if u) >= 3, cut


def test_chunked_prefills_run_on_the_lazy_path(monkeypatch):
    """The chunked-prefill regime's continuing prefills take their chunks inside lazy steps
    (``_take_chunk``), next to lazy decoders, so the differential test covers that path."""
    from blis.engine.instance import Instance

    monkeypatch.delenv("BLIS_REFERENCE_STEPS", raising=False)
    chunks = []
    plain = Instance._take_chunk

    def counting(self, r, c):
        chunks.append(self.n_lazy)
        plain(self, r, c)

    monkeypatch.setattr(Instance, "_take_chunk", counting)
    configs = 0
    for seed in range(0, 60, 3):
        before = len(chunks)
        run_simulation(build_config(small_options(seed, "chunked_prefill")))
        configs += any(chunks[before:])  # beside at least one lazy decoder
    assert configs >= 8 and len(chunks) >= 100, (configs, len(chunks))


def test_random_configs_exercise_the_lazy_path(monkeypatch):
    """Guard against a differential test that silently compares reference with reference."""
    monkeypatch.delenv("BLIS_REFERENCE_STEPS", raising=False)
    engaged = sum(_lazy_steps_taken(run_simulation(build_config(random_options(s)))) > 0
                  for s in range(12))
    assert engaged >= 6


@pytest.mark.parametrize("seed", range(8))
def test_dropping_finished_requests_payload_changes_no_output(seed, monkeypatch):
    """``keep_requests=False`` (``blis run`` without per-request files, ``api.simulate``)."""
    monkeypatch.delenv("BLIS_REFERENCE_STEPS", raising=False)
    opts = random_options(seed)
    kept = run_simulation(build_config(opts))
    lean = run_simulation(build_config(opts), keep_requests=False)
    assert lean.sim.lean and not kept.sim.lean
    assert lean.render_stdout() == kept.render_stdout()
    assert json.dumps(lean.to_dict(), sort_keys=True) == json.dumps(kept.to_dict(), sort_keys=True)
