"""The few lines ``blis search`` prints when it ends: what ran, how fast, what was found.

Built from the study and the summary.json the report just wrote, so the terminal says what the
report files say.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState

from search import tradeoffs
from search.progress import is_extra, is_interrupted
from search.study_file import StudySpec


def _pct(v: float, b: float | None) -> str:
    return f" ({(v - b) / abs(b) * 100:+.0f}%)" if b and math.isfinite(b) and math.isfinite(v) else ""


def summary_text(study: optuna.Study, spec: StudySpec, out_dir: Path, started: datetime, elapsed: float) -> str:
    trials = study.get_trials(deepcopy=False)
    duplicates = sum("duplicate_of" in t.user_attrs for t in trials)
    extra = sum(is_extra(t) for t in trials)
    trials = [t for t in trials if "duplicate_of" not in t.user_attrs and not is_extra(t)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = sum(t.state == TrialState.FAIL and not is_interrupted(t) for t in trials)
    this_run = sum(t.datetime_complete is not None and t.datetime_complete >= started for t in trials)
    rate = this_run / elapsed * 60 if elapsed > 0 else 0.0
    report = json.loads((out_dir / "summary.json").read_text())
    lines = [
        f"{spec.name}: {len(complete)} complete ({report['trials']['feasible']} feasible), {failed} failed, "
        f"{duplicates} duplicates avoided (reused, not simulated); this run: {this_run} trials in {elapsed:.1f} s "
        f"({rate:.1f} trials/min)"
    ]
    if extra:
        seeds = report.get("robust_seeds") or []
        lines.append(f"re-evaluated after the search (no budget): {extra} runs"
                     + (f"; front values are means over workload seeds {seeds}" if seeds else ""))
    front, base = report["front"], report["baseline"]
    names = spec.metric_names
    if not front:
        lines.append("front: no feasible trial")
    else:
        knee = front[0]
        values = ", ".join(f"{m} {tradeoffs.fmt(knee['values'][m], m)}" for m in names)
        lines.append(f"front: {len(front)} configurations; knee: trial {knee['trial']}, {knee['label']} ({values})")
        lines.append("best per objective" + (f" vs baseline (trial {base['trial']}, {base['label']}):" if base else ":"))
        for m, d in zip(names, spec.directions):
            finite = [p for p in front if p["values"][m] is not None]
            if not finite:
                continue
            pick = min if d == "minimize" else max
            best = pick(finite, key=lambda p: p["values"][m])
            v, b = best["values"][m], base.get(m) if base else None
            vs = f" vs {tradeoffs.fmt(b, m)}{_pct(v, b)}" if b is not None else ""
            change = (best.get("change_vs_baseline") or {}).get(m)
            if change and change["mean"] is not None and change["ci95"] is not None:
                vs += f" [{change['mean'] * 100:+.1f} % ± {change['ci95'] * 100:.1f} over the robust seeds]"
            lines.append(f"  {m}: {tradeoffs.fmt(v, m)}{vs} (trial {best['trial']}, {best['label']})")
    lines.append(f"report: {(out_dir / 'report.html').resolve()}")
    return "\n".join(lines)
