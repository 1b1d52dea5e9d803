"""Search report: trials.csv, pareto.csv, recommendations.md, summary.json and front plots.

Recommendations are the feasible Pareto front, ordered by distance to the ideal point in
min-max normalised objective space (the most balanced trade-off first), each with the full
``blis run`` command that reproduces it. Inline policy bundles and workload specs are written to
``configs/`` next to the report, named by content hash, and referenced by path.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from search.driver import is_interrupted, load_run
from search.study_file import StudySpec

MAX_RECOMMENDATIONS = 10
_FILE_OPTIONS = ("policy_config", "workload_spec")


def _state(t: optuna.trial.FrozenTrial) -> str:
    return "INTERRUPTED" if is_interrupted(t) else t.state.name


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_ranks(points: dict[int, list[float]]) -> dict[int, int]:
    """Non-dominated sorting of minimisation vectors: 1 = the front, 2 = the front without it, ..."""
    ranks, left, rank = {}, dict(points), 1
    while left:
        front = [k for k, v in left.items() if not any(_dominates(w, v) for j, w in left.items() if j != k)]
        for k in front:
            ranks[k] = rank
            del left[k]
        rank += 1
    return ranks


def _ideal_distance(points: dict[int, list[float]]) -> dict[int, float]:
    """Euclidean distance to the ideal point after per-objective min-max normalisation."""
    if not points:
        return {}
    dims = len(next(iter(points.values())))
    lo, hi = [], []
    for d in range(dims):
        col = [v[d] for v in points.values() if math.isfinite(v[d])]
        lo.append(min(col) if col else 0.0)
        hi.append(max(col) if col else 1.0)
    out = {}
    for k, v in points.items():
        parts = [((v[d] - lo[d]) / (hi[d] - lo[d]) if hi[d] > lo[d] else 0.0) for d in range(dims)]
        out[k] = math.sqrt(sum(p * p for p in parts)) if all(math.isfinite(p) for p in parts) else math.inf
    return out


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


def trial_table(study: optuna.Study, spec: StudySpec) -> pd.DataFrame:
    names, signs = spec.metric_names, [1 if d == "minimize" else -1 for d in spec.directions]
    trials = study.get_trials(deepcopy=False)
    feasible = {
        t.number: [s * v for s, v in zip(signs, t.values)]
        for t in trials
        if t.state == TrialState.COMPLETE and all(c <= 0 for c in t.constraints.values())
    }
    ranks = pareto_ranks(feasible)
    distance = _ideal_distance({k: v for k, v in feasible.items() if ranks[k] == 1})
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
        row.update({f"violation:{k}": v for k, v in t.constraints.items()})
        for key in ("baseline", "requeued_from", "duplicate_of", "seconds", "error"):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("feasible", "pareto_rank", "ideal_distance", *names):
        if col not in df:
            df[col] = None
    return df


def _front(df: pd.DataFrame) -> pd.DataFrame:
    front = df[(df["pareto_rank"] == 1)]
    if "duplicate_of" in front:
        front = front[front["duplicate_of"].isna()]
    return front.sort_values(["ideal_distance", "trial"])


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:.4g}"
    return str(x)


def _baseline_row(df: pd.DataFrame):
    if "baseline" not in df:
        return None
    rows = df[(df["baseline"] == True) & (df["state"] == "COMPLETE")]  # noqa: E712 (pandas mask)
    return rows.iloc[0] if len(rows) else None


def _recommendations(spec: StudySpec, df: pd.DataFrame, front: pd.DataFrame, baseline, params_of: dict) -> str:
    counts = Counter(df["state"])
    lines = [f"# Recommendations: {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [
        f"{len(df)} trials: {counts.get('COMPLETE', 0)} complete "
        f"({int((df['feasible'] == True).sum())} feasible), {counts.get('FAIL', 0)} failed, "  # noqa: E712
        f"{counts.get('INTERRUPTED', 0)} interrupted and re-run.",
        "",
        "Objectives: " + ", ".join(f"`{m}` ({d})" for m, d in zip(spec.metric_names, spec.directions)) + ".",
    ]
    if spec.constraints:
        lines.append("Constraints: " + ", ".join(f"`{c.name}`" for c in spec.constraints) + ".")
    if spec.seeds:
        lines.append(f"Metrics are means over seeds {spec.seeds}; commands use seed {spec.seeds[0]}.")
    if baseline is not None:
        lines.append(
            f"Baseline (trial {baseline['trial']}): "
            + ", ".join(f"`{m}` = {_fmt(baseline[m])}" for m in spec.metric_names)
            + ("" if baseline["feasible"] else " (infeasible)")
            + "."
        )
    lines.append("")
    if front.empty:
        lines.append("**No feasible trial completed**, so there is no front to recommend.")
        errors = Counter(df["error"].dropna()) if "error" in df else Counter()
        for message, n in errors.most_common(5):
            lines.append(f"- {n} trial(s) failed with: `{message}`")
        return "\n".join(lines) + "\n"
    lines += [
        f"## Pareto front ({len(front)} configurations, most balanced first)",
        "",
    ]
    for i, (_, row) in enumerate(front.head(MAX_RECOMMENDATIONS).iterrows(), 1):
        lines += [f"### {i}. Trial {row['trial']}", "", "| metric | value |" + (" vs baseline |" if baseline is not None else ""), "|---|---|" + ("---|" if baseline is not None else "")]
        for m in spec.metric_names:
            cell = f"| `{m}` | {_fmt(row[m])} |"
            if baseline is not None:
                b, v = baseline[m], row[m]
                change = f"{(v - b) / abs(b) * 100:+.1f}%" if b and math.isfinite(b) and math.isfinite(v) else "-"
                cell += f" {change} |"
            lines.append(cell)
        extras = [c for c in row.index if c.startswith("metric:") and "@" not in c and _finite(row[c]) is not None]
        if extras:
            lines += ["", "Other metrics: " + ", ".join(f"{c[7:]}={_fmt(row[c])}" for c in extras)]
        params = params_of[int(row["trial"])]
        lines += ["", "Parameters: " + ", ".join(f"`{k}={v}`" for k, v in params.items()), "", "```sh", row["command"], "```", ""]
    return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def _plots(spec: StudySpec, df: pd.DataFrame, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = spec.metric_names
    complete = df[df["state"] == "COMPLETE"]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]] or [("trial", names[0])]
    written = []
    for x, y in pairs:
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
        front = data[data["pareto_rank"] == 1].sort_values(x)
        if len(front) > 1 and x != "trial":
            ax.plot(front[x], front[y], color="tab:blue", alpha=0.5, drawstyle="steps-post")
        for _, row in front.iterrows():
            ax.annotate(str(row["trial"]), (row[x], row[y]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        base = data[data["baseline"] == True] if "baseline" in data else data.iloc[0:0]  # noqa: E712
        if len(base):
            ax.scatter(base[x], base[y], marker="*", s=200, color="black", zorder=4, label="baseline")
        ax.set_xlabel(x if x == "trial" else f"{x} ({spec.directions[names.index(x)]})")
        ax.set_ylabel(f"{y} ({spec.directions[names.index(y)]})")
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
    out_dir = Path(out_dir)
    if study is None or spec is None:
        study, spec = load_run(out_dir)
    df = trial_table(study, spec)
    front = _front(df).copy()
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    front["command"] = [blis_run_command(spec, by_number[n].params, out_dir / "configs") for n in front["trial"]]
    baseline = _baseline_row(df)
    files = [out_dir / "trials.csv", out_dir / "pareto.csv", out_dir / "recommendations.md", out_dir / "summary.json"]
    df.to_csv(files[0], index=False)
    front.to_csv(files[1], index=False)
    files[2].write_text(_recommendations(spec, df, front, baseline, {n: t.params for n, t in by_number.items()}))
    files += _plots(spec, df, out_dir)
    counts = Counter(df["state"])
    summary = {
        "study": spec.name,
        "description": spec.description,
        "trials": {
            "total": len(df),
            **{s.lower(): counts.get(s, 0) for s in ("COMPLETE", "FAIL", "INTERRUPTED", "RUNNING", "WAITING")},
            "feasible": int((df["feasible"] == True).sum()),  # noqa: E712
        },
        "objectives": [{"metric": m, "direction": d} for m, d in zip(spec.metric_names, spec.directions)],
        "constraints": [c.to_dict() for c in spec.constraints],
        "seeds": spec.seeds,
        "baseline": None if baseline is None else {"trial": int(baseline["trial"]), **{m: baseline[m] for m in spec.metric_names}},
        "front": [
            {
                "trial": int(row["trial"]),
                "values": {m: row[m] for m in spec.metric_names},
                "params": by_number[int(row["trial"])].params,
                "command": row["command"],
            }
            for _, row in front.iterrows()
        ],
        "files": [p.name for p in files],
    }
    files[3].write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    return files
