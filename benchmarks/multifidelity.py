"""Multi-fidelity search vs full-fidelity search: CPU seconds to reach the same hypervolume.

    .venv/bin/python benchmarks/multifidelity.py [--study studies/capacity_planning.yaml]
        [--full 2000] [--levels 125,500,2000] [--budgets 10,20,30,45] [--seeds 1,2,3] [--workers 2] [--fresh]

The study's ``num_requests`` is set to ``--full`` for the full-fidelity search and for the
reference (every configuration of the finite space at full fidelity: the true front); the
multi-fidelity search adds ``fidelity: {num_requests: LEVELS}``. Both searches run through
``search.driver.run_search`` (robust stage off, so only fidelity differs), resumed budget by
budget (so each budget's figures include what the smaller ones spent), or with ``--fresh`` as
one new study per budget. Hypervolume is that of
the feasible front of full-fidelity results, in objectives min-max normalised over the true
front with the reference point at 1.1 (1.0 = the true front's own hypervolume). CPU seconds
are the sum of the trials' process CPU times (``cpu_seconds``, promotions included), not wall
time, so other load on the machine does not enter them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from optuna.trial import TrialState  # noqa: E402

from search.reevaluate import pool  # noqa: E402
from search.space import configurations  # noqa: E402
from search.study_file import load_study, parse_study  # noqa: E402

REF = 1.1


def _vectors(trials, spec) -> list[list[float]]:
    """Feasible full-fidelity results as minimisation vectors."""
    return [spec.minimised(t.values) for t in trials
            if all(c <= 0 for c in (t.system_attrs.get("constraints") or []))]


def hypervolume(points: list[list[float]], lo: list[float], hi: list[float]) -> float:
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    if not points:
        return 0.0
    span = [h - l if h > l else 1.0 for l, h in zip(lo, hi)]
    norm = np.array([[(p[k] - lo[k]) / span[k] for k in range(len(lo))] for p in points])
    norm = norm[(norm < REF).all(axis=1)]
    if not len(norm):
        return 0.0
    return float(compute_hypervolume(norm, np.full(len(lo), REF)))


def exhaustive(spec, workers: int) -> tuple[list[list[float]], float]:
    """Every configuration at full fidelity: (feasible vectors, CPU seconds)."""
    from multiprocessing import Pool

    grid = list(configurations(spec.parameters))
    with Pool(workers) as pool_:
        results = pool_.map(_evaluate, [(spec.to_dict(), params) for params in grid])
    vectors = [spec.minimised(e.values) for e in results
               if e is not None and all(c <= 0 for c in e.constraints.values())]
    return vectors, sum(e.cpu_seconds for e in results if e is not None)


def _evaluate(job):
    raw, params = job
    try:
        return parse_study(raw).objective().evaluate(params)
    except Exception:  # an infeasible deployment (model does not fit): not on any front
        return None


def front_of(vectors: list[list[float]]) -> list[list[float]]:
    from search.progress import dominates

    return [v for v in vectors if not any(dominates(w, v) for w in vectors)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default=str(REPO / "studies" / "capacity_planning.yaml"))
    ap.add_argument("--full", type=int, default=2000)
    ap.add_argument("--levels", default="125,500,2000")
    ap.add_argument("--share", type=float, default=None)
    ap.add_argument("--budgets", default="10,20,30,45")
    ap.add_argument("--mf-budgets", default=None, help="budgets of the multi-fidelity search (default: --budgets)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fresh", action="store_true",
                    help="a new study per budget (default: resume the same study budget by budget; then a "
                         "multi-fidelity study re-promotes at every budget, and its CPU includes each round)")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    mf_budgets = [int(b) for b in (args.mf_budgets or args.budgets).split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    levels = [int(n) for n in args.levels.split(",")]

    raw = load_study(args.study).to_dict()
    raw["base"]["num_requests"] = args.full
    raw["robust"] = False
    full_spec = parse_study(raw)
    mf_raw = dict(raw, fidelity={"num_requests": levels, **({"share": args.share} if args.share else {})})

    t0 = time.perf_counter()
    true_vectors, true_cpu = exhaustive(full_spec, args.workers)
    true_front = front_of(true_vectors)
    lo = [min(v[k] for v in true_front) for k in range(len(true_front[0]))]
    hi = [max(v[k] for v in true_front) for k in range(len(true_front[0]))]
    print(f"{full_spec.name}: {len(true_vectors)} feasible configurations at full fidelity, true front {len(true_front)} points, "
          f"exhaustive CPU {true_cpu:.1f} s ({time.perf_counter() - t0:.0f} s wall), hv {hypervolume(true_front, lo, hi):.4f}")

    import ray

    from search.driver import run_search

    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode, study_raw, bs in (("full", raw, budgets), ("multi-fidelity", mf_raw, mf_budgets)):
            for seed in seeds:
                spec = parse_study(study_raw)
                for b in bs:
                    out = Path(tmp) / (f"{mode}-{seed}-{b}" if args.fresh else f"{mode}-{seed}")
                    study = run_search(spec, trials=b, workers=args.workers, out_dir=out, seed=seed, progress=False, report=False)
                    trials = study.get_trials(deepcopy=False)
                    cpu = sum(t.user_attrs.get("cpu_seconds", 0.0) for t in trials if t.state == TrialState.COMPLETE)
                    hv = hypervolume(front_of(_vectors(pool(trials, spec), spec)), lo, hi) / hypervolume(true_front, lo, hi)
                    rows.append((mode, b, seed, hv, cpu))
    ray.shutdown()

    print(f"\n| search | budget | HV / true HV (mean over seeds {seeds}) | min | CPU s (mean) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode in ("full", "multi-fidelity"):
        for b in (budgets if mode == "full" else mf_budgets):
            sel = [r for r in rows if r[0] == mode and r[1] == b]
            print(f"| {mode} | {b} | {sum(r[3] for r in sel) / len(sel):.3f} | {min(r[3] for r in sel):.3f} | "
                  f"{sum(r[4] for r in sel) / len(sel):.1f} |")
    print(f"| exhaustive | all | 1.000 | 1.000 | {true_cpu:.1f} |")
    print("\nCPU s to reach a mean HV (first budget at or above it; - = not reached):")
    for target in (0.95, 0.98, 0.99):
        cells = []
        for mode, bs in (("full", budgets), ("multi-fidelity", mf_budgets)):
            hit = "-"
            for b in bs:
                sel = [r for r in rows if r[0] == mode and r[1] == b]
                if sum(r[3] for r in sel) / len(sel) >= target:
                    hit = f"{sum(r[4] for r in sel) / len(sel):.1f} (budget {b})"
                    break
            cells.append(f"{mode} {hit}")
        print(f"  HV >= {target}: " + ", ".join(cells))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
