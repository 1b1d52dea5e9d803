"""What the driver knows about the study as it runs, kept incrementally: O(1) per trial.

``Tally`` counts finished trials and keeps the feasible Pareto front of distinct configurations
(duplicates never enter it, so its size is the report's front size); ``Progress`` is the tqdm
bar that shows it. Neither rereads the storage after start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState


def is_interrupted(t: optuna.trial.FrozenTrial) -> bool:
    """A FAIL trial without ``error``: one a driver was interrupted on (it is re-enqueued)."""
    return t.state == TrialState.FAIL and "error" not in t.user_attrs


def is_duplicate(t: optuna.trial.FrozenTrial) -> bool:
    return "duplicate_of" in t.user_attrs


def is_extra(t: optuna.trial.FrozenTrial) -> bool:
    """A re-evaluation after the search (promotion to a higher fidelity, a robust seed)."""
    return "promoted_from" in t.user_attrs or "robust_of" in t.user_attrs


def counts_toward_budget(t: optuna.trial.FrozenTrial) -> bool:
    """Completed and failed search evaluations; interrupted trials, answered duplicates,
    over-budget trials (search.shared) and re-evaluations after the search are free."""
    if is_duplicate(t) or is_extra(t) or "over_budget" in t.user_attrs:
        return False
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and not is_interrupted(t))


def dominates(a: list[float], b: list[float]) -> bool:
    """Minimisation vectors: ``a`` is no worse everywhere and better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def nondominated_ranks(points: list[list[float]]) -> list[int]:
    """Rank 0 = not dominated, 1 = dominated only by rank 0, ... (minimisation vectors)."""
    ranks = [-1] * len(points)
    left, rank = list(range(len(points))), 0
    while left:
        front = [i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)]
        for i in front:
            ranks[i] = rank
        left = [i for i in left if ranks[i] < 0]
        rank += 1
    return ranks


@dataclass
class Tally:
    """Counts and the feasible front, updated as trials finish."""

    signs: list[float]  # +1 minimise, -1 maximise: front vectors are minimisation vectors
    complete: int = 0
    failed: int = 0
    duplicates: int = 0
    front: dict[int, list[float]] = field(default_factory=dict)

    @classmethod
    def of(cls, study: optuna.Study) -> "Tally":
        tally = cls([1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions])
        for t in study.get_trials(deepcopy=False):
            if is_extra(t):
                continue
            if is_duplicate(t):
                tally.duplicates += 1
            elif t.state == TrialState.COMPLETE:
                tally.add_complete(t.number, t.values, t.constraints)
            elif t.state == TrialState.FAIL and not is_interrupted(t):
                tally.failed += 1
        return tally

    def add_complete(self, number: int, values: list[float], constraints: dict[str, float]) -> None:
        self.complete += 1
        if any(v > 0 for v in constraints.values()):
            return
        point = [s * v for s, v in zip(self.signs, values)]
        if any(dominates(other, point) for other in self.front.values()):
            return
        for k in [k for k, other in self.front.items() if dominates(point, other)]:
            del self.front[k]
        self.front[number] = point


class Progress:
    """tqdm bar over the budget: ok / failed / duplicates avoided / front size, with tqdm's ETA."""

    def __init__(self, tally: Tally, budget: int, done: int, enabled: bool, name: str):
        from tqdm import tqdm

        self.tally = tally
        self.bar = tqdm(total=budget, initial=min(done, budget), disable=not enabled, desc=name,
                        unit="trial", dynamic_ncols=True)
        self.refresh()

    def refresh(self, step: int = 0) -> None:
        if self.bar.disable:
            return
        t = self.tally
        self.bar.set_postfix(ok=t.complete, failed=t.failed, dup=t.duplicates, front=len(t.front), refresh=False)
        self.bar.update(step)

    def close(self) -> None:
        self.bar.close()
