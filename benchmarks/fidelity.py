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

from blis.calibrate import (METRICS, coeffs_at, default_coeffs,  # noqa: E402
                            experiment_options, experiment_target, jacobian, linearised_fit,
                            load_experiment, pct_err, simulate_stages, stage_residuals)

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


def leave_one_out(ok, wl, a) -> dict:
    """Leave-one-experiment-out over ``ok``: for each experiment, fit ``LOO_PARAMS`` (one global
    set) on the others — all models, so the same-model experiments left in training and the
    model-dependent basis functions carry what is model-specific — and predict it.

    Each experiment's residuals and their Jacobian are simulated once, at the default
    coefficients, with ``--loo-stage-s`` stages; a fold solves the linearised problem over its
    12 training experiments (``linearised_fit``, no simulation) and the held-out experiment is
    then simulated with the fitted coefficients, full-length stages. The training data of a
    fold never includes the experiment it predicts.
    """
    fit_wl = dict(wl, max_stage_s=a.loo_stage_s)
    base = default_coeffs()
    targets = {e.name: experiment_target(e, experiment_options(e, **fit_wl)) for e in ok}
    t0 = time.time()
    r0 = {n: stage_residuals(t, base) for n, t in targets.items()}
    jac = {n: jacobian(t, params=LOO_PARAMS) for n, t in targets.items()}
    print(f"\nresiduals and Jacobians of {len(ok)} experiments: {time.time() - t0:.0f} s",
          flush=True)

    def fit_on(names):
        z = linearised_fit(np.concatenate([r0[n] for n in names]),
                           np.vstack([jac[n] for n in names]), ridge=LOO_RIDGE, robust=True)
        return coeffs_at(base, LOO_PARAMS, z)

    loo = []
    print("\n| held out | E2E mean | TTFT mean | ITL (per token) | fitted scale " +
          " ".join(f"{v[0]}{i}" for v, i in LOO_PARAMS) + " |")
    print("|---|---:|---:|---:|---|")
    for held in ok:
        coeffs = fit_on([e.name for e in ok if e is not held])
        errs = _errs(held, coeffs, wl)
        loo += errs
        scale = " ".join(f"{coeffs[v][i] / base[v][i]:.2f}" for v, i in LOO_PARAMS)
        for k, e in enumerate(errs):
            print(f"| {held.name[16:]} stage {k} | {e['e2e_mean']:+.1f} | {e['ttft_mean']:+.1f} | "
                  f"{e['itl_tok']:+.1f} | {scale} |", flush=True)
    every = fit_on([e.name for e in ok])
    inside = [x for e in ok for x in _errs(e, every, wl)]
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
