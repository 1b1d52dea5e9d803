"""How many KV-cache blocks fit in GPU memory after weights and runtime overheads (spec §5.7)."""

from __future__ import annotations

from blis.config.model_config import HardwareSpec, ModelConfig
from blis.errors import ConfigError

GIB = float(1 << 30)
_SWIGLU_ACTS = frozenset({"", "silu", "swiglu", "geglu", "situ"})
_SUGGESTED_TPS = (1, 2, 4, 8)


def _head_dim(mc: ModelConfig) -> float:
    return float(mc.head_dim) if mc.head_dim > 0 else mc.hidden_size / mc.num_heads


def kv_bytes_per_token(mc: ModelConfig, tp: int) -> float:
    """KV bytes one token occupies on each GPU of the TP group.

    MLA models cache one compressed latent per layer that every TP rank keeps whole, so it is
    not divided by ``tp``; standard attention shards K/V heads across ranks.
    """
    if mc.kv_lora_rank > 0:
        return float(mc.num_layers * (mc.kv_lora_rank + mc.qk_rope_head_dim)) * mc.bytes_per_param
    kv_heads = mc.num_kv_heads or mc.num_heads
    if kv_heads >= tp and kv_heads % tp != 0:
        raise ConfigError("tp", f"{kv_heads} KV heads cannot be split evenly across tp={tp}")
    return mc.num_layers * 2 * _head_dim(mc) * kv_heads * mc.bytes_per_param / tp


def model_weight_bytes(mc: ModelConfig, weight_bytes_per_param: float) -> float:
    """Parameter count (SwiGLU MLPs, optional MoE) times the weight precision."""
    act = mc.hidden_act.lower()
    if act not in _SWIGLU_ACTS:
        raise ConfigError("model", f"hidden_act '{mc.hidden_act}' is not supported for KV capacity "
                                   "estimation (only silu/swiglu/geglu/situ)")
    d, L, V = mc.hidden_size, mc.num_layers, mc.vocab_size
    kv_dim = (mc.num_kv_heads or mc.num_heads) * _head_dim(mc)
    params = V * d
    params += L * (d * (d + 2 * kv_dim) + d * d + 2 * d)
    params += d
    if not mc.tie_word_embeddings:
        params += V * d
    if mc.num_experts >= 2:
        dense_layers = min(max(mc.first_k_dense_replace, 0), L)
        moe_layers = L - dense_layers
        d_expert = mc.moe_intermediate_size or mc.intermediate_size
        d_dense = mc.intermediate_size_mlp if mc.intermediate_size_mlp > 0 else mc.intermediate_size
        E = mc.num_experts
        params += moe_layers * (3 * d * d_expert * E + 3 * d * mc.shared_expert_intermediate_size
                                + E * d)
        params += dense_layers * 3 * d * d_dense
    else:
        params += L * 3 * d * mc.intermediate_size
    return params * weight_bytes_per_param


def _overhead_gib(weights_gib: float, is_moe: bool, tp: int) -> float:
    activation = 8.0 if is_moe else 5.5
    non_torch = (0.15 if tp == 1 else 0.6) * tp
    return weights_gib + activation + non_torch


def calculate_kv_blocks(mc: ModelConfig, hw: HardwareSpec, tp: int, dp: int, block_size: int,
                        gpu_memory_utilization: float, weight_bytes_per_param: float) -> int:
    """Total KV blocks for one instance (TP group, times ``dp`` for MoE data parallelism)."""
    per_block = int(kv_bytes_per_token(mc, tp) * block_size)
    if per_block <= 0:
        raise ConfigError("model", f"model {mc.name or '?'} yields zero KV bytes per block")
    weights_gib = model_weight_bytes(mc, weight_bytes_per_param) / GIB
    available = hw.memory_gib * gpu_memory_utilization * tp
    overhead = _overhead_gib(weights_gib, mc.is_moe, tp)
    if overhead >= available:
        fitting = next((t for t in _SUGGESTED_TPS
                        if _overhead_gib(weights_gib, mc.is_moe, t)
                        < hw.memory_gib * gpu_memory_utilization * t), None)
        hint = f"try --tp {fitting}" if fitting else "it does not fit even with --tp 8"
        raise ConfigError("tp", f"model {mc.name or '?'} needs {overhead:.2f} GiB of "
                                f"weights+activations but {available:.2f} GiB is available on "
                                f"{hw.name} with tp={tp}; {hint}")
    blocks = int((available - overhead) * GIB) // per_block
    if mc.is_moe and dp > 1:
        blocks *= dp
    return blocks
