"""Metric registry: every number a study can optimise or constrain, keyed by its YAML name.

A metric reads one simulation result (the dict returned by ``blis.api.simulate``) together with
the options that produced it. Metrics marked ``per_class`` also accept an SLO tier suffix,
``<name>@<tier>`` (e.g. ``ttft_p90_ms@critical``), and then read ``result["per_class"][tier]``.
``static`` metrics depend on the options alone (cost, GPU count), so they can be evaluated
before any simulation runs.

Latency metrics of a scope that completed no request are ``inf`` rather than the simulator's
0 placeholder: a configuration that serves nothing must never look fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from blis.errors import ConfigError
from objectives.cost import cost_per_hour, deployment_of, num_gpus

MINIMIZE = "minimize"
MAXIMIZE = "maximize"
SLO_CLASSES = ("critical", "standard", "sheddable", "batch", "background", "default")


class MetricError(ValueError):
    """A metric cannot be read from a simulation result (the trial fails with this message)."""


@dataclass(frozen=True)
class Sample:
    """One simulation result together with the options and price table that produced it."""

    result: dict
    options: dict
    prices: dict

    def scope(self, slo_class: str | None) -> dict:
        if slo_class is None:
            return self.result["cluster"]
        per_class = self.result.get("per_class") or {}
        if slo_class not in per_class:
            known = ", ".join(sorted(per_class)) or "none"
            raise MetricError(f"SLO class {slo_class!r} is not in the simulation result (classes: {known})")
        return per_class[slo_class]

    def deployment(self) -> dict:
        dep = deployment_of(self.options)
        dep.update({k: v for k, v in (self.result.get("deployment") or {}).items() if k in dep and v})
        return dep


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str
    unit: str
    description: str
    fn: Callable[[Sample, str | None], float]
    per_class: bool = False
    static: bool = False


METRICS: dict[str, Metric] = {}


def register(name: str, direction: str, unit: str, description: str, *, per_class: bool = False, static: bool = False):
    def wrap(fn):
        METRICS[name] = Metric(name, direction, unit, description, fn, per_class, static)
        return fn

    return wrap


def _completed(scope: dict, slo_class: str | None) -> int:
    return int(scope.get("completed" if slo_class else "completed_requests", 0) or 0)


def _latency_reader(key: str):
    def read(s: Sample, slo_class: str | None) -> float:
        scope = s.scope(slo_class)
        if _completed(scope, slo_class) == 0:
            return math.inf
        if key not in scope:
            raise MetricError(f"{key} is missing from the simulation result")
        return float(scope[key])

    return read


_PER_CLASS_LATENCIES = {"ttft_mean_ms", "ttft_p90_ms", "ttft_p99_ms", "itl_mean_ms", "e2e_mean_ms", "e2e_p90_ms", "e2e_p99_ms"}
_LATENCY_TEXT = {"ttft": "time to first token", "itl": "inter-token latency", "e2e": "end-to-end latency"}
for _kind in ("ttft", "itl", "e2e"):
    for _stat in ("mean", "p90", "p95", "p99"):
        _key = f"{_kind}_{_stat}_ms"
        register(_key, MINIMIZE, "ms", f"{_stat} {_LATENCY_TEXT[_kind]}", per_class=_key in _PER_CLASS_LATENCIES)(
            _latency_reader(_key)
        )
register("scheduling_delay_p99_ms", MINIMIZE, "ms", "p99 delay from arrival to first scheduling")(
    _latency_reader("scheduling_delay_p99_ms")
)


def _num_offered(s: Sample, slo_class: str | None) -> int:
    if slo_class:
        return int(s.scope(slo_class).get("injected", 0) or 0)
    return int(s.result.get("num_requests", 0) or 0)


@register("slo_attainment", MAXIMIZE, "fraction", "share of offered requests meeting every SLO target of their class", per_class=True)
def _slo_attainment(s: Sample, slo_class: str | None) -> float:
    return float(s.scope(slo_class).get("slo_attainment", 0.0) or 0.0)


@register("goodput_rps", MAXIMIZE, "req/s", "requests per second that met their SLO targets", per_class=True)
def _goodput(s: Sample, slo_class: str | None) -> float:
    return float(s.scope(slo_class).get("goodput_rps", 0.0) or 0.0)


@register("throughput_rps", MAXIMIZE, "req/s", "completed requests per simulated second")
def _throughput_rps(s: Sample, slo_class: str | None) -> float:
    return float(s.scope(None).get("responses_per_sec", 0.0) or 0.0)


@register("throughput_tps", MAXIMIZE, "tok/s", "output tokens served per simulated second")
def _throughput_tps(s: Sample, slo_class: str | None) -> float:
    return float(s.scope(None).get("tokens_per_sec", 0.0) or 0.0)


@register("completed_requests", MAXIMIZE, "requests", "requests that completed", per_class=True)
def _completed_requests(s: Sample, slo_class: str | None) -> float:
    return float(_completed(s.scope(slo_class), slo_class))


@register("completion_rate", MAXIMIZE, "fraction", "completed / offered requests (served share)", per_class=True)
def _completion_rate(s: Sample, slo_class: str | None) -> float:
    offered = _num_offered(s, slo_class)
    return _completed(s.scope(slo_class), slo_class) / offered if offered else 0.0


@register("rejected_requests", MINIMIZE, "requests", "requests rejected by admission control", per_class=True)
def _rejected(s: Sample, slo_class: str | None) -> float:
    if slo_class:
        return float(s.scope(slo_class).get("rejected", 0) or 0)
    return float(s.result.get("rejected_requests", 0) or 0)


@register("rejection_rate", MINIMIZE, "fraction", "rejected / offered requests", per_class=True)
def _rejection_rate(s: Sample, slo_class: str | None) -> float:
    offered = _num_offered(s, slo_class)
    return _rejected(s, slo_class) / offered if offered else 0.0


@register("backlog", MINIMIZE, "requests", "still_queued + still_running + timed_out_requests at the end of the run")
def _backlog(s: Sample, slo_class: str | None) -> float:
    c = s.scope(None)
    return float(sum(int(c.get(k, 0) or 0) for k in ("still_queued", "still_running", "timed_out_requests")))


for _key, _text in (
    ("timed_out_requests", "requests whose deadline expired"),
    ("dropped_unservable", "requests dropped because they can never fit in KV cache"),
    ("preemption_count", "KV-pressure preemptions"),
):
    register(_key, MINIMIZE, "count", _text)(lambda s, c, _k=_key: float(s.scope(None).get(_k, 0) or 0))


@register("gpu_cost_per_hour", MINIMIZE, "$/h", "sum over instances of GPUs x $/GPU-hour (objectives/pricing.py)", static=True)
def _gpu_cost(s: Sample, slo_class: str | None) -> float:
    return cost_per_hour(s.deployment(), s.prices)


@register("num_gpus", MINIMIZE, "GPUs", "num_instances x tp x dp", static=True)
def _num_gpus(s: Sample, slo_class: str | None) -> float:
    return float(num_gpus(s.deployment()))


@register("cost_per_million_tokens", MINIMIZE, "$/Mtok", "gpu_cost_per_hour / output tokens per hour x 1e6")
def _cost_per_mtok(s: Sample, slo_class: str | None) -> float:
    tps = _throughput_tps(s, None)
    return _gpu_cost(s, None) / (tps * 3600.0) * 1e6 if tps > 0 else math.inf


def _fleet_reader(key: str):
    def read(s: Sample, slo_class: str | None) -> float:
        cluster = s.scope(None)
        if key not in cluster:
            raise MetricError(f"{key} needs node pools (policy_config.node_pools) in the configuration")
        return float(cluster[key])

    return read


register("cost_usd", MINIMIZE, "$", "dollars billed for the run's nodes (node pools: cost_per_hour x node-hours)")(
    _fleet_reader("cost_usd")
)
register("gpu_hours", MINIMIZE, "GPU-h", "GPU-hours provisioned over the run (node pools)")(_fleet_reader("gpu_hours"))
register("peak_instances", MINIMIZE, "instances", "most instances alive at once (node pools)")(
    _fleet_reader("peak_instances")
)


@dataclass(frozen=True)
class MetricRef:
    """A registry metric, optionally narrowed to one SLO tier."""

    metric: Metric
    slo_class: str | None = None

    @property
    def name(self) -> str:
        return f"{self.metric.name}@{self.slo_class}" if self.slo_class else self.metric.name

    def value(self, sample: Sample) -> float:
        return float(self.metric.fn(sample, self.slo_class))

    def static_value(self, options: dict, prices: dict) -> float:
        """Value computed from options alone; only valid for ``static`` metrics."""
        return self.value(Sample({}, options, prices))


def parse_metric(name: object, field: str) -> MetricRef:
    """``ttft_p90_ms`` or ``ttft_p90_ms@critical`` -> MetricRef; ConfigError naming ``field`` otherwise."""
    if not isinstance(name, str) or not name:
        raise ConfigError(field, f"metric must be a non-empty string, got {name!r}")
    base, _, slo_class = name.partition("@")
    metric = METRICS.get(base)
    if metric is None:
        raise ConfigError(field, f"unknown metric {base!r} (known: {', '.join(sorted(METRICS))})")
    if not slo_class:
        return MetricRef(metric)
    if not metric.per_class:
        per_class = ", ".join(sorted(m.name for m in METRICS.values() if m.per_class))
        raise ConfigError(field, f"metric {base!r} has no per-tier form (per-tier metrics: {per_class})")
    if slo_class not in SLO_CLASSES:
        raise ConfigError(field, f"unknown SLO tier {slo_class!r} (known: {', '.join(SLO_CLASSES)})")
    return MetricRef(metric, slo_class)
