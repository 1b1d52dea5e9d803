"""KV-capacity auto-calculation (§5.7) and deployment resolution (§7.4–§7.6)."""

import dataclasses
import os

import pytest

from blis.config.deployment import resolve_deployment
from blis.config.kv_capacity import GIB, calculate_kv_blocks, kv_bytes_per_token, model_weight_bytes
from blis.config.model_config import MODEL_CONFIGS_DIR, load_defaults, load_hardware, load_model_config
from blis.config.schema import DeploymentConfig, EngineConfig
from blis.errors import ConfigError

H100 = load_hardware("H100")
LLAMA8B = load_model_config("meta-llama/llama-3.1-8b-instruct")
QWEN14B = load_model_config("qwen/qwen3-14b")


def blocks(mc, tp, dp=1, hw=H100, util=0.9, block=16):
    return calculate_kv_blocks(mc, hw, tp, dp, block, util, mc.weight_bytes_per_param)


@pytest.mark.parametrize("tp,expected", [(1, 26312), (2, 125278), (4, 543011)])
def test_llama_31_8b_worked_example(tp, expected):
    assert blocks(LLAMA8B, tp) == expected


def test_qwen3_14b_worked_example():
    assert model_weight_bytes(QWEN14B, 2.0) / GIB == pytest.approx(27.51, abs=0.01)
    assert blocks(QWEN14B, 1) == 15909


def test_kv_bytes_per_token():
    assert kv_bytes_per_token(LLAMA8B, 1) == 32 * 2 * 128 * 8 * 2
    assert kv_bytes_per_token(LLAMA8B, 2) == 32 * 2 * 128 * 8 * 2 / 2
    mla = load_model_config("deepseek-v2-lite")
    assert kv_bytes_per_token(mla, 1) == 27 * (512 + 64) * 2
    assert kv_bytes_per_token(mla, 4) == kv_bytes_per_token(mla, 1)


def test_kv_heads_must_split_evenly():
    with pytest.raises(ConfigError) as exc:
        kv_bytes_per_token(LLAMA8B, 3)
    assert exc.value.field == "tp"
    fewer_heads = load_model_config("qwen/qwen2.5-7b-instruct")
    assert kv_bytes_per_token(fewer_heads, 8) == 28 * 2 * 128 * 4 * 2 / 8


def test_tied_embeddings_and_weight_precision():
    tied = dataclasses.replace(LLAMA8B, tie_word_embeddings=True)
    saved = model_weight_bytes(LLAMA8B, 2.0) - model_weight_bytes(tied, 2.0)
    assert saved == 128256 * 4096 * 2
    assert model_weight_bytes(LLAMA8B, 1.0) == model_weight_bytes(LLAMA8B, 2.0) / 2
    assert blocks(dataclasses.replace(LLAMA8B, weight_bytes_per_param=1.0), 1) > 26312


def test_moe_weights_and_dense_prefix():
    mc = load_model_config("deepseek-v2-lite")
    d, L, V, E = 2048, 27, 102400, 64
    attn = d * (d + 2 * 16 * 128) + d * d + 2 * d
    moe = 3 * d * 1408 * E + 3 * d * 2816 + E * d
    expected = 2 * V * d + L * attn + d + (L - 1) * moe + 1 * 3 * d * 10944
    assert model_weight_bytes(mc, 1.0) == expected


def test_non_swiglu_activation_rejected():
    with pytest.raises(ConfigError):
        model_weight_bytes(dataclasses.replace(LLAMA8B, hidden_act="gelu"), 2.0)
    assert model_weight_bytes(dataclasses.replace(LLAMA8B, hidden_act=""), 2.0) > 0


def test_moe_dp_multiplies_blocks():
    mc = load_model_config("qwen/qwen3-30b-a3b")
    assert blocks(mc, 2, dp=2) == 2 * blocks(mc, 2)
    assert blocks(LLAMA8B, 1, dp=2) == blocks(LLAMA8B, 1)


def test_model_that_does_not_fit_suggests_tp():
    mc = load_model_config("meta-llama/llama-3.1-70b-instruct")
    with pytest.raises(ConfigError) as exc:
        blocks(mc, 1, hw=load_hardware("L40S"))
    assert exc.value.field == "tp"
    assert "L40S" in str(exc.value) and "try --tp 4" in str(exc.value)


def test_resolve_not_fitting_model_raises_config_error():
    dep = DeploymentConfig(model="meta-llama/llama-3.1-70b-instruct", hardware="L40S", tp=1)
    with pytest.raises(ConfigError) as exc:
        resolve_deployment(dep, EngineConfig())
    assert exc.value.field == "tp" and "--tp" in str(exc.value)


def test_resolve_qwen3_14b_from_defaults():
    r = resolve_deployment(DeploymentConfig(model="Qwen/Qwen3-14B"), EngineConfig())
    assert (r.gpu, r.tp, r.dp, r.block_size) == ("H100", 1, 1, 16)
    assert r.total_kv_blocks == 15909 and r.max_model_len == 40960
    assert r.weight_bytes_per_param == 2.0 and r.hardware.memory_gib == 80.0
    assert r.latency.step_time([]) == 1


