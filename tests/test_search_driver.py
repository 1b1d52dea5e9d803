"""Search driver on the fast fake simulator: front, failures, timeouts, constraints, resume, report."""

import copy
import errno
import json
import logging
import os
import subprocess
from pathlib import Path

import optuna
import pandas as pd
import pytest
import search_fakes
from optuna.trial import TrialState

from blis.errors import ConfigError
from search.driver import counts_toward_budget, is_interrupted, run_search
from search.progress import Tally
from search.report import write_report
from search.space import Parameter, space_size, suggest
from search.storage import driver_locks, open_storage, repair_journal, resolve_storage
from search.study_file import parse_study

ray = pytest.importorskip("ray")
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(tmp_path_factory):
    """One local 2-CPU Ray for the module; the driver reuses an initialised Ray."""
    path = os.pathsep.join([str(TESTS.parent), str(TESTS)])
    markers = str(tmp_path_factory.mktemp("crash-markers"))
    env = {"PYTHONPATH": path, search_fakes.MARKERS_ENV: markers}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, runtime_env={"env_vars": env})
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
    evaluated = [t for t in trials if t not in dups]
    # two configurations: both evaluated once, then the exhausted space ends the study early
    assert len(evaluated) == 2 and all(t.state == TrialState.COMPLETE for t in evaluated)
    assert sorted(t.params["num_instances"] for t in evaluated) == [4, 5]
    for t in dups:
        twin = trials[t.user_attrs["duplicate_of"]]
        assert t.state == TrialState.PRUNED and twin.params == t.params and "duplicate_of" not in twin.user_attrs


def test_space_size_counts_conditional_configurations():
    spec = parse_study(search_fakes.study_dict(parameters={
        "policy_config.admission.policy": {"type": "categorical", "choices": ["gaie-legacy", "tier-shed"]},
        "policy_config.admission.tier_shed_threshold": {"type": "int", "low": 0, "high": 9, "when": {"policy_config.admission.policy": "tier-shed"}},
        "num_instances": {"type": "int", "low": 1, "high": 3},
    }, baseline=None, sampler="tpe"))
    assert space_size(spec.parameters) == (1 + 10) * 3
    assert space_size([*spec.parameters, Parameter("rate", "float", low=1.0, high=2.0)]) is None
    assert space_size([*spec.parameters, Parameter("rate", "float", low=1.0, high=2.0, step=0.5)]) == 33 * 3


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


def test_progress_front_equals_the_report_front(capacity_run):
    study, out = capacity_run
    tally = Tally.of(study)
    assert len(tally.front) == len(pd.read_csv(out / "pareto.csv")) >= 1
    assert tally.complete == 16 and tally.failed == 0


def test_a_torn_journal_tail_is_cut_and_the_study_goes_on(tmp_path, capsys):
    raw = search_fakes.study_dict(baseline=None)
    search(raw, tmp_path, trials=5, workers=1)
    journal = tmp_path / "study.journal"
    before = {t.number: t.values for t in search(raw, tmp_path, trials=5).get_trials() if t.state == TrialState.COMPLETE}
    data = journal.read_bytes()
    journal.write_bytes(data[:-60])  # the last record cut mid-write
    study = search(raw, tmp_path, trials=7, workers=1)
    assert "cut a torn tail of" in capsys.readouterr().err
    torn = list(tmp_path.glob("study.journal.torn-*"))
    assert len(torn) == 1 and torn[0].read_bytes() == data[:-60]
    trials = study.get_trials()
    assert sum(t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs for t in trials) >= 7
    for number, values in before.items():
        if number < len(trials) - 1 and trials[number].state == TrialState.COMPLETE:
            assert trials[number].values == values
    write_report(tmp_path)  # and the report reads the repaired journal


