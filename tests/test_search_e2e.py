"""End to end on the real simulator: a small study, its report commands, and failing trials."""

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

pytest.importorskip("blis.simulation")
ray = pytest.importorskip("ray")

from blis.cli import main as blis_main  # noqa: E402
from search.driver import run_search  # noqa: E402
from search.study_file import parse_study  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()


STUDY = {
    "name": "e2e_capacity",
    "seed": 5,
    "sampler": {"type": "nsgaii", "population_size": 4},
    "base": {"model": "qwen/qwen2.5-7b-instruct", "hardware": "H100", "workload": "chatbot", "rate": 30, "num_requests": 300},
    "parameters": {
        "num_instances": {"type": "int", "low": 1, "high": 4},
        "max_num_batched_tokens": {"type": "int", "low": 128, "high": 8192, "log": True},
    },
    "objectives": [{"metric": "ttft_p90_ms"}, {"metric": "gpu_cost_per_hour"}],
    "constraints": [{"metric": "backlog", "max": 0}],
    # Four GPUs starved by a 128-token step budget: slower and dearer than a tuned single GPU.
    "baseline": {"num_instances": 4, "max_num_batched_tokens": 128},
}


def cluster_metrics(stdout: str) -> dict:
    """The cluster MetricsOutput JSON printed last under ``=== Simulation Metrics ===``."""
    block = stdout.split("=== Simulation Metrics ===")[-1]
    return json.loads(block.split("\n===")[0])


def test_real_study_beats_its_baseline_and_commands_reproduce_trials(tmp_path, capsys):
    study = run_search(parse_study(STUDY), trials=8, workers=2, out_dir=tmp_path, progress=False)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 8
    baseline = next(t for t in done if t.user_attrs.get("baseline"))
    assert any(all(x <= y for x, y in zip(t.values, baseline.values)) and t.values != baseline.values for t in study.best_trials)
    pareto = pd.read_csv(tmp_path / "pareto.csv")
    row = pareto.iloc[0]
    capsys.readouterr()
    assert blis_main(row["command"].split()[1:]) == 0
    rerun = cluster_metrics(capsys.readouterr().out)
    assert rerun["ttft_p90_ms"] == pytest.approx(row["ttft_p90_ms"])
    assert rerun["completed_requests"] == 300


def test_real_simulator_errors_fail_the_trial_and_the_study_goes_on(tmp_path):
    raw = {
        "name": "e2e_failures",
        "base": {"model": "qwen/qwen2.5-7b-instruct", "workload": "chatbot", "rate": 20, "num_requests": 200},
        "parameters": {"hardware": {"type": "categorical", "choices": ["H100", "TPU-v5"]}, "num_instances": {"type": "int", "low": 1, "high": 3}},
        "objectives": [{"metric": "ttft_p90_ms"}],
        "baseline": {"hardware": "TPU-v5", "num_instances": 1},
    }
    study = run_search(parse_study(raw), trials=5, workers=2, out_dir=tmp_path, progress=False)
    trials = study.get_trials()
    assert sum(t.state.is_finished() and "duplicate_of" not in t.user_attrs for t in trials) == 5
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["error"] == "ConfigError: hardware: unknown GPU 'TPU-v5'; known: A100-80, A100-SXM, H100, L40S"
    assert all(t.state == TrialState.COMPLETE for t in trials if t.params["hardware"] == "H100")
