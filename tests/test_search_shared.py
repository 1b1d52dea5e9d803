"""SharedStudy's storage-backed checks, with two Study handles on one heartbeat RDB storage
standing for two drivers (SQLite here; tests/test_cluster.py runs real drivers on PostgreSQL)."""

import time

import optuna
import pytest
from optuna.trial import TrialState

from search.driver import recover
from search.shared import SharedStudy
from search.space import params_key
from search.storage import _open_database


@pytest.fixture
def drivers(tmp_path):
    """Two drivers' views of one study: (study, SharedStudy) each."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    studies = [optuna.create_study(storage=_open_database(url, 1.0), study_name="s", load_if_exists=True) for _ in range(2)]
    return [(s, SharedStudy(s, 1.0)) for s in studies]


def test_the_budget_counts_the_other_driver_s_running_trials(drivers):
    (a, sa), (b, sb) = drivers
    first = sa.ask()
    assert sb.room(2) and not sb.room(1)
    second = sb.ask()
    # both asked for the last slot of a budget of 2 after one trial: the higher number yields
    assert not sa.over_budget(first.number, 1) and sb.over_budget(second.number, 1)
    a.tell(first, 1.0)
    assert sb.budget_met(1) and not sb.budget_met(2)


def test_a_proposal_equal_to_the_other_driver_s_trial_is_its_twin(drivers):
    (a, sa), (b, sb) = drivers
    ta = sa.ask()
    ta.suggest_int("x", 3, 3)
    tb = sb.ask()
    tb.suggest_int("x", 3, 3)
    key = params_key({"x": 3})
    assert sb.twin(tb.number, key) == (ta.number, True)  # running there
    a.tell(ta, state=TrialState.FAIL)  # interrupted, not evaluated: no longer a twin
    assert sb.twin(tb.number, key) == (None, True)
    assert sb.twin(tb.number, params_key({"x": 4})) == (None, True)


def test_a_silent_driver_s_trial_is_failed_and_retried_exactly_once(drivers):
    (a, sa), (b, sb) = drivers
    lost = sa.ask()
    lost.suggest_int("x", 5, 5)
    time.sleep(4.2)  # three beats missed (grace 3 s; SQLite's clock has 1 s steps): driver a is gone
    sb.reap()
    frozen = b.get_trials()
    assert frozen[lost.number].state == TrialState.FAIL
    retry = [t for t in frozen if t.system_attrs.get("failed_trial") == lost.number]
    assert [(t.state, t.params) for t in retry] == [(TrialState.WAITING, {"x": 5})]
    assert recover(b, shared=True) == 0  # Optuna's retry counts as the re-enqueue
    assert sum(t.state == TrialState.WAITING for t in b.get_trials()) == 1
