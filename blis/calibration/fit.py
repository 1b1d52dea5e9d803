"""Real-measurement fidelity and calibration (``blis calibrate``, ``benchmarks/fidelity.py``).

An *experiment* is a directory as in ``data/real/experiments``: ``exp-config.yaml`` (server
settings), ``profile.yaml`` (the inference-perf load) and ``results/stage_<k>_lifecycle_metrics.json``
(measured per-stage latencies, seconds). Stage metrics are compared as the real files define them:
E2E and TTFT mean/p90/p99 per request, and the per-token ITL ``(E2E mean − TTFT mean) /
(median output length − 1)`` — the real ``inter_token_latency`` is per streamed chunk (about two
tokens), while the simulator emits one token per step, so only the per-token figure is comparable;
the same formula is applied to simulated requests.

Calibration fits trained-physics coefficients with ``scipy.optimize.least_squares`` on log-ratio
residuals (simulated / measured) of E2E mean, TTFT mean and per-token ITL per stage, with the
simulator in the loop. Only the coefficients that move these metrics are free (``FIT_PARAMS``);
the rest keep their defaults.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from blis.errors import ConfigError

KV_BLOCKS = {"meta-llama/llama-2-7b-hf": 7463, "meta-llama/llama-2-70b-hf": 31357,
             "mistralai/mixtral-8x7b-v0.1": 27511, "codellama/codellama-34b-instruct-hf": 26603}
"""KV blocks each real server allocated (vLLM log, 16 tokens/block; data/real/README.md)."""

METRICS = ("e2e_mean", "e2e_p90", "e2e_p99", "ttft_mean", "ttft_p90", "ttft_p99", "itl_tok")
FIT_METRICS = ("e2e_mean", "ttft_mean", "itl_tok")

# (vector, index) of the free coefficients: alpha0 queueing (TTFT offset), beta0 prefill compute
# (TTFT slope), beta9 decode memory (ITL), beta6 per-step constant (ITL and TTFT)
FIT_PARAMS = (("alpha", 0), ("beta", 0), ("beta", 9), ("beta", 6))


@dataclass
class Experiment:
    name: str
    path: Path
    config: dict
    profile: dict
    stages: list[dict]       # measured per-stage metrics (ms) + counts + output median
    overloaded: bool

    @property
    def model(self) -> str:
        return self.config["model"]


def _stage_metrics(d: dict) -> dict:
    s = d["successes"]
    lat = s["latency"]
    e2e, ttft = lat["request_latency"], lat["time_to_first_token"]
    out_med = s["output_len"]["median"]
    m = {"e2e_mean": e2e["mean"] * 1e3, "e2e_p90": e2e["p90"] * 1e3, "e2e_p99": e2e["p99"] * 1e3,
         "ttft_mean": ttft["mean"] * 1e3, "ttft_p90": ttft["p90"] * 1e3,
         "ttft_p99": ttft["p99"] * 1e3}
    m["itl_tok"] = (m["e2e_mean"] - m["ttft_mean"]) / max(out_med - 1, 1)
    m["count"] = s["count"]
    m["failures"] = (d.get("failures") or {}).get("count") or 0
    m["output_len"] = s["output_len"]
    m["prompt_len"] = s["prompt_len"]
    return m


def load_experiment(path: str | Path) -> Experiment:
    p = Path(path)
    try:
        config = yaml.safe_load((p / "exp-config.yaml").read_text())
        profile = yaml.safe_load((p / "profile.yaml").read_text())
        files = sorted((p / "results").glob("stage_*_lifecycle_metrics.json"),
                       key=lambda f: int(f.name.split("_")[1]))
        stages = [_stage_metrics(json.loads(f.read_text())) for f in files]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError("experiment", f"{p}: {e}") from None
    if not stages:
        raise ConfigError("experiment", f"{p}: no results/stage_<k>_lifecycle_metrics.json")
    sent = sum(st["count"] + st["failures"] for st in stages)
    overloaded = sum(st["failures"] for st in stages) > 0.25 * sent
    return Experiment(p.name, p, config, profile, stages, overloaded)


def _quantile_dist(q: dict, minus: int = 0) -> dict:
    """An empirical length distribution from a measured quantile summary (linear in between)."""
    keys = [("min", 0.0), ("p0.1", 0.001), ("p1", 0.01), ("p5", 0.05), ("p10", 0.1),
            ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("p90", 0.9), ("p95", 0.95),
            ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)]
    pts = [(max(1.0, q[k] - minus), f) for k, f in keys if k in q]
    grid = np.linspace(0, 1, 201)
    vals = np.interp(grid, [f for _, f in pts], [v for v, _ in pts])
    toks, counts = np.unique(np.maximum(1, np.round(vals)).astype(int), return_counts=True)
    return {"type": "empirical", "params": {str(t): float(c) / len(grid)
                                            for t, c in zip(toks, counts)}}


def experiment_workload(exp: Experiment, seed: int = 42, measured_lengths: bool = False,
                        max_stage_s: float = 0.0) -> dict:
    """The v2 spec of an experiment's load; ``max_stage_s`` shortens each stage (quick runs);
    ``measured_lengths`` samples prompt/output lengths from the measured distributions."""
    from blis.workload.inference_perf import profile_to_block

    block = profile_to_block(exp.profile)
    block["stages"] = [dict(s) for s in block["stages"]]
    sys_len = block["shared_prefix"]["system_prompt_len"]
    for s, m in zip(block["stages"], exp.stages):
        if max_stage_s:
            s["duration"] = min(s["duration"], max_stage_s)
        if measured_lengths:
            s["input_distribution"] = _quantile_dist(m["prompt_len"], sys_len)
            s["output_distribution"] = _quantile_dist(m["output_len"])
    return {"version": "2", "seed": seed, "inference_perf": block}


def experiment_options(exp: Experiment, latency_model: str = "trained-physics",
                       coeffs: dict | None = None, **wl) -> dict:
    c = exp.config
    opts = {"model": c["model"], "hardware": "H100", "tp": int(c["tensor_parallelism"]),
            "max_model_len": int(c["max_model_len"]),
            "max_num_batched_tokens": int(c["max_num_batched_tokens"]),
            "max_num_seqs": int(c["max_num_seqs"]), "latency_model": latency_model,
            "workload_spec": experiment_workload(exp, **wl)}
    kv = KV_BLOCKS.get(c["model"].lower())
    if kv:
        opts["total_kv_blocks"] = kv
    if coeffs:
        opts["alpha_coeffs"], opts["beta_coeffs"] = list(coeffs["alpha"]), list(coeffs["beta"])
    return opts


def simulate_stages(opts: dict) -> list[dict]:
    """Per-stage simulated metrics (ms) over requests whose arrival falls in the stage window."""
    from blis.config.options import build_config
    from blis.simulation import run_simulation

    res = run_simulation(build_config(opts), keep_requests=True)
    s = res.req_stats
    spec = opts["workload_spec"]["inference_perf"]["stages"]
    bounds = np.cumsum([0] + [int(round(st["duration"] * 1e6)) for st in spec])
    arr, ttft, e2e, outl = [], [], [], []
    for r in res.sim.routed.values():
        if r.id in s.e2e:
            arr.append(r.arrival_time)
            ttft.append(s.ttft[r.id] / 1e3)
            e2e.append(s.e2e[r.id] / 1e3)
            outl.append(r.output_len)
    arr, ttft, e2e, outl = map(np.asarray, (arr, ttft, e2e, outl))
    out = []
    for k in range(len(spec)):
        sel = (arr >= bounds[k]) & (arr < bounds[k + 1])
        if not sel.any():
            out.append({m: float("nan") for m in METRICS} | {"count": 0})
            continue
        e, t = e2e[sel], ttft[sel]
        m = {"e2e_mean": e.mean(), "e2e_p90": np.percentile(e, 90), "e2e_p99": np.percentile(e, 99),
             "ttft_mean": t.mean(), "ttft_p90": np.percentile(t, 90),
             "ttft_p99": np.percentile(t, 99), "count": int(sel.sum())}
        m["itl_tok"] = (m["e2e_mean"] - m["ttft_mean"]) / max(np.median(outl[sel]) - 1, 1)
        out.append({k2: float(v) for k2, v in m.items()})
    return out


def pct_err(sim: float, real: float) -> float:
    return (sim - real) / real * 100.0


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------

def default_coeffs() -> dict:
    from blis.latency.trained_physics import default_coefficients

    a, b = default_coefficients()
    b = b + [0.0] * (11 - len(b))
    return {"alpha": a, "beta": b}


def stage_simulator(opts: dict):
    """simulate(coeffs) -> per-stage metrics of the inference-perf run ``opts``."""
    def sim(coeffs: dict) -> list[dict]:
        return simulate_stages(dict(opts, alpha_coeffs=coeffs["alpha"], beta_coeffs=coeffs["beta"]))
    return sim


def experiment_target(exp: Experiment, opts: dict):
    """(simulate(coeffs) -> stage metrics, measured stages) for one experiment."""
    return stage_simulator(opts), exp.stages


@dataclass
class Fit:
    """A calibration's result; errors are median absolute % per metric over all stages."""
    coeffs: dict
    rms_before: float
    rms_after: float
    err_before: dict
    err_after: dict


