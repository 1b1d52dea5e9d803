"""GPU+CPU tiered KV cache (spec §5.8): mirroring, LRU eviction and the thrashing rate, reloads
and their step-time penalty, block conservation, and the CLI/config surface."""

import pytest
from conftest import MODEL

from blis.config.options import build_config
from blis.engine.kv_tiered import TieredKVCache
from blis.errors import ConfigError
from blis.request import Request
from blis.simulation import run_simulation


def req(rid, tokens, out=4):
    return Request(rid, tokens, list(range(out)), 0)


def admit(kv, r):
    cached = kv.get_cached_blocks(r)
    start = len(cached) * kv.block_size
    assert kv.allocate(r, start, r.input_len, cached)
    r.progress_index = r.input_len
    return cached


def test_mirror_then_reload_brings_a_prefix_back_from_cpu():
    kv = TieredKVCache(8, 4, cpu_blocks=16, bandwidth_tokens_per_us=2.0, base_latency_us=10)
    a = req("a", list(range(16)))          # 4 full blocks
    admit(kv, a)
    kv.mirror_to_cpu([a])
    assert kv.mirrored == 4 and len(kv.cpu) == 4
    kv.release(a)
    b = req("b", list(range(100, 132)))    # 8 blocks: evicts every block of a from the GPU
    admit(kv, b)
    kv.release(b)
    assert not any(h in kv.hash_to_block for h in a.block_hashes(4))
    c = req("c", list(range(16)) + [7, 7])
    cached = admit(kv, c)                  # the lookup reloads a's four blocks from the CPU tier
    assert len(cached) == 4 and kv.reloads == 4
    assert kv.take_transfer_latency() == 4 * (10 + 2)   # base + ceil(4 tokens / 2 per µs)
    assert kv.take_transfer_latency() == 0
    assert kv.check_conservation()


def test_reload_stops_at_the_first_block_on_neither_tier_and_spares_the_own_prefix():
    kv = TieredKVCache(6, 4, cpu_blocks=16, bandwidth_tokens_per_us=100.0, base_latency_us=0)
    a = req("a", list(range(12)))          # blocks h0 h1 h2
    admit(kv, a)
    kv.mirror_to_cpu([a])
    kv.release(a)
    kv.cpu.pop(a.block_hashes(4)[1])       # h1 only on the GPU free list ...
    x = req("x", list(range(50, 62)))      # ... until x takes three free blocks
    admit(kv, x)
    on_gpu = [h in kv.hash_to_block for h in a.block_hashes(4)]
    c = req("c", list(range(12)))
    cached = kv.get_cached_blocks(c)
    # h0 is reloaded if it was evicted; the walk stops at h1 when h1 is on neither tier
    if not on_gpu[1]:
        assert kv.reloads <= 1 and len(cached) <= 1
    for b in cached:
        assert kv.block_hash[b] in a.block_hashes(4)
    assert kv.check_conservation()


def test_cpu_tier_is_lru_and_thrashing_rate_counts_evictions_per_mirrored_block():
    kv = TieredKVCache(64, 4, cpu_blocks=4, bandwidth_tokens_per_us=100.0, base_latency_us=0)
    a = req("a", list(range(12)))
    b = req("b", list(range(100, 112)))
    admit(kv, a)
    admit(kv, b)
    kv.mirror_to_cpu([a])
    kv.mirror_to_cpu([b])                  # 6 mirrored into 4 slots: 2 evictions (a's oldest)
    assert kv.mirrored == 6 and kv.cpu_evictions == 2
    assert list(kv.cpu) == a.block_hashes(4)[2:] + b.block_hashes(4)
    kv.mirror_to_cpu([a])                  # touching a re-inserts its evicted blocks
    assert kv.thrashing_rate() == pytest.approx(kv.cpu_evictions / kv.mirrored)
    assert len(kv.cpu) == 4


