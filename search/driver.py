"""Search driver: one Optuna study driven by ask/tell, trials evaluated as Ray tasks.

The study lives in Optuna storage (a journal file in the output directory by default), which
is the single source of truth, so a driver killed at any moment resumes by re-running the same
command: finished trials are kept, and trials a dead driver left RUNNING are failed and
re-enqueued with the same parameters (counting once toward the budget).

Trial bookkeeping in user attrs: ``error`` (failed trials), ``metrics``/``spread``/``seconds``
(completed ones), ``baseline``, ``requeued_from`` and ``duplicate_of``. A FAIL trial without
``error`` is one a driver was interrupted on.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import time
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from blis.errors import ConfigError
from search.space import suggest
from search.study_file import StudySpec

DEFAULT_TRIALS = 20
JOURNAL_NAME = "study.journal"
META_NAME = "search.json"


@dataclass
class TrialError:
    """What a worker returns instead of an Evaluation when the simulation raised."""

    message: str


def default_out_dir(spec: StudySpec) -> Path:
    return Path("out") / spec.name


def resolve_storage(storage: str | None, out_dir: Path) -> str:
    """The storage as an absolute URL or journal path, so it means the same from any directory.

    ``sqlite:///x.db`` is relative to the current directory; it becomes ``sqlite:////abs/x.db``.
    Other URLs (server databases) are kept as given.
    """
    if storage and storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///") :]
        return "sqlite:///" + str(Path(path).resolve()) if path and path != ":memory:" else storage
    if storage and "://" in storage:
        return storage
    return str((Path(storage) if storage else out_dir / JOURNAL_NAME).resolve())


def _storage_missing(storage: str) -> bool:
    """A file-backed storage whose file is gone (opening it would create an empty study store)."""
    if storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///") :]
        return bool(path) and path != ":memory:" and not Path(path).exists()
    return "://" not in storage and not Path(storage).exists()


def open_storage(storage: str | None, out_dir: Path):
    """An Optuna storage: any URL Optuna accepts (``sqlite:///x.db``...) or a journal file path."""
    if storage and "://" in storage:
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(storage) if storage else out_dir / JOURNAL_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def load_run(out_dir: Path) -> tuple[optuna.Study, StudySpec]:
    """Re-open a search's study from its output directory (used by ``blis report``)."""
    from search.study_file import parse_study

    meta_path = out_dir / META_NAME
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ConfigError("out_dir", f"{out_dir} holds no search (missing {META_NAME})") from None
    storage = meta["storage"]
    if "://" not in storage and not Path(storage).is_absolute():
        storage = str(out_dir / storage)
    if _storage_missing(storage) and not _storage_missing(str(out_dir / JOURNAL_NAME)):
        storage = str(out_dir / JOURNAL_NAME)  # the output directory was moved with its journal
    if _storage_missing(storage):
        raise ConfigError("storage", f"{storage} (recorded in {meta_path}) does not exist")
    quiet_optuna()
    try:
        study = optuna.load_study(study_name=meta["study_name"], storage=open_storage(storage, out_dir))
    except KeyError:
        raise ConfigError("storage", f"{storage} holds no study named {meta['study_name']!r}") from None
    spec = parse_study(study.user_attrs["spec"], default_name=meta["study_name"])
    return study, spec


def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)


@contextmanager
def _exclusive(out_dir: Path):
    """One driver per output directory: a second one would fail the first one's running trials."""
    with open(out_dir / ".driver.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError("out", f"another blis search is running on {out_dir}") from None
        yield


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    if spec.sampler == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed, **spec.sampler_options)
    return optuna.samplers.TPESampler(seed=seed, **spec.sampler_options)


def is_interrupted(t: optuna.trial.FrozenTrial) -> bool:
    return t.state == TrialState.FAIL and "error" not in t.user_attrs


def counts_toward_budget(t: optuna.trial.FrozenTrial) -> bool:
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.FAIL and not is_interrupted(t))