def test_repair_journal_keeps_complete_records_only(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    assert repair_journal(path) == len(b'{"c":')
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert repair_journal(path) == 0
    path.write_bytes(b'{"a":1}\n{"b":{"a":1}\n{"c":3}\n')  # a later record appended onto a torn one
    repair_journal(path)
    assert path.read_bytes() == b'{"a":1}\n'


def test_a_full_disk_stops_with_a_storage_error_and_a_resume_loses_nothing(tmp_path, monkeypatch):
    from optuna.storages.journal import JournalFileBackend

    raw = search_fakes.study_dict(baseline=None)
    search(raw, tmp_path, trials=3, workers=1)
    kept = {t.number: t.values for t in search(raw, tmp_path, trials=3).get_trials() if t.state == TrialState.COMPLETE}
    real_append, calls = JournalFileBackend.append_logs, []

    def append_until_full(self, logs):
        calls.append(1)
        if len(calls) > 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(self, logs)

    monkeypatch.setattr(JournalFileBackend, "append_logs", append_until_full)
    with pytest.raises(ConfigError) as e:
        search(raw, tmp_path, trials=8, workers=1)
    assert e.value.field == "storage" and "No space left on device" in e.value.message and "re-run" in e.value.message
    monkeypatch.setattr(JournalFileBackend, "append_logs", real_append)
    study = search(raw, tmp_path, trials=8, workers=1)
    trials = study.get_trials()
    assert sum(counts_toward_budget(t) for t in trials) == 8
    for number, values in kept.items():
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == values


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_real_full_tmpfs_stops_cleanly_and_resumes(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        raw = search_fakes.study_dict(baseline=None)
        journal = disk / "study.journal"
        with pytest.raises(ConfigError) as e:
            search(raw, tmp_path / "out", trials=60, workers=1, storage=str(journal))
        assert e.value.field == "storage"
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)  # space freed
        done = {t.number: t.values for t in optuna.load_study(study_name="fake_capacity", storage=open_storage(resolve_storage(str(journal), tmp_path))).get_trials() if t.state == TrialState.COMPLETE}
        assert done
        study = search(raw, tmp_path / "out", trials=60, workers=1, storage=str(journal))
        trials = study.get_trials()
        assert sum(counts_toward_budget(t) for t in trials) == 60
        for number, values in done.items():
            assert trials[number].values == values
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_a_second_driver_on_the_same_storage_is_refused(tmp_path):
    raw = search_fakes.study_dict(baseline=None)
    journal = tmp_path / "a" / "study.journal"
    with driver_locks(resolve_storage(str(journal), tmp_path), tmp_path / "a"):
        with pytest.raises(ConfigError) as e:
            search(raw, tmp_path / "b", trials=2, storage=str(journal))
    assert e.value.field == "storage" and f"pid {os.getpid()}" in e.value.message
    assert search(raw, tmp_path / "b", trials=2, storage=str(journal)).get_trials()


def test_system_faults_are_retried_once_and_raised_errors_are_not(tmp_path):
    raw = search_fakes.study_dict(
        parameters={
            "num_instances": {"type": "int", "low": 3, "high": 4},
            "max_num_seqs": {"type": "categorical", "choices": [search_fakes.CRASH_ONCE_SEQS, search_fakes.CRASH_ALWAYS_SEQS, search_fakes.FAIL_SEQS]},
        },
        baseline={"num_instances": 3, "max_num_seqs": search_fakes.CRASH_ONCE_SEQS},
    )
    study = search(raw, tmp_path, trials=6, workers=1)
    trials = [t for t in study.get_trials() if "duplicate_of" not in t.user_attrs]
    baseline = trials[0]
    assert baseline.state == TrialState.COMPLETE and "retried_after" in baseline.user_attrs
    for t in trials:
        seqs = t.params["max_num_seqs"]
        if seqs == search_fakes.CRASH_ALWAYS_SEQS:
            assert t.state == TrialState.FAIL and t.user_attrs["error"].endswith("(also on retry)")
        if seqs == search_fakes.FAIL_SEQS:
            assert t.state == TrialState.FAIL and "retried_after" not in t.user_attrs


def test_a_failed_baseline_is_retried_on_resume(tmp_path):
    raw = search_fakes.study_dict(
        parameters={"num_instances": {"type": "int", "low": 1, "high": 6}, "max_num_seqs": {"type": "categorical", "choices": [search_fakes.FAIL_SEQS, 64]}},
        baseline={"num_instances": 2, "max_num_seqs": search_fakes.FAIL_SEQS},
    )
    search(raw, tmp_path, trials=2, workers=1)
    study = search(raw, tmp_path, trials=4, workers=1)
    baselines = [t for t in study.get_trials() if t.user_attrs.get("baseline")]
    assert len(baselines) == 2 and all(t.state == TrialState.FAIL for t in baselines)