def _median_errors(r: np.ndarray, metrics) -> dict:
    pct = np.abs(np.expm1(r.reshape(-1, len(metrics)))) * 100.0
    return {m: float(np.median(pct[:, j])) for j, m in enumerate(metrics)}


def _stage_residuals(simulated: list[dict], measured: list[dict], metrics) -> list[float]:
    """log(simulated / measured) per stage and metric; a stage the simulator leaves empty
    (or a non-positive value) costs 5."""
    return [math.log(s[m] / r[m]) if s[m] == s[m] and s[m] > 0 else 5.0
            for s, r in zip(simulated, measured) for m in metrics]


def coeffs_at(base: dict, params, z) -> dict:
    """``base`` with each coefficient of ``params`` scaled by its entry of ``z`` (set, if 0)."""
    c = {"alpha": list(base["alpha"]), "beta": list(base["beta"])}
    for (vec, i), v in zip(params, z):
        c[vec][i] = float(base[vec][i] * v if base[vec][i] > 0 else v)
    return c


def jacobian(target, base: dict | None = None, params=FIT_PARAMS, metrics=FIT_METRICS,
             step: float = 0.05) -> np.ndarray:
    """Forward-difference Jacobian of one target's residuals in the scaled coefficients
    (1 = ``base``); its rows stack in ``calibrate``'s residual order."""
    base = base or default_coeffs()
    sim_fn, real = target
    z = np.ones(len(params))
    r0 = np.asarray(_stage_residuals(sim_fn(coeffs_at(base, params, z)), real, metrics))
    cols = []
    for j in range(len(params)):
        zj = z.copy()
        zj[j] += step
        rj = np.asarray(_stage_residuals(sim_fn(coeffs_at(base, params, zj)), real, metrics))
        cols.append((rj - r0) / step)
    return np.column_stack(cols)