def recover(study: optuna.Study) -> int:
    """Fail trials a dead driver left RUNNING and re-enqueue every interrupted trial once.

    Idempotent: a driver killed halfway through recovery finishes it on the next start.
    Returns the number of trials re-enqueued.
    """
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get("requeued_from") for t in trials}
    n = 0
    for t in trials:
        if is_interrupted(t) and t.number not in requeued:
            attrs = {"requeued_from": t.number}
            if t.user_attrs.get("baseline"):
                attrs["baseline"] = True
            study.enqueue_trial(t.params, user_attrs=attrs)
            n += 1
    return n


def _evaluate(objective, params: dict):
    try:
        return objective.evaluate(params)
    except Exception as e:  # the trial fails, the study goes on
        return TrialError(f"{type(e).__name__}: {e}")


def _params_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _start_ray(workers: int, address: str | None) -> bool:
    """Start (or join) Ray quietly unless the caller already did; True when we own it."""
    import ray

    if ray.is_initialized():
        return False
    import blis
    import objectives
    import search

    packages = [Path(m.__file__).parent for m in (blis, objectives, search)]
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if address:
        ray.init(address=address, runtime_env={"py_modules": [str(p) for p in packages]}, **quiet)
    else:
        path = os.pathsep.join(dict.fromkeys([str(p.parent) for p in packages] + [os.environ.get("PYTHONPATH", "")]))
        # address="local": always a private instance, even when another local Ray cluster runs
        ray.init(address="local", num_cpus=workers, runtime_env={"env_vars": {"PYTHONPATH": path.strip(os.pathsep)}}, **quiet)
    return True


class _Progress:
    """tqdm bar over the budget: done / failed / current front size, with tqdm's ETA."""

    def __init__(self, study: optuna.Study, budget: int, done: int, enabled: bool, name: str):
        from tqdm import tqdm

        self.study = study
        self.bar = tqdm(total=budget, initial=min(done, budget), disable=not enabled, desc=name, unit="trial", dynamic_ncols=True)
        self.refresh()

    def refresh(self, step: int = 0) -> None:
        trials = self.study.get_trials(deepcopy=False)
        self.bar.set_postfix(
            ok=sum(t.state == TrialState.COMPLETE for t in trials),
            failed=sum(t.state == TrialState.FAIL and not is_interrupted(t) for t in trials),
            front=len(self.study.best_trials),
            refresh=False,
        )
        self.bar.update(step)

    def close(self) -> None:
        self.bar.close()


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
    simulate: Callable[[dict], dict] | None = None,
    progress: bool = True,
    report: bool = True,
) -> optuna.Study:
    """Run (or resume) ``spec`` until ``trials`` trials have finished; return the study."""
    out = Path(out_dir) if out_dir else default_out_dir(spec)
    out.mkdir(parents=True, exist_ok=True)
    budget = trials or spec.trials or DEFAULT_TRIALS
    timeout = trial_timeout or spec.trial_timeout
    seed = spec.seed if seed is None else seed
    quiet_optuna()
    with _exclusive(out):
        if not storage:
            # Only this driver can touch the default journal (it holds the directory lock), so a
            # journal lock left by a SIGKILLed driver is stale: drop it instead of waiting out
            # Optuna's 30 s grace period.
            (out / (JOURNAL_NAME + ".lock")).unlink(missing_ok=True)
        where = resolve_storage(storage, out)
        study = optuna.create_study(
            storage=open_storage(where, out), study_name=spec.name, directions=spec.directions, load_if_exists=True
        )
        _check_same_study(study, spec, where)
        (out / META_NAME).write_text(json.dumps({"study_name": spec.name, "storage": where}, indent=2) + "\n")
        recover(study)
        existing = study.get_trials(deepcopy=False)
        if spec.baseline and not any(t.user_attrs.get("baseline") for t in existing):
            study.enqueue_trial(spec.baseline, user_attrs={"baseline": True})
        # A resumed driver must not replay the first run's sampler stream (it would re-propose
        # the same points), so the sampler seed also depends on how many trials exist.
        study.sampler = make_sampler(spec, seed if not existing else zlib.crc32(f"{seed}:{len(existing)}".encode()))
        owns_ray = _start_ray(workers or os.cpu_count() or 1, ray_address)
        try:
            import ray

            if workers is None:
                workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
            _loop(study, spec, budget, workers, timeout, simulate, progress)
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