def prefix_heavy(**extra):
    """Two instances with small GPU caches: preempted requests lose their blocks on the GPU."""
    return {"model": MODEL, "num_instances": 2, "rate": 30, "num_requests": 200,
            "prefix_tokens": 1024, "prompt_tokens": 256, "prompt_tokens_stdev": 0,
            "output_tokens": 256, "output_tokens_stdev": 0, "total_kv_blocks": 500,
            "routing_policy": "round-robin", **extra}


def test_cpu_tier_reloads_shorten_ttft_and_are_charged_to_step_time():
    gpu = run_simulation(build_config(prefix_heavy()))
    tiered = run_simulation(build_config(prefix_heavy(kv_cpu_blocks=4000)))
    slow = run_simulation(build_config(prefix_heavy(kv_cpu_blocks=4000,
                                                    kv_transfer_base_latency=2000)))
    reloads = sum(i.kv.reloads for i in tiered.sim.instances)
    assert reloads > 0
    assert tiered.cluster["ttft_mean_ms"] < gpu.cluster["ttft_mean_ms"]
    assert sum(i.kv.reload_latency for i in slow.sim.instances) == \
        2001 * sum(i.kv.reloads for i in slow.sim.instances)   # base + ceil(16 / 100)
    assert slow.cluster["e2e_mean_ms"] > tiered.cluster["e2e_mean_ms"]
    for res in (tiered, slow):
        c = res.cluster
        assert c["completed_requests"] == 200
        assert c["injected_requests"] == c["completed_requests"] + c["still_queued"] \
            + c["still_running"] + c["dropped_unservable"] + c["timed_out_requests"]
        for inst in res.sim.instances:
            assert inst.kv.check_conservation()


def test_small_cpu_tier_reports_thrashing_in_the_kv_section():
    res = run_simulation(build_config(prefix_heavy(kv_cpu_blocks=50)))
    out = res.render_stdout()
    rate = res.kv_thrashing_rate()
    assert rate > 0.5
    assert f"KV Thrashing Rate: {rate:.4f}" in out.split("=== KV Cache Metrics ===")[1]


def test_a_cpu_tier_that_never_hits_changes_nothing_but_the_thrashing_line(monkeypatch):
    opts = {"model": MODEL, "num_instances": 2, "rate": 20, "num_requests": 120,
            "total_kv_blocks": 5000}
    monkeypatch.setenv("BLIS_REFERENCE_STEPS", "1")  # the tier runs the step-by-step engine
    plain = run_simulation(build_config(opts))
    tiered = run_simulation(build_config({**opts, "kv_cpu_blocks": 1000}))
    assert sum(i.kv.reloads for i in tiered.sim.instances) == 0
    assert tiered.cluster == plain.cluster
    assert tiered.instances == plain.instances


@pytest.mark.parametrize("opts, field", [
    ({"kv_offload_threshold": 1.5}, "kv-offload-threshold"),
    ({"kv_offload_threshold": -0.1}, "kv-offload-threshold"),
    ({"kv_cpu_blocks": -1}, "kv-cpu-blocks"),
    ({"kv_cpu_blocks": 10, "kv_transfer_bandwidth": 0}, "kv-transfer-bandwidth"),
    ({"kv_cpu_blocks": 10, "kv_transfer_base_latency": -1}, "kv-transfer-base-latency"),
    ({"kv_transfer_bandwidth": 50}, "kv-transfer-bandwidth"),
    ({"kv_transfer_base_latency": 5}, "kv-transfer-base-latency"),
])
def test_bad_tier_configs_name_the_field(opts, field):
    with pytest.raises(ConfigError) as exc:
        build_config({"model": MODEL, **opts})
    assert exc.value.field == field


def test_offload_threshold_is_accepted_without_a_tier():
    cfg = build_config({"model": MODEL, "kv_offload_threshold": 0.5})
    assert cfg.engine.kv_offload_threshold == 0.5
