"""Search driver on the fast fake simulator: front, failures, timeouts, constraints, resume, report."""

import copy
import json
import logging
import os
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

import search_fakes
from blis.errors import ConfigError
from search.driver import is_interrupted, run_search
from search.report import write_report
from search.space import suggest
from search.study_file import parse_study

ray = pytest.importorskip("ray")
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local 2-CPU Ray for the module; the driver reuses an initialised Ray."""
    path = os.pathsep.join([str(TESTS.parent), str(TESTS)])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def search(raw: dict, out: Path, **kw) -> optuna.Study:
    kw.setdefault("workers", 2)
    return run_search(parse_study(raw), out_dir=out, simulate=search_fakes.simulate, progress=False, **kw)


def dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


@pytest.fixture(scope="module")
def capacity_run(tmp_path_factory):
    """The fake capacity study: 16 trials, 2 workers, with an over-provisioned, badly tuned baseline."""
    out = tmp_path_factory.mktemp("capacity")
    raw = search_fakes.study_dict(baseline={"num_instances": 6, "hardware": "H100", "max_num_batched_tokens": 256})
    return search(raw, out, trials=16), out


def test_front_dominates_the_baseline(capacity_run):
    study, _ = capacity_run
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 16
    baseline = next(t for t in trials if t.user_attrs.get("baseline"))
    assert baseline.number == 0 and baseline.params["hardware"] == "H100"
    front = study.best_trials
    assert front and baseline not in front
    assert any(dominates(t.values, baseline.values) for t in front)


def test_constraint_keeps_infeasible_trials_off_the_front(capacity_run):
    study, out = capacity_run
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    # constraints are stored as a list in study-file order (what optuna-dashboard reads): "0" is backlog<=0
    infeasible = [t for t in trials if t.constraints["0"] > 0]
    assert infeasible, "the space must contain overloaded (backlogged) configurations"
    cheapest = min(trials, key=lambda t: t.values[1])
    assert cheapest in infeasible and cheapest.user_attrs["metrics"]["backlog"] > 0
    for t in study.best_trials:
        assert t.constraints["0"] == 0 and t.user_attrs["metrics"]["backlog"] == 0
    pareto = pd.read_csv(out / "pareto.csv")
    assert set(pareto["trial"]) <= {t.number for t in trials if t not in infeasible}
    assert (pareto["violation:backlog<=0"] == 0).all()


def test_report_files_exist_and_parse(capacity_run):
    study, out = capacity_run
    trials = pd.read_csv(out / "trials.csv")
    evaluated = trials[trials["duplicate_of"].isna()] if "duplicate_of" in trials else trials
    assert len(evaluated) == 16 and {"trial", "state", "feasible", "pareto_rank", "ttft_p90_ms@critical", "gpu_cost_per_hour", "param:hardware"} <= set(trials.columns)
    pareto = pd.read_csv(out / "pareto.csv")
    assert len(pareto) >= 1 and pareto["command"].str.startswith("blis run --model qwen/qwen2.5-7b-instruct").all()
    assert pareto["command"].str.contains("--workload-spec").all()
    for path in {p for cmd in pareto["command"] for p in cmd.split() if p.endswith(".yaml")}:
        assert Path(path).is_file()
    md = (out / "recommendations.md").read_text()
    assert md.startswith("# Recommendations: fake_capacity") and "```sh\nblis run" in md and "vs baseline" in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"]["complete"] == 16 and summary["front"] and summary["baseline"]["trial"] == 0
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 1000
    (out / "pareto.csv").unlink()
    write_report(out)
    assert pd.read_csv(out / "pareto.csv").equals(pareto)


def test_failing_and_hanging_trials_are_recorded_and_the_study_finishes(tmp_path):
    raw = search_fakes.study_dict(
        parameters={
            "num_instances": {"type": "int", "low": 3, "high": 6},
            "max_num_seqs": {"type": "categorical", "choices": [search_fakes.SLOW_SEQS, search_fakes.FAIL_SEQS, 64, 128]},
        },
        baseline={"num_instances": 4, "max_num_seqs": search_fakes.SLOW_SEQS},
    )
    study = search(raw, tmp_path, trials=8, trial_timeout=2)
    trials = study.get_trials()
    assert len([t for t in trials if t.state.is_finished() and "duplicate_of" not in t.user_attrs]) == 8
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["error"] == "timed out after 2 s"
    # the clock starts when a trial starts: the worker replacing a cancelled one costs nothing
    timed_out = [t for t in trials if t.user_attrs.get("error", "").startswith("timed out")]
    assert all(t.params["max_num_seqs"] == search_fakes.SLOW_SEQS for t in timed_out)
    failed = [t for t in trials if t.params["max_num_seqs"] == search_fakes.FAIL_SEQS]
    assert failed, "the sampler should try the failing value in 8 trials"
    for t in failed:
        assert t.state == TrialState.FAIL and t.user_attrs["error"] == "RuntimeError: injected simulator failure"
    assert any(t.state == TrialState.COMPLETE for t in trials)
    trials_csv = pd.read_csv(tmp_path / "trials.csv")
    assert set(trials_csv["error"].dropna()) >= {"timed out after 2 s", "RuntimeError: injected simulator failure"}


def test_running_trials_of_a_dead_driver_are_requeued_once(tmp_path):
    raw = search_fakes.study_dict(baseline=None)
    spec = parse_study(raw)
    study = search(raw, tmp_path, trials=4)
    # What a driver killed mid-trial leaves behind: a RUNNING trial with its params.
    orphan = study.ask()
    orphan_params = suggest(orphan, spec.parameters)
    study = search(raw, tmp_path, trials=7)
    trials = study.get_trials()
    assert trials[orphan.number].state == TrialState.FAIL and is_interrupted(trials[orphan.number])
    requeued = [t for t in trials if t.user_attrs.get("requeued_from") == orphan.number]
    assert len(requeued) == 1 and requeued[0].params == orphan_params and requeued[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 7
    study = search(raw, tmp_path, trials=7)
    assert len(study.get_trials()) == len(trials), "a finished study runs nothing more"


def test_duplicate_params_reuse_the_completed_result(tmp_path):
    raw = search_fakes.study_dict(
        parameters={"num_instances": {"type": "int", "low": 4, "high": 5}, "hardware": {"type": "categorical", "choices": ["H100"]}},
        baseline=None,
        constraints=[],
    )
    study = search(raw, tmp_path, trials=6, workers=1)
    trials = study.get_trials()
    dups = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert len(dups) >= 4 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in dups:
        twin = trials[t.user_attrs["duplicate_of"]]
        assert twin.params == t.params and twin.values == t.values and "duplicate_of" not in twin.user_attrs


def test_resuming_with_a_changed_study_file_is_refused(tmp_path):
    raw = search_fakes.study_dict()
    search(raw, tmp_path, trials=2)
    changed = copy.deepcopy(raw)
    changed["objectives"] = changed["objectives"][:1]
    with pytest.raises(ConfigError) as e:
        search(changed, tmp_path, trials=4)
    assert e.value.field == "study" and "different study file" in e.value.message


def test_multi_seed_metrics_and_spread_are_stored(tmp_path):
    raw = search_fakes.study_dict(seeds=[1, 2], baseline=None)
    study = search(raw, tmp_path, trials=2)
    t = study.get_trials(states=(TrialState.COMPLETE,))[0]
    assert set(t.user_attrs["spread"]["ttft_p90_ms@critical"]) == {"std", "min", "max"}
    assert "Metrics are means over seeds [1, 2]" in (tmp_path / "recommendations.md").read_text()
