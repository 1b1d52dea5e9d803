"""Scale-out, on real servers: a two-node Ray cluster and a PostgreSQL study shared by drivers.

One module-scoped cluster (``ray start --head`` plus one ``ray start --address`` node, separate
processes, one CPU and a distinct custom resource each) serves every test here; the test that
kills the worker node runs last. The PostgreSQL server comes from ``.ci/postgres`` (CI) through
``BLIS_TEST_POSTGRES_URL``; without it these tests skip locally and fail in CI.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_ENV = "BLIS_TEST_POSTGRES_URL"
#: a trial of this study takes about 1-2 s of simulation: long enough to be caught in flight
STUDY = """\
name: {name}
seed: 3
base: {{model: qwen/qwen2.5-7b-instruct, hardware: H100, workload: chatbot, rate: 30, num_requests: {requests}}}
parameters:
  num_instances: {{type: int, low: 1, high: 4}}
  max_num_batched_tokens: {{type: int, low: 128, high: 8192, log: true}}
objectives: [{{metric: ttft_p90_ms}}, {{metric: gpu_cost_per_hour}}]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Cluster:
    """A head and a worker node, each ``ray start --block`` in its own process group."""

    def __init__(self, root: Path, worker: bool = True):
        self.root = root
        self.address = f"127.0.0.1:{free_port()}"
        token = root / "token"
        token.write_text(secrets.token_hex(32))
        # A private token: a fresh machine has none, and this one may have another user's.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": ""}
        # Node loss is noticed in ~2 s instead of Ray's default ~15 s.
        head_env = {**self.env, "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4"}
        self.head = self._start(["--head", "--port", self.address.split(":")[1], "--temp-dir", str(root / "ray"),
                                 "--include-dashboard", "false", "--resources", '{"blis_head": 1}'], head_env, "head")
        wait_for(lambda: self._reachable(), 60, "the Ray head")
        self.worker = None
        if worker:
            self.add_worker()

    def add_worker(self) -> None:
        self.worker = self._start(["--address", self.address, "--resources", '{"blis_worker": 1}'], self.env, "worker")
        self.nodes = wait_for(lambda: self._node_ids(2), 60, "two Ray nodes")

    def _start(self, args, env, name):
        log = open(self.root / f"{name}.log", "w")
        return subprocess.Popen([str(BIN / "ray"), "start", "--num-cpus", "1", "--block", *args], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root)

    def _reachable(self) -> bool:
        host, port = self.address.split(":")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return True
        except OSError:
            return False

    def _node_ids(self, n: int) -> dict | None:
        """{"head": node id, "worker": node id} once ``n`` nodes are alive."""
        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                "print(json.dumps({('head' if 'blis_head' in n['Resources'] else 'worker'): n['NodeID'] "
                "for n in ray.nodes() if n['Alive']}))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60)
        nodes = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else {}
        return nodes if len(nodes) >= n else None

    def kill_worker(self) -> None:
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()

    def stop(self) -> None:
        """SIGKILL: a graceful ``ray stop`` takes 30 s, and nothing of the cluster outlives the test."""
        for p in filter(None, (self.worker, self.head)):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def postgres_url():
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set: .ci/run starts PostgreSQL and sets it")
        pytest.skip(f"{PG_ENV} not set (see .ci/postgres)")
    return url


def study_file(tmp_path: Path, name: str, requests: int = 1500) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, requests=requests))
    return path


