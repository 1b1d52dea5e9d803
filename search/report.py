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

from search import robust, tradeoffs
from search.fidelity import full_objective
from search.progress import is_interrupted, nondominated_ranks
from search.run_dir import load_run
from search.study_file import StudySpec

_FILE_OPTIONS = ("policy_config", "workload_spec")


def _state(t: optuna.trial.FrozenTrial) -> str:
    return "INTERRUPTED" if is_interrupted(t) else t.state.name


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None



def pareto_ranks(points: dict[int, list[float]]) -> dict[int, int]:
    """Non-dominated sorting of minimisation vectors: 1 = the front, 2 = the front without it, ..."""
    return {k: r + 1 for k, r in zip(points, nondominated_ranks(list(points.values())))}


def blis_run_command(spec: StudySpec, params: dict, config_dir: Path) -> str:
    """The ``blis run`` command line of a trial; inline dicts go to files under ``config_dir``."""
    options = full_objective(spec).options(params)
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


def robust_summaries(study: optuna.Study, spec: StudySpec, trials) -> tuple[list[int], dict[int, robust.Summary]]:
    """(robust seeds, candidate trial -> Summary) of the study's last robust stage (none: ([], {}))."""
    plan = study.user_attrs.get("robust_plan")
    if not plan:
        return [], {}
    return list(plan["seeds"]), robust.summarise(trials, list(plan["seeds"]))


def _in_pool(t: optuna.trial.FrozenTrial, spec: StudySpec) -> bool:
    """Trials the front is formed from: completed search trials, or the full-fidelity runs."""
    if t.state != TrialState.COMPLETE or "robust_of" in t.user_attrs:
        return False
    if spec.fidelity:
        return "promoted_from" in t.user_attrs and t.user_attrs.get("fidelity") == spec.fidelity.levels[-1]
    return "promoted_from" not in t.user_attrs


def trial_table(study: optuna.Study, spec: StudySpec) -> pd.DataFrame:
    """One row per trial. The front is ranked among the pool (``_in_pool``); after a robust
    stage, re-evaluated candidates carry their means (``<m>``), 95 % half-widths (``<m>:ci95``)
    and search values (``<m>:search``), rank among themselves, and every other pool trial ranks
    after them (its rank on search values plus the last robust rank)."""
    names = spec.metric_names
    trials = study.get_trials(deepcopy=False)
    seeds, summaries = robust_summaries(study, spec, trials)
    pool = [t for t in trials if _in_pool(t, spec)]
    ok = {n: s for n, s in summaries.items() if not s.failed}
    values = {t.number: (ok[t.number].means if t.number in ok else list(t.values)) for t in pool}
    violations = {t.number: (ok[t.number].violations if t.number in ok else list(t.constraints.values())) for t in pool}
    feasible = {n for n in values if all(c <= 0 for c in violations[n]) and not (n in summaries and summaries[n].failed)}
    vec = {n: spec.minimised(values[n]) for n in feasible}
    ranks = pareto_ranks({n: vec[n] for n in feasible if n in ok})
    last = max(ranks.values(), default=0)
    ranks.update({n: r + last for n, r in pareto_ranks({n: vec[n] for n in feasible if n not in ok}).items()})
    front = {k for k in feasible if ranks[k] == 1}
    distance = tradeoffs.ideal_distance({k: values[k] for k in front}, spec.directions)
    robust.flag_indistinct([ok[k] for k in sorted(front) if k in ok], spec.directions)
    rows = []
    for t in trials:
        row: dict = {"trial": t.number, "state": _state(t)}
        if spec.fidelity:
            row["fidelity"] = t.user_attrs.get("fidelity", spec.fidelity.levels[0])
        if t.number in values:
            row["feasible"] = t.number in feasible
            row["pareto_rank"] = ranks.get(t.number)
            row["ideal_distance"] = distance.get(t.number)
            row.update(zip(names, values[t.number]))
        elif t.state == TrialState.COMPLETE:
            row.update({f"{m}:search": v for m, v in zip(names, t.values)})
        s = ok.get(t.number)
        if s is not None:
            row.update({f"{m}:ci95": h for m, h in zip(names, s.halves)})
            row.update({f"{m}:search": v for m, v in zip(names, t.values)})
            row["robust_seeds"] = len(s.samples)
            row["indistinct_from"] = ";".join(map(str, s.indistinct_from))
        elif t.number in summaries:
            row["robust_failed"] = True
        row.update({f"param:{k}": v for k, v in t.params.items()})
        metrics = s.metrics if s is not None else (t.user_attrs.get("metrics") or {})
        row.update({f"metric:{k}": v for k, v in metrics.items() if k not in names})
        constraints = dict(zip(t.constraints, s.violations)) if s is not None else t.constraints
        row.update({f"violation:{constraint_name(spec, k)}": v for k, v in constraints.items()})
        for key in ("baseline", "requeued_from", "duplicate_of", "promoted_from", "robust_of", "robust_seed", "seconds", "cpu_seconds", "node", "retried_after", "error"):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("feasible", "pareto_rank", "ideal_distance", *names):
        if col not in df:
            df[col] = None
    first = ["trial", "state", "fidelity", "feasible", "pareto_rank", "ideal_distance", *names,
             *[f"{m}:ci95" for m in names], "indistinct_from", "robust_seeds", *[f"{m}:search" for m in names]]
    first = [c for c in first if c in df]
    df = df[first + [c for c in df.columns if c not in first]]
    df.attrs["robust_seeds"] = seeds
    df.attrs["summaries"] = ok
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
    rows = df[(df["baseline"] == True) & (df["state"] == "COMPLETE") & df["feasible"].notna()]  # noqa: E712 (pandas mask)
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
    halves: list[float] | None = None  # 95 % half-widths over the robust seeds
    indistinct_from: list[int] = field(default_factory=list)
    changes: list[tuple[float, float]] | None = None  # relative change vs the baseline: (mean, 95 % half-width)

    def pm(self, i: int, metric: str) -> str:
        """Value ``i`` with its interval when there is one: ``1.2 s ± 0.1 s``."""
        text = tradeoffs.fmt(self.values[i], metric)
        return text if self.halves is None else f"{text} ± {tradeoffs.fmt(self.halves[i], metric)}"

    def rejection(self) -> dict[str, float]:
        """Per-tier rejection rate, tier -> fraction."""
        return {k.partition("@")[2]: v for k, v in self.metrics.items() if k.startswith("rejection_rate@")}

    def headline(self, names: list[str]) -> dict[str, float]:
        return {k: v for k, v in self.metrics.items() if "@" not in k and k not in names and _finite(v) is not None}