def test_resolve_caps_derived_max_model_len_to_kv_capacity():
    dep = DeploymentConfig(model="meta-llama/llama-3.1-70b-instruct", hardware="H100", tp=2)
    r = resolve_deployment(dep, EngineConfig())
    assert r.max_model_len == r.total_kv_blocks * 16 < 131072


def test_resolve_explicit_kv_blocks_and_max_model_len():
    dep = DeploymentConfig(model="qwen/qwen3-14b", max_model_len=4096)
    r = resolve_deployment(dep, EngineConfig(total_kv_blocks=300))
    assert r.total_kv_blocks == 300 and r.max_model_len == 4096
    with pytest.raises(ConfigError) as exc:
        resolve_deployment(dep, EngineConfig(total_kv_blocks=255))
    assert exc.value.field == "max-model-len"
    r = resolve_deployment(DeploymentConfig(model="qwen/qwen3-14b"),
                           EngineConfig(total_kv_blocks=100))
    assert r.max_model_len == 1600


@pytest.mark.parametrize("name", sorted(os.listdir(MODEL_CONFIGS_DIR)))
def test_every_bundled_model_resolves_on_h100(name):
    table = load_defaults()["defaults"]
    model = next((k for k in table if k.rsplit("/", 1)[-1] == name), name)
    tp = 0 if model in table else 2
    for latency in ("trained-physics", "roofline"):
        dep = DeploymentConfig(model=model, hardware="H100", tp=tp, latency_model=latency)
        try:
            r = resolve_deployment(dep, EngineConfig())
        except ConfigError as exc:
            assert exc.field in ("tp", "model")
            continue
        assert r.total_kv_blocks > 0 and r.max_model_len > 0
        assert r.max_model_len <= r.total_kv_blocks * r.block_size


def test_resolve_missing_defaults():
    with pytest.raises(ConfigError) as exc:
        resolve_deployment(DeploymentConfig(model="mistralai/mixtral-8x7b-v0.1"), EngineConfig())
    assert exc.value.field == "hardware"
    dep = DeploymentConfig(model="mistralai/mixtral-8x7b-v0.1", hardware="H100")
    with pytest.raises(ConfigError) as exc:
        resolve_deployment(dep, EngineConfig())
    assert exc.value.field == "tp"
    dep = DeploymentConfig(model="mistralai/mixtral-8x7b-v0.1", hardware="H100", tp=2)
    assert resolve_deployment(dep, EngineConfig()).total_kv_blocks > 0


@pytest.mark.parametrize("changes,field", [
    ({"model": ""}, "model"),
    ({"model": "microsoft/phi-4"}, "model"),
    ({"hardware": "TPU"}, "hardware"),
    ({"latency_model": "blackbox"}, "latency-model"),
    ({"tp": -1}, "tp"),
    ({"dp": 0}, "dp"),
    ({"dp": 2}, "dp"),
    ({"gpu_memory_utilization": 0.0}, "gpu-memory-utilization"),
    ({"gpu_memory_utilization": 1.5}, "gpu-memory-utilization"),
    ({"max_model_len": -1}, "max-model-len"),
    ({"alpha_coeffs": [1.0, 2.0]}, "alpha-coeffs"),
    ({"beta_coeffs": [1.0] * 6}, "beta-coeffs"),
    ({"beta_coeffs": [1.0] * 12}, "beta-coeffs"),
])
def test_resolve_validation(changes, field):
    dep = dataclasses.replace(DeploymentConfig(model="qwen/qwen3-14b"), **changes)
    with pytest.raises(ConfigError) as exc:
        resolve_deployment(dep, EngineConfig())
    assert exc.value.field == field


def test_resolve_block_size_and_explicit_blocks_validation():
    dep = DeploymentConfig(model="qwen/qwen3-14b")
    with pytest.raises(ConfigError):
        resolve_deployment(dep, EngineConfig(block_size=0))
    with pytest.raises(ConfigError):
        resolve_deployment(dep, EngineConfig(total_kv_blocks=0))


def test_moe_dp_requires_trained_physics():
    dep = DeploymentConfig(model="qwen/qwen3-30b-a3b", hardware="H100", tp=2, dp=2)
    r = resolve_deployment(dep, EngineConfig())
    assert r.dp == 2
    with pytest.raises(ConfigError) as exc:
        resolve_deployment(dataclasses.replace(dep, latency_model="roofline"), EngineConfig())
    assert exc.value.field == "dp"


def test_resolve_is_cached_and_consistent():
    dep = DeploymentConfig(model="qwen/qwen3-14b")
    a = resolve_deployment(dep, EngineConfig())
    b = resolve_deployment(dep, EngineConfig())
    assert a.latency is b.latency and a.model_config is b.model_config
    assert a.total_kv_blocks == b.total_kv_blocks