def blis_search(cluster, *args, **popen) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "blis"), "search", *map(str, args), "--ray-address", cluster.address, "--quiet"],
                            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def rows(out_dir: Path) -> list[dict]:
    with open(out_dir / "trials.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("args, field", [
    (["--ray-address", "127.0.0.1:1"], "ray-address"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/x"], "storage"),
])
def test_unreachable_cluster_or_storage_fails_in_seconds_with_one_line(tmp_path, args, field):
    started = time.monotonic()
    proc = subprocess.run([str(BIN / "blis"), "search", str(study_file(tmp_path, "bad")), "--out", str(tmp_path / "o"), *args],
                          capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 10
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {field}: "), proc.stderr
    assert args[1] in proc.stderr


def test_code_and_data_files_are_shipped_to_the_cluster(cluster, tmp_path):
    code = f"""
import ray
from search.workers import start_ray
start_ray(1, {cluster.address!r})

@ray.remote(num_cpus=1, resources={{"blis_worker": 1}})
def where():
    import blis.config.model_config as m
    return m.__file__, m.HARDWARE_CONFIG_PATH.is_file()

print(*ray.get(where.remote()))
"""
    out = subprocess.run([sys.executable, "-c", code], env=cluster.env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    path, data_found = out.stdout.split()
    assert "runtime_resources" in path and not path.startswith(str(REPO)), path
    assert data_found == "True"


def test_two_drivers_share_one_postgres_study(cluster, postgres_url, tmp_path):
    """The budget holds across drivers, and no configuration is simulated twice or lost."""
    name = f"shared_{secrets.token_hex(4)}"
    study = study_file(tmp_path, name, requests=600)
    a, b = (blis_search(cluster, study, "--trials", 10, "--workers", 1, "--storage", postgres_url, "--out", tmp_path / o)
            for o in ("a", "b"))
    finish(a), finish(b)
    trials = rows(tmp_path / "b")
    evaluated = [t for t in trials if t["state"] == "COMPLETE"]
    assert len(evaluated) == 10
    keys = [(t["param:num_instances"], t["param:max_num_batched_tokens"]) for t in evaluated]
    assert len(set(keys)) == len(keys)
    assert not [t for t in trials if t["state"] in ("RUNNING", "FAIL", "INTERRUPTED")]
    assert sum(t["state"] == "COMPLETE" for t in rows(tmp_path / "a")) <= 10


def test_a_killed_driver_s_trials_are_taken_over_by_the_other(cluster, postgres_url, tmp_path):
    import optuna

    name = f"takeover_{secrets.token_hex(4)}"
    study = study_file(tmp_path, name, requests=3000)
    common = ("--trials", 6, "--workers", 1, "--storage", postgres_url, "--heartbeat", 1)
    victim = blis_search(cluster, study, *common, "--out", tmp_path / "victim")

    def victim_running():
        try:
            s = optuna.load_study(study_name=name, storage=postgres_url)
        except KeyError:
            return None
        # mid-trial: asked and given its parameters (a kill between ask and suggest leaves an
        # empty trial, which is failed and replaced by a fresh one: nothing to compare)
        return [t.number for t in s.get_trials(states=(optuna.trial.TrialState.RUNNING,)) if t.params]

    lost = wait_for(victim_running, 120, "the first driver's running trial")
    victim.kill()
    victim.wait()
    finish(blis_search(cluster, study, *common, "--out", tmp_path / "survivor"))
    s = optuna.load_study(study_name=name, storage=postgres_url)
    by_number = {t.number: t for t in s.get_trials()}
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in by_number.values()) == 6
    for number in lost:
        assert by_number[number].state == optuna.trial.TrialState.FAIL
        retry = [t for t in by_number.values() if t.system_attrs.get("failed_trial") == number]
        assert [t.state for t in retry] == [optuna.trial.TrialState.COMPLETE]
        assert retry[0].params == by_number[number].params


def test_trials_run_on_both_nodes_and_survive_losing_one(cluster, tmp_path):
    """Runs last: it kills the worker node."""
    out = tmp_path / "out"
    # 6,000 requests: a trial long enough (~2 s) that the kill below lands inside one
    proc = blis_search(cluster, study_file(tmp_path, "multinode", requests=6000), "--trials", 8, "--workers", 2, "--out", out)
    journal = out / "study.journal"
    wait_for(lambda: journal.exists() and cluster.nodes["worker"] in journal.read_text(), 120,
             "a trial completed on the worker node")
    time.sleep(1.0)  # its next trial (~2 s) is submitted at once: kill the node halfway through it
    cluster.kill_worker()
    finish(proc)
    trials = rows(out)
    assert [t["state"] for t in trials] == ["COMPLETE"] * 8
    assert {t["node"] for t in trials} == {cluster.nodes["head"], cluster.nodes["worker"]}
    retried = [t for t in trials if t.get("retried_after")]
    assert retried and all(t["node"] == cluster.nodes["head"] for t in retried)
