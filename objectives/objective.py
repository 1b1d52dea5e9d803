"""An objective: options built from trial parameters, simulated per seed, scored by metrics.

It is a plain picklable object so the search driver can ship it to Ray workers and call
``evaluate(params)`` there; ``simulate`` defaults to ``blis.api.simulate`` and can be replaced
(tests inject a fake, other tools could inject a surrogate model).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from objectives.constraints import Constraint
from objectives.metrics import METRICS, MetricError, MetricRef, Sample
from objectives.paths import apply_params

HEADLINE_METRICS = (
    "ttft_mean_ms ttft_p90_ms ttft_p99_ms itl_mean_ms e2e_mean_ms e2e_p90_ms e2e_p99_ms throughput_rps "
    "throughput_tps completion_rate rejection_rate backlog gpu_cost_per_hour"
).split()
HEADLINE_PER_CLASS = ("ttft_p90_ms", "e2e_p90_ms", "completion_rate", "rejection_rate")


@dataclass
class Evaluation:
    """Scores of one trial; metrics are means over seeds, ``spread`` their std/min/max."""

    values: list[float]
    constraints: dict[str, float]
    metrics: dict[str, float]
    spread: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time: the cost measure when machines are shared


@dataclass
class Objective:
    base: dict
    objectives: list[tuple[MetricRef, str]]
    constraints: list[Constraint] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    prices: dict = field(default_factory=dict)
    simulate: Callable[[dict], dict] | None = None

    def options(self, params: dict) -> dict:
        """The simulate() options of a trial (seed handling aside)."""
        return apply_params(self.base, params)

    def _simulate(self, options: dict) -> dict:
        if self.simulate is not None:
            return self.simulate(options)
        from blis.api import simulate

        return simulate(options)

    def _metrics_of(self, sample: Sample) -> dict[str, float]:
        required = [ref for ref, _ in self.objectives] + [c.ref for c in self.constraints]
        values = {ref.name: ref.value(sample) for ref in required}
        optional = [MetricRef(METRICS[name]) for name in HEADLINE_METRICS]
        for tier in sorted(sample.result.get("per_class") or {}):
            optional += [MetricRef(METRICS[name], tier) for name in HEADLINE_PER_CLASS]
        if "slo_attainment" in sample.result.get("cluster", {}):
            optional += [MetricRef(METRICS["slo_attainment"]), MetricRef(METRICS["goodput_rps"])]
        for ref in optional:
            if ref.name not in values:
                try:
                    values[ref.name] = ref.value(sample)
                except (MetricError, KeyError, ValueError):
                    continue
        return values

    def evaluate(self, params: dict) -> Evaluation:
        start, cpu = time.monotonic(), time.process_time()
        options = self.options(params)
        runs = [dict(options, seed=s) for s in self.seeds] or [options]
        per_seed = []
        for opts in runs:
            result = self._simulate(opts)
            try:
                per_seed.append(self._metrics_of(Sample(result, opts, self.prices)))
            except KeyError as e:
                raise MetricError(f"simulation result lacks {e}") from None
        names = [n for n in per_seed[0] if all(n in m for m in per_seed)]
        metrics = {n: _mean([m[n] for m in per_seed]) for n in names}
        spread = {}
        if len(per_seed) > 1:
            for n in names:
                xs = [m[n] for m in per_seed]
                finite = all(math.isfinite(x) for x in xs)
                spread[n] = {"std": statistics.pstdev(xs) if finite else math.inf, "min": min(xs), "max": max(xs)}
        return Evaluation(
            values=[metrics[ref.name] for ref, _ in self.objectives],
            constraints={c.name: c.violation(metrics[c.ref.name]) for c in self.constraints},
            metrics=metrics,
            spread=spread,
            seconds=time.monotonic() - start,
            cpu_seconds=time.process_time() - cpu,
        )


def _mean(xs: list[float]) -> float:
    return math.inf if any(math.isinf(x) for x in xs) else statistics.fmean(xs)
