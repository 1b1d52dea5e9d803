"""Search report: trials.csv, pareto.csv, recommendations.md, report.html, summary.json, PNGs.

Recommendations are every point of the feasible Pareto front, ordered by distance to the ideal
point in min-max normalised objective space (the knee, the most balanced trade-off, first),
each with a configuration label, per-tier rejection, what it gains and gives up against the
baseline and its neighbours (search/tradeoffs.py), and the full ``blis run`` command that
reproduces it. Inline policy bundles and workload specs are written to ``configs/`` next to the
report, named by content hash, and referenced by absolute path so commands run from anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from search import tradeoffs
from search.driver import is_interrupted, load_run
from search.progress import dominates
from search.study_file import StudySpec

_FILE_OPTIONS = ("policy_config", "workload_spec")


def _state(t: optuna.trial.FrozenTrial) -> str:
    return "INTERRUPTED" if is_interrupted(t) else t.state.name


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None



def pareto_ranks(points: dict[int, list[float]]) -> dict[int, int]:
    """Non-dominated sorting of minimisation vectors: 1 = the front, 2 = the front without it, ..."""
    ranks, left, rank = {}, dict(points), 1
    while left:
        front = [k for k, v in left.items() if not any(dominates(w, v) for j, w in left.items() if j != k)]
        for k in front:
            ranks[k] = rank
            del left[k]
        rank += 1
    return ranks


def blis_run_command(spec: StudySpec, params: dict, config_dir: Path) -> str:
    """The ``blis run`` command line of a trial; inline dicts go to files under ``config_dir``."""
    options = spec.objective().options(params)
    if spec.seeds:
        options["seed"] = spec.seeds[0]
    words = ["blis", "run"]
    for key in sorted(options, key=lambda k: (k != "model", k)):
        value = options[key]
        if key in _FILE_OPTIONS and isinstance(value, dict):
            text = yaml.safe_dump(value, sort_keys=False)
            path = config_dir / f"{key.replace('_', '-')}-{hashlib.sha256(text.encode()).hexdigest()[:10]}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text(text)
            value = str(path)
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        words += ["--" + key.replace("_", "-"), shlex.quote(text)]
    return " ".join(words)


def constraint_name(spec: StudySpec, key: str) -> str:
    """Constraints are stored as a list (keys ``0``, ``1``...); older studies stored names."""
    return spec.constraints[int(key)].name if key.isdigit() and int(key) < len(spec.constraints) else key


def trial_table(study: optuna.Study, spec: StudySpec) -> pd.DataFrame:
    names, signs = spec.metric_names, [1 if d == "minimize" else -1 for d in spec.directions]
    trials = study.get_trials(deepcopy=False)
    feasible = {
        t.number: [s * v for s, v in zip(signs, t.values)]
        for t in trials
        if t.state == TrialState.COMPLETE and all(c <= 0 for c in t.constraints.values())
    }
    ranks = pareto_ranks(feasible)
    by_number = {t.number: t for t in trials}
    distance = tradeoffs.ideal_distance({k: list(by_number[k].values) for k in feasible if ranks[k] == 1}, spec.directions)
    rows = []
    for t in trials:
        row: dict = {"trial": t.number, "state": _state(t)}
        if t.state == TrialState.COMPLETE:
            row["feasible"] = t.number in feasible
            row["pareto_rank"] = ranks.get(t.number)
            row["ideal_distance"] = distance.get(t.number)
            row.update(zip(names, t.values))
        row.update({f"param:{k}": v for k, v in t.params.items()})
        row.update({f"metric:{k}": v for k, v in (t.user_attrs.get("metrics") or {}).items() if k not in names})
        row.update({f"violation:{constraint_name(spec, k)}": v for k, v in t.constraints.items()})
        for key in ("baseline", "requeued_from", "duplicate_of", "seconds", "node", "retried_after", "error"):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("feasible", "pareto_rank", "ideal_distance", *names):
        if col not in df:
            df[col] = None
    return df


def _front(df: pd.DataFrame) -> pd.DataFrame:
    """Front rows, knee first; one row per distinct parameter set (a trial proposed while its
    twin was still running is not marked ``duplicate_of`` but is the same configuration)."""
    front = df[(df["pareto_rank"] == 1)]
    if "duplicate_of" in front:
        front = front[front["duplicate_of"].isna()]
    params = [c for c in front.columns if c.startswith("param:")]
    if params:
        front = front.sort_values("trial").drop_duplicates(subset=params)
    return front.sort_values(["ideal_distance", "trial"])


def _baseline_row(df: pd.DataFrame):
    if "baseline" not in df:
        return None
    rows = df[(df["baseline"] == True) & (df["state"] == "COMPLETE")]  # noqa: E712 (pandas mask)
    return rows.iloc[0] if len(rows) else None


@dataclass
class Point:
    """One configuration as the reports show it (a front point or the baseline)."""

    trial: int
    label: str
    values: list[float]
    metrics: dict[str, float]
    params: dict
    command: str
    score: float | None = None
    feasible: bool = True
    why: list[str] = field(default_factory=list)

    def rejection(self) -> dict[str, float]:
        """Per-tier rejection rate, tier -> fraction."""
        return {k.partition("@")[2]: v for k, v in self.metrics.items() if k.startswith("rejection_rate@")}

    def headline(self, names: list[str]) -> dict[str, float]:
        return {k: v for k, v in self.metrics.items() if "@" not in k and k not in names and _finite(v) is not None}


def _points(spec: StudySpec, study: optuna.Study, df: pd.DataFrame, out_dir: Path) -> tuple[list[Point], Point | None]:
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    config_dir = out_dir.resolve() / "configs"
    objective = spec.objective()

    def point(n: int, **kw) -> Point:
        t = by_number[n]
        return Point(
            trial=n,
            label=tradeoffs.config_label(objective.options(t.params), t.params),
            values=list(t.values),
            metrics=dict(t.user_attrs.get("metrics") or {}),
            params=dict(t.params),
            command=blis_run_command(spec, t.params, config_dir),
            **kw,
        )

    front = _front(df)
    points = [point(int(r["trial"]), score=float(r["ideal_distance"])) for _, r in front.iterrows()]
    row = _baseline_row(df)
    baseline = None if row is None else point(int(row["trial"]), feasible=bool(row["feasible"]))
    knee = points[0].trial if points else None
    pairs = [(p.trial, p.values) for p in points]
    for p in points:
        p.why = tradeoffs.why(p.trial, pairs, spec.metric_names, spec.directions,
                              None if baseline is None else (baseline.trial, baseline.values), knee)
    return points, baseline


def _recommendations(spec: StudySpec, df: pd.DataFrame, points: list[Point], baseline: Point | None) -> str:
    names = spec.metric_names
    counts = Counter(df["state"])
    duplicates = int(df["duplicate_of"].notna().sum()) if "duplicate_of" in df else 0
    lines = [f"# Recommendations: {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [
        f"{len(df)} trials: {counts.get('COMPLETE', 0)} complete "
        f"({int((df['feasible'] == True).sum())} feasible; duplicates reused: {duplicates}), "  # noqa: E712
        f"{counts.get('FAIL', 0)} failed, {counts.get('INTERRUPTED', 0)} interrupted and re-run.",
        "",
        "Objectives: " + ", ".join(f"`{m}` ({d}, {tradeoffs.unit(m) or 'no unit'})" for m, d in zip(names, spec.directions)) + ".",
    ]
    if spec.constraints:
        lines.append("Constraints: " + ", ".join(f"`{c.name}`" for c in spec.constraints) + ".")
    if spec.seeds:
        lines.append(f"Metrics are means over seeds {spec.seeds}; commands use seed {spec.seeds[0]}.")
    if baseline is not None:
        lines.append(
            f"Baseline (trial {baseline.trial}, {baseline.label}): "
            + ", ".join(f"`{m}` = {tradeoffs.fmt(v, m)}" for m, v in zip(names, baseline.values))
            + _rejection_text(baseline)
            + ("" if baseline.feasible else " (infeasible)")
            + "."
        )
    lines.append("")
    if not points:
        lines.append("**No feasible trial completed**, so there is no front to recommend.")
        errors = Counter(df["error"].dropna()) if "error" in df else Counter()
        for message, n in errors.most_common(5):
            lines.append(f"- {n} trial(s) failed with: `{message}`")
        return "\n".join(lines) + "\n"
    lines += [
        f"## Pareto front: all {len(points)} configurations, knee first",
        "",
        "Ranked by score = distance to the ideal point after min-max normalising each objective over the front "
        "(0 = best in every objective); the first is the knee.",
        "",
        "| # | trial | configuration | " + " | ".join(f"`{m}`" for m in names) + " | score |",
        "|---|---|---|" + "---|" * len(names) + "---|",
    ]
    for i, p in enumerate(points, 1):
        lines.append(f"| {i} | {p.trial} | {p.label} | " + " | ".join(tradeoffs.fmt(v, m) for m, v in zip(names, p.values)) + f" | {p.score:.3f} |")
    lines.append("")
    for i, p in enumerate(points, 1):
        lines += [f"### {i}. Trial {p.trial}: {p.label}", ""]
        lines += [f"- {sentence}" for sentence in p.why]
        lines += ["", "| metric | value |" + (" baseline |" if baseline is not None else ""), "|---|---|" + ("---|" if baseline is not None else "")]
        for m, v in zip(names, p.values):
            lines.append(f"| `{m}` | {tradeoffs.fmt(v, m)} |" + (f" {tradeoffs.fmt(baseline.values[names.index(m)], m)} |" if baseline is not None else ""))
        for tier, v in p.rejection().items():
            b = baseline.rejection().get(tier) if baseline is not None else None
            lines.append(f"| rejected ({tier}) | {tradeoffs.fmt(v, 'rejection_rate')} |" + (f" {tradeoffs.fmt(b, 'rejection_rate')} |" if baseline is not None else ""))
        extras = p.headline(names)
        if extras:
            lines += ["", "Other metrics: " + ", ".join(f"{k}={tradeoffs.fmt(v, k)}" for k, v in extras.items())]
        lines += ["", "Parameters: " + ", ".join(f"`{k}={v}`" for k, v in p.params.items()), "", "```sh", p.command, "```", ""]
    return "\n".join(lines) + "\n"


def _rejection_text(p: Point) -> str:
    rej = p.rejection()
    return (", rejected " + ", ".join(f"{t} {tradeoffs.fmt(v, 'rejection_rate')}" for t, v in rej.items())) if rej else ""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def objective_pairs(names: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]] or [("trial", names[0])]


def _plots(spec: StudySpec, df: pd.DataFrame, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = spec.metric_names
    complete = df[df["state"] == "COMPLETE"]
    if "duplicate_of" in complete:
        complete = complete[complete["duplicate_of"].isna()]
    written = []
    for x, y in objective_pairs(names):
        fig, ax = plt.subplots(figsize=(6.4, 4.8))
        finite = complete[[x, y]].apply(pd.to_numeric, errors="coerce").map(math.isfinite).all(axis=1)
        data = complete[finite]
        groups = (
            (data[data["feasible"] != True], dict(marker="x", color="tab:red", alpha=0.6, label="infeasible")),  # noqa: E712
            (data[(data["feasible"] == True) & (data["pareto_rank"] != 1)], dict(color="0.6", alpha=0.7, label="feasible")),  # noqa: E712
            (data[data["pareto_rank"] == 1], dict(color="tab:blue", s=50, zorder=3, label="Pareto front")),
        )
        for part, style in groups:
            if len(part):
                ax.scatter(part[x], part[y], **style)
        if x != "trial":
            feasible = data[data["feasible"] == True]  # noqa: E712
            dirs = [spec.directions[names.index(x)], spec.directions[names.index(y)]]
            keep = tradeoffs.non_dominated({int(r["trial"]): [r[x], r[y]] for _, r in feasible.iterrows()}, dirs)
            front2d = feasible[feasible["trial"].isin(keep)].sort_values(x)
            if len(front2d) > 1:
                ax.plot(front2d[x], front2d[y], color="tab:blue", alpha=0.5, drawstyle="steps-post", label="2-D front")
            for axis, col in (("x", x), ("y", y)):
                if tradeoffs.log_axis(list(data[col])):
                    getattr(ax, f"set_{axis}scale")("log")
        base = data[data["baseline"] == True] if "baseline" in data else data.iloc[0:0]  # noqa: E712
        if len(base):
            ax.scatter(base[x], base[y], marker="*", s=200, color="black", zorder=4, label="baseline")
        ax.set_xlabel(x if x == "trial" else _axis_title(spec, x))
        ax.set_ylabel(_axis_title(spec, y))
        ax.set_title(spec.name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        path = out_dir / f"front_{_safe(x)}_vs_{_safe(y)}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _axis_title(spec: StudySpec, metric: str) -> str:
    direction = spec.directions[spec.metric_names.index(metric)]
    u = tradeoffs.unit(metric)
    return f"{metric} ({u + ', ' if u else ''}{'lower' if direction == 'minimize' else 'higher'} is better)"


def _json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item"):
        return _json_safe(x.item())
    return x


def write_report(out_dir: str | Path, study: optuna.Study | None = None, spec: StudySpec | None = None) -> list[Path]:
    """Write every report file into ``out_dir`` and return their paths."""
    from search.report_html import write_html

    out_dir = Path(out_dir)
    if study is None or spec is None:
        study, spec = load_run(out_dir)
    df = trial_table(study, spec)
    points, baseline = _points(spec, study, df, out_dir)
    front = _front(df).copy()
    front["label"] = [p.label for p in points]
    front["command"] = [p.command for p in points]
    front["why"] = [" ".join(p.why) for p in points]
    names = ("trials.csv", "pareto.csv", "recommendations.md", "report.html", "summary.json")
    files = [out_dir / n for n in names]
    df.to_csv(files[0], index=False)
    front.to_csv(files[1], index=False)
    files[2].write_text(_recommendations(spec, df, points, baseline))
    write_html(files[3], spec, df, points, baseline)
    files += _plots(spec, df, out_dir)
    counts = Counter(df["state"])
    summary = {
        "study": spec.name,
        "description": spec.description,
        "trials": {
            "total": len(df),
            **{s.lower(): counts.get(s, 0) for s in ("COMPLETE", "FAIL", "INTERRUPTED", "RUNNING", "WAITING")},
            "feasible": int((df["feasible"] == True).sum()),  # noqa: E712
            "duplicates": int(df["duplicate_of"].notna().sum()) if "duplicate_of" in df else 0,
        },
        "objectives": [{"metric": m, "direction": d, "unit": tradeoffs.unit(m)} for m, d in zip(spec.metric_names, spec.directions)],
        "constraints": [c.to_dict() for c in spec.constraints],
        "seeds": spec.seeds,
        "baseline": None if baseline is None else {"trial": baseline.trial, "label": baseline.label, **dict(zip(spec.metric_names, baseline.values))},
        "front": [
            {
                "trial": p.trial,
                "label": p.label,
                "score": p.score,
                "values": dict(zip(spec.metric_names, p.values)),
                "rejection": p.rejection(),
                "params": p.params,
                "command": p.command,
                "why": p.why,
            }
            for p in points
        ],
        "files": [p.name for p in files],
    }
    files[4].write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    return files
