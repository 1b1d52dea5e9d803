"""Turn a user-level ``DeploymentConfig`` into concrete per-instance numbers (spec §5.7, §7).

The policy search resolves deployments thousands of times, so file parsing, KV sizing and
latency-model construction are memoised on their (hashable) inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from blis.config.kv_capacity import calculate_kv_blocks
from blis.config.model_config import (
    HardwareSpec,
    ModelConfig,
    defaults_cached,
    derive_max_model_len,
    load_hardware,
    load_model_config,
)
from blis.config.schema import DeploymentConfig, EngineConfig
from blis.errors import ConfigError
from blis.latency import LATENCY_MODELS, LatencyModel, build_latency_model

# ``--total-kv-blocks`` CLI default, used only when the GPU entry has no memory size to size from.
DEFAULT_TOTAL_KV_BLOCKS = 1_000_000


@dataclass
class ResolvedDeployment:
    """Everything an instance needs about what it runs; all defaults already applied."""

    model_config: ModelConfig
    hardware: HardwareSpec
    gpu: str
    tp: int
    dp: int
    total_kv_blocks: int
    max_model_len: int
    block_size: int
    latency: LatencyModel
    weight_bytes_per_param: float
    model: str = ""
    latency_model: str = ""


def _coeff_key(values) -> tuple | None:
    return None if values is None else tuple(float(v) for v in values)


@lru_cache(maxsize=512)
def _latency_cached(name: str, mc: ModelConfig, hw: HardwareSpec, tp: int, dp: int,
                    alpha: tuple | None, beta: tuple | None, backend: str) -> LatencyModel:
    return build_latency_model(name, mc, hw, tp, dp, alpha=None if alpha is None else list(alpha),
                               beta=None if beta is None else list(beta), moe_comm_backend=backend)


@lru_cache(maxsize=1024)
def _kv_blocks_cached(mc: ModelConfig, hw: HardwareSpec, tp: int, dp: int, block_size: int,
                      util: float, wbpp: float) -> int:
    return calculate_kv_blocks(mc, hw, tp, dp, block_size, util, wbpp)


def model_defaults(model: str) -> dict:
    """The ``defaults.yaml`` ``defaults[<model>]`` entry (GPU, tensor_parallelism), or {}."""
    table = defaults_cached().get("defaults") or {}
    entry = table.get(model.lower())
    return entry if isinstance(entry, dict) else {}


def resolve_deployment(dep: DeploymentConfig, engine: EngineConfig) -> ResolvedDeployment:
    """Apply defaults, load model/GPU data, size the KV cache and build the latency backend."""
    model = (dep.model or "").strip().lower()
    if not model:
        raise ConfigError("model", "a model is required (e.g. qwen/qwen3-14b)")
    if dep.latency_model not in LATENCY_MODELS:
        raise ConfigError("latency-model", f"unknown latency model '{dep.latency_model}'; known: "
                                           f"{', '.join(sorted(LATENCY_MODELS))}")
    mc = load_model_config(model, dep.model_config_folder)
    entry = model_defaults(model)
    gpu = dep.hardware or str(entry.get("GPU") or "")
    if not gpu:
        raise ConfigError("hardware", f"no GPU given and defaults.yaml has no entry for '{model}'")
    if dep.tp < 0:
        raise ConfigError("tp", f"must be > 0, got {dep.tp}")
    tp = dep.tp or int(entry.get("tensor_parallelism") or 0)
    if tp <= 0:
        raise ConfigError("tp", f"no tensor parallelism given and defaults.yaml has no entry "
                                f"for '{model}'")
    dp = dep.dp
    if dp < 1:
        raise ConfigError("dp", f"must be >= 1, got {dp}")
    util = dep.gpu_memory_utilization
    if not (math.isfinite(util) and 0 < util <= 1):
        raise ConfigError("gpu-memory-utilization", f"must be in (0, 1], got {util}")
    block_size = engine.block_size
    if block_size <= 0:
        raise ConfigError("block-size-in-tokens", f"must be > 0, got {block_size}")
    if dep.max_model_len < 0:
        raise ConfigError("max-model-len", f"must be >= 0, got {dep.max_model_len}")

    hw = load_hardware(gpu, dep.hardware_config)
    if dp > 1:
        if not mc.is_moe:
            raise ConfigError("dp", f"dp > 1 requires an MoE model; '{model}' is dense")
        if dep.latency_model != "trained-physics":
            raise ConfigError("dp", "dp > 1 requires --latency-model trained-physics")
    backend = getattr(dep, "moe_comm_backend", "") or ""
    latency = _latency_cached(dep.latency_model, mc, hw, tp, dp, _coeff_key(dep.alpha_coeffs),
                              _coeff_key(dep.beta_coeffs), backend)
    wbpp = mc.effective_weight_bytes_per_param

    if engine.total_kv_blocks is not None:
        blocks = int(engine.total_kv_blocks)
        if blocks <= 0:
            raise ConfigError("total-kv-blocks", f"must be > 0, got {blocks}")
    elif hw.memory_gib > 0:
        blocks = _kv_blocks_cached(mc, hw, tp, dp, block_size, float(util), wbpp)
        if blocks <= 0:
            raise ConfigError("tp", f"no KV blocks fit for '{model}' on {hw.name} with tp={tp}")
    else:
        blocks = DEFAULT_TOTAL_KV_BLOCKS

    capacity = blocks * block_size
    if dep.max_model_len == 0:
        max_len = derive_max_model_len(mc)
        if max_len > capacity:
            max_len = capacity
    else:
        max_len = dep.max_model_len
        need = -(-max_len // block_size)
        if need > blocks:
            raise ConfigError("max-model-len", f"{max_len} tokens need {need} KV blocks of "
                                               f"{block_size} tokens but only {blocks} exist")

    return ResolvedDeployment(model_config=mc, hardware=hw, gpu=hw.name, tp=tp, dp=dp,
                              total_kv_blocks=blocks, max_model_len=max_len,
                              block_size=block_size, latency=latency,
                              weight_bytes_per_param=wbpp, model=model,
                              latency_model=dep.latency_model)
