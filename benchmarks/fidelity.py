"""Fidelity against the real vLLM measurements in data/real/experiments (see blis/calibrate.py).

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

from blis.calibrate import (METRICS, calibrate, experiment_options,  # noqa: E402
                            experiment_target, jacobian, load_experiment, pct_err,
                            simulate_stages)

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


LOO_PARAMS = (("alpha", 0), ("alpha", 1), ("alpha", 2), ("beta", 0), ("beta", 2), ("beta", 3),
              ("beta", 4), ("beta", 5), ("beta", 6), ("beta", 9))
"""Every coefficient whose basis function is non-zero on these deployments (β₁, β₈: zero by
default and collinear with β₀/β₉; β₇, β₁₀: interleaved MoE and expert parallelism, absent)."""
LOO_RIDGE = 0.1


def _errs(exp, coeffs, wl):
    sim = simulate_stages(experiment_options(exp, coeffs=coeffs, **wl))
    return [{m: pct_err(s[m], r[m]) for m in METRICS} for s, r in zip(sim, exp.stages)]


def leave_one_out(ok, wl, a) -> dict:
    """Leave-one-experiment-out over ``ok``: for each experiment, fit ``LOO_PARAMS`` (one global
    set) on the others — all models, so the same-model experiments left in training and the
    model-dependent basis functions carry what is model-specific — and predict it.

    Training runs use ``--loo-stage-s`` stages; the Jacobian of every experiment's residuals is
    taken once at the default coefficients and reused by every fold (``calibrate(jac=...)``),
    so a fold costs ``--loo-evals`` simulations of its 12 training experiments. Each held-out
    prediction runs full-length stages.
    """
    fit_wl = dict(wl, max_stage_s=a.loo_stage_s)
    targets = {e.name: experiment_target(e, experiment_options(e, **fit_wl)) for e in ok}
    t0 = time.time()
    jac = {n: jacobian(t, params=LOO_PARAMS) for n, t in targets.items()}
    print(f"\nJacobians of {len(ok)} experiments: {time.time() - t0:.0f} s", flush=True)
    fitted = {}

    def fit_on(names):
        return calibrate([targets[n] for n in names], params=LOO_PARAMS, max_nfev=a.loo_evals,
                         jac=np.vstack([jac[n] for n in names]), ridge=LOO_RIDGE, robust=True)

    loo = []
    print("\n| held out | E2E mean | TTFT mean | ITL (per token) | training rms log-error |")
    print("|---|---:|---:|---:|---|")
    for held in ok:
        fit = fit_on([e.name for e in ok if e is not held])
        errs = _errs(held, fit.coeffs, wl)
        loo += errs
        fitted[held.name] = fit.coeffs
        for k, e in enumerate(errs):
            print(f"| {held.name[16:]} stage {k} | {e['e2e_mean']:+.1f} | {e['ttft_mean']:+.1f} | "
                  f"{e['itl_tok']:+.1f} | {fit.rms_before:.3f} -> {fit.rms_after:.3f} |", flush=True)
    every = fit_on([e.name for e in ok])
    inside = [x for e in ok for x in _errs(e, every.coeffs, wl)]
    print("\ncoefficients fitted on all:", {f"{v}{i}": round(every.coeffs[v][i], 4)
                                         for v, i in LOO_PARAMS})
    return {"trained-physics, calibrated, leave-one-experiment-out (12 of 13)": _medians(loo),
            "trained-physics, calibrated on all 13 (in-sample, not a prediction)": _medians(inside)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--loo", action="store_true")
    ap.add_argument("--profile-lengths", action="store_true",
                    help="use the profile's constant lengths instead of the measured distributions")
    ap.add_argument("--models", default="trained-physics,roofline")
    ap.add_argument("--loo-stage-s", type=float, default=120.0,
                    help="stage length (s) of the training runs inside calibration")
    ap.add_argument("--loo-evals", type=int, default=12, help="least-squares evaluations per fold")
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