def _points(spec: StudySpec, study: optuna.Study, df: pd.DataFrame, out_dir: Path) -> tuple[list[Point], Point | None]:
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    config_dir = out_dir.resolve() / "configs"
    objective = spec.objective()
    summaries = df.attrs.get("summaries") or {}
    rows = df.set_index("trial")

    def point(n: int, **kw) -> Point:
        t, s = by_number[n], summaries.get(n)
        return Point(
            trial=n,
            label=tradeoffs.config_label(objective.options(t.params), t.params),
            values=[float(rows.at[n, m]) for m in spec.metric_names],
            metrics=dict(s.metrics if s is not None else t.user_attrs.get("metrics") or {}),
            params=dict(t.params),
            command=blis_run_command(spec, t.params, config_dir),
            halves=None if s is None else list(s.halves),
            indistinct_from=[] if s is None else list(s.indistinct_from),
            **kw,
        )

    front = _front(df)
    points = [point(int(r["trial"]), score=float(r["ideal_distance"])) for _, r in front.iterrows()]
    row = _baseline_row(df)
    baseline = None if row is None else point(int(row["trial"]), feasible=bool(row["feasible"]))
    if baseline is not None and baseline.trial in summaries:
        for p in points:
            if p.trial in summaries:
                p.changes = robust.changes(summaries[p.trial], summaries[baseline.trial])
    knee = points[0].trial if points else None
    pairs = [(p.trial, p.values) for p in points]
    for p in points:
        p.why = tradeoffs.why(p.trial, pairs, spec.metric_names, spec.directions,
                              None if baseline is None else (baseline.trial, baseline.values), knee)
    return points, baseline


