"""HF config.json parsing, quantization tiers, hardware/defaults loading, max-model-len (§7)."""

import json
import os

import pytest

from blis.config.model_config import (
    MODEL_CONFIGS_DIR,
    HardwareSpec,
    ModelConfig,
    derive_max_model_len,
    known_gpus,
    load_defaults,
    load_hardware,
    load_model_config,
    parse_model_config,
)
from blis.errors import ConfigError

BUNDLED = sorted(os.listdir(MODEL_CONFIGS_DIR))
BASE = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
        "intermediate_size": 128, "vocab_size": 100, "torch_dtype": "bfloat16"}


def cfg(**extra):
    return parse_model_config({**BASE, **extra})


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_config_parses(name):
    mc = load_model_config(name)
    assert mc.num_layers > 0 and mc.hidden_size > 0 and mc.num_heads > 0
    assert mc.num_kv_heads > 0 and mc.bytes_per_param == 2.0
    assert mc.intermediate_size > 0 and mc.max_position_embeddings > 0
    assert mc.weight_bytes_per_param in (1.0, 2.0)
    assert hash(mc) == hash(load_model_config(name))


def test_llama_31_8b_fields():
    mc = load_model_config("meta-llama/Llama-3.1-8B-Instruct")
    assert (mc.num_layers, mc.hidden_size, mc.num_heads, mc.num_kv_heads) == (32, 4096, 32, 8)
    assert (mc.vocab_size, mc.intermediate_size) == (128256, 14336)
    assert mc.bytes_per_param == 2.0 and mc.weight_bytes_per_param == 2.0
    assert not mc.is_moe and not mc.tie_word_embeddings and mc.hidden_act == "silu"
    assert mc.name == "meta-llama/llama-3.1-8b-instruct"


def test_text_config_merge_and_compressed_tensors():
    mc = load_model_config("redhatai/llama-4-scout-17b-16e-instruct-fp8-dynamic")
    assert (mc.num_layers, mc.hidden_size, mc.num_heads, mc.num_kv_heads) == (48, 5120, 40, 8)
    assert mc.head_dim == 128 and mc.vocab_size == 202048
    assert mc.num_experts == 16 and mc.num_experts_per_tok == 1
    assert mc.interleave_moe_layer_step == 1 and mc.intermediate_size_mlp == 16384
    assert mc.model_type == "llama4_text"
    assert mc.bytes_per_param == 2.0 and mc.weight_bytes_per_param == 1.0


def test_mla_and_shared_experts():
    mc = load_model_config("deepseek-ai/deepseek-v2-lite")
    assert mc.kv_lora_rank == 512 and mc.qk_rope_head_dim == 64 and mc.is_mla
    assert mc.num_experts == 64 and mc.num_experts_per_tok == 6
    assert mc.moe_intermediate_size == 1408
    assert mc.shared_expert_intermediate_size == 2 * 1408
    assert mc.first_k_dense_replace == 1
    assert mc.rope_scaling_type == "yarn" and mc.rope_scaling_factor == 40


def test_dtype_key_and_fp8_quant_method():
    mc = load_model_config("zai-org/glm-5.2-fp8")
    assert mc.bytes_per_param == 2.0 and mc.weight_bytes_per_param == 1.0
    assert mc.head_dim == 192 and mc.shared_expert_intermediate_size == 2048


def test_kv_head_fallbacks():
    assert cfg().num_kv_heads == 4
    assert cfg(num_key_value_heads=0, num_kv_heads=2).num_kv_heads == 2
    assert cfg(multi_query_group_num=1).num_kv_heads == 1
    assert cfg(num_key_value_heads=None).num_kv_heads == 4


@pytest.mark.parametrize("dtype,expected", [
    ("float32", 4), ("float16", 2), ("bfloat16", 2), ("int8", 1), ("uint8", 1), ("fp8", 1),
    ("int4", 1), ("nf4", 1), ("complex64", 0)])
def test_bytes_per_param(dtype, expected):
    assert cfg(torch_dtype=dtype).bytes_per_param == expected


def test_dtype_fallback_key():
    raw = {k: v for k, v in BASE.items() if k != "torch_dtype"}
    assert parse_model_config({**raw, "dtype": "float32"}).bytes_per_param == 4
    assert parse_model_config(raw).bytes_per_param == 0


def test_intermediate_and_expert_keys():
    raw = {k: v for k, v in BASE.items() if k != "intermediate_size"}
    assert parse_model_config({**raw, "ffn_hidden_size": 99}).intermediate_size == 99
    assert cfg(num_experts=1, n_routed_experts=8).num_experts == 8
    assert cfg(num_routed_experts=4).num_experts == 4
    assert cfg(num_experts=1).num_experts == 0


def test_shared_expert_dims():
    assert cfg(shared_expert_intermediate_size=512, n_shared_experts=3,
               moe_intermediate_size=7).shared_expert_intermediate_size == 512
    assert cfg(n_shared_experts=2).shared_expert_intermediate_size == 256
    assert cfg(n_shared_experts=2, moe_intermediate_size=10).shared_expert_intermediate_size == 20


