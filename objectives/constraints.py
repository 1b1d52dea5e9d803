"""Feasibility bounds on metrics, fed to Optuna as constraint values (<= 0 means feasible).

Optuna's constrained domination keeps infeasible trials off ``study.best_trials`` and ranks
them behind every feasible one, so a bound like ``ttft_p90_ms@critical <= 500`` or
``backlog <= 0`` is a hard requirement rather than a penalty weight to tune.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from blis.errors import ConfigError
from objectives.metrics import MetricRef, parse_metric

_KEYS = {"metric", "max", "min"}


@dataclass(frozen=True)
class Constraint:
    ref: MetricRef
    max: float | None = None
    min: float | None = None

    @property
    def name(self) -> str:
        bounds = []
        if self.min is not None:
            bounds.append(f">={self.min:g}")
        if self.max is not None:
            bounds.append(f"<={self.max:g}")
        return f"{self.ref.name}{''.join(bounds)}"

    def violation(self, value: float) -> float:
        """How far ``value`` lies outside the bounds, scaled by the bound (0 when satisfied).

        Scaling makes violations of differently sized metrics comparable when NSGA-II ranks
        infeasible trials; a non-finite value counts as a very large (finite) violation.
        """
        if math.isnan(value):
            return 1e12
        worst = 0.0
        if self.max is not None and value > self.max:
            worst = max(worst, (value - self.max) / max(abs(self.max), 1.0))
        if self.min is not None and value < self.min:
            worst = max(worst, (self.min - value) / max(abs(self.min), 1.0))
        return min(worst, 1e12)

    def satisfied(self, value: float) -> bool:
        return self.violation(value) <= 0.0

    def to_dict(self) -> dict:
        d = {"metric": self.ref.name}
        if self.min is not None:
            d["min"] = self.min
        if self.max is not None:
            d["max"] = self.max
        return d


def _bound(raw: dict, key: str, field: str) -> float | None:
    if key not in raw:
        return None
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{field}.{key}", f"must be a finite number, got {v!r}")
    return float(v)


def parse_constraint(raw: object, field: str) -> Constraint:
    """``{metric: NAME, max: X}`` and/or ``min: Y`` -> Constraint."""
    if not isinstance(raw, dict):
        raise ConfigError(field, "must be a mapping like {metric: backlog, max: 0}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"{field}.{sorted(unknown)[0]}", "unknown key (expected metric, max, min)")
    ref = parse_metric(raw.get("metric"), f"{field}.metric")
    lo, hi = _bound(raw, "min", field), _bound(raw, "max", field)
    if lo is None and hi is None:
        raise ConfigError(field, "needs a bound: max and/or min")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(field, f"empty bound: min {lo:g} > max {hi:g}")
    return Constraint(ref, max=hi, min=lo)
