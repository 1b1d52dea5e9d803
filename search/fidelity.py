"""Multi-fidelity screening: candidates run on few requests first, only the best-ranked go on.

Optuna's pruners refuse multi-objective studies, so promotion is done here, as synchronous
successive halving over ``fidelity: {num_requests: [n0, n1, ..., full]}``: every search trial
runs at ``n0`` (those are the trials the sampler learns from and the budget counts); after the
search, the best-ranked share of each level is re-run at the next one, and only results at the
last (full) level form the front. The default share is ``n_i / n_(i+1)``, so each level costs
about the same CPU. Ranking is NSGA-II's: feasible before infeasible, then non-dominated rank,
then crowding distance (extremes first), then the earlier trial; infeasible candidates by total
violation. Promoted runs are trials with user attrs ``promoted_from`` (the search trial) and
``fidelity`` (their ``num_requests``); they cost no budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from objectives.objective import Objective
from search.progress import nondominated_ranks


@dataclass
class FidelitySpec:
    levels: list[int]  # num_requests per level, increasing; the last is the full fidelity
    share: float | None = None  # share promoted to the next level (default n_i / n_(i+1))

    def share_at(self, i: int) -> float:
        """Share of level ``i`` promoted to level ``i + 1``."""
        return self.share if self.share is not None else self.levels[i] / self.levels[i + 1]

    def to_dict(self) -> dict:
        d: dict = {"num_requests": list(self.levels)}
        if self.share is not None:
            d["share"] = self.share
        return d


def at_level(objective: Objective, num_requests: int) -> Objective:
    """The objective with every run capped at ``num_requests`` requests."""
    return replace(objective, base={**objective.base, "num_requests": num_requests})


def screening_objective(spec, simulate=None) -> Objective:
    """What a search trial evaluates: the lowest level when the study has ``fidelity:``."""
    objective = spec.objective(simulate)
    return at_level(objective, spec.fidelity.levels[0]) if spec.fidelity else objective


def full_objective(spec, simulate=None) -> Objective:
    objective = spec.objective(simulate)
    return at_level(objective, spec.fidelity.levels[-1]) if spec.fidelity else objective


def crowding(points: list[list[float]]) -> list[float]:
    """NSGA-II crowding distance of each point within its own set (inf at each objective's ends).

    An objective whose finite range is empty adds nothing; non-finite values sit at the ends.
    """
    n = len(points)
    dist = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for k in range(len(points[0])):
        order = sorted(range(n), key=lambda i: (points[i][k], i))
        dist[order[0]] = dist[order[-1]] = math.inf
        lo, hi = points[order[0]][k], points[order[-1]][k]
        span = hi - lo
        if not (math.isfinite(span) and span > 0):
            continue
        for a, i, b in zip(order, order[1:], order[2:]):
            gap = points[b][k] - points[a][k]
            dist[i] += gap / span if math.isfinite(gap) else math.inf
    return dist


def promotion_order(points: list[list[float]], violations: list[float]) -> list[int]:
    """Indices best first: feasible (violation <= 0) by (rank, -crowding, index), then the rest by violation."""
    feasible = [i for i, v in enumerate(violations) if v <= 0]
    infeasible = sorted((i for i, v in enumerate(violations) if v > 0), key=lambda i: (violations[i], i))
    ranks = nondominated_ranks([points[i] for i in feasible])
    key: dict[int, tuple] = {}
    for r in set(ranks):
        members = [i for i, ri in zip(feasible, ranks) if ri == r]
        for i, c in zip(members, crowding([points[i] for i in members])):
            key[i] = (r, -c, i)
    return sorted(feasible, key=key.__getitem__) + infeasible


def promote(points: list[list[float]], violations: list[float], share: float) -> list[int]:
    """The indices promoted to the next level: the best ``ceil(share * n)`` (at least one), best first."""
    if not points:
        return []
    count = max(1, math.ceil(share * len(points) - 1e-9))
    return promotion_order(points, violations)[:count]