def stage_residuals(target, coeffs: dict, metrics=FIT_METRICS) -> np.ndarray:
    """One target's residuals (``calibrate``'s order) at ``coeffs``."""
    sim_fn, real = target
    return np.asarray(_stage_residuals(sim_fn(coeffs), real, metrics))


def linearised_fit(r0: np.ndarray, jac: np.ndarray, ridge: float = 0.0,
                   robust: bool = False) -> np.ndarray:
    """Scaled coefficients minimising the first-order model r0 + jac·(z − 1) with
    ``calibrate``'s loss, ridge and bounds — no simulation, so many fits over subsets of
    experiments (leave-one-out) share one set of simulations."""
    from scipy.optimize import least_squares

    k = jac.shape[1]
    A = np.vstack([jac, ridge * np.eye(k)]) if ridge else jac

    def fun(z):
        lin = r0 + jac @ (z - 1.0)
        return np.concatenate([lin, ridge * (z - 1.0)]) if ridge else lin

    kw = {"loss": "soft_l1", "f_scale": 0.2} if robust else {}
    return least_squares(fun, np.ones(k), jac=lambda z: A, bounds=(1e-3, 1e3), **kw).x


def calibrate(targets: list, base: dict | None = None, params=FIT_PARAMS,
              metrics=FIT_METRICS, max_nfev: int = 30, log=None, jac: np.ndarray | None = None,
              ridge: float = 0.0, robust: bool = False) -> Fit:
    """Least-squares fit of ``params`` so simulated metrics match measured ones.

    ``targets``: (simulate(coeffs) -> list of metric dicts, measured list of metric dicts).
    Residuals are log(simulated / measured). Coefficients are scaled (1 = ``base``) and kept in
    [1e-3, 1e3] × base. ``jac`` (rows of ``jacobian`` stacked per target) is a fixed Jacobian:
    each iteration then costs one simulation per target instead of 1 + len(params) (the chord
    method: it stops where jacᵀ·residuals = 0, the plain fit's point when the measurements can
    be matched exactly, near it while the true Jacobian changes little). ``ridge`` adds ridge·(scale − 1) per
    coefficient, pulling directions the data cannot tell apart back to ``base``; ``robust``
    uses a soft-L1 loss (scale 0.2 in log units) so a stage the simulator overloads cannot
    dominate the fit.
    """
    from scipy.optimize import least_squares

    base = base or default_coeffs()
    k = len(params)

    def measured_residuals(z: np.ndarray) -> np.ndarray:
        c = coeffs_at(base, params, z)
        r = np.asarray([v for sim_fn, real in targets
                        for v in _stage_residuals(sim_fn(c), real, metrics)])
        if log:
            log(f"  rms log-error {math.sqrt(np.mean(r ** 2)):.4f}")
        return r

    def fun(z):
        return np.concatenate([measured_residuals(z), ridge * (z - 1.0)]) if ridge else \
            measured_residuals(z)

    kw = {"diff_step": 0.02}
    if jac is not None:
        full = np.vstack([jac, ridge * np.eye(k)]) if ridge else jac
        kw = {"jac": lambda z: full}
    if robust:
        kw.update(loss="soft_l1", f_scale=0.2)
    z0 = np.ones(k)
    r0 = measured_residuals(z0)
    fit = least_squares(fun, z0, bounds=(1e-3, 1e3), max_nfev=max_nfev, xtol=1e-6, ftol=1e-6,
                        **kw)
    r1 = fit.fun[:len(r0)]
    return Fit(coeffs_at(base, params, fit.x), float(math.sqrt(np.mean(r0 ** 2))),
               float(math.sqrt(np.mean(r1 ** 2))), _median_errors(r0, metrics),
               _median_errors(r1, metrics))


