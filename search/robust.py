"""Robust fronts: the front's candidates re-run on K fresh workload seeds, ranked by the means.

A search ranks configurations on the seeds it ran them with, so the front it finds is biased
toward configurations that got lucky. After the search, each candidate (the feasible front of
full-fidelity trials, plus the baseline) runs once per robust seed; those seeds are never the
search's own, so the means are free of that selection bias. The front and the ranking use the
means; each objective gets a 95 % t-interval over the seeds, and two neighbouring front points
are flagged indistinguishable when no objective's paired difference (same seeds, so common
random numbers) has a 95 % interval that excludes zero.

Re-evaluations are trials with user attrs ``robust_of`` (the candidate's trial) and
``robust_seed``; they cost no budget and a resumed run skips the ones already stored.

Default (no ``robust:`` key): K = 3 when the budget is at least ``DEFAULT_MIN_BUDGET`` trials,
and the re-evaluations then cost at most half the search: at most ``budget // (2 K)``
candidates (the baseline, then the front in promotion order: extremes and sparse regions
first). An explicit ``robust:`` re-evaluates the whole front unless ``candidates:`` caps it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace

from objectives.objective import Objective

DEFAULT_SEEDS = 3
DEFAULT_MIN_BUDGET = 30
LEVEL = 0.95


@dataclass
class RobustSpec:
    """``robust:`` of a study file; ``None`` fields are decided by the budget (see module doc)."""

    enabled: bool = True
    count: int | None = None  # K, when the seeds are derived
    seeds: list[int] = field(default_factory=list)  # explicit seeds
    candidates: int | None = None
    explicit: bool = False  # the study file has a robust: key

    def to_dict(self) -> dict | bool:
        if not self.enabled:
            return False
        d: dict = {"seeds": list(self.seeds) if self.seeds else self.count}
        if self.candidates is not None:
            d["candidates"] = self.candidates
        return d


def search_seeds(spec) -> set[int]:
    """Seeds the search itself ran with: the study's seeds:, else base / workload spec / default seed."""
    if spec.seeds:
        return set(spec.seeds)
    if "seed" in spec.base:
        return {int(spec.base["seed"])}
    workload = spec.base.get("workload_spec")
    if isinstance(workload, dict) and isinstance(workload.get("seed"), int):
        return {workload["seed"]}
    return {42}


def plan(spec, budget: int) -> tuple[list[int], int | None] | None:
    """(robust seeds, most candidates or None for all) for this run, or None: no robust stage."""
    r = spec.robust
    if not r.enabled or (not r.explicit and budget < DEFAULT_MIN_BUDGET):
        return None
    if r.seeds:
        seeds = list(r.seeds)
    else:
        used, seeds, s = search_seeds(spec), [], 1
        while len(seeds) < (r.count or DEFAULT_SEEDS):
            if s not in used:
                seeds.append(s)
            s += 1
    if r.candidates is not None or r.explicit:
        cap = r.candidates  # None: the whole front
    else:
        cap = max(1, budget // (2 * len(seeds)))
    return seeds, cap


def at_seed(objective: Objective, seed: int) -> Objective:
    return replace(objective, seeds=[seed])


def t_interval(xs: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95 % Student-t interval); inf for non-finite samples."""
    if any(not math.isfinite(x) for x in xs):
        return (math.inf if any(math.isinf(x) for x in xs) else math.nan), math.inf
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return mean, math.inf
    from scipy.stats import t

    return mean, float(t.ppf(0.5 + LEVEL / 2, len(xs) - 1)) * statistics.stdev(xs) / math.sqrt(len(xs))


def differs(a: list[float], b: list[float]) -> bool:
    """True when the paired mean difference of ``a`` and ``b`` has a 95 % interval without zero."""
    diffs = [x - y for x, y in zip(a, b)]
    if any(not math.isfinite(d) for d in diffs):
        return any(math.isinf(x) != math.isinf(y) for x, y in zip(a, b))
    mean, half = t_interval(diffs)
    return abs(mean) > half


@dataclass
class Summary:
    """A candidate's robust result: per-seed objective values, their means and half-widths."""

    trial: int
    samples: dict[int, list[float]]  # robust seed -> objective values
    means: list[float]
    halves: list[float]
    violations: list[float]  # mean constraint violations, spec order
    metrics: dict[str, float]
    failed: bool = False  # a robust seed failed: the configuration is not robust
    indistinct_from: list[int] = field(default_factory=list)


def summarise(trials, seeds: list[int]) -> dict[int, Summary]:
    """Summaries of every candidate with a stored re-evaluation on each of ``seeds``."""
    by: dict[int, dict[int, object]] = {}
    for t in trials:
        if "robust_of" in t.user_attrs and t.user_attrs.get("robust_seed") in seeds:
            by.setdefault(t.user_attrs["robust_of"], {})[t.user_attrs["robust_seed"]] = t
    out = {}
    for number, runs in by.items():
        if set(runs) != set(seeds):
            continue
        done = [runs[s] for s in seeds]
        if any(t.state.name != "COMPLETE" for t in done):
            out[number] = Summary(number, {}, [], [], [], {}, failed=True)
            continue
        samples = {s: list(runs[s].values) for s in seeds}
        stats = [t_interval([samples[s][k] for s in seeds]) for k in range(len(done[0].values))]
        n_cons = len(done[0].system_attrs.get("constraints") or [])
        violations = [statistics.fmean(t.system_attrs["constraints"][k] for t in done) for k in range(n_cons)]
        names = set.intersection(*(set(t.user_attrs.get("metrics") or {}) for t in done))
        metrics = {n: _mean([t.user_attrs["metrics"][n] for t in done]) for n in sorted(names)}
        out[number] = Summary(number, samples, [m for m, _ in stats], [h for _, h in stats], violations, metrics)
    return out


def _mean(xs: list[float]) -> float:
    return math.inf if any(math.isinf(x) for x in xs) else statistics.fmean(xs)


def flag_indistinct(front: list[Summary], directions: list[str], neighbours: int = 2) -> None:
    """Set ``indistinct_from`` of each front point: its nearest front neighbours (min-max normalised
    objective space) it cannot be told apart from on the robust seeds."""
    if len(front) < 2:
        return
    k = len(directions)
    lo = [min(p.means[i] for p in front) for i in range(k)]
    hi = [max(p.means[i] for p in front) for i in range(k)]

    def norm(p: Summary, i: int) -> float:
        span = hi[i] - lo[i]
        return (p.means[i] - lo[i]) / span if math.isfinite(span) and span > 0 else 0.0

    for p in front:
        others = sorted((q for q in front if q is not p),
                        key=lambda q: (sum((norm(p, i) - norm(q, i)) ** 2 for i in range(k)), q.trial))
        p.indistinct_from = sorted(
            q.trial for q in others[:neighbours]
            if not any(differs([p.samples[s][i] for s in p.samples], [q.samples[s][i] for s in p.samples]) for i in range(k))
        )


def changes(point: Summary, baseline: Summary) -> list[tuple[float, float]]:
    """Per objective: the relative change vs the baseline, seed by seed, as (mean, 95 % half-width)."""
    out = []
    for k in range(len(point.means)):
        ratios = [(point.samples[s][k] - baseline.samples[s][k]) / abs(baseline.samples[s][k])
                  if baseline.samples[s][k] else math.nan for s in point.samples]
        out.append(t_interval(ratios))
    return out
