"""After the search: fidelity promotions, then robust re-evaluations, on the trials' Ray path.

Each re-evaluation is a job (parameters, an objective, identifying user attrs). A job is stored
as a finished trial (``study.add_trial``) only once its outcome is known, so storage never holds
a half-done re-evaluation: a run killed at any point resumes by recomputing the same job list
and skipping the jobs whose identifying attrs are already stored. Jobs run as the search's
trials do (``search.workers``: in-worker timeout, driver backstop, one retry after a system
fault) and cost no budget (``search.progress.is_extra``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState, create_trial

from search import fidelity, robust
from search.progress import dominates, is_duplicate, is_extra
from search.space import params_key
from search.workers import Deadlines, SystemFault, TrialError, recorded, remote_evaluate, settled

_POLL_S = 0.5


@dataclass
class Job:
    params: dict
    distributions: dict
    objective: object  # objectives.objective.Objective
    attrs: dict  # identifying user attrs (``promoted_from``/``fidelity`` or ``robust_of``/``robust_seed``)


def _key(attrs: dict) -> str:
    return json.dumps(attrs, sort_keys=True)


def _violation(t) -> float:
    return sum(max(0.0, c) for c in (t.system_attrs.get("constraints") or []))


def search_trials(trials) -> list:
    """Completed search trials, one per distinct configuration (the first)."""
    seen, out = set(), []
    for t in trials:
        if t.state == TrialState.COMPLETE and not is_duplicate(t) and not is_extra(t):
            key = params_key(t.params)
            if key not in seen:
                seen.add(key)
                out.append(t)
    return out


def level_trials(trials, spec, level: int) -> list:
    """Completed trials at fidelity ``level`` (index), one per search trial."""
    if level == 0:
        return search_trials(trials)
    n = spec.fidelity.levels[level]
    out: dict[int, object] = {}
    for t in trials:
        if t.state == TrialState.COMPLETE and t.user_attrs.get("fidelity") == n and "promoted_from" in t.user_attrs:
            out.setdefault(t.user_attrs["promoted_from"], t)
    return [out[k] for k in sorted(out)]


def pool(trials, spec) -> list:
    """The trials the front is formed from: the full-fidelity ones."""
    return level_trials(trials, spec, len(spec.fidelity.levels) - 1 if spec.fidelity else 0)


def origin(t) -> int:
    return t.user_attrs.get("promoted_from", t.number)


def promotion_jobs(trials, spec, level: int, simulate) -> list[Job]:
    """Jobs promoting the best share of level ``level - 1`` (and the baseline) to ``level``."""
    below = level_trials(trials, spec, level - 1)
    chosen = fidelity.promote([spec.minimised(t.values) for t in below],
                              [_violation(t) for t in below], spec.fidelity.share_at(level - 1))
    picked = [below[i] for i in chosen] + [t for t in below if t.user_attrs.get("baseline")]
    objective = fidelity.at_level(spec.objective(simulate), spec.fidelity.levels[level])
    jobs, seen = [], set()
    for t in picked:
        if origin(t) in seen:
            continue
        seen.add(origin(t))
        attrs = {"promoted_from": origin(t), "fidelity": spec.fidelity.levels[level]}
        if t.user_attrs.get("baseline"):
            attrs["baseline"] = True
        jobs.append(Job(dict(t.params), dict(t.distributions), objective, attrs))
    return jobs


def robust_candidates(trials, spec, cap: int | None) -> list:
    """The baseline, then the feasible front of the pool in promotion order, ``cap`` in all."""
    candidates = pool(trials, spec)
    feasible = [t for t in candidates if _violation(t) <= 0]
    points = {t.number: spec.minimised(t.values) for t in feasible}
    front = [t for t in feasible if not any(dominates(w, points[t.number]) for w in points.values())]
    order = fidelity.promotion_order([points[t.number] for t in front], [0.0] * len(front))
    picked = [t for t in candidates if t.user_attrs.get("baseline")][:1]
    for i in order:
        if cap is not None and len(picked) >= cap:
            break
        if front[i] not in picked:
            picked.append(front[i])
    return picked


def robust_jobs(trials, spec, seeds: list[int], cap: int | None, simulate) -> list[Job]:
    objective = fidelity.full_objective(spec, simulate)
    return [Job(dict(t.params), dict(t.distributions), robust.at_seed(objective, s), {"robust_of": t.number, "robust_seed": s})
            for t in robust_candidates(trials, spec, cap) for s in seeds]


def post_search(study: optuna.Study, spec, budget: int, workers: int, timeout, simulate, caught: list, say=True) -> None:
    """Run the fidelity promotions and the robust stage; returns early when a signal arrived."""
    def log(text: str) -> None:
        if say:
            print(f"search: {text}", file=sys.stderr)

    if spec.fidelity:
        for level in range(1, len(spec.fidelity.levels)):
            jobs = promotion_jobs(study.get_trials(deepcopy=False), spec, level, simulate)
            n = run_jobs(study, jobs, workers, timeout, caught)
            log(f"fidelity: {len(jobs)} promoted to {spec.fidelity.levels[level]} requests ({n} run now)")
            if caught:
                return
    p = robust.plan(spec, budget)
    if p is None:
        return
    seeds, cap = p
    study.set_user_attr("robust_plan", {"seeds": seeds, "candidates": cap})
    jobs = robust_jobs(study.get_trials(deepcopy=False), spec, seeds, cap, simulate)
    n = run_jobs(study, jobs, workers, timeout, caught)
    log(f"robust: {len(jobs) // len(seeds)} candidates x seeds {seeds} ({n} run now)")


def run_jobs(study: optuna.Study, jobs: list[Job], workers: int, timeout, caught: list) -> int:
    """Evaluate the jobs not yet stored; returns how many were stored now."""
    import ray

    stored = {_key(_ident(t.user_attrs)) for t in study.get_trials(deepcopy=False) if _ident_keys(t.user_attrs)}
    pending = [j for j in jobs if _key(_ident(j.attrs)) not in stored]
    if not pending:
        return 0
    evaluate = remote_evaluate()
    refs: dict[int, object] = {}  # id(objective) -> object ref, one put per distinct objective
    inflight: dict = {}  # ref -> (job, retried)
    deadlines = Deadlines(timeout)
    done = 0

    def submit(job: Job, retried: bool) -> None:
        oref = refs.get(id(job.objective))
        if oref is None:
            oref = refs[id(job.objective)] = ray.put(job.objective)
        ref = evaluate.remote(oref, job.params, timeout)
        inflight[ref] = (job, retried)
        deadlines.add(ref)

    try:
        while (pending or inflight) and not caught:
            while pending and len(inflight) < workers:
                submit(pending.pop(0), False)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=deadlines.wait_s(_POLL_S))
            for ref in list(inflight):
                answer = settled(ref, ready, deadlines, timeout)
                if answer is None:
                    continue
                outcome, node = answer
                job, retried = inflight.pop(ref)
                if isinstance(outcome, SystemFault):
                    if not retried:
                        submit(job, True)
                        continue
                    outcome = TrialError(f"{outcome.message} (also on retry)")
                _store(study, job, outcome, node)
                done += 1
    finally:
        for ref in inflight:
            ray.cancel(ref, force=True)
    return done


_IDENT = (("promoted_from", "fidelity"), ("robust_of", "robust_seed"))


def _ident_keys(attrs: dict) -> tuple[str, ...] | None:
    return next((keys for keys in _IDENT if keys[0] in attrs), None)


def _ident(attrs: dict) -> dict:
    return {k: attrs.get(k) for k in _ident_keys(attrs)}


def _store(study: optuna.Study, job: Job, outcome, node: str | None) -> None:
    outcome, attrs = recorded(outcome)
    common = dict(params=job.params, distributions=job.distributions)
    if isinstance(outcome, TrialError):
        trial = create_trial(state=TrialState.FAIL, user_attrs={**job.attrs, **attrs}, **common)
    else:
        attrs = {**job.attrs, **attrs}
        if node is not None:
            attrs["node"] = node
        constraints = list(outcome.constraints.values())
        trial = create_trial(values=outcome.values, user_attrs=attrs,
                             system_attrs={"constraints": constraints} if constraints else None, **common)
    study.add_trial(trial)