# ---------------------------------------------------------------------------------------------
# Calibration from a per-request TraceV2 trace (``mode: real``)
# ---------------------------------------------------------------------------------------------

def trace_samples(rows: list[dict]) -> dict[int, tuple[int, float, float, float]]:
    """request_id -> (sent µs, TTFT ms, E2E ms, per-token ITL ms) of every completed row.

    TTFT = first chunk − send, E2E = last chunk − send (the client's view), per-token ITL =
    (last − first chunk) / (output tokens − 1); ``send_time_us`` falls back to the arrival time.
    """
    out = {}
    for row in rows:
        first, last = row["first_chunk_time_us"], row["last_chunk_time_us"]
        if row["status"] != "ok" or first <= 0 or last < first:
            continue
        sent = row["send_time_us"] or row["arrival_time_us"]
        n = row["output_tokens"]
        itl = (last - first) / (n - 1) / 1e3 if n > 1 else float("nan")
        out[row["request_id"]] = (sent, (first - sent) / 1e3, (last - sent) / 1e3, itl)
    return out


def trace_windows(samples: dict, order: list[int], windows: int) -> list[dict]:
    """Mean TTFT, E2E and per-token ITL per window of ``order`` (request ids by send time;
    equal-count windows), over the requests of ``samples`` in each window."""
    out = []
    n = len(order)
    for k in range(windows):
        ids = [i for i in order[k * n // windows:(k + 1) * n // windows] if i in samples]
        if not ids:
            out.append({m: float("nan") for m in FIT_METRICS} | {"count": 0})
            continue
        v = np.array([samples[i][1:] for i in ids], dtype=float)
        itl = v[:, 2][~np.isnan(v[:, 2])]
        out.append({"ttft_mean": float(v[:, 0].mean()), "e2e_mean": float(v[:, 1].mean()),
                    "itl_tok": float(itl.mean()) if itl.size else float("nan"),
                    "count": len(ids)})
    return out


def trace_options(header: dict, opts: dict) -> dict:
    """Simulator options for replaying a trace: the header's ``server`` block fills what the
    user did not give (model, TP, max_num_seqs, block size, context limit, memory share)."""
    srv = header.get("server") or {}
    from_header = {"model": srv.get("model"), "tp": srv.get("tensor_parallel"),
                   "max_num_seqs": srv.get("max_num_seqs"),
                   "block_size_in_tokens": srv.get("block_size"),
                   "max_model_len": srv.get("max_model_len"),
                   "gpu_memory_utilization": srv.get("gpu_memory_utilization")}
    out = {k: v for k, v in from_header.items() if v}
    out.update(opts)
    if not out.get("model"):
        raise ConfigError("model", "the trace header names no server model; pass --model")
    return out


def trace_target(header_path: str, data_path: str, opts: dict, windows: int = 10):
    """(simulate(coeffs) -> per-window metrics, measured per-window metrics) for a TraceV2 trace.

    Every completed row is replayed at its send time (shifted so the first send is 0; no
    horizon, so every request can finish) with the simulator's own per-request records turned
    into trace rows exactly as ``--trace-output`` writes them, then both sides go through
    ``trace_samples`` / ``trace_windows``: one definition of each metric.
    """
    from blis.config.options import build_config
    from blis.simulation import run_simulation
    from blis.workload.spec import load_yaml
    from blis.workload.tracev2 import load_trace, parse_trace_header, read_trace_rows, trace_rows_from_requests

    header = parse_trace_header(load_yaml(header_path, "trace-header"))
    real = trace_samples(read_trace_rows(data_path))
    if not real:
        raise ConfigError("trace-data", "no completed rows with first/last chunk times")
    if windows < 1:
        raise ConfigError("windows", f"must be >= 1, got {windows}")
    order = sorted(real, key=lambda i: (real[i][0], i))
    keep = {f"request_{i}" for i in real}
    base = trace_options(header, opts)
    build_config(base, replay=True)  # bad options fail before the first simulation

    def sim(coeffs: dict) -> list[dict]:
        cfg = build_config(dict(base, alpha_coeffs=coeffs["alpha"], beta_coeffs=coeffs["beta"]),
                           replay=True)
        _, reqs = load_trace(header_path, data_path, seed=cfg.seed)
        reqs = [r for r in reqs if r.id in keep]
        t0 = reqs[0].arrival_time
        for r in reqs:
            r.arrival_time -= t0
        res = run_simulation(cfg, requests=reqs, keep_requests=True)
        rows = trace_rows_from_requests(res.sim.arrived)
        for r, row in zip(res.sim.arrived, rows):
            row["request_id"] = int(r.id.rsplit("_", 1)[1])
        return trace_windows(trace_samples(rows), order, windows)

    return sim, trace_windows(real, order, windows)
