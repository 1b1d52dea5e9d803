"""Step-time backends (spec §6): an analytical model maps a batch to GPU busy time in µs.

``step_time`` runs once per simulated engine step, so backends fold every model/hardware
constant into a few floats at construction and make a single pass over the batch.
"""

from __future__ import annotations

import math
from typing import Sequence

from blis.errors import ConfigError


class LatencyModel:
    """Interface shared by all backends (spec §6.1); every value is integer microseconds."""

    name = ""

    def step_time(self, batch: Sequence) -> int:
        """GPU time of one step over ``batch`` (requests with ``num_new_tokens > 0``); >= 1."""
        raise NotImplementedError

    step_time_with_decodes = None
    """Backends whose decode cost depends only on how many requests decode and their summed
    progress define ``step_time_with_decodes(batch, n_dec, ctx_dec)``; the engine then advances
    steadily decoding requests without visiting them every step (``blis.engine.instance``)."""

    def queueing_time(self, req) -> int:
        """Delay between instance arrival and entering the wait queue (not GPU time)."""
        raise NotImplementedError

    def output_token_processing_time(self) -> int:
        """Per-output-token streaming cost added to TTFT and every ITL sample."""
        raise NotImplementedError

    def post_decode_fixed_overhead(self) -> int:
        """Added once to the E2E latency of requests that produced at least one token."""
        raise NotImplementedError


def flops_per_us(hw, weight_bytes_per_param: float) -> float:
    """Compute rate in FLOP/µs; FP8 weights use the native FP8 rate when the GPU has one."""
    if weight_bytes_per_param == 1.0 and hw.tflops_fp8 > 0:
        return hw.tflops_fp8 * 1e6
    return hw.tflops_peak * 1e6


def moe_layer_split(mc) -> tuple[bool, int, int, int, int]:
    """(is_moe, experts, active experts per token, MoE layers, dense layers) as both step-time
    backends count them: interleaved MoE models alternate every ``step + 1`` layers."""
    is_moe = mc.num_experts >= 2
    L = mc.num_layers
    step = mc.interleave_moe_layer_step
    if is_moe and step > 0:
        n_moe = L // (step + 1)
    elif is_moe:
        n_moe = L
    else:
        n_moe = 0
    return is_moe, mc.num_experts, max(1, mc.num_experts_per_tok), n_moe, L - n_moe


def check_coeffs(field: str, values, min_len: int, max_len: int) -> list[float]:
    """Coefficient vectors must have an allowed length and be finite and non-negative."""
    vals = [float(v) for v in values]
    if not min_len <= len(vals) <= max_len:
        want = str(min_len) if min_len == max_len else f"{min_len}-{max_len}"
        raise ConfigError(field, f"expected {want} coefficients, got {len(vals)}")
    for v in vals:
        if not math.isfinite(v) or v < 0:
            raise ConfigError(field, f"coefficients must be finite and >= 0, got {v}")
    return vals


from blis.latency.roofline import RooflineModel  # noqa: E402
from blis.latency.trained_physics import TrainedPhysicsModel  # noqa: E402

LATENCY_MODELS = {"trained-physics": TrainedPhysicsModel, "roofline": RooflineModel}


def build_latency_model(name: str, mc, hw, tp: int, dp: int = 1, alpha=None, beta=None,
                        moe_comm_backend: str = "") -> LatencyModel:
    """Instantiate the backend registered under ``name`` (``None`` coefficients => defaults)."""
    cls = LATENCY_MODELS.get(name)
    if cls is None:
        raise ConfigError("latency-model", f"unknown latency model '{name}'; known: "
                                           f"{', '.join(sorted(LATENCY_MODELS))}")
    return cls(mc, hw, tp, dp, alpha=alpha, beta=beta, moe_comm_backend=moe_comm_backend)


__all__ = ["LatencyModel", "LATENCY_MODELS", "build_latency_model", "TrainedPhysicsModel",
           "RooflineModel", "flops_per_us", "check_coeffs"]
