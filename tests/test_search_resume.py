"""Kill the search driver with SIGKILL mid-study, re-run the same command, lose nothing."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

pytest.importorskip("blis.simulation")

from search.driver import is_interrupted  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRIALS = 16
STUDY = {
    "name": "resume",
    "seed": 11,
    "sampler": {"type": "nsgaii", "population_size": 6},
    "base": {"model": "qwen/qwen2.5-7b-instruct", "hardware": "H100", "workload": "chatbot", "rate": 30, "num_requests": 1000},
    "parameters": {
        "num_instances": {"type": "int", "low": 1, "high": 4},
        "max_num_seqs": {"type": "int", "low": 16, "high": 256},
        "max_num_batched_tokens": {"type": "int", "low": 256, "high": 8192, "log": True},
    },
    "objectives": [{"metric": "ttft_p90_ms"}, {"metric": "gpu_cost_per_hour"}],
}


def load(out: Path) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name="resume", storage=JournalStorage(JournalFileBackend(str(out / "study.journal"))))


def kill_session(sid: int) -> None:
    """SIGKILL every process of the session the driver was started in (driver, Ray, workers)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            try:
                os.kill(int(stat.parent.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_sigkilled_driver_resumes_without_losing_or_repeating_trials(tmp_path):
    study_file, out = tmp_path / "resume.yaml", tmp_path / "out"
    study_file.write_text(yaml.safe_dump(STUDY))
    command = [sys.executable, "-m", "search", "search", str(study_file), "--out", str(out), "--trials", str(TRIALS), "--workers", "2", "--quiet"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        for _ in range(1200):  # poll the journal until a few trials have completed
            if proc.poll() is not None:
                break
            if (out / "study.journal").exists():
                if sum(t.state == TrialState.COMPLETE for t in load(out).get_trials(deepcopy=False)) >= 3:
                    break
            time.sleep(0.1)
        assert proc.poll() is None, f"driver ended before it could be killed: {proc.stderr.read().decode()}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        kill_session(proc.pid)
    before = {t.number: t for t in load(out).get_trials() if t.state == TrialState.COMPLETE}
    assert 3 <= len(before) < TRIALS

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    trials = load(out).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS
    assert not [t for t in trials if t.state == TrialState.FAIL and not is_interrupted(t)]
    for number, t in before.items():
        assert trials[number].state == TrialState.COMPLETE and trials[number].values == t.values
    interrupted = {t.number: t for t in trials if is_interrupted(t)}
    for t in trials:
        if "requeued_from" in t.user_attrs:
            # same params (a trial killed before its params were all drawn gets the rest sampled)
            assert t.user_attrs["requeued_from"] in interrupted
            assert interrupted[t.user_attrs["requeued_from"]].params.items() <= t.params.items()
    assert sorted(t.user_attrs["requeued_from"] for t in trials if "requeued_from" in t.user_attrs) == sorted(interrupted)
    evaluated = [json.dumps(t.params, sort_keys=True) for t in complete if "duplicate_of" not in t.user_attrs and "requeued_from" not in t.user_attrs]
    assert len(evaluated) == len(set(evaluated)), "a finished trial's params were evaluated again"
    assert (out / "recommendations.md").read_text().startswith("# Recommendations: resume")