def _loop(study, spec: StudySpec, budget: int, workers: int, timeout: float | None, simulate, progress: bool) -> None:
    import ray

    evaluate = ray.remote(num_cpus=1, max_retries=0)(_evaluate)
    objective_ref = ray.put(spec.objective(simulate))
    completed = {
        _params_key(t.params): t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    done = sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False))
    bar = _Progress(study, budget, done, progress, spec.name)
    inflight: dict = {}
    try:
        while True:
            while len(inflight) < workers and done + len(inflight) < budget:
                trial = study.ask()
                params = suggest(trial, spec.parameters)
                twin = completed.get(_params_key(params))
                if twin is not None:
                    _tell_duplicate(study, trial, twin)
                    done += 1
                    bar.refresh(1)
                    continue
                inflight[evaluate.remote(objective_ref, params)] = (trial, params, time.monotonic())
            if not inflight:
                break
            wait = None
            if timeout:
                wait = max(0.05, min(start + timeout for _, _, start in inflight.values()) - time.monotonic())
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=wait)
            now = time.monotonic()
            for ref in list(inflight):
                trial, params, start = inflight[ref]
                if ref in ready:
                    outcome = _fetch(ray, ref)
                elif timeout and now - start >= timeout:
                    ray.cancel(ref, force=True)
                    outcome = TrialError(f"timed out after {timeout:g} s")
                else:
                    continue
                del inflight[ref]
                if _tell(study, trial, outcome):
                    completed[_params_key(params)] = study.get_trials(deepcopy=False)[trial.number]
                done += 1
                bar.refresh(1)
    finally:
        for ref in inflight:
            ray.cancel(ref, force=True)
        bar.close()


def _fetch(ray, ref):
    try:
        return ray.get(ref)
    except Exception as e:  # worker crash, OOM kill, ...
        return TrialError(f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}")


def _tell(study: optuna.Study, trial: optuna.trial.Trial, outcome) -> bool:
    """Record a finished trial; True when it completed."""
    if not isinstance(outcome, TrialError) and any(math.isnan(v) for v in outcome.values):
        outcome = TrialError(f"objective value is NaN: {outcome.values}")
    if isinstance(outcome, TrialError):
        trial.set_user_attr("error", outcome.message)
        study.tell(trial, state=TrialState.FAIL)
        return False
    _store_constraints(trial, list(outcome.constraints.values()))
    trial.set_user_attr("metrics", outcome.metrics)
    if outcome.spread:
        trial.set_user_attr("spread", outcome.spread)
    trial.set_user_attr("seconds", round(outcome.seconds, 3))
    study.tell(trial, outcome.values)
    return True


def _tell_duplicate(study: optuna.Study, trial: optuna.trial.Trial, twin: optuna.trial.FrozenTrial) -> None:
    """Same params as a completed trial: the simulator is deterministic, so reuse its result."""
    _store_constraints(trial, list(twin.constraints.values()))
    for key in ("metrics", "spread"):
        if key in twin.user_attrs:
            trial.set_user_attr(key, twin.user_attrs[key])
    trial.set_user_attr("duplicate_of", twin.number)
    study.tell(trial, twin.values)


def _store_constraints(trial: optuna.trial.Trial, violations: list[float]) -> None:
    """Constraint values in the trial's ``constraints`` system attr, as a list in spec order.

    That is where Optuna's samplers' ``constraints_func`` puts them and what every reader
    understands: Optuna 5 (``best_trials``, visualisation, samplers) reads it as well as the
    per-name keys ``Trial.set_constraint`` writes, but optuna-dashboard reads only the list, so
    per-name keys would make it show infeasible trials as feasible.
    """
    if violations:
        trial.storage.set_trial_system_attr(trial._trial_id, "constraints", violations)
