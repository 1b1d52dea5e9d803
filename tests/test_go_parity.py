"""Parity gaps with the Go original found by replaying the same traces through both (issue 10)."""

import json

import pytest
from conftest import MODEL

from blis.cli import main
from blis.config.options import build_config
from blis.simulation import run_simulation

SMALL = ["--model", MODEL, "--num-requests", "40", "--rate", "200", "--seed", "3",
         "--prompt-tokens", "300", "--output-tokens", "60"]


def _spec_with_classes():
    dist = {"type": "gaussian", "params": {"mean": 400, "std_dev": 150, "min": 20, "max": 900}}
    out = {"type": "gaussian", "params": {"mean": 80, "std_dev": 40, "min": 5, "max": 200}}
    return {"version": "2", "seed": 5, "aggregate_rate": 300, "num_requests": 300, "clients": [
        {"id": c, "slo_class": c, "rate_fraction": 1, "arrival": {"process": "poisson"},
         "input_distribution": dist, "output_distribution": out}
        for c in ("critical", "standard", "batch")]}


def _brute_inversions(res):
    e2e = res.req_stats.e2e
    groups = {}
    for r in res.sim.routed.values():
        if r.id in e2e:
            groups.setdefault((r.assigned_instance, r.slo_class or "default"), []).append(
                (r.arrival_time, r.id, e2e[r.id]))
    n = 0
    for rows in groups.values():
        rows.sort()
        n += sum(1 for i in range(len(rows)) for j in range(i + 1, len(rows))
                 if rows[i][2] > 2 * rows[j][2])
    return n


def test_priority_inversions_line_under_priority_fcfs():
    opts = dict(model=MODEL, workload_spec=_spec_with_classes(), num_instances=2,
                scheduler="priority-fcfs", total_kv_blocks=150, max_num_seqs=8)
    res = run_simulation(build_config(opts))
    n = res.priority_inversions()
    assert n == _brute_inversions(res) and n > 0
    lines = res.render_stdout().splitlines()
    k = lines.index("=== Anomaly Counters ===")
    assert lines[k + 1] == f"Priority Inversions: {n}"  # first line of the block, as in Go
    lean = run_simulation(build_config(opts), keep_requests=False)
    assert lean.sim.fold is not None and lean.priority_inversions() == n
    fcfs = run_simulation(build_config(dict(opts, scheduler="fcfs")))
    assert fcfs.priority_inversions() is None
    assert not any(x.startswith("Priority Inversions") for x in fcfs.render_stdout().splitlines())


def test_results_path_integer_times_and_no_empty_fields(tmp_path, capsys):
    out = tmp_path / "res.json"
    assert main(["run", *SMALL, "--results-path", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 40
    for row in rows:
        assert isinstance(row["ttft_us"], int) and isinstance(row["e2e_us"], int)
        assert "slo_class" not in row and "model" not in row


def _metrics(capsys):
    text = capsys.readouterr().out
    start = text.index("{")
    return json.loads(text[start:text.index("\n}", start) + 2])


def test_replay_default_horizon_is_twice_latest_arrival(tmp_path, capsys):
    prefix = str(tmp_path / "t")
    # overloaded: 300 long requests arriving within ~0.3 s on one instance
    assert main(["run", "--model", MODEL, "--num-requests", "300", "--rate", "1000",
                 "--output-tokens", "400", "--output-tokens-stdev", "0",
                 "--trace-output", prefix]) == 0
    run = _metrics(capsys)
    assert run["completed_requests"] == 300
    assert main(["replay", "--model", MODEL, "--trace-header", prefix + ".yaml",
                 "--trace-data", prefix + ".csv"]) == 0
    cut = _metrics(capsys)
    latest = 300 * 1000  # constant arrivals every 1000 µs, the last at 0.3 s
    assert cut["completed_requests"] < 300
    assert cut["vllm_estimated_duration_s"] <= 2 * latest / 1e6 + 1e-9
    assert main(["replay", "--model", MODEL, "--trace-header", prefix + ".yaml",
                 "--trace-data", prefix + ".csv", "--horizon", str(10**12)]) == 0
    assert _metrics(capsys)["completed_requests"] == 300


def test_instance_clock_advances_when_a_request_is_routed():
    # one request at t = 1 s; its queueing delay (trained-physics alpha0 ~15.6 ms) ends after
    # the horizon, so only routing touched the instance before the cut
    res = run_simulation(build_config(dict(model=MODEL, rate=1, num_requests=1,
                                           horizon=1_005_000)))
    assert res.duration_s == pytest.approx(1.0)
