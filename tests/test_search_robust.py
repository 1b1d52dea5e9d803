"""Robust re-evaluation and multi-fidelity promotion in real (fake-simulator) studies on Ray."""

import json
import logging
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import search_fakes
from optuna.trial import TrialState

from search import robust
from search.driver import counts_toward_budget, run_search
from search.study_file import parse_study

ray = pytest.importorskip("ray")
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, runtime_env={"env_vars": env})
    yield
    ray.shutdown()


def search(raw: dict, out: Path, **kw):
    kw.setdefault("workers", 2)
    return run_search(parse_study(raw), out_dir=out, simulate=search_fakes.simulate, progress=False, **kw)


def test_t_interval_and_paired_difference():
    mean, half = robust.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-6)
    assert robust.t_interval([5.0, 5.0]) == (5.0, 0.0)
    assert robust.t_interval([1.0, math.inf])[1] == math.inf
    # a constant offset is significant even when each series is noisy (common random numbers)
    assert robust.differs([10.0, 20.0, 30.0], [11.0, 21.0, 31.0])
    assert not robust.differs([10.0, 20.0, 30.0], [11.0, 19.0, 31.5])


def summary(trial, samples):
    means = [sum(v[k] for v in samples.values()) / len(samples) for k in range(2)]
    return robust.Summary(trial, samples, means, [0.0, 0.0], [], {})


def test_neighbours_within_noise_are_flagged():
    seeds = (1, 2, 3)
    a = summary(1, {s: [10.0 + s, 5.0] for s in seeds})
    b = summary(2, {s: [10.0 + s + (0.5 if s == 2 else -0.4), 4.9 + 0.2 * (s % 2)] for s in seeds})  # noise only
    c = summary(3, {s: [30.0 + s, 1.0] for s in seeds})  # clearly different
    robust.flag_indistinct([a, b, c], ["minimize", "minimize"], neighbours=2)
    assert a.indistinct_from == [2] and b.indistinct_from == [1] and c.indistinct_from == []


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust")
    raw = search_fakes.study_dict(robust={"seeds": [1, 2]})
    first = search(raw, out, trials=10)
    before = {t.number for t in first.get_trials()}
    raw["robust"] = {"seeds": [1, 2, 3]}  # a third seed: the first two are reused, not re-run
    study = search(raw, out, trials=10)
    return study, before, out


def test_robust_reevaluations_are_trials_outside_the_budget(robust_run):
    study, _, _ = robust_run
    trials = study.get_trials()
    extra = [t for t in trials if "robust_of" in t.user_attrs]
    assert sum(counts_toward_budget(t) for t in trials) == 10
    candidates = {t.user_attrs["robust_of"] for t in extra}
    assert len(extra) == 3 * len(candidates) and len(candidates) >= 2
    for n in candidates:
        assert sorted(t.user_attrs["robust_seed"] for t in extra if t.user_attrs["robust_of"] == n) == [1, 2, 3]
        assert all(t.params == trials[n].params for t in extra if t.user_attrs["robust_of"] == n)
    assert any(trials[n].user_attrs.get("baseline") for n in candidates)


def test_resume_runs_only_the_missing_seed(robust_run):
    study, before, _ = robust_run
    new = [t for t in study.get_trials() if t.number not in before]
    assert new and all(t.user_attrs.get("robust_seed") == 3 for t in new)
    again = search(search_fakes.study_dict(robust={"seeds": [1, 2, 3]}), robust_run[2], trials=10)
    assert len(again.get_trials()) == len(study.get_trials())  # nothing left to do


def test_front_uses_robust_means_and_intervals(robust_run):
    study, _, out = robust_run
    trials = study.get_trials()
    pareto = pd.read_csv(out / "pareto.csv")
    names = ["ttft_p90_ms@critical", "gpu_cost_per_hour"]
    assert len(pareto) >= 1
    for _, row in pareto.iterrows():
        runs = [t for t in trials if t.user_attrs.get("robust_of") == row["trial"]]
        assert len(runs) == 3
        for k, m in enumerate(names):
            xs = [t.values[k] for t in runs]
            mean, half = robust.t_interval(xs)
            assert row[m] == pytest.approx(mean) and row[f"{m}:ci95"] == pytest.approx(half)
            assert row[f"{m}:search"] == pytest.approx(trials[int(row["trial"])].values[k])
        # the fake's latency depends on the seed, so the TTFT interval is not degenerate
        assert row["ttft_p90_ms@critical:ci95"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["robust_seeds"] == [1, 2, 3] and summary["trials"]["total"] == 10
    assert all(p["ci95"] is not None and p["change_vs_baseline"] is not None for p in summary["front"])
    text = (out / "recommendations.md").read_text()
    assert "re-run on workload seeds [1, 2, 3]" in text and " ± " in text and "change vs baseline (95 %)" in text
    page = (out / "report.html").read_text()
    assert "means ± 95 % intervals over workload seeds [1, 2, 3]" in page and '"error_y"' in page


def test_fidelity_study_fronts_only_full_fidelity_runs(tmp_path):
    raw = search_fakes.study_dict(fidelity={"num_requests": [40, 120, 360]}, robust=False)
    study = search(raw, tmp_path, trials=12)
    trials = study.get_trials()
    assert sum(counts_toward_budget(t) for t in trials) == 12
    searched = [t for t in trials if "promoted_from" not in t.user_attrs and "duplicate_of" not in t.user_attrs
                and t.state == TrialState.COMPLETE]
    level1 = [t for t in trials if t.user_attrs.get("fidelity") == 120]
    level2 = [t for t in trials if t.user_attrs.get("fidelity") == 360]
    baseline = [t.number for t in searched if t.user_attrs.get("baseline")]
    # ceil(n / 3) best-ranked at each step, plus the baseline when it was not among them
    assert math.ceil(len(searched) / 3) <= len(level1) <= math.ceil(len(searched) / 3) + len(baseline)
    assert math.ceil(len(level1) / 3) <= len(level2) <= math.ceil(len(level1) / 3) + len(baseline)
    assert {t.user_attrs["promoted_from"] for t in level2} <= {t.user_attrs["promoted_from"] for t in level1}
    pareto = pd.read_csv(tmp_path / "pareto.csv")
    assert len(pareto) and set(pareto["trial"]) <= {t.number for t in level2}
    assert (pareto["fidelity"] == 360).all()
    rows = pd.read_csv(tmp_path / "trials.csv")
    assert rows[rows["fidelity"] != 360]["pareto_rank"].isna().all()
    # resuming re-runs nothing
    assert len(search(raw, tmp_path, trials=12).get_trials()) == len(trials)
