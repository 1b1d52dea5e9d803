"""Roofline step time (spec §6.3): max(compute-bound, memory-bound) over the whole step.

Per-request FLOPs and bytes are affine in ``n`` and ``n × effective context``, so the
constructor reduces the model to a few coefficients; only the MoE weight term, which depends
on how many distinct experts a step's tokens touch, is evaluated per step.

Decode FLOPs are ``lin + ctx × progress`` per request. When both coefficients are whole numbers
(every model whose head size divides evenly), each term and every partial sum is an exact
integer in a float (far below 2**53 for any batch), so the decode total equals the closed form ``n × lin + ctx × Σprogress``
bit for bit: ``step_time_with_decodes`` then lets the engine advance decoders lazily.
"""

from __future__ import annotations

from blis.errors import ConfigError
from blis.latency import LatencyModel, check_coeffs, flops_per_us, moe_layer_split


class RooflineModel(LatencyModel):
    """Analytical backend. Alpha = (queueing base, queueing per input token, per output token)."""

    name = "roofline"

    def __init__(self, mc, hw, tp: int, dp: int = 1, alpha=None, beta=None,
                 moe_comm_backend: str = ""):
        alpha = check_coeffs("alpha-coeffs", [0.0, 0.0, 0.0] if alpha is None else alpha, 3, 3)
        self._validate(mc, hw, tp, dp, moe_comm_backend)
        self._alpha0, self._alpha1 = alpha[0], alpha[1]
        self._per_token = int(alpha[2])

        L, d, H = mc.num_layers, mc.hidden_size, mc.num_heads
        K = mc.num_kv_heads or H
        dH = d / H
        dKV = K * dH
        d_ff = mc.intermediate_size or 4 * d
        is_moe, E, k, n_moe, n_dense = moe_layer_split(mc)
        ff_moe = mc.moe_intermediate_size or d_ff
        ff_dense = mc.intermediate_size_mlp or d_ff
        wbpp = mc.effective_weight_bytes_per_param
        abpp = mc.bytes_per_param
        peak = flops_per_us(hw, wbpp) * 1e6
        bw = hw.bw_peak_tbs * 1e12

        mlp_per_token = n_moe * 2 * (2 * d * ff_moe) * k + n_dense * 2 * (2 * d * ff_dense)
        self._flops_lin = L * (2 * (d * d + 2 * d * dKV) + 2 * d * d) + L * 2 * d + mlp_per_token
        self._flops_ctx = L * 4 * H * dH + L * 5 * H
        self._pf_scale = 1.0 / (tp * peak * hw.mfu_prefill)
        self._dc_scale = 1.0 / (tp * peak * hw.mfu_decode)

        kv_token = 2 * L * K * dH * abpp
        self._dyn_per_new = kv_token + L * d * abpp
        self._dyn_per_ctx = kv_token
        self._static_weights = (L * (d * (d + 2 * dKV) + d * d) + n_dense * 2 * d * ff_dense) * wbpp
        self._moe_weights = n_moe * 2 * d * ff_moe * E * wbpp
        self._expert_miss = (E - k) / E if is_moe else 0.0
        self._mem_scale = 1.0 / (tp * bw)
        if not (self._flops_lin.is_integer() and float(self._flops_ctx).is_integer()):
            self.step_time_with_decodes = None  # decode sums would depend on the order

    @staticmethod
    def _validate(mc, hw, tp, dp, backend):
        if tp <= 0:
            raise ConfigError("tp", f"must be > 0, got {tp}")
        if dp != 1:
            raise ConfigError("dp", "roofline does not model data parallelism; use trained-physics")
        if backend:
            raise ConfigError("moe-comm-backend", "requires --latency-model trained-physics")
        if mc.num_heads <= 0 or mc.num_layers <= 0 or mc.hidden_size <= 0:
            raise ConfigError("model", "num_attention_heads, num_hidden_layers and hidden_size "
                                       "must be > 0")
        if mc.bytes_per_param <= 0:
            raise ConfigError("model", "unknown torch_dtype (bytes_per_param must be > 0)")
        if mc.num_experts >= 2 and mc.num_experts_per_tok > mc.num_experts:
            raise ConfigError("model", f"num_experts_per_tok {mc.num_experts_per_tok} exceeds "
                                       f"num_experts {mc.num_experts}")
        if (hw.tflops_peak <= 0 or hw.bw_peak_tbs <= 0 or hw.mfu_prefill <= 0
                or hw.mfu_decode <= 0):
            raise ConfigError("hardware", f"{hw.name}: TFlopsPeak, BwPeakTBs, mfuPrefill and "
                                          "mfuDecode must be > 0")

    def step_time(self, batch) -> int:
        if not batch:
            return 1
        return self._step_time(batch, 0, 0)

    def step_time_with_decodes(self, batch, n_dec: int, ctx_dec: int) -> int:
        """Step time of ``batch`` plus ``n_dec`` decoders whose progress sums to ``ctx_dec``."""
        if not batch and not n_dec:
            return 1
        return self._step_time(batch, n_dec, ctx_dec)

    def _step_time(self, batch, n_dec: int, ctx_dec: int) -> int:
        lin, ctxc = self._flops_lin, self._flops_ctx
        f_pf = 0.0
        f_dc = n_dec * lin + ctxc * ctx_dec if n_dec else 0.0
        new_tokens = n_dec
        ctx_tokens = ctx_dec
        for r in batch:
            p = r.progress_index
            if p < r.input_len:
                n = r.num_new_tokens
                eff = p + (n - 1) / 2 if n > 1 else p
                f_pf += n * (lin + ctxc * eff)
            elif r.output_len > 0:
                n = 1
                f_dc += lin + ctxc * p
            else:
                continue
            new_tokens += n
            ctx_tokens += p
        compute_s = f_pf * self._pf_scale + f_dc * self._dc_scale
        weights = self._static_weights
        if self._moe_weights:
            weights += self._moe_weights * (1.0 - self._expert_miss ** new_tokens)
        memory_s = (weights + self._dyn_per_new * new_tokens
                    + self._dyn_per_ctx * ctx_tokens) * self._mem_scale
        t = (compute_s if compute_s > memory_s else memory_s) * 1e6
        return int(t) if t >= 1 else 1

    def queueing_time(self, req) -> int:
        return int(self._alpha0 + self._alpha1 * req.input_len)

    def output_token_processing_time(self) -> int:
        return self._per_token

    def post_decode_fixed_overhead(self) -> int:
        return 0
