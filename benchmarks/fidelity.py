"""Fidelity against the real vLLM measurements in data/real/experiments (see blis/calibration/fit.py).

    .venv/bin/python benchmarks/fidelity.py [--quick] [--loo] [--profile-lengths] [--data DIR]

Prints, per experiment × stage, measured vs simulated E2E mean/p90/p99, TTFT mean/p90/p99 and
per-token ITL with signed % error, for trained-physics and roofline, then the median absolute %
error per metric over the non-overloaded experiments. ``--loo`` adds leave-one-experiment-out
calibration: for each non-overloaded experiment, ``blis.calibration.fit.calibrate`` fits the
trained-physics coefficients on the other non-overloaded experiments of the same deployment
(model + TP) and the held-out one is predicted with them. ``--quick`` caps stages at 120 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blis.calibration.fit import (METRICS, calibrate, experiment_options,  # noqa: E402
                            experiment_target, load_experiment, pct_err, simulate_stages)

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
    ap.add_argument("--loo-evals", type=int, default=6, help="least-squares evaluations per fold")
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
        errs = []
        ok = [e for e in exps if not e.overloaded]
        for held in ok:
            train = [e for e in ok if e is not held and e.model == held.model
                     and e.config["tensor_parallelism"] == held.config["tensor_parallelism"]]
            fit_wl = dict(wl, max_stage_s=a.loo_stage_s)
            targets = [experiment_target(e, experiment_options(e, **fit_wl)) for e in train]
            coeffs, before, after = calibrate(targets, max_nfev=a.loo_evals)
            sim = simulate_stages(experiment_options(held, coeffs=coeffs, **wl))
            for s, r in zip(sim, held.stages):
                errs.append({m: pct_err(s[m], r[m]) for m in METRICS})
            print(f"LOO {held.name[16:]}: trained on {len(train)}; rms log-error "
                  f"{before:.3f} -> {after:.3f}; held-out " + " ".join(
                      f"{m}={errs[-1][m]:+.1f}%" for m in ("e2e_mean", "ttft_mean", "itl_tok")),
                  flush=True)
        summary["trained-physics, calibrated (leave-one-out)"] = _medians(errs)
    print("\n### Median absolute % error over the non-overloaded experiments\n")
    print("| latency model | " + " | ".join(METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    for lm, med in summary.items():
        print(f"| {lm} | " + " | ".join(f"{med[m]:.1f}" for m in METRICS) + " |")
    print(f"\ntotal {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