@pytest.mark.parametrize("qc,name,expected", [
    ({"bits": 4}, "", 0.5),
    ({"bits": "8", "quant_method": "gptq"}, "", 1.0),
    ({"quant_method": "fp8"}, "", 1.0),
    ({"quant_method": "compressed-tensors", "config_groups": {
        "group_b": {"weights": {"num_bits": 8}}, "group_a": {"weights": {"num_bits": 4}}}},
     "", 0.5),
    ({"quant_method": "awq"}, "org/model-quantized.w4a16", 0.5),
    (None, "org/model-quantized.w8a8", 1.0),
    (None, "org/model-fp8-dynamic", 1.0),
    (None, "org/plain-model", 2.0),
])
def test_weight_precision_tiers(qc, name, expected):
    raw = dict(BASE)
    if qc is not None:
        raw["quantization_config"] = qc
    assert parse_model_config(raw, name).weight_bytes_per_param == expected


def test_quantization_config_beats_model_name():
    raw = {**BASE, "quantization_config": {"bits": 4}}
    assert parse_model_config(raw, "org/model-fp8").weight_bytes_per_param == 0.5


def test_derive_max_model_len():
    assert derive_max_model_len(load_model_config("qwen/qwen3-14b")) == 40960
    assert derive_max_model_len(load_model_config("meta-llama/llama-3.1-70b-instruct")) == 131072
    assert derive_max_model_len(load_model_config("deepseek-v2-lite")) == 4096 * 40
    assert derive_max_model_len(cfg(max_position_embeddings=4096,
                                    rope_scaling={"type": "linear", "factor": 4.0})) == 16384
    assert derive_max_model_len(cfg(max_position_embeddings=4096,
                                    rope_scaling={"rope_type": "dynamic", "factor": 2})) == 8192
    assert derive_max_model_len(cfg(max_position_embeddings=4096,
                                    rope_scaling={"rope_type": "yarn", "factor": 2})) == 8192
    assert derive_max_model_len(cfg(max_position_embeddings=4096,
                                    rope_scaling={"type": "longrope", "factor": 8})) == 4096
    assert derive_max_model_len(cfg(max_position_embeddings=4096,
                                    rope_scaling={"type": "linear", "factor": 1.0})) == 4096
    assert derive_max_model_len(cfg(max_position_embeddings=4096, model_type="gemma3_text",
                                    rope_scaling={"type": "linear", "factor": 8})) == 4096
    assert derive_max_model_len(cfg()) == 0


def test_unknown_model_is_config_error():
    with pytest.raises(ConfigError) as exc:
        load_model_config("nobody/no-such-model")
    assert exc.value.field == "model"
    assert "no-such-model" in str(exc.value) and "--model-config-folder" in str(exc.value)


def test_model_config_folder_override(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**BASE, "num_hidden_layers": 7}))
    assert load_model_config("x/anything", str(tmp_path)).num_layers == 7
    sub = tmp_path / "nested"
    (sub / "tiny").mkdir(parents=True)
    (sub / "tiny" / "config.json").write_text(json.dumps({**BASE, "num_hidden_layers": 3}))
    assert load_model_config("org/tiny", str(sub)).num_layers == 3


def test_invalid_model_config_is_config_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError) as exc:
        load_model_config("x/broken", str(tmp_path))
    assert exc.value.field == "model"


def test_hardware_table():
    h100 = load_hardware("H100")
    assert h100 == HardwareSpec("H100", tflops_peak=989.5, bw_peak_tbs=3.35, tflops_fp8=1979.0,
                                mfu_prefill=0.45, mfu_decode=0.30, memory_gib=80.0)
    assert load_hardware("A100-80").tflops_fp8 == 0
    assert load_hardware("l40s").memory_gib == 48.0
    assert {"H100", "A100-SXM", "A100-80", "L40S"} <= set(known_gpus())


def test_unknown_gpu():
    with pytest.raises(ConfigError) as exc:
        load_hardware("TPU-v5")
    assert exc.value.field == "hardware"
    assert "TPU-v5" in str(exc.value) and "H100" in str(exc.value)


def test_custom_hardware_file(tmp_path):
    path = tmp_path / "hw.json"
    path.write_text(json.dumps({"B200": {"TFlopsPeak": 2250, "BwPeakTBs": 8, "MemoryGiB": 180}}))
    hw = load_hardware("B200", str(path))
    assert hw.tflops_peak == 2250 and hw.memory_gib == 180 and hw.mfu_prefill == 0


def test_defaults_yaml():
    d = load_defaults()
    assert d["defaults"]["qwen/qwen3-14b"]["GPU"] == "H100"
    assert d["defaults"]["qwen/qwen3-14b"]["tensor_parallelism"] == 1
    tp = d["trained_physics_coefficients"]
    assert len(tp["alpha_coeffs"]) == 3 and len(tp["beta_coeffs"]) == 11
    d["defaults"].clear()
    assert load_defaults()["defaults"]


def test_model_config_is_frozen():
    mc = ModelConfig(num_layers=1, hidden_size=8, num_heads=1, num_kv_heads=1)
    with pytest.raises(AttributeError):
        mc.num_layers = 2
    assert mc.effective_weight_bytes_per_param == mc.bytes_per_param
