"""report.html: one self-contained page (plotly.js embedded) with interactive fronts and the ranked table.

Every objective pair gets a scatter: infeasible and dominated trials in grey, every point of
the N-D front in blue with a full hover card (configuration, objectives, headline metrics,
per-tier rejection, ``blis run`` command), the baseline and the knee marked, and the pair's own
2-D non-dominated set joined by a step line (for 3+ objectives an N-D front point is not
necessarily non-dominated in a 2-D projection). Axes go logarithmic where values span decades.
No network is needed to view it.
"""

from __future__ import annotations

import html
import math
import textwrap
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from search import tradeoffs
from search.report import Point, _axis_title, objective_pairs
from search.study_file import StudySpec

FRONT_TRACE = "Pareto front"


def _card(p: Point, names: list[str], rank: int | None) -> str:
    head = f"<b>{'#' + str(rank) + ' ' if rank else ''}trial {p.trial}: {html.escape(p.label)}</b>"
    lines = [head]
    lines += [f"{m}: <b>{html.escape(p.pm(i, m))}</b>" for i, m in enumerate(names)]
    if p.indistinct_from:
        lines.append(f"statistically indistinguishable from trial(s) {', '.join(map(str, p.indistinct_from))}")
    lines += [f"{k}: {tradeoffs.fmt(v, k)}" for k, v in list(p.headline(names).items())[:8]]
    rej = p.rejection()
    if rej:
        lines.append("rejected: " + ", ".join(f"{t} {tradeoffs.fmt(v, 'rejection_rate')}" for t, v in rej.items()))
    if p.score is not None:
        lines.append(f"score: {p.score:.3f}")
    lines += [html.escape(part) for part in textwrap.wrap(p.command, 90, subsequent_indent="    ")]
    return "<br>".join(lines)


def _error_bars(points: list[Point], names: list[str], metric: str) -> dict:
    """95 % intervals over the robust seeds as symmetric error bars."""
    i = names.index(metric)
    return dict(type="data", array=[p.halves[i] if math.isfinite(p.halves[i]) else 0 for p in points], thickness=1, width=3)


def _other_card(row, names: list[str]) -> str:
    values = ", ".join(f"{m}={tradeoffs.fmt(row[m], m)}" for m in names)
    return f"trial {int(row['trial'])} ({'feasible' if row['feasible'] == True else 'infeasible'})<br>{values}"  # noqa: E712


def _figure(spec: StudySpec, df: pd.DataFrame, points: list[Point], baseline: Point | None, x: str, y: str) -> go.Figure:
    names = spec.metric_names
    front_ids = {p.trial for p in points}
    rank = {p.trial: i for i, p in enumerate(points, 1)}

    def coord(values: list[float], metric: str, trial: int) -> float:
        return trial if metric == "trial" else values[names.index(metric)]

    complete = df[(df["state"] == "COMPLETE") & df["feasible"].notna()]  # the pool: no re-evaluations
    if "duplicate_of" in complete:
        complete = complete[complete["duplicate_of"].isna()]
    others = complete[~complete["trial"].isin(front_ids)]
    fig = go.Figure()
    for label, mask, style in (
        ("infeasible", others["feasible"] != True, dict(symbol="x", color="#d62728", size=7, opacity=0.5)),  # noqa: E712
        ("feasible, dominated", others["feasible"] == True, dict(color="#9a9a9a", size=7, opacity=0.6)),  # noqa: E712
    ):
        part = others[mask]
        if len(part):
            fig.add_trace(go.Scatter(
                x=part["trial"] if x == "trial" else part[x], y=part[y], mode="markers", name=label, marker=style,
                hovertext=[_other_card(r, names) for _, r in part.iterrows()], hoverinfo="text",
            ))
    if x != "trial":
        dirs = [spec.directions[names.index(x)], spec.directions[names.index(y)]]
        feasible = complete[complete["feasible"] == True]  # noqa: E712
        keep = tradeoffs.non_dominated({int(r["trial"]): [r[x], r[y]] for _, r in feasible.iterrows()}, dirs)
        line = feasible[feasible["trial"].isin(keep)].sort_values([x, y])
        if len(line) > 1:
            fig.add_trace(go.Scatter(x=line[x], y=line[y], mode="lines", name=f"2-D front ({x}, {y})",
                                     line=dict(shape="hv", color="#1f77b4", width=1.5), opacity=0.6, hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=[coord(p.values, x, p.trial) for p in points], y=[coord(p.values, y, p.trial) for p in points],
        mode="markers", name=FRONT_TRACE, uid="front",
        marker=dict(color="#1f77b4", size=10, line=dict(color="white", width=1)),
        hovertext=[_card(p, names, rank[p.trial]) for p in points], hoverinfo="text",
        **{f"error_{axis}": _error_bars(points, names, metric) for axis, metric in (("x", x), ("y", y))
           if metric != "trial" and points and all(p.halves is not None for p in points)},
    ))
    if points:
        knee = points[0]
        fig.add_trace(go.Scatter(
            x=[coord(knee.values, x, knee.trial)], y=[coord(knee.values, y, knee.trial)], mode="markers", name="knee (#1)",
            marker=dict(symbol="circle-open", size=20, color="#ff7f0e", line=dict(width=3)), hoverinfo="skip",
        ))
    if baseline is not None:
        fig.add_trace(go.Scatter(
            x=[coord(baseline.values, x, baseline.trial)], y=[coord(baseline.values, y, baseline.trial)], mode="markers",
            name="baseline", marker=dict(symbol="star", size=16, color="black"),
            hovertext=[_card(baseline, names, None) + ("" if baseline.feasible else "<br>(infeasible)")], hoverinfo="text",
        ))
    axes = {}
    for axis, metric, col in (("xaxis", x, "trial" if x == "trial" else x), ("yaxis", y, y)):
        values = [float(v) for v in complete[col] if v is not None and math.isfinite(float(v))]
        log = metric != "trial" and tradeoffs.log_axis(values)
        axes[axis] = dict(title=dict(text=("trial" if metric == "trial" else _axis_title(spec, metric)) + (" — log scale" if log else "")),
                          type="log" if log else "linear", zeroline=False)
    fig.update_layout(
        **axes, height=520, margin=dict(l=70, r=20, t=40, b=60), template="plotly_white",
        title=dict(text=f"{y} vs {x}", x=0.01), hoverlabel=dict(align="left", font=dict(family="monospace", size=11)),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0.4),
    )
    return fig


