"""Trained-physics step time (spec §6.2): roofline basis functions scaled by fitted betas.

Every basis function is linear in a handful of batch aggregates (prefill tokens, prefill
attention work, decode count, decode context), so the constructor folds model, hardware and
parallelism into per-aggregate coefficients and ``step_time`` only accumulates the aggregates.
"""

from __future__ import annotations

from blis.config.model_config import defaults_cached
from blis.errors import ConfigError
from blis.latency import LatencyModel, check_coeffs, flops_per_us, moe_layer_split

ALL_GATHER_BACKENDS = frozenset({"", "naive", "allgather_reducescatter"})
ALL_TO_ALL_BACKENDS = frozenset({"pplx", "deepep_high_throughput", "deepep_low_latency", "mori",
                                 "flashinfer_all2allv"})


def default_coefficients() -> tuple[list[float], list[float]]:
    """The fitted (alpha, beta) from ``defaults.yaml`` ``trained_physics_coefficients``."""
    block = defaults_cached().get("trained_physics_coefficients") or {}
    return list(block.get("alpha_coeffs") or []), list(block.get("beta_coeffs") or [])


class TrainedPhysicsModel(LatencyModel):
    """Default backend. Alpha = (queueing, post-decode, per-output-token) in µs."""

    name = "trained-physics"

    def __init__(self, mc, hw, tp: int, dp: int = 1, alpha=None, beta=None,
                 moe_comm_backend: str = ""):
        def_alpha, def_beta = default_coefficients()
        alpha = check_coeffs("alpha-coeffs", def_alpha if alpha is None else alpha, 3, 3)
        given = check_coeffs("beta-coeffs", def_beta if beta is None else beta, 7, 11)
        B = given + [0.0] * (11 - len(given))
        if len(given) < 11:
            B[10] = B[3]
        self._validate(mc, hw, tp, dp, moe_comm_backend)

        self._queueing = int(alpha[0])
        self._post_decode = int(alpha[1])
        self._per_token = int(alpha[2])

        L, d, H = mc.num_layers, mc.hidden_size, mc.num_heads
        K = mc.num_kv_heads or H
        dH = d // H
        dKV = K * dH
        is_moe, E, k, n_moe, n_dense = moe_layer_split(mc)
        ff_moe = mc.moe_intermediate_size or mc.intermediate_size
        ff_dense = mc.intermediate_size_mlp or mc.intermediate_size
        shared_ff = mc.shared_expert_intermediate_size
        wbpp = mc.effective_weight_bytes_per_param
        abpp = mc.bytes_per_param
        tpdp = tp * dp
        moe_group = tpdp if is_moe else tp
        flops = flops_per_us(hw, wbpp)
        bw = hw.bw_peak_tbs * 1e6

        per_token_flops = (L * 2 * d * (2 * d + 2 * dKV) / tpdp
                           + n_moe * (k / moe_group) * 6 * d * ff_moe
                           + (n_moe * 6 * d * shared_ff / tpdp if n_moe > 0 else 0.0)
                           + n_dense * 6 * d * ff_dense / tpdp)
        comp_per_token = per_token_flops / flops
        attn = L * 4 * (H // tp) * dH / dp / flops
        kv = L * 2 * (dKV / tpdp) * 2 / bw

        weight_bytes = (L * d * (2 * d + 2 * dKV) * wbpp / tp
                        + n_moe * (E / moe_group) * 3 * d * ff_moe * wbpp
                        + n_moe * 3 * d * shared_ff * wbpp / tp
                        + n_dense * 3 * d * ff_dense * wbpp / tp)
        t_weight = weight_bytes / bw

        v_unit = d * abpp * 2 * (tp - 1) / tp / bw if tp > 1 else 0.0
        tp_comm = (L * v_unit + n_dense * v_unit) / dp
        if is_moe and n_moe > 0 and dp == 1 and tp > 1:
            tp_comm += n_moe * v_unit
        dispatch = 0.0
        if is_moe and dp > 1:
            frac = (moe_group - 1) / moe_group
            if moe_comm_backend in ALL_TO_ALL_BACKENDS:
                dispatch = n_moe * (1 / dp) * k * frac * 2 * d * abpp / bw
            else:
                dispatch = n_moe * (1 / dp) * frac * 2 * d * abpp / bw

        interleaved = is_moe and mc.interleave_moe_layer_step > 0
        self._const = B[2] * t_weight + B[4] * L + B[6] + (B[7] * n_moe if interleaved else 0.0)
        self._per_req = B[5]
        self._comm = B[3] * tp_comm + B[10] * dispatch
        self._comp = comp_per_token
        self._attn = attn
        self._kv = kv
        self._b_pf_comp, self._b_pf_kv = B[0], B[8]
        self._b_dc_comp, self._b_dc_kv = B[1], B[9]
        self._split_pf = len(given) >= 9
        self._split_dc = len(given) >= 10
        self.t_weight_us = t_weight

    @staticmethod
    def _validate(mc, hw, tp, dp, backend):
        if tp <= 0:
            raise ConfigError("tp", f"must be > 0, got {tp}")
        if dp < 1:
            raise ConfigError("dp", f"must be >= 1, got {dp}")
        if dp > 1 and mc.num_experts < 2:
            raise ConfigError("dp", "dp > 1 requires an MoE model")
        if mc.num_heads <= 0 or mc.num_layers <= 0 or mc.hidden_size <= 0:
            raise ConfigError("model", "num_attention_heads, num_hidden_layers and hidden_size "
                                       "must be > 0")
        if mc.num_heads % tp != 0:
            raise ConfigError("tp", f"num_attention_heads {mc.num_heads} not divisible by tp={tp}")
        if (mc.num_kv_heads or mc.num_heads) % tp != 0:
            raise ConfigError("tp", f"num_kv_heads {mc.num_kv_heads} not divisible by tp={tp}")
        if mc.intermediate_size <= 0:
            raise ConfigError("model", "intermediate_size must be > 0")
        if mc.bytes_per_param <= 0:
            raise ConfigError("model", "unknown torch_dtype (bytes_per_param must be > 0)")
        if hw.tflops_peak <= 0 or hw.bw_peak_tbs <= 0:
            raise ConfigError("hardware", f"{hw.name}: TFlopsPeak and BwPeakTBs must be > 0")
        if backend not in ALL_GATHER_BACKENDS and backend not in ALL_TO_ALL_BACKENDS:
            known = sorted((ALL_GATHER_BACKENDS | ALL_TO_ALL_BACKENDS) - {""})
            raise ConfigError("moe-comm-backend", f"unknown backend '{backend}'; known: "
                                                  f"{', '.join(known)}")

    def step_time(self, batch) -> int:
        if not batch:
            return 1
        return self.step_time_with_decodes(batch, 0, 0)

    def step_time_with_decodes(self, batch, n_dec: int, ctx_dec: int) -> int:
        """Step time of ``batch`` plus ``n_dec`` decoding requests whose progress sums to
        ``ctx_dec``: decodes enter only through integer totals, so they need not be listed."""
        tpf = 0
        pf_attn = 0.0
        tdc = n_dec
        ctx = ctx_dec
        for r in batch:
            n = r.num_new_tokens
            if r.progress_index < r.input_len:
                tpf += n
                pf_attn += n * (r.input_len + n / 2)
            elif r.output_len > 0:
                tdc += 1
                ctx += r.progress_index
        t = self._const + self._per_req * (len(batch) + n_dec) + self._comm * (tpf + tdc)
        if tpf:
            comp = self._comp * tpf + self._attn * pf_attn
            kv = self._kv * tpf
            if self._split_pf:
                t += self._b_pf_comp * comp + self._b_pf_kv * kv
            else:
                t += self._b_pf_comp * (comp if comp > kv else kv)
        if tdc:
            comp = self._comp * tdc + self._attn * ctx
            kv = self._kv * (ctx + tdc)
            if self._split_dc:
                t += self._b_dc_comp * comp + self._b_dc_kv * kv
            else:
                t += self._b_dc_comp * (comp if comp > kv else kv)
        return int(t) if t >= 1 else 1

    def queueing_time(self, req) -> int:
        return self._queueing

    def output_token_processing_time(self) -> int:
        return self._per_token

    def post_decode_fixed_overhead(self) -> int:
        return self._post_decode
