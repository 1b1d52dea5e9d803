"""Search quality: normalised hypervolume vs budget, per shipped study and sampler, 3 seeds.

    .venv/bin/python benchmarks/search_quality.py [--studies a,b] [--seeds 3] [--json out.json]

Runs in-process, without Ray: Optuna ask/tell on an in-memory study, the study's objective
called directly, the driver's duplicate rule (a proposal equal to an evaluated configuration
is told PRUNED and costs nothing; a finite space that runs out ends the run). The simulator is
deterministic, so every distinct configuration is simulated once per study and its CPU time is
charged to every run that proposes it: a run's "CPU s" is the simulation CPU it would have
spent alone. Baseline and reference points are not enqueued (this compares the samplers).

Hypervolume: feasible trials only (every constraint met), objectives turned to minimisation and
scaled per study to [0, 1] between the best and worst feasible value any run or the
enumeration saw; reference point 1.1 in every dimension (fixed per study, the same for every
sampler and seed). The share is HV(front after n trials) / HV(true front) where the space is
finite and at most MAX_ENUMERATE points (enumerated once), else / HV(best front any run found).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optuna._hypervolume import compute_hypervolume  # noqa: E402

from blis.errors import ConfigError  # noqa: E402
from search.samplers import SAMPLERS, Space, make_sampler, parse_sampler, resolve_auto  # noqa: E402
from search.space import configurations, params_key, space_size, suggest  # noqa: E402
from search.study_file import load_study  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MAX_ENUMERATE = 500
MAX_REPEATS = 200  # as search.driver.MAX_DUPLICATES_IN_A_ROW
#: study -> (budgets, num_requests override or None); the larger budgets cost the most CPU
STUDIES = {
    "capacity_planning": ((10, 20, 24, 50), None),  # 24 trials = 1/3 of the 72-point space
    "pd_split": ((5, 10, 20), None),
    "routing_weights": ((10, 20, 50), 400),
    "autoscaler_thresholds": ((10, 20, 30), None),
    "admission_discovery": ((10, 20, 40), 900),
}
SAMPLER_ORDER = ("random", "grid", "tpe", "nsgaii", "gp")


def _override(spec, num_requests: int | None) -> None:
    if num_requests is None:
        return
    if isinstance(spec.base.get("workload_spec"), dict) and "num_requests" in spec.base["workload_spec"]:
        spec.base["workload_spec"]["num_requests"] = num_requests
    else:
        spec.base["num_requests"] = num_requests


class Evaluator:
    """One simulation per distinct configuration; (values as minimisation, feasible, CPU s) or None."""

    def __init__(self, spec):
        self.spec = spec
        self.objective = spec.objective()
        self.cache: dict[str, tuple | None] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, params: dict):
        key = params_key(params)
        if key not in self.cache:
            start = time.process_time()
            try:
                e = self.objective.evaluate(params)
                values = self.spec.minimised(e.values)
                ok = all(math.isfinite(v) for v in values)
                self.cache[key] = (e.values, values, all(v <= 0 for v in e.constraints.values()) and ok,
                                   list(e.constraints.values()))
            except Exception:  # a failed trial, as the driver records it
                self.cache[key] = None
            self.cpu[key] = time.process_time() - start
        return key, self.cache[key]


def run_one(spec, name: str, seed: int, budget: int, evaluator: Evaluator) -> dict:
    """Ask/tell until ``budget`` distinct configurations are evaluated (or the space runs out)."""
    spec.sampler, spec.sampler_options = name, ({"population_size": 10} if name == "nsgaii" else {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=spec.directions, sampler=make_sampler(spec, seed, budget))
        size = space_size(spec.parameters)
        seen: list[str] = []
        keys: set[str] = set()
        repeats = 0
        overhead = time.process_time()
        sim_cpu = 0.0
        while len(seen) < budget and (size is None or len(keys) < size) and repeats < MAX_REPEATS:
            trial = study.ask()
            params = suggest(trial, spec.parameters)
            t0 = time.process_time()
            key, result = evaluator(params)
            sim_cpu += time.process_time() - t0
            if key in keys:
                study.tell(trial, state=TrialState.PRUNED)
                repeats += 1
                continue
            repeats = 0
            keys.add(key)
            seen.append(key)
            if result is None:
                study.tell(trial, state=TrialState.FAIL)
                continue
            raw, _, _, violations = result
            if violations:
                study._storage.set_trial_system_attr(trial._trial_id, "constraints", violations)
            study.tell(trial, raw)
        overhead = time.process_time() - overhead - sim_cpu
    return {"keys": seen, "sampler_cpu": overhead}


def _front(points: np.ndarray) -> list[int]:
    """Indices of the non-dominated points (minimisation)."""
    return [i for i, p in enumerate(points) if not any(np.all(q <= p) and np.any(q < p) for q in points)]


def study_quality(name: str, seeds: int) -> dict:
    budgets, num_requests = STUDIES[name]
    spec = load_study(REPO / "studies" / f"{name}.yaml")
    _override(spec, num_requests)
    evaluator = Evaluator(spec)
    space = Space(spec.parameters)
    size = space_size(spec.parameters)
    runs, refused = {}, {}
    for sampler in SAMPLER_ORDER:
        try:
            parse_sampler(sampler, space)
        except ConfigError as e:
            refused[sampler] = e.message
            continue
        runs[sampler] = [run_one(spec, sampler, seed, budgets[-1], evaluator) for seed in range(seeds)]
        print(f"  {name}: {sampler} done ({len(evaluator.cache)} distinct configurations simulated)", file=sys.stderr, flush=True)
    true_keys = None
    if size is not None and size <= MAX_ENUMERATE:
        true_keys = [evaluator(c)[0] for c in configurations(spec.parameters)]
    feasible = {k: np.array(r[1]) for k, r in evaluator.cache.items() if r is not None and r[2]}
    pool = np.array(list(feasible.values()))
    lo, hi = pool.min(axis=0), pool.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    ref = np.full(len(lo), 1.1)

    def hv(keys) -> float:
        pts = [(feasible[k] - lo) / span for k in keys if k in feasible]
        if not pts:
            return 0.0
        pts = np.array(pts)
        return float(compute_hypervolume(pts[_front(pts)], ref))

    best_keys = true_keys if true_keys is not None else list(feasible)
    best = hv(best_keys)
    candidates = [k for k in best_keys if k in feasible]
    best_front = {candidates[i] for i in _front(np.array([feasible[k] for k in candidates]))}
    table = {}
    for sampler, rs in runs.items():
        rows = {}
        for b in budgets:
            shares = [hv(r["keys"][:b]) / best for r in rs]
            found = [len(best_front & set(r["keys"][:b])) / len(best_front) for r in rs]
            cpu = [sum(evaluator.cpu[k] for k in r["keys"][:b]) for r in rs]
            rows[b] = {"hv": float(np.mean(shares)), "hv_min": float(np.min(shares)), "front": float(np.mean(found)),
                       "cpu": float(np.mean(cpu)), "n": float(np.mean([len(r["keys"][:b]) for r in rs]))}
        table[sampler] = {"budgets": rows, "sampler_cpu": float(np.mean([r["sampler_cpu"] for r in rs]))}
    return {
        "study": name, "size": size, "budgets": budgets, "num_requests": num_requests, "refused": refused,
        "auto": {b: resolve_auto(space, b) for b in budgets}, "true_front": true_keys is not None,
        "front_points": len(best_front), "exhaustive_cpu": sum(evaluator.cpu[k] for k in true_keys) if true_keys else None,
        "simulation_cpu": sum(evaluator.cpu.values()), "table": table,
    }


def print_report(results: list[dict], seconds: float) -> None:
    for r in results:
        what = "true front by enumeration" if r["true_front"] else "best front any run found"
        extra = f", num_requests reduced to {r['num_requests']} for the benchmark" if r["num_requests"] else ""
        exh = f", exhaustive CPU {r['exhaustive_cpu']:.1f} s" if r["exhaustive_cpu"] else ""
        print(f"\n{r['study']}: {r['size'] or 'continuous'} configurations; HV share vs {what} "
              f"({r['front_points']} points){exh}{extra}")
        budgets = r["budgets"]
        print("| sampler | " + " | ".join(f"{b} trials: HV (min) / front / CPU s" for b in budgets) + " |")
        print("| --- |" + " ---: |" * len(budgets))
        for sampler, t in r["table"].items():
            cells = [f"{c['hv']:.3f} ({c['hv_min']:.3f}) / {c['front']:.2f} / {c['cpu']:.1f}" for c in (t["budgets"][b] for b in budgets)]
            print(f"| {sampler} | " + " | ".join(cells) + " |")
        print("sampler CPU s per run (ask/tell, excluded above): "
              + ", ".join(f"{s} {t['sampler_cpu']:.1f}" for s, t in r["table"].items()))
        print("auto runs: " + ", ".join(f"{b} trials -> {s}" for b, s in r["auto"].items()))
        for sampler, why in r["refused"].items():
            print(f"refused: {sampler}: {why}")
        if "random" in r["table"]:
            rnd = r["table"]["random"]["budgets"]
            for sampler, t in r["table"].items():
                below = [b for b in budgets if t["budgets"][b]["hv"] < rnd[b]["hv"] - 1e-9]
                if sampler != "random":
                    print(f"{sampler} vs random: " + ("at or above at every budget" if not below else f"below at {below}"))
    print(f"\nbenchmark CPU: {seconds:.0f} s (simulation {sum(r['simulation_cpu'] for r in results):.0f} s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", default=",".join(STUDIES))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    start = time.process_time()
    results = [study_quality(name, args.seeds) for name in args.studies.split(",")]
    print_report(results, time.process_time() - start)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    assert set(SAMPLER_ORDER) | {"auto"} == set(SAMPLERS)
    sys.exit(main())
