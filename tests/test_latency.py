"""Latency backends (§6): verification vectors, illustrations, alpha semantics, validation.

The optimised backends fold constants into a few coefficients; here each is also checked
against a direct, term-by-term transcription of the spec formulas.
"""

import dataclasses
import math

import numpy as np
import pytest

from blis.config.model_config import HardwareSpec, ModelConfig, load_hardware, load_model_config
from blis.errors import ConfigError
from blis.latency import LATENCY_MODELS, LatencyModel, RooflineModel, TrainedPhysicsModel, build_latency_model, flops_per_us
from blis.request import Request

BETA10 = [0.152128, 0.0, 1.36252915, 0.752037, 32.09546717, 4.41684444, 126.024825,
          481.8613888, 0.0, 1.94710771]
DENSE = ModelConfig(num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8,
                    intermediate_size=14336, bytes_per_param=2.0, vocab_size=128256)
TEST_HW = HardwareSpec("test", tflops_peak=989.0, bw_peak_tbs=3.35)
H100 = load_hardware("H100")
QWEN14B = load_model_config("qwen/qwen3-14b")


def req(input_len, output_len, progress, new_tokens):
    r = Request("r", np.zeros(input_len), np.zeros(output_len), arrival_time=0)
    r.progress_index = progress
    r.num_new_tokens = new_tokens
    return r


def prefill(n, progress=0, new=None):
    return req(n, 10, progress, n - progress if new is None else new)


def decode(ctx, input_len=None):
    return req(input_len or ctx, 10, ctx, 1)


VECTOR_BATCH = [req(128, 0, 0, 128) for _ in range(3)] + [req(256, 10, 266, 1) for _ in range(5)]


