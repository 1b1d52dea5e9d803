"""`blis run` / `blis replay` from the command line: output layout, files, error paths."""

import json
import subprocess
import sys

import pytest
from conftest import MODEL

from blis.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cluster_json(stdout: str) -> dict:
    block = stdout.split("=== Simulation Metrics ===")[-1]
    block = block.split("\n=== ")[0]
    return json.loads(block)


def test_run_prints_instance_and_cluster_json(capsys):
    code, out, err = run_cli(capsys, "run", "--model", MODEL, "--num-instances", "2",
                             "--num-requests", "30", "--rate", "20")
    assert code == 0, err
    assert out.count("=== Simulation Metrics ===") == 3
    c = cluster_json(out)
    assert c["instance_id"] == "cluster"
    assert c["completed_requests"] == 30
    for key in ("ttft_p99_ms", "e2e_mean_ms", "itl_mean_ms", "preemption_count",
                "scheduling_delay_p99_ms", "injected_requests"):
        assert key in c


def test_metrics_path_and_results_path(tmp_path, capsys):
    mp, rp = tmp_path / "m.json", tmp_path / "r.json"
    code, _, err = run_cli(capsys, "run", "--model", MODEL, "--num-requests", "20", "--rate", "10",
                           "--metrics-path", str(mp), "--results-path", str(rp))
    assert code == 0, err
    m = json.loads(mp.read_text())
    assert len(m["requests"]) == 20 and "cache_hit_rate" in m
    arrivals = [row["arrived_at"] for row in m["requests"]]
    assert arrivals == sorted(arrivals)
    r = json.loads(rp.read_text())
    assert len(r) == 20 and {"request_id", "ttft_us", "e2e_us"} <= set(r[0])


@pytest.mark.parametrize("args, field", [
    (["--rate", "-5"], "rate"),
    (["--rate", "abc"], "rate"),
    (["--routing-policy", "nope"], "routing-policy"),
    (["--admission-policy", "nope"], "admission-policy"),
    (["--scheduler", "lifo"], "scheduler"),
    (["--routing-policy", "weighted", "--routing-scorers", "bogus:1"], "routing-scorers"),
    (["--num-instances", "0"], "num-instances"),
    (["--timeout", "0"], "timeout"),
    (["--hardware", "TPU9"], "hardware"),
])
def test_bad_input_gives_one_error_line_and_exit_2(capsys, args, field):
    code, _, err = run_cli(capsys, "run", "--model", MODEL, "--num-requests", "5", *args)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert field in lines[0]
    assert "Traceback" not in err


def test_unknown_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--model", MODEL, "--no-such-flag", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.count("\n") == 1 and "--no-such-flag" in err


def test_model_that_does_not_fit_is_rejected(capsys):
    code, _, err = run_cli(capsys, "run", "--model", "meta-llama/llama-3.1-70b-instruct",
                           "--hardware", "L40S", "--tp", "1")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_unknown_model_and_malformed_yaml(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "--model", "acme/unknown-1b")
    assert code == 2 and "model" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("admission: [unclosed\n")
    code, _, err = run_cli(capsys, "run", "--model", MODEL, "--policy-config", str(bad))
    assert code == 2 and "policy-config" in err and len(err.strip().splitlines()) == 1
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("admission:\n  polcy: always-admit\n")
    code, _, err = run_cli(capsys, "run", "--model", MODEL, "--policy-config", str(unknown))
    assert code == 2 and "admission.polcy" in err


def test_policy_bundle_is_applied_unless_flag_given(tmp_path, capsys):
    bundle = tmp_path / "p.yaml"
    bundle.write_text("admission:\n  policy: reject-all\nrouting:\n  policy: least-loaded\n")
    code, out, _ = run_cli(capsys, "run", "--model", MODEL, "--num-requests", "10",
                           "--policy-config", str(bundle))
    assert code == 0
    assert "Rejected Requests (Admission): 10" in out
    code, out, _ = run_cli(capsys, "run", "--model", MODEL, "--num-requests", "10",
                           "--policy-config", str(bundle), "--admission-policy", "always-admit")
    assert cluster_json(out)["completed_requests"] == 10


def test_trace_export_replays_to_identical_metrics(tmp_path, capsys):
    prefix = tmp_path / "trace"
    common = ["--model", MODEL, "--num-instances", "2", "--routing-policy", "least-loaded"]
    code, out_run, err = run_cli(capsys, "run", *common, "--num-requests", "40", "--rate", "15",
                                 "--trace-output", str(prefix))
    assert code == 0, err
    # the run's horizon was unbounded; replay defaults to 2 x the latest arrival (as Go does)
    code, out_rep, err = run_cli(capsys, "replay", *common, "--trace-header", f"{prefix}.yaml",
                                 "--trace-data", f"{prefix}.csv", "--horizon", str(10**15))
    assert code == 0, err
    a, b = cluster_json(out_run), cluster_json(out_rep)
    for key in ("completed_requests", "total_input_tokens", "total_output_tokens", "ttft_mean_ms",
                "e2e_mean_ms", "e2e_p99_ms", "itl_mean_ms"):
        assert a[key] == b[key], key


def test_console_script_entry_point():
    proc = subprocess.run([sys.executable, "-m", "blis.cli", "run", "--model", MODEL,
                           "--num-requests", "5"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"instance_id": "cluster"' in proc.stdout