_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:12px 0}
th,td{border:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f4f4f4;position:sticky;top:0}
tr.knee td{background:#fff4e6} tr.baseline td{background:#f0f0f0}
td.num{text-align:right;white-space:nowrap} code{font-size:11px;word-break:break-all}
.better{color:#1a7f37} .worse{color:#b42318} ul{margin:0;padding-left:16px}
"""


def _delta_cell(v: float, b: float | None, metric: str, direction: str, half: float | None = None) -> str:
    text = html.escape(tradeoffs.fmt(v, metric) + ("" if half is None else f" ± {tradeoffs.fmt(half, metric)}"))
    if b is None or not (math.isfinite(v) and math.isfinite(b)) or v == b:
        return f'<td class="num">{text}</td>'
    better = v < b if direction == "minimize" else v > b
    pct = f" ({(v - b) / abs(b) * 100:+.0f}%)" if b else ""
    return f'<td class="num">{text}<br><span class="{"better" if better else "worse"}">{html.escape(tradeoffs.fmt_delta(v - b, metric))}{pct}</span></td>'


def _table(spec: StudySpec, points: list[Point], baseline: Point | None) -> str:
    names = spec.metric_names
    tiers = sorted({t for p in points + ([baseline] if baseline else []) for t in p.rejection()})
    head = ["#", "trial", "configuration", *[f"{m}<br>({d})" for m, d in zip(names, spec.directions)],
            *[f"rejected<br>{t}" for t in tiers], "score", "why this one", "command"]
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]

    def row(p: Point, rank: str, cls: str) -> str:
        b = baseline if baseline is not None and p is not baseline else None
        cells = [f"<td>{rank}</td>", f"<td>{p.trial}</td>", f"<td>{html.escape(p.label)}</td>"]
        cells += [_delta_cell(v, None if b is None else b.values[i], m, d, None if p.halves is None else p.halves[i])
                  for i, (m, v, d) in enumerate(zip(names, p.values, spec.directions))]
        rej, brej = p.rejection(), (b.rejection() if b else {})
        cells += [_delta_cell(rej[t], brej.get(t), "rejection_rate", "minimize") if t in rej else "<td>-</td>" for t in tiers]
        cells.append(f'<td class="num">{"-" if p.score is None else f"{p.score:.3f}"}</td>')
        why = p.why + ([f"statistically indistinguishable from trial(s) {', '.join(map(str, p.indistinct_from))}"] if p.indistinct_from else [])
        cells.append("<td><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in why) + "</ul></td>")
        cells.append(f"<td><code>{html.escape(p.command)}</code></td>")
        return f'<tr class="{cls}">' + "".join(cells) + "</tr>"

    if baseline is not None:
        rows.append(row(baseline, "baseline", "baseline"))
    rows += [row(p, str(i), "knee" if i == 1 else "") for i, p in enumerate(points, 1)]
    return "<table>" + "\n".join(rows) + "</table>"


def write_html(path: Path, spec: StudySpec, df: pd.DataFrame, points: list[Point], baseline: Point | None) -> None:
    from search.report import _split_extra

    extra, df = _split_extra(df)
    counts = df["state"].value_counts()
    robust_seeds = df.attrs.get("robust_seeds") or []
    intro = (
        (f"Front values are means ± 95 % intervals over workload seeds {robust_seeds} (re-evaluated after the search). "
         if robust_seeds else "")
        + f"{len(df)} trials: {counts.get('COMPLETE', 0)} complete ({int((df['feasible'] == True).sum())} feasible), "  # noqa: E712
        f"{counts.get('FAIL', 0)} failed. Pareto front: {len(points)} configurations. "
        "Hover a point for its configuration, metrics and command; drag to zoom, double-click to reset."
    )
    constraints = ", ".join(c.name for c in spec.constraints) or "none"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>blis search report: {html.escape(spec.name)}</title><style>{_STYLE}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(spec.name)}</h1>",
        f"<p>{html.escape(spec.description or '')}</p><p>{html.escape(intro)}</p>",
        f"<p>Constraints: {html.escape(constraints)}. Score = distance to the ideal point after min-max normalising "
        "each objective over the front; #1, the smallest, is the knee.</p>",
    ]
    config = {"displaylogo": False, "responsive": True}
    for i, (x, y) in enumerate(objective_pairs(spec.metric_names)):
        fig = _figure(spec, df, points, baseline, x, y)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"front-{i}", config=config))
    parts += ["<h2>Ranked configurations</h2>", _table(spec, points, baseline), "</body></html>"]
    path.write_text("\n".join(parts))