def reference_trained_physics(mc, hw, tp, dp, beta, batch, backend=""):
    """Literal transcription of spec §6.2."""
    B = list(beta) + [0.0] * (11 - len(beta))
    if len(beta) < 11:
        B[10] = B[3]
    L, d, H = mc.num_layers, mc.hidden_size, mc.num_heads
    K = mc.num_kv_heads or H
    dH = d // H
    dKV = K * dH
    is_moe = mc.num_experts >= 2
    E, k = mc.num_experts, max(1, mc.num_experts_per_tok)
    s = mc.interleave_moe_layer_step
    if s > 0 and is_moe:
        n_moe = L // (s + 1)
    elif is_moe:
        n_moe = L
    else:
        n_moe = 0
    n_dense = L - n_moe
    ff_moe = mc.moe_intermediate_size or mc.intermediate_size
    ff_dense = mc.intermediate_size_mlp or mc.intermediate_size
    wbpp, abpp = mc.effective_weight_bytes_per_param, mc.bytes_per_param
    tpdp = tp * dp
    group = tpdp if is_moe else tp
    shared = mc.shared_expert_intermediate_size
    flops = flops_per_us(hw, wbpp)
    bw = hw.bw_peak_tbs * 1e6

    def comp(g):
        return g * k / group

    def comm(g):
        return (g / dp) * k * (group - 1) / group * 2

    def V(units, tokens):
        return units * tokens * d * abpp * 2 * (tp - 1) / tp / bw if tp > 1 else 0.0

    if not batch:
        return 1
    pf = [r for r in batch if r.progress_index < r.input_len]
    dc = [r for r in batch if r.progress_index >= r.input_len and r.output_len > 0]
    tpf = sum(r.num_new_tokens for r in pf)
    pf_attn = sum(4 * (H // tp) * r.num_new_tokens * (r.input_len + r.num_new_tokens / 2) * dH
                  for r in pf)
    tdc = len(dc)
    ctx = sum(r.progress_index for r in dc)
    total = 0.0
    if tpf > 0:
        c = (L * 2 * tpf * d * (2 * d + 2 * dKV) / tpdp + L * pf_attn / dp
             + n_moe * comp(tpf) * 6 * d * ff_moe
             + (n_moe * tpf * 6 * d * shared / tpdp if n_moe > 0 else 0)
             + n_dense * tpf * 6 * d * ff_dense / tpdp) / flops
        kv = L * 2 * (dKV / tpdp) * tpf * 2 / bw
        total += B[0] * c + B[8] * kv if len(beta) >= 9 else B[0] * max(c, kv)
    if tdc > 0:
        c = (L * 2 * tdc * d * (2 * d + 2 * dKV) / tpdp + L * 4 * (H // tp) * ctx * dH / dp
             + n_moe * comp(tdc) * 6 * d * ff_moe
             + (n_moe * tdc * 6 * d * shared / tpdp if n_moe > 0 else 0)
             + n_dense * tdc * 6 * d * ff_dense / tpdp) / flops
        kv = L * 2 * (dKV / tpdp) * 2 * (ctx + tdc) / bw
        total += B[1] * c + B[9] * kv if len(beta) >= 10 else B[1] * max(c, kv)
    t_weight = (L * d * (2 * d + 2 * dKV) * wbpp / tp + n_moe * (E / group) * 3 * d * ff_moe * wbpp
                + n_moe * 3 * d * shared * wbpp / tp + n_dense * 3 * d * ff_dense * wbpp / tp) / bw
    n = tpf + tdc
    t_tp = V(L, n) / dp + V(n_dense, n) / dp
    t_reduce = V(n_moe, n) if is_moe and n_moe > 0 and dp == 1 and tp > 1 else 0.0
    t_dispatch = 0.0
    if is_moe and dp > 1:
        if backend in ("pplx", "deepep_high_throughput", "deepep_low_latency", "mori",
                       "flashinfer_all2allv"):
            t_dispatch = n_moe * comm(n) * d * abpp / bw
        else:
            t_dispatch = n_moe * (n / dp) * (group - 1) / group * 2 * d * abpp / bw
    total += (B[2] * t_weight + B[3] * (t_tp + t_reduce) + B[10] * t_dispatch + B[4] * L
              + B[5] * len(batch) + B[6] + B[7] * (n_moe if is_moe and s > 0 else 0))
    return max(1, int(total))


def reference_roofline(mc, hw, tp, batch):
    """Literal transcription of spec §6.3."""
    if not batch:
        return 1
    L, d, H = mc.num_layers, mc.hidden_size, mc.num_heads
    K = mc.num_kv_heads or H
    dH = d / H
    dKV = K * dH
    dFF = mc.intermediate_size or 4 * d
    is_moe = mc.num_experts >= 2
    E, k = mc.num_experts, max(1, mc.num_experts_per_tok)
    s = mc.interleave_moe_layer_step
    n_moe = (L // (s + 1) if s > 0 else L) if is_moe else 0
    n_dense = L - n_moe
    ff_moe = mc.moe_intermediate_size or dFF
    ff_dense = mc.intermediate_size_mlp or dFF
    wbpp, abpp = mc.effective_weight_bytes_per_param, mc.bytes_per_param
    peak = flops_per_us(hw, wbpp) * 1e6
    bw = hw.bw_peak_tbs * 1e12

    def F(p, n):
        gemm = L * (2 * n * (d * d + 2 * d * dKV) + 2 * n * d * d)
        eff = p + (n - 1) / 2 if n > 1 else p
        gemm += L * 4 * H * n * eff * dH
        sram = L * (5 * H * n * eff + 2 * n * d)
        mlp = n_moe * 2 * n * (2 * d * ff_moe) * k + n_dense * 2 * n * (2 * d * ff_dense)
        return gemm + sram + mlp

    def dynamic(p, n):
        return 2 * L * K * dH * abpp * n + 2 * L * K * dH * abpp * p + L * d * abpp * n

    steps = []
    for r in batch:
        if r.progress_index < r.input_len:
            steps.append((True, r.progress_index, r.num_new_tokens))
        elif r.output_len > 0:
            steps.append((False, r.progress_index, 1))
    total_new = sum(n for _, _, n in steps)
    mlp_w = n_dense * 2 * d * ff_dense
    if is_moe:
        mlp_w += n_moe * 2 * d * ff_moe * E * (1 - ((E - k) / E) ** total_new)
    weights = (L * (d * (d + 2 * dKV) + d * d) + mlp_w) * wbpp
    compute = sum(F(p, n) / tp / (peak * (hw.mfu_prefill if is_pf else hw.mfu_decode))
                  for is_pf, p, n in steps)
    memory = (weights / tp + sum(dynamic(p, n) / tp for _, p, n in steps)) / bw
    return max(1, int(max(compute, memory) * 1e6))


@pytest.mark.parametrize("tp,expected", [(1, 7797), (2, 4538), (4, 2909), (8, 2094)])
def test_trained_physics_verification_vector(tp, expected):
    m = build_latency_model("trained-physics", DENSE, TEST_HW, tp, 1, [0, 0, 0], BETA10)
    assert m.step_time(VECTOR_BATCH) == expected


def test_trained_physics_illustration_qwen3_14b():
    m = build_latency_model("trained-physics", QWEN14B, H100, 1)
    assert m.step_time([decode(512)]) == pytest.approx(12200, rel=0.05)
    assert m.step_time([prefill(512)]) == pytest.approx(14300, rel=0.05)
    assert m.step_time([prefill(2048)]) == pytest.approx(21300, rel=0.05)


def test_roofline_illustration_qwen3_14b():
    m = build_latency_model("roofline", QWEN14B, H100, 1)
    assert m.step_time([decode(512)]) == pytest.approx(5800, rel=0.05)
    assert m.step_time([prefill(512)]) == pytest.approx(22400, rel=0.05)
    assert m.step_time([prefill(2048)]) == pytest.approx(92600, rel=0.05)


MIXED_BATCHES = [
    VECTOR_BATCH,
    [prefill(1000, progress=300, new=500)],
    [decode(17)],
    [prefill(64), prefill(3000, 2048, 952), decode(4000, 1000), decode(9), req(5, 0, 5, 1)],
    [decode(c) for c in range(100, 356)],
]
MODELS = ["qwen/qwen3-14b", "qwen/qwen3-30b-a3b", "deepseek-v2-lite", "mixtral-8x7b-v0.1",
          "redhatai/llama-4-scout-17b-16e-instruct-fp8-dynamic", "llama-2-7b-hf"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("nbeta", [7, 8, 9, 10, 11])
def test_trained_physics_matches_reference(model, tp, nbeta):
    mc = load_model_config(model)
    beta = [0.3, 0.7, 1.3, 0.8, 30.0, 4.0, 120.0, 480.0, 0.5, 1.9, 1.1][:nbeta]
    m = TrainedPhysicsModel(mc, H100, tp, 1, alpha=[1, 2, 3], beta=beta)
    for batch in MIXED_BATCHES:
        assert m.step_time(batch) == reference_trained_physics(mc, H100, tp, 1, beta, batch)


@pytest.mark.parametrize("model", ["qwen/qwen3-30b-a3b", "mixtral-8x7b-v0.1",
                                   "redhatai/llama-4-scout-17b-16e-instruct-fp8-dynamic"])
@pytest.mark.parametrize("backend", ["", "naive", "allgather_reducescatter", "pplx",
                                     "deepep_low_latency"])
@pytest.mark.parametrize("tp,dp", [(1, 2), (2, 2), (1, 4)])
def test_trained_physics_moe_dp_matches_reference(model, backend, tp, dp):
    mc = load_model_config(model)
    beta = [0.3, 0.7, 1.3, 0.8, 30.0, 4.0, 120.0, 480.0, 0.5, 1.9, 1.1]
    m = TrainedPhysicsModel(mc, H100, tp, dp, alpha=[0, 0, 0], beta=beta,
                            moe_comm_backend=backend)
    for batch in MIXED_BATCHES:
        assert m.step_time(batch) == reference_trained_physics(mc, H100, tp, dp, beta, batch,
                                                               backend)


def test_all_to_all_dispatch_costs_more_with_top_k():
    mc = load_model_config("qwen/qwen3-30b-a3b")
    beta = [0.0] * 10 + [1.0]
    gather = TrainedPhysicsModel(mc, H100, 1, 4, alpha=[0, 0, 0], beta=beta)
    a2a = TrainedPhysicsModel(mc, H100, 1, 4, alpha=[0, 0, 0], beta=beta,
                              moe_comm_backend="pplx")
    batch = [prefill(2048)]
    assert a2a.step_time(batch) > gather.step_time(batch) > 1


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("tp", [1, 2, 4])
def test_roofline_matches_reference(model, tp):
    mc = load_model_config(model)
    m = RooflineModel(mc, H100, tp)
    for batch in MIXED_BATCHES:
        assert m.step_time(batch) == reference_roofline(mc, H100, tp, batch)


def test_beta_padding_split_versus_max():
    """7-8 betas take max(compute, kv) for both phases; 9 splits prefill; 10 splits decode."""
    batch = [decode(4000, 256)]
    m7 = TrainedPhysicsModel(DENSE, TEST_HW, 1, alpha=[0, 0, 0], beta=[0, 1, 0, 0, 0, 0, 0])
    m10 = TrainedPhysicsModel(DENSE, TEST_HW, 1, alpha=[0, 0, 0], beta=[0, 1] + [0] * 8)
    dc_kv = 32 * 2 * 1024 * 2 * 4001 / 3.35e6
    dc_comp = (32 * 2 * 4096 * (2 * 4096 + 2 * 1024) + 32 * 4 * 32 * 4000 * 128
               + 32 * 6 * 4096 * 14336) / 989e6
    assert dc_kv > dc_comp
    assert m7.step_time(batch) == int(dc_kv)
    assert m10.step_time(batch) == int(dc_comp)
    pf = [prefill(512)]
    pf_comp = (32 * 2 * 512 * 4096 * (2 * 4096 + 2 * 1024) + 32 * 4 * 32 * 512 * 768 * 128
               + 32 * 512 * 6 * 4096 * 14336) / 989e6
    pf_kv = 32 * 2 * 1024 * 512 * 2 / 3.35e6
    for n, split in ((8, False), (9, True)):
        m = TrainedPhysicsModel(DENSE, TEST_HW, 1, alpha=[0, 0, 0], beta=[1] + [0] * (n - 1))
        assert m.step_time(pf) == int(pf_comp if split else max(pf_comp, pf_kv))
        kv_heavy = TrainedPhysicsModel(DENSE, TEST_HW, 1, alpha=[0, 0, 0],
                                       beta=[1] + [0] * 7 + ([2.0] if split else []))
        assert kv_heavy.step_time(pf) == int(pf_comp + 2 * pf_kv if split else pf_comp)


def test_eleventh_beta_defaults_to_beta4():
    mc = load_model_config("qwen/qwen3-30b-a3b")
    ten = TrainedPhysicsModel(mc, H100, 2, 2, alpha=[0, 0, 0], beta=BETA10)
    eleven = TrainedPhysicsModel(mc, H100, 2, 2, alpha=[0, 0, 0], beta=BETA10 + [BETA10[3]])
    other = TrainedPhysicsModel(mc, H100, 2, 2, alpha=[0, 0, 0], beta=BETA10 + [5.0])
    batch = [prefill(4096), decode(100)]
    assert ten.step_time(batch) == eleven.step_time(batch) < other.step_time(batch)


def test_default_coefficients_and_alpha_semantics():
    m = build_latency_model("trained-physics", QWEN14B, H100, 1)
    assert m.queueing_time(prefill(100)) == 15563
    assert m.queueing_time(prefill(5000)) == 15563
    assert m.post_decode_fixed_overhead() == 777
    assert m.output_token_processing_time() == 45
    explicit = build_latency_model("trained-physics", QWEN14B, H100, 1,
                                   alpha=[15563.199579, 777.3455, 45.907545],
                                   beta=[0.152128, 0.0, 1.36252915, 0.752037, 32.09546717,
                                         4.41684444, 126.024825, 481.8613888, 0.0, 1.94710771,
                                         0.752037])
    batch = [prefill(700), decode(300)]
    assert explicit.step_time(batch) == m.step_time(batch)


def test_roofline_alpha_semantics():
    m = build_latency_model("roofline", QWEN14B, H100, 1)
    assert m.queueing_time(prefill(100)) == 0
    assert m.output_token_processing_time() == 0 and m.post_decode_fixed_overhead() == 0
    m = build_latency_model("roofline", QWEN14B, H100, 1, alpha=[100.9, 0.5, 7.9])
    assert m.queueing_time(prefill(101)) == int(100.9 + 0.5 * 101)
    assert m.output_token_processing_time() == 7
    assert m.post_decode_fixed_overhead() == 0


@pytest.mark.parametrize("name", sorted(LATENCY_MODELS))
def test_empty_and_degenerate_batches(name):
    m = build_latency_model(name, QWEN14B, H100, 1, alpha=[0, 0, 0], beta=[0.0] * 10)
    assert isinstance(m, LatencyModel)
    assert m.step_time([]) == 1
    assert m.step_time([decode(1)]) >= 1
    assert isinstance(m.step_time([prefill(10)]), int)


def test_request_without_outputs_past_prefill_counts_only_as_batch_member():
    beta = [0, 0, 0, 0, 0, 10.0, 0, 0, 0, 0]
    m = TrainedPhysicsModel(DENSE, TEST_HW, 1, alpha=[0, 0, 0], beta=beta)
    assert m.step_time([req(5, 0, 5, 1), req(5, 0, 5, 1)]) == 20
    assert RooflineModel(DENSE, H100, 1).step_time([req(5, 0, 5, 1)]) >= 1


def test_step_time_grows_with_work():
    for name in LATENCY_MODELS:
        m = build_latency_model(name, QWEN14B, H100, 1)
        assert m.step_time([prefill(4096)]) > m.step_time([prefill(256)])
        assert m.step_time([decode(100)] * 64) > m.step_time([decode(100)])
        assert m.step_time([decode(30000)] * 8) > m.step_time([decode(100)] * 8)


def test_more_tp_is_faster():
    for name in LATENCY_MODELS:
        times = [build_latency_model(name, QWEN14B, H100, tp).step_time([prefill(2048)])
                 for tp in (1, 2, 4, 8)]
        assert times == sorted(times, reverse=True)


def test_fp8_weights_use_fp8_flops():
    assert flops_per_us(H100, 1.0) == 1979.0e6
    assert flops_per_us(H100, 2.0) == 989.5e6
    assert flops_per_us(load_hardware("A100-80"), 1.0) == 312e6
    fp8 = dataclasses.replace(QWEN14B, weight_bytes_per_param=1.0)
    for name in LATENCY_MODELS:
        bf16 = build_latency_model(name, QWEN14B, H100, 1)
        q = build_latency_model(name, fp8, H100, 1)
        assert q.step_time([prefill(2048)]) < bf16.step_time([prefill(2048)])
        assert q.step_time([decode(512)]) < bf16.step_time([decode(512)])


def test_unknown_latency_model():
    with pytest.raises(ConfigError) as exc:
        build_latency_model("blackbox", QWEN14B, H100, 1)
    assert exc.value.field == "latency-model" and "roofline" in str(exc.value)


@pytest.mark.parametrize("kwargs,field", [
    ({"beta": [1.0] * 6}, "beta-coeffs"),
    ({"beta": [1.0] * 12}, "beta-coeffs"),
    ({"beta": [1.0] * 9 + [-0.1]}, "beta-coeffs"),
    ({"beta": [1.0] * 9 + [math.nan]}, "beta-coeffs"),
    ({"beta": [1.0] * 9 + [math.inf]}, "beta-coeffs"),
    ({"alpha": [1.0, 2.0]}, "alpha-coeffs"),
    ({"alpha": [1.0, 2.0, math.nan]}, "alpha-coeffs"),
    ({"tp": 3}, "tp"),
    ({"tp": 0}, "tp"),
    ({"dp": 2}, "dp"),
    ({"dp": 0}, "dp"),
    ({"moe_comm_backend": "smoke-signals"}, "moe-comm-backend"),
])
def test_trained_physics_validation(kwargs, field):
    args = {"tp": 1, "dp": 1, **kwargs}
    with pytest.raises(ConfigError) as exc:
        TrainedPhysicsModel(QWEN14B, H100, args.pop("tp"), args.pop("dp"), **args)
    assert exc.value.field == field


def test_trained_physics_model_validation():
    with pytest.raises(ConfigError):
        TrainedPhysicsModel(dataclasses.replace(QWEN14B, bytes_per_param=0.0), H100, 1)
    with pytest.raises(ConfigError):
        TrainedPhysicsModel(dataclasses.replace(QWEN14B, intermediate_size=0), H100, 1)
    with pytest.raises(ConfigError):
        TrainedPhysicsModel(QWEN14B, HardwareSpec("x", tflops_peak=0, bw_peak_tbs=1), 1)


def test_roofline_validation():
    with pytest.raises(ConfigError) as exc:
        RooflineModel(QWEN14B, H100, 1, 2)
    assert exc.value.field == "dp"
    with pytest.raises(ConfigError) as exc:
        RooflineModel(QWEN14B, H100, 1, moe_comm_backend="pplx")
    assert exc.value.field == "moe-comm-backend"
    with pytest.raises(ConfigError) as exc:
        RooflineModel(QWEN14B, TEST_HW, 1)
    assert exc.value.field == "hardware"
    with pytest.raises(ConfigError):
        RooflineModel(dataclasses.replace(QWEN14B, bytes_per_param=0.0), H100, 1)
    with pytest.raises(ConfigError):
        RooflineModel(dataclasses.replace(QWEN14B, num_experts=4, num_experts_per_tok=8), H100, 1)