def _recommendations(spec: StudySpec, df: pd.DataFrame, points: list[Point], baseline: Point | None) -> str:
    names = spec.metric_names
    feasible = int((df["feasible"] == True).sum())  # noqa: E712 (the pool: full-fidelity runs)
    extra, df = _split_extra(df)
    counts = Counter(df["state"])
    duplicates = int(df["duplicate_of"].notna().sum()) if "duplicate_of" in df else 0
    lines = [f"# Recommendations: {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [
        f"{len(df)} trials: {counts.get('COMPLETE', 0)} complete "
        f"({feasible} feasible; duplicates reused: {duplicates}), "
        f"{counts.get('FAIL', 0)} failed, {counts.get('INTERRUPTED', 0)} interrupted and re-run.",
        "",
        "Objectives: " + ", ".join(f"`{m}` ({d}, {tradeoffs.unit(m) or 'no unit'})" for m, d in zip(names, spec.directions)) + ".",
    ]
    if spec.constraints:
        lines.append("Constraints: " + ", ".join(f"`{c.name}`" for c in spec.constraints) + ".")
    if spec.seeds:
        lines.append(f"Metrics are means over seeds {spec.seeds}; commands use seed {spec.seeds[0]}.")
    if spec.fidelity:
        promoted = extra[extra["promoted_from"].notna()] if "promoted_from" in extra else extra.iloc[0:0]
        per_level = ", ".join(f"{int((promoted['fidelity'] == n).sum())} at {n}" for n in spec.fidelity.levels[1:])
        lines.append(f"Multi-fidelity: search trials ran {spec.fidelity.levels[0]} requests; promoted by rank and crowding: "
                     f"{per_level} requests. Only {spec.fidelity.levels[-1]}-request results form the front.")
    seeds = df.attrs.get("robust_seeds") or []
    if seeds:
        n = len(df.attrs.get("summaries") or {})
        lines.append(f"Robust: {n} candidates (the search's front and the baseline) re-run on workload seeds {seeds}; "
                     "values are means ± 95 % t-interval half-widths over those seeds, and the front is ranked on the means. "
                     "\"≈ #k\": not statistically distinguishable from that neighbour (paired 95 % intervals of every objective's "
                     "difference contain 0).")
    if baseline is not None:
        lines.append(
            f"Baseline (trial {baseline.trial}, {baseline.label}): "
            + ", ".join(f"`{m}` = {baseline.pm(i, m)}" for i, m in enumerate(names))
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
        "| # | trial | configuration | " + " | ".join(f"`{m}`" for m in names) + " | score |" + (" indistinguishable from |" if seeds else ""),
        "|---|---|---|" + "---|" * len(names) + "---|" + ("---|" if seeds else ""),
    ]
    rank_of = {p.trial: i for i, p in enumerate(points, 1)}
    for i, p in enumerate(points, 1):
        same = ", ".join(f"≈ #{rank_of[t]}" for t in p.indistinct_from if t in rank_of) or "-"
        lines.append(f"| {i} | {p.trial} | {p.label} | " + " | ".join(p.pm(k, m) for k, m in enumerate(names)) + f" | {p.score:.3f} |"
                     + (f" {same} |" if seeds else ""))
    lines.append("")
    for i, p in enumerate(points, 1):
        lines += [f"### {i}. Trial {p.trial}: {p.label}", ""]
        lines += [f"- {sentence}" for sentence in p.why]
        change = baseline is not None and p.changes is not None
        lines += ["", "| metric | value |" + (" baseline |" if baseline is not None else "") + (" change vs baseline (95 %) |" if change else ""),
                  "|---|---|" + ("---|" if baseline is not None else "") + ("---|" if change else "")]
        for k, m in enumerate(names):
            lines.append(f"| `{m}` | {p.pm(k, m)} |" + (f" {baseline.pm(k, m)} |" if baseline is not None else "")
                         + (f" {_pct_interval(*p.changes[k])} |" if change else ""))
        for tier, v in p.rejection().items():
            b = baseline.rejection().get(tier) if baseline is not None else None
            lines.append(f"| rejected ({tier}) | {tradeoffs.fmt(v, 'rejection_rate')} |" + (f" {tradeoffs.fmt(b, 'rejection_rate')} |" if baseline is not None else "")
                         + (" |" if change else ""))
        extras = p.headline(names)
        if extras:
            lines += ["", "Other metrics: " + ", ".join(f"{k}={tradeoffs.fmt(v, k)}" for k, v in extras.items())]
        lines += ["", "Parameters: " + ", ".join(f"`{k}={v}`" for k, v in p.params.items()), "", "```sh", p.command, "```", ""]
    return "\n".join(lines) + "\n"


def _pct_interval(mean: float, half: float) -> str:
    return f"{mean * 100:+.1f} % ± {half * 100:.1f}" if math.isfinite(mean) and math.isfinite(half) else "-"


def _split_extra(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(re-evaluation rows, search rows): promotions and robust seeds are not search trials."""
    mask = pd.Series(False, index=df.index)
    for col in ("promoted_from", "robust_of"):
        if col in df:
            mask |= df[col].notna()
    search = df[~mask]
    search.attrs = df.attrs
    return df[mask], search


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
    complete = df[(df["state"] == "COMPLETE") & df["feasible"].notna()]  # the pool: no re-evaluations
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
    extra, searched = _split_extra(df)
    counts = Counter(searched["state"])
    summary = {
        "study": spec.name,
        "description": spec.description,
        "trials": {
            "total": len(searched),
            **{s.lower(): counts.get(s, 0) for s in ("COMPLETE", "FAIL", "INTERRUPTED", "RUNNING", "WAITING")},
            "feasible": int((df["feasible"] == True).sum()),  # noqa: E712
            "duplicates": int(searched["duplicate_of"].notna().sum()) if "duplicate_of" in searched else 0,
            "reevaluations": len(extra),
        },
        "robust_seeds": df.attrs.get("robust_seeds") or [],
        "fidelity": spec.fidelity.to_dict() if spec.fidelity else None,
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
                "ci95": None if p.halves is None else dict(zip(spec.metric_names, p.halves)),
                "change_vs_baseline": None if p.changes is None else {m: {"mean": c, "ci95": h} for m, (c, h) in zip(spec.metric_names, p.changes)},
                "indistinct_from": p.indistinct_from,
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
