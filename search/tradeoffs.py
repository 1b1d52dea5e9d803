"""What a front point is and why it is on the list: labels, units, knee, 2-D fronts, trade-off text.

Shared by the Markdown, HTML and terminal reports so all three say the same thing in the same
numbers. Values are plain floats in objective units; ``directions`` say which way is better.
"""

from __future__ import annotations

import math

from objectives.cost import deployment_of, instance_groups
from objectives.metrics import METRICS
from search.progress import dominates

_DEPLOYMENT_PARAMS = {"num_instances", "hardware", "tp", "dp", "prefill_instances", "decode_instances",
                      "prefill_decode_instances", "prefill_tp", "decode_tp", "prefill_hardware", "decode_hardware"}


def unit(metric: str) -> str:
    """The registry unit of ``metric`` (``ttft_p90_ms@critical`` -> ``ms``); '' when unknown."""
    m = METRICS.get(metric.partition("@")[0])
    return m.unit if m else ""


def fmt(value: float | None, metric: str = "") -> str:
    """A value with its unit: ``$12.50/h``, ``312 ms``, ``88.9%``, ``1.2e+04 req/s``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    u = unit(metric)
    if u == "fraction":
        return f"{value * 100:.1f}%"
    if u == "$/h":
        return f"${value:,.2f}/h"
    if u == "$":
        return f"${value:,.2f}"
    number = f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3g}"
    return f"{number} {u}".strip() if u and u not in ("count", "requests") else number


def fmt_delta(delta: float, metric: str) -> str:
    """A signed difference in the metric's unit (percentage points for fractions)."""
    u = unit(metric)
    if u == "fraction":
        return f"{delta * 100:+.1f} pp"
    if u in ("$/h", "$"):
        return f"{'+' if delta >= 0 else '-'}${abs(delta):,.2f}{'/h' if u == '$/h' else ''}"
    return f"{delta:+.4g} {u}".strip() if u and u not in ("count", "requests") else f"{delta:+.4g}"


def _short(key: str) -> str:
    parts = key.split(".")
    return ".".join(parts[-2:]) if len(parts) > 2 and parts[-2] in ("sheddable", "standard", "critical") else parts[-1]


def _short_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def config_label(options: dict, params: dict) -> str:
    """``3×L40S TP1``, ``P 2×H100 TP1 + D 2×H100 TP2``, then the other searched parameters."""
    groups = [(n, hw, g) for n, hw, g in instance_groups(deployment_of(options)) if n > 0]
    pd = len(groups) > 1 or bool(options.get("prefill_instances"))
    tags = ["P ", "D ", ""] if pd else [""]
    deployment = " + ".join(f"{tag}{n}×{hw} TP{g}" for tag, (n, hw, g) in zip(tags, groups))
    others = [f"{_short(k)}={_short_value(v)}" for k, v in params.items() if k not in _DEPLOYMENT_PARAMS]
    return " · ".join([deployment] + others) if others else deployment


def _signed(values: list[float], directions: list[str]) -> list[float]:
    return [v if d == "minimize" else -v for v, d in zip(values, directions)]



def non_dominated(points: dict[int, list[float]], directions: list[str]) -> set[int]:
    """Keys of the points no other point dominates (under ``directions``)."""
    signed = {k: _signed(v, directions) for k, v in points.items()}
    return {k for k, v in signed.items() if not any(dominates(w, v) for j, w in signed.items() if j != k)}


def ideal_distance(points: dict[int, list[float]], directions: list[str]) -> dict[int, float]:
    """Distance to the ideal point after per-objective min-max normalisation (0 = ideal).

    The front point with the smallest distance is the knee: the most balanced trade-off.
    """
    if not points:
        return {}
    signed = {k: _signed(v, directions) for k, v in points.items()}
    dims = len(directions)
    lo = [min(v[d] for v in signed.values() if math.isfinite(v[d])) if any(math.isfinite(v[d]) for v in signed.values()) else 0.0 for d in range(dims)]
    hi = [max(v[d] for v in signed.values() if math.isfinite(v[d])) if any(math.isfinite(v[d]) for v in signed.values()) else 1.0 for d in range(dims)]
    out = {}
    for k, v in signed.items():
        parts = [((v[d] - lo[d]) / (hi[d] - lo[d]) if hi[d] > lo[d] else 0.0) for d in range(dims)]
        out[k] = math.sqrt(sum(p * p for p in parts)) if all(math.isfinite(p) for p in parts) else math.inf
    return out


def log_axis(values: list[float]) -> bool:
    """Log scale when positive values span more than ~1.3 decades (an outlier would squash the rest)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) >= 20


def _compare(row: list[float], other: list[float], names: list[str], directions: list[str]) -> tuple[list[str], list[str]]:
    """(gains, give-ups) of ``row`` relative to ``other``, one phrase per objective that differs."""
    gains, losses = [], []
    for v, o, m, d in zip(row, other, names, directions):
        if not (math.isfinite(v) and math.isfinite(o)) or v == o:
            continue
        better = v < o if d == "minimize" else v > o
        pct = f", {(v - o) / abs(o) * 100:+.0f}%" if o else ""
        (gains if better else losses).append(f"{m} {fmt(o, m)} → {fmt(v, m)} ({fmt_delta(v - o, m)}{pct})")
    return gains, losses


def _sentence(prefix: str, gains: list[str], losses: list[str]) -> str:
    if not gains and not losses:
        return f"{prefix}: same objectives."
    parts = []
    if gains:
        parts.append("gains " + "; ".join(gains))
    if losses:
        parts.append("gives up " + "; ".join(losses))
    return f"{prefix}: " + ", ".join(parts) + "."


def why(
    trial: int,
    front: list[tuple[int, list[float]]],
    names: list[str],
    directions: list[str],
    baseline: tuple[int, list[float]] | None,
    knee: int | None,
) -> list[str]:
    """Sentences explaining a front point: role, vs the baseline, vs its neighbours along objective 1.

    ``front`` is every front point as (trial, objective values); neighbours are the adjacent
    points when the front is sorted by the first objective, i.e. the next step along the
    trade-off curve in either direction.
    """
    values = dict(front)
    row = values[trial]
    out = []
    roles = []
    if trial == knee:
        roles.append("knee (most balanced: closest to the ideal point)")
    for i, (m, d) in enumerate(zip(names, directions)):
        col = [v[i] for v in values.values() if math.isfinite(v[i])]
        if col and math.isfinite(row[i]) and row[i] == (min(col) if d == "minimize" else max(col)):
            roles.append(f"best {m} on the front")
    if roles:
        out.append("; ".join(roles).capitalize() + ".")
    if baseline is not None and baseline[0] != trial:
        out.append(_sentence(f"vs baseline (trial {baseline[0]})", *_compare(row, baseline[1], names, directions)))
    order = sorted(values, key=lambda k: (values[k][0] if directions[0] == "minimize" else -values[k][0], k))
    i = order.index(trial)
    for j, side in ((i - 1, f"better {names[0]}"), (i + 1, f"worse {names[0]}")):
        if 0 <= j < len(order):
            other = order[j]
            out.append(_sentence(f"vs trial {other} (next with {side})", *_compare(row, values[other], names, directions)))
    return out
