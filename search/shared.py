"""Several drivers on one study (a database storage): what each must read from storage, not memory.

A driver alone on its storage keeps its budget and duplicate checks in memory (O(1) per trial).
Drivers sharing a study see each other only through the storage, so each check here rereads it:
- the budget counts every driver's finished and running trials before a trial is asked, and
  after it: trial numbers are assigned by the database, so of two drivers racing for the last
  slot the one holding the higher number yields (its trial is told PRUNED with ``over_budget``);
- a proposal equal to any other driver's evaluated or running trial is a duplicate;
- in-flight trials send Optuna heartbeats, and a trial whose driver stopped beating (killed,
  machine lost) is failed by whichever driver notices first, and re-enqueued by Optuna's
  ``RetryFailedTrialCallback`` (configured on the storage in ``search.storage``).
"""

from __future__ import annotations

import time
import warnings

import optuna
from optuna.trial import TrialState

from search.progress import counts_toward_budget, is_duplicate
from search.space import params_key


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's stale-trial reaper (fail, then the storage's retry callback re-enqueues)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class SharedStudy:
    """Storage-backed budget, duplicate and liveness checks for one driver of a shared study."""

    def __init__(self, study: optuna.Study, heartbeat_s: float):
        self.study, self.heartbeat_s = study, heartbeat_s
        self.storage = study._storage
        self.last_beat = self.last_reap = float("-inf")

    def _trials(self):
        return self.study.get_trials(deepcopy=False)

    def ask(self) -> optuna.trial.Trial:
        """``study.ask()`` with the trial's first heartbeat sent at once, so it can go stale."""
        with warnings.catch_warnings():
            # Optuna expects heartbeats with study.optimize only; this driver sends them itself.
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask()
        self.beat([trial], force=True)
        return trial

    def reap(self) -> None:
        """Fail (and so re-enqueue) trials of drivers that stopped beating; at most once a beat."""
        if time.monotonic() - self.last_reap >= self.heartbeat_s:
            self.last_reap = time.monotonic()
            fail_stale_trials(self.study)

    def room(self, budget: int) -> bool:
        """Whether all drivers together have fewer than ``budget`` trials finished or running."""
        return self._taken(self._trials(), None) < budget

    def over_budget(self, number: int, budget: int) -> bool:
        """Whether trials numbered below ``number`` already fill the budget."""
        return self._taken(self._trials(), number) >= budget

    def budget_met(self, budget: int) -> bool:
        return sum(counts_toward_budget(t) for t in self._trials()) >= budget

    @staticmethod
    def _taken(trials, below: int | None) -> int:
        return sum((counts_toward_budget(t) or t.state == TrialState.RUNNING)
                   for t in trials if below is None or t.number < below)

    def twin(self, number: int, key: str) -> tuple[int | None, bool]:
        """Another trial with these parameters, evaluated or running: (its number, completed?)."""
        for t in self._trials():
            if t.number == number or is_duplicate(t) or "over_budget" in t.user_attrs:
                continue
            evaluated = t.state == TrialState.COMPLETE or (counts_toward_budget(t) and t.state == TrialState.FAIL)
            if (evaluated or t.state == TrialState.RUNNING) and params_key(t.params) == key:
                return t.number, t.state != TrialState.FAIL
        return None, True

    def others_running(self) -> bool:
        """Trials are running (called with none of ours in flight): they may fail or go stale."""
        return any(t.state == TrialState.RUNNING for t in self._trials())

    def beat(self, trials, force: bool = False) -> None:
        """Heartbeat ``trials`` (Optuna ``Trial`` objects) now if ``force``, else at most twice a beat."""
        if force or time.monotonic() - self.last_beat >= self.heartbeat_s / 2:
            if not force:
                self.last_beat = time.monotonic()
            for trial in trials:
                self.storage.record_heartbeat(trial._trial_id)
