"""Search report on the fake simulator: Optuna/dashboard/pareto.csv agreement, report.html, paths, summary."""

import json
import logging
import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import optuna
import pandas as pd
import pytest
import search_fakes

from search import tradeoffs
from search.driver import run_search
from search.report import write_report
from search.study_file import parse_study
from search.summary import summary_text

ray = pytest.importorskip("ray")
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    path = os.pathsep.join([str(TESTS.parent), str(TESTS)])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def search(raw: dict, out: Path, **kw) -> optuna.Study:
    return run_search(parse_study(raw), out_dir=out, simulate=search_fakes.simulate, progress=False, workers=2, **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    raw = search_fakes.study_dict(baseline={"num_instances": 6, "hardware": "H100", "max_num_batched_tokens": 256})
    return search(raw, out, trials=16), out


def _front_numbers(trials, directions) -> set[int]:
    signs = [1 if d == optuna.study.StudyDirection.MINIMIZE else -1 for d in directions]
    pts = {t.number: [s * v for s, v in zip(signs, t.values)] for t in trials}
    dom = lambda a, b: all(x <= y for x, y in zip(a, b)) and a != b  # noqa: E731
    return {k for k, v in pts.items() if not any(dom(w, v) for w in pts.values())}


def test_best_trials_plot_pareto_front_dashboard_and_pareto_csv_agree(run):
    """Compared as sets of configurations: pareto.csv lists each parameter set once."""
    study, out = run
    config = {t.number: json.dumps(t.params, sort_keys=True) for t in study.trials}
    unique = {n for n in config if config[n] not in {config[m] for m in config if m < n}}
    numbers = list(pd.read_csv(out / "pareto.csv")["trial"])
    pareto = set(numbers)
    assert pareto and len(numbers) == len(pareto) and pareto <= unique
    assert {t.number for t in study.best_trials} & unique == pareto
    fig = optuna.visualization.plot_pareto_front(study)
    best = {json.loads(text.replace("<br>", ""))["number"] for text in fig.data[-1].text}  # last trace: the feasible front
    assert best & unique == pareto
    assert fig.layout.xaxis.title.text == "ttft_p90_ms@critical" and fig.layout.yaxis.title.text == "gpu_cost_per_hour"
    # optuna-dashboard reads feasibility from the ``constraints`` system-attr list only.
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(isinstance(t.system_attrs.get("constraints"), list) for t in complete)
    feasible = [t for t in complete if all(c <= 0 for c in t.system_attrs["constraints"])]
    assert len(feasible) < len(complete), "the constraint must reject some trials for this test to mean anything"
    assert _front_numbers(feasible, study.directions) & unique == pareto
    assert study.metric_names == ["ttft_p90_ms@critical", "gpu_cost_per_hour"]
    assert "violation:backlog<=0" in pd.read_csv(out / "trials.csv").columns


def test_report_html_is_self_contained_with_every_front_point(run):
    _, out = run
    page = (out / "report.html").read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"?https?:", page), "report.html must not load anything"
    pareto = pd.read_csv(out / "pareto.csv")
    for _, row in pareto.iterrows():
        assert f"trial {row['trial']}: " in page and f"<td>{row['label']}</td>" in page  # hover card, table row
    assert "why this one" in page and "baseline" in page
    md = (out / "recommendations.md").read_text()
    assert md.count("\n### ") == len(pareto)
    assert "vs baseline (trial 0)" in md


def _points_in_trace(dom: str, uid: str) -> int:
    start = dom.index(f'<g class="trace scatter trace{uid}"')
    end = dom.find('<g class="trace scatter', start + 1)
    return dom[start : end if end > 0 else len(dom)].count('class="point"')


def test_report_html_renders_every_front_point_in_headless_chromium(run):
    _, out = run
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (.ci/run installs it)")
        pytest.skip("chromium is not installed")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--dump-dom"]
    dom = subprocess.run([browser, *flags, (out / "report.html").resolve().as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    assert _points_in_trace(dom, "front") == len(pd.read_csv(out / "pareto.csv"))


def test_relative_sqlite_storage_reports_from_another_directory(tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    raw = search_fakes.study_dict(name="rel_sqlite")
    search(raw, Path("out"), trials=4, storage="sqlite:///rel.db")
    meta = json.loads((work / "out" / "search.json").read_text())
    assert meta["storage"] == f"sqlite:///{work.resolve() / 'rel.db'}"
    monkeypatch.chdir(elsewhere)
    files = write_report(work / "out")
    assert (work / "out" / "report.html") in files
    assert list(elsewhere.iterdir()) == [], "reporting must not create a stray database"
    command = pd.read_csv(work / "out" / "pareto.csv")["command"].iloc[0]
    assert str((work / "out" / "configs").resolve()) in command


def test_terminal_summary_names_the_knee_and_best_per_objective(run):
    study, out = run
    spec = parse_study(study.user_attrs["spec"])
    text = summary_text(study, spec, out, datetime(2000, 1, 1), 30.0)
    knee = pd.read_csv(out / "pareto.csv").iloc[0]
    assert f"knee: trial {knee['trial']}, {knee['label']}" in text
    assert "16 trials in 30.0 s (32.0 trials/min)" in text
    assert "duplicates avoided" in text and "vs baseline (trial 0" in text


def test_pairwise_fronts_and_trade_off_text():
    # 3 objectives: (1,1,9) is N-D non-dominated but dominated in the (a, b) projection by (0,0,...)
    points = {1: [0.0, 0.0, 10.0], 2: [1.0, 1.0, 9.0], 3: [2.0, -1.0, 11.0]}
    assert tradeoffs.non_dominated(points, ["minimize"] * 3) == {1, 2, 3}
    assert tradeoffs.non_dominated({k: v[:2] for k, v in points.items()}, ["minimize"] * 2) == {1, 3}
    assert tradeoffs.log_axis([50.0, 32000.0]) and not tradeoffs.log_axis([10.0, 40.0])
    assert tradeoffs.config_label({"model": "qwen/qwen2.5-7b-instruct", "num_instances": 3, "hardware": "L40S", "tp": 1}, {"num_instances": 3}) == "3×L40S TP1"
    front = [(5, [100.0, 12.0]), (6, [200.0, 8.0])]
    text = tradeoffs.why(6, front, ["ttft_p90_ms", "gpu_cost_per_hour"], ["minimize", "minimize"], (0, [300.0, 8.0]), 5)
    assert text[0] == "Best gpu_cost_per_hour on the front."
    assert text[1] == "vs baseline (trial 0): gains ttft_p90_ms 300 ms → 200 ms (-100 ms, -33%)."
    assert "gives up ttft_p90_ms 100 ms → 200 ms (+100 ms, +100%)" in text[2] and "$12.00/h → $8.00/h" in text[2]
