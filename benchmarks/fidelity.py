"""Fidelity against the real vLLM measurements in data/real/experiments (see blis/calibration/fit.py).

    .venv/bin/python benchmarks/fidelity.py [--quick] [--loo] [--profile-lengths] [--data DIR]

Prints, per experiment × stage, measured vs simulated E2E mean/p90/p99, TTFT mean/p90/p99 and
per-token ITL with signed % error, for trained-physics and roofline, then the median absolute %
error per metric over the non-overloaded experiments. ``--loo`` adds leave-one-experiment-out
calibration (``leave_one_out``): each non-overloaded experiment is predicted with one global set
of trained-physics coefficients fitted on the other 12. ``--quick`` caps stages at 120 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blis.calibration.fit import (  # noqa: E402
    METRICS,
    coeffs_at,
    default_coeffs,
    experiment_options,
    experiment_target,
    jacobian,
    linearised_fit,
    load_experiment,
    pct_err,
    simulate_stages,
    stage_residuals,
)

DEFAULT_DATA = "/work/shared/data/real/experiments"


def _row(name, k, real, sim):
    return [name, str(k)] + [f"{real[m]:.1f}/{sim[m]:.1f} ({pct_err(sim[m], real[m]):+.1f}%)"
                             for m in METRICS]


def _medians(errs: list[dict]) -> dict:
    return {m: float(np.median([abs(e[m]) for e in errs])) for m in METRICS}


def _print_table(rows):
    head = ["experiment", "stage"] + [f"{m} real/sim" for m in METRICS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


LOO_PARAMS = (("alpha", 0), ("beta", 0), ("beta", 2), ("beta", 4), ("beta", 6), ("beta", 9))
"""The global terms whose basis functions differ between these deployments enough to matter:
queueing α₀, prefill compute β₀, weight traffic β₂, per-layer β₄, per-step β₆, KV traffic β₉
(TP communication β₃ and per-request β₅ are < 1 % of a step here)."""
LOO_RIDGE = 0.1


def _errs(exp, coeffs, wl):
    sim = simulate_stages(experiment_options(exp, coeffs=coeffs, **wl))
    return [{m: pct_err(s[m], r[m]) for m in METRICS} for s, r in zip(sim, exp.stages)]


DEPLOYMENT_PARAMS = (0, 2, 5)
"""Indices into ``LOO_PARAMS`` refitted per deployment: α₀, β₂, β₉ (TTFT offset, decode scale
with the weights, decode growth with the context)."""


def _deployment(e):
    return e.model, e.config["tensor_parallelism"]


def leave_one_out(ok, wl, a) -> dict:
    """Leave-one-experiment-out over ``ok``; the experiment predicted is never in its fold's
    training data. Two calibrations per fold:

    - global: one set of ``LOO_PARAMS`` fitted on the other 12 experiments (all four models;
      the model-dependent basis functions carry what is model-specific);
    - global + deployment: then ``DEPLOYMENT_PARAMS`` refitted on the training experiments of
      the held-out one's deployment (2–3 other profiles of the same model and TP), ridge-pulled
      towards the global fit.

    Each experiment's residuals and Jacobian are simulated once, at the default coefficients,
    with ``--loo-stage-s`` stages (``--loo-cache`` keeps them); a fold solves the linearised
    problem (``linearised_fit``, no simulation) and the held-out experiment is then simulated
    with the fitted coefficients, full-length stages.
    """
    base = default_coeffs()
    cache = Path(a.loo_cache) if a.loo_cache else None
    if cache and cache.exists():
        z = np.load(cache)
        r0 = {e.name: z[f"r0/{e.name}"] for e in ok}
        jac = {e.name: z[f"jac/{e.name}"] for e in ok}
    else:
        fit_wl = dict(wl, max_stage_s=a.loo_stage_s)
        t0 = time.time()
        targets = {e.name: experiment_target(e, experiment_options(e, **fit_wl)) for e in ok}
        r0 = {n: stage_residuals(t, base) for n, t in targets.items()}
        jac = {n: jacobian(t, params=LOO_PARAMS) for n, t in targets.items()}
        print(f"\nresiduals and Jacobians of {len(ok)} experiments: {time.time() - t0:.0f} s",
              flush=True)
        if cache:
            np.savez(cache, **{f"r0/{n}": v for n, v in r0.items()},
                     **{f"jac/{n}": v for n, v in jac.items()})

    def fit_global(names):
        return linearised_fit(np.concatenate([r0[n] for n in names]),
                              np.vstack([jac[n] for n in names]), ridge=LOO_RIDGE, robust=True)

    def fit_deployment(z_g, names):
        sub = list(DEPLOYMENT_PARAMS)
        J = np.vstack([jac[n] for n in names])
        r_at_g = np.concatenate([r0[n] for n in names]) + J @ (z_g - 1.0)
        w = linearised_fit(r_at_g, J[:, sub], ridge=LOO_RIDGE, robust=True)
        z = z_g.copy()
        z[sub] += w - 1.0
        return z

    rows = {"global": [], "deployment": []}
    print("\n| held out | E2E mean | TTFT mean | ITL (per token) | same, + deployment refit |")
    print("|---|---:|---:|---:|---|")
    for held in ok:
        train = [e.name for e in ok if e is not held]
        same = [e.name for e in ok if e is not held and _deployment(e) == _deployment(held)]
        z_g = fit_global(train)
        z_d = fit_deployment(z_g, same)
        eg = _errs(held, coeffs_at(base, LOO_PARAMS, z_g), wl)
        ed = _errs(held, coeffs_at(base, LOO_PARAMS, z_d), wl)
        rows["global"] += eg
        rows["deployment"] += ed
        for k, (g, d) in enumerate(zip(eg, ed)):
            print(f"| {held.name[16:]} stage {k} | {g['e2e_mean']:+.1f} | {g['ttft_mean']:+.1f} | "
                  f"{g['itl_tok']:+.1f} | {d['e2e_mean']:+.1f} / {d['ttft_mean']:+.1f} / "
                  f"{d['itl_tok']:+.1f} |", flush=True)
    z_all = fit_global([e.name for e in ok])
    print("global scale fitted on all 13:", dict(zip((f"{v[0]}{i}" for v, i in LOO_PARAMS),
                                                     np.round(z_all, 3))))
    inside = [x for e in ok for x in _errs(e, coeffs_at(base, LOO_PARAMS, z_all), wl)]
    return {"calibrated (global, 12 of 13), leave-one-experiment-out": _medians(rows["global"]),
            "calibrated (global + deployment refit), leave-one-experiment-out":
                _medians(rows["deployment"]),
            "calibrated (global) on all 13: in-sample, not a prediction": _medians(inside)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--loo", action="store_true")
    ap.add_argument("--profile-lengths", action="store_true",
                    help="use the profile's constant lengths instead of the measured distributions")
    ap.add_argument("--models", default="trained-physics,roofline")
    ap.add_argument("--loo-cache", default="",
                    help="npz file keeping the leave-one-out residuals and Jacobians (reused "
                         "when it exists)")
    ap.add_argument("--loo-stage-s", type=float, default=60.0,
                    help="stage length (s) of the training runs inside calibration")
    a = ap.parse_args(argv)
    wl = {"measured_lengths": not a.profile_lengths, "max_stage_s": 120.0 if a.quick else 0.0}
    exps = [load_experiment(p) for p in sorted(Path(a.data).iterdir()) if p.is_dir()]
    summary = {}
    t0 = time.time()
    for lm in filter(None, a.models.split(",")):
        rows, errs = [], []
        for exp in exps:
            sim = simulate_stages(experiment_options(exp, lm, **wl))
            for k, (s, r) in enumerate(zip(sim, exp.stages)):
                tag = exp.name[16:] + (" (overloaded)" if exp.overloaded else "")
                rows.append(_row(tag, k, r, s))
                if not exp.overloaded:
                    errs.append({m: pct_err(s[m], r[m]) for m in METRICS})
        print(f"\n### {lm} (ms; real/sim (signed error))\n")
        _print_table(rows)
        summary[lm] = _medians(errs)
        print(f"\n{len(errs)} stages of non-overloaded experiments; {time.time() - t0:.0f} s so far")
    if a.loo:
        summary.update(leave_one_out([e for e in exps if not e.overloaded], wl, a))
    print("\n### Median absolute % error over the non-overloaded experiments\n")
    print("| latency model | " + " | ".join(METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    for lm, med in summary.items():
        print(f"| {lm} | " + " | ".join(f"{med[m]:.1f}" for m in METRICS) + " |")
    print(f"\ntotal {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
