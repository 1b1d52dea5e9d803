"""Search driver: one Optuna study driven by ask/tell, trials evaluated as Ray tasks.

The study lives in Optuna storage (a journal file in the output directory by default), which
is the single source of truth, so a driver killed at any moment resumes by re-running the same
command: finished trials are kept, and trials a dead driver left RUNNING are failed and
re-enqueued with the same parameters (counting once toward the budget).

Trial bookkeeping in user attrs: ``error`` (failed trials), ``metrics``/``spread``/``seconds``/
``cpu_seconds`` (completed ones), ``baseline``, ``reference`` (its name), ``requeued_from``,
``duplicate_of``, ``retried_after`` (a system fault the trial survived), ``node`` (the Ray node
that evaluated it) and ``over_budget`` (see ``search.shared``). A FAIL trial without ``error`` is
one a driver was interrupted on. A proposal equal to a finished or running trial is never
simulated: it is told PRUNED with ``duplicate_of`` and costs no budget. After the search,
``search.reevaluate.post_search`` adds fidelity promotions (``promoted_from``/``fidelity``) and
robust re-evaluations (``robust_of``/``robust_seed``) as further trials, also free of budget.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from blis.errors import ConfigError
from search.fidelity import screening_objective
from search.progress import Progress, Tally, counts_toward_budget, is_duplicate, is_extra, is_interrupted
from search.reevaluate import post_search
from search.run_dir import default_out_dir, write_meta
from search.samplers import make_sampler
from search.shared import SharedStudy, fail_stale_trials
from search.space import params_key, space_size, suggest
from search.storage import HEARTBEAT_S, driver_locks, open_storage, quiet_optuna, resolve_storage, space_errors
from search.study_file import StudySpec
from search.workers import Deadlines, SystemFault, TrialError, probe_ray_address, recorded, remote_evaluate, settled, start_ray

__all__ = ["run_search", "is_interrupted", "counts_toward_budget", "Interrupted"]

DEFAULT_TRIALS = 20
#: longest the loop blocks in Ray before it looks at signals again
_POLL_S = 0.5
#: a sampler that proposes only evaluated configurations this many times in a row is stuck
MAX_DUPLICATES_IN_A_ROW = 200


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped the search after in-flight trials were cancelled and marked."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def recover(study: optuna.Study, shared: bool = False) -> int:
    """Fail trials a dead driver left RUNNING and re-enqueue every interrupted trial once.

    Idempotent: a driver killed halfway through recovery finishes it on the next start.
    Returns the number of trials re-enqueued. In a ``shared`` storage a RUNNING trial may be
    another live driver's: only heartbeats tell, so those are left to ``SharedStudy.reap``.
    """
    if shared:
        fail_stale_trials(study)
    else:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get("requeued_from") for t in trials}
    requeued |= {t.system_attrs.get("failed_trial") for t in trials}  # Optuna's stale-trial retries
    n = 0
    for t in trials:
        if is_interrupted(t) and t.number not in requeued:
            attrs = {"requeued_from": t.number}
            for mark in ("baseline", "reference"):
                if t.user_attrs.get(mark):
                    attrs[mark] = t.user_attrs[mark]
            study.enqueue_trial(t.params, user_attrs=attrs)
            n += 1
    return n


def _ensure_baseline(study: optuna.Study, spec: StudySpec) -> None:
    """Enqueue the baseline and each reference point unless it completed or is queued: a failed one is retried."""
    live = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state in live]
    if spec.baseline and not any(t.user_attrs.get("baseline") for t in trials):
        study.enqueue_trial(spec.baseline, user_attrs={"baseline": True})
    for name, params in spec.references.items():
        if not any(t.user_attrs.get("reference") == name for t in trials):
            study.enqueue_trial(params, user_attrs={"reference": name})


@contextmanager
def _signals_stop():
    """SIGINT/SIGTERM set a flag the loop polls (a signal raised inside a Ray call can crash Ray)."""
    caught: list[int] = []

    def handler(signum, frame):
        caught.append(signum)
        signal.signal(signum, signal.SIG_DFL)  # a second signal of the kind stops at once

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_search(
    spec: StudySpec,
    *,
    trials: int | None = None,
    workers: int | None = None,
    storage: str | None = None,
    out_dir: str | Path | None = None,
    trial_timeout: float | None = None,
    seed: int | None = None,
    ray_address: str | None = None,
    heartbeat: float = HEARTBEAT_S,
    simulate: Callable[[dict], dict] | None = None,
    progress: bool = True,
    report: bool = True,
) -> optuna.Study:
    """Run (or resume) ``spec`` until ``trials`` trials have finished; return the study.

    Raises ``ConfigError`` (storage full, storage held by another driver, changed study file)
    and ``Interrupted`` (SIGINT/SIGTERM; in-flight trials are marked for re-enqueueing).
    ``heartbeat``: seconds between trial heartbeats in a shared (database) storage.
    """
    out = Path(out_dir) if out_dir else default_out_dir(spec)
    out.mkdir(parents=True, exist_ok=True)
    budget = trials or spec.trials or DEFAULT_TRIALS
    timeout = trial_timeout or spec.trial_timeout
    seed = spec.seed if seed is None else seed
    target = resolve_storage(storage, out)
    probe_ray_address(ray_address)
    quiet_optuna()
    with driver_locks(target, out), space_errors(target):
        study = optuna.create_study(
            storage=open_storage(target, heartbeat), study_name=spec.name, directions=spec.directions, load_if_exists=True
        )
        _check_same_study(study, spec, target.where)
        write_meta(out, spec.name, target.where)
        recover(study, target.shared)
        existing = study.get_trials(deepcopy=False)
        _ensure_baseline(study, spec)
        owns_ray = start_ray(workers or os.cpu_count() or 1, ray_address)
        try:
            import ray

            if workers is None:
                workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
            # A resumed driver must not replay the first run's sampler stream (it would re-propose
            # the same points), so the sampler seed also depends on how many trials exist; drivers
            # sharing a study would propose each other's points, so there it names the driver too.
            salt = f":{socket.gethostname()}:{os.getpid()}" if target.shared else ""
            sampler_seed = seed if not (existing or salt) else zlib.crc32(f"{seed}:{len(existing)}{salt}".encode())
            study.sampler = make_sampler(spec, sampler_seed, budget, workers)
            with _signals_stop() as caught:
                shared = SharedStudy(study, heartbeat) if target.shared else None
                _Loop(study, spec, budget, workers, timeout, simulate, progress, caught, shared).run()
                # Fidelity promotions and robust re-evaluations (search/reevaluate.py): no budget.
                post_search(study, spec, budget, workers, timeout, simulate, caught, say=progress)
                if caught:
                    raise Interrupted(caught[0])
        finally:
            if owns_ray:
                import ray

                ray.shutdown()
        if report:
            from search.report import write_report

            write_report(out, study, spec)
    return study


def _check_same_study(study: optuna.Study, spec: StudySpec, where: str) -> None:
    stored = study.user_attrs.get("fingerprint")
    if stored is None:
        study.set_user_attr("spec", spec.to_dict())
        study.set_user_attr("fingerprint", spec.fingerprint())
    elif stored != spec.fingerprint():
        raise ConfigError(
            "study",
            f"study {spec.name!r} in {where} was created from a different study file "
            "(base, parameters, objectives, constraints, seeds or pricing changed); use another --out or --storage",
        )
    if study.metric_names != spec.metric_names:
        # Names shown by optuna.visualization and optuna-dashboard; constraints are stored as a
        # list (see _store_constraints), so their names are recorded in the same order.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(spec.metric_names)
        study.set_user_attr("constraint_names", [c.name for c in spec.constraints])


class _Loop:
    """The ask / evaluate / tell loop; every per-trial step is O(1) in the study's size, except
    the storage rereads of a ``shared`` study."""

    def __init__(self, study, spec: StudySpec, budget: int, workers: int, timeout, simulate, progress: bool, caught: list,
                 shared: SharedStudy | None = None):
        import ray

        self.shared = shared
        self.ray = ray
        self.study, self.spec, self.budget, self.workers, self.timeout = study, spec, budget, workers, timeout
        self.caught = caught
        self.evaluate = remote_evaluate()
        self.objective_ref = ray.put(screening_objective(spec, simulate))
        trials = study.get_trials(deepcopy=False)
        #: params key -> (trial number, completed?) of evaluated trials: the simulator is
        #: deterministic, so a failure is as final as a result, except for a retried baseline
        self.finished = {params_key(t.params): (t.number, t.state == TrialState.COMPLETE) for t in trials
                         if not is_duplicate(t) and not is_extra(t) and (t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and not is_interrupted(t)))}
        self.done = sum(counts_toward_budget(t) for t in trials)
        self.tally = Tally.of(study)
        self.bar = Progress(self.tally, budget, self.done, progress, spec.name)
        self.inflight: dict = {}  # ref -> (trial, params, retried)
        self.running: dict = {}  # params key -> trial number, for in-flight duplicates
        self.deadlines = Deadlines(timeout)
        self.size = space_size(spec.parameters)
        self.ended: str | None = None  # why the study ended before its budget
        self.repeats = 0

    def run(self) -> None:
        try:
            while not self.caught:
                self._fill()
                if not self.inflight:
                    if self._others_may_need_us():
                        time.sleep(_POLL_S)
                        continue
                    break
                self._collect()
            if self.caught:
                raise Interrupted(self.caught[0])
            if self.ended:
                print(f"search: {self.ended}", file=sys.stderr)
        finally:
            self._abandon()
            self.bar.close()

    def _room(self) -> bool:
        if self.shared is None:
            return self.done + len(self.inflight) < self.budget
        self.shared.reap()
        return self.shared.room(self.budget)

    def _others_may_need_us(self) -> bool:
        """Shared study, budget not met: another driver's trials may still fail or go stale."""
        if self.shared is None or self.caught or self.ended:
            return False
        return self.shared.others_running() and not self.shared.budget_met(self.budget)

    def _fill(self) -> None:
        while (len(self.inflight) < self.workers and not self.caught and not self.ended and self._room()):
            if self.size is not None and len(self.finished) + len(self.running) >= self.size:
                self.ended = f"search space exhausted: all {self.size} configurations evaluated"
                break
            trial = self.study.ask() if self.shared is None else self.shared.ask()
            if self.shared is not None and self.shared.over_budget(trial.number, self.budget):
                trial.set_user_attr("over_budget", True)
                self.study.tell(trial, state=TrialState.PRUNED)
                break
            params = suggest(trial, self.spec.parameters)
            key = params_key(params)
            twin, completed = self.finished.get(key, (self.running.get(key), True))
            if twin is None and self.shared is not None:
                twin, completed = self.shared.twin(trial.number, key)
            if twin is not None and (completed or not trial.user_attrs.get("baseline")):
                self._tell_duplicate(trial, twin)
                self.repeats += 1
                if self.repeats >= MAX_DUPLICATES_IN_A_ROW:
                    self.ended = (f"the sampler proposed only evaluated configurations {self.repeats} times in a row; "
                                  "stopping (a larger space or another sampler would explore further)")
                continue
            self.repeats = 0
            self._submit(trial, params, None)

    def _submit(self, trial, params: dict, retried: str | None) -> None:
        ref = self.evaluate.remote(self.objective_ref, params, self.timeout)
        self.inflight[ref] = (trial, params, retried)
        self.running[params_key(params)] = trial.number
        self.deadlines.add(ref)

    def _collect(self) -> None:
        if self.shared is not None:
            self.shared.beat(trial for trial, _, _ in self.inflight.values())
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=self.deadlines.wait_s(_POLL_S))
        for ref in list(self.inflight):
            answer = settled(ref, ready, self.deadlines, self.timeout)
            if answer is None:
                continue
            outcome, node = answer
            trial, params, retried = self.inflight.pop(ref)
            if isinstance(outcome, SystemFault):
                if retried is None:
                    # A dead or OOM-killed worker says nothing about the parameters: try once more.
                    trial.set_user_attr("retried_after", outcome.message)
                    self._submit(trial, params, outcome.message)
                    continue
                outcome = TrialError(f"{outcome.message} (also on retry)")
            key = params_key(params)
            del self.running[key]
            if node is not None:
                trial.set_user_attr("node", node)
            completed = _tell(self.study, trial, outcome)
            self.finished[key] = (trial.number, completed)
            if completed:
                self.tally.add_complete(trial.number, outcome.values, outcome.constraints)
            else:
                self.tally.failed += 1
            self.done += 1
            self.bar.refresh(1)

    def _tell_duplicate(self, trial, twin: int) -> None:
        trial.set_user_attr("duplicate_of", twin)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.tally.duplicates += 1
        self.bar.refresh()

    def _abandon(self) -> None:
        """Cancel what is still in flight and mark it interrupted, so a resume re-runs it."""
        for ref, (trial, _, _) in self.inflight.items():
            self.ray.cancel(ref, force=True)
            try:
                self.study.tell(trial, state=TrialState.FAIL)
            except OSError:  # storage full: the trial stays RUNNING, which a resume recovers too
                pass
        self.inflight.clear()


def _tell(study: optuna.Study, trial: optuna.trial.Trial, outcome) -> bool:
    """Record a finished trial; True when it completed."""
    outcome, attrs = recorded(outcome)
    failed = isinstance(outcome, TrialError)
    if not failed:
        _store_constraints(trial, list(outcome.constraints.values()))
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if failed:
        study.tell(trial, state=TrialState.FAIL)
        return False
    study.tell(trial, outcome.values)
    return True


def _store_constraints(trial: optuna.trial.Trial, violations: list[float]) -> None:
    """Constraint values in the trial's ``constraints`` system attr, as a list in spec order.

    That is where Optuna's samplers' ``constraints_func`` puts them and what every reader
    understands: Optuna 5 (``best_trials``, visualisation, samplers) reads it as well as the
    per-name keys ``Trial.set_constraint`` writes, but optuna-dashboard reads only the list, so
    per-name keys would make it show infeasible trials as feasible.
    """
    if violations:
        trial.storage.set_trial_system_attr(trial._trial_id, "constraints", violations)
