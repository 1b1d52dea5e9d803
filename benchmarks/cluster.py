"""Scale-out figures: the fixed start-up cost of ``blis search``, and trials/min on 1 and 2 Ray nodes.

    .venv/bin/python benchmarks/cluster.py startup [--runs 3] [--before REV]
    .venv/bin/python benchmarks/cluster.py nodes [--trials 16]

``startup`` times whole ``blis search`` processes running one tiny trial on a private local Ray
(so nearly all of it is fixed cost), and splits one run into phases (imports, pre-flight,
``ray.init``, first trial, report, ``ray.shutdown``); ``--before REV`` runs the same on the
tree of git revision REV (exported to a temporary directory) for a before/after pair.
``nodes`` starts a real cluster (``ray start --head`` with one CPU, then a second one-CPU node,
as in tests/test_cluster.py) and runs the same study on one node and on both: trials/min is
counted from the first trial's start to the last one's end, so Ray start-up is excluded. On one
machine the two nodes share its cores, so the 2-node figure shows what the cluster path costs
and whether a second node is used, not what a second machine would add.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = """\
name: {name}
seed: 3
base: {{model: qwen/qwen2.5-7b-instruct, hardware: H100, workload: chatbot, rate: 30, num_requests: {requests}}}
parameters:
  num_instances: {{type: int, low: 1, high: 4}}
  max_num_batched_tokens: {{type: int, low: 128, high: 8192, log: true}}
objectives: [{{metric: ttft_p90_ms}}, {{metric: gpu_cost_per_hour}}]
"""

PHASES = """
import json, sys, time
t0 = time.perf_counter()
marks = {}
import search.cli, search.driver, search.workers, search.report, ray
marks["imports"] = time.perf_counter()
from search.study_file import load_study
spec = load_study(sys.argv[1], probe=search.cli._default_probe())
marks["pre-flight (load + probe the study)"] = time.perf_counter()
real_start, real_loop, real_report, real_shutdown = (search.workers.start_ray, search.driver._Loop.run,
                                                     search.report.write_report, ray.shutdown)
def timed(name, f):
    def wrapper(*a, **k):
        marks.setdefault("_" + name, time.perf_counter())
        try:
            return f(*a, **k)
        finally:
            marks[name] = time.perf_counter() - marks.pop("_" + name)
    return wrapper
search.driver.start_ray = timed("ray.init", real_start)
search.driver._Loop.run = timed("trials (first trial included)", real_loop)
search.report.write_report = timed("report", real_report)
ray.shutdown = timed("ray.shutdown", real_shutdown)
search.driver.run_search(spec, trials=1, workers=1, out_dir=sys.argv[2], progress=False)
total = time.perf_counter() - t0
imports = marks.pop("imports") - t0
pre = marks.pop("pre-flight (load + probe the study)") - t0 - imports
print(json.dumps({"imports": imports, "pre-flight": pre, **marks, "total in-process": total}))
"""


def _tree(rev: str | None, tmp: Path) -> Path:
    if rev is None:
        return REPO
    dest = tmp / "tree"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def startup(runs: int, rev: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tree = _tree(rev, tmp)
        env = {**os.environ, "PYTHONPATH": str(tree), "RAY_USAGE_STATS_ENABLED": "0"}
        study = tmp / "tiny.yaml"
        study.write_text(TINY.format(name="tiny", requests=50))
        walls = []
        for i in range(runs):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "blis.cli", "search", str(study), "--trials", "1", "--workers", "1",
                            "--out", str(tmp / f"o{i}"), "--quiet"], env=env, check=True, capture_output=True)
            walls.append(time.perf_counter() - t)
        out = subprocess.run([sys.executable, "-c", PHASES, str(study), str(tmp / "phases")], env=env, check=True,
                             capture_output=True, text=True).stdout
        phases = json.loads(out.strip().splitlines()[-1])
    label = rev or "working tree"
    print(f"## blis search start-up ({label}): 1 trial of 50 requests, {runs} runs")
    print(f"whole process wall: median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max {max(walls):.2f})")
    print("| phase | s |\n| --- | ---: |")
    for name, s in phases.items():
        print(f"| {name} | {s:.2f} |")


def nodes(trials: int) -> None:
    from search.run_dir import load_run
    from tests.test_cluster import Cluster

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cluster = Cluster(tmp, worker=False)
        try:
            print(f"## trials/min, {trials} trials of 1500 requests, one CPU per node, {os.cpu_count()} cores shared")
            print("| nodes | trials/min | trial mean s |\n| --- | ---: | ---: |")
            for n in (1, 2):
                if n == 2:
                    cluster.add_worker()
                study = tmp / f"n{n}.yaml"
                study.write_text(TINY.format(name=f"nodes{n}", requests=1500))
                out = tmp / f"out{n}"
                subprocess.run([sys.executable, "-m", "blis.cli", "search", str(study), "--trials", str(trials),
                                "--ray-address", cluster.address, "--out", str(out), "--quiet"],
                               env=cluster.env, check=True, capture_output=True)
                s, _ = load_run(out)
                done = [t for t in s.get_trials() if t.datetime_complete and "duplicate_of" not in t.user_attrs]
                span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
                used = len({t.user_attrs.get("node") for t in done})
                mean = statistics.mean(t.user_attrs["seconds"] for t in done)
                print(f"| {n} ({used} used) | {60 * len(done) / span:.1f} | {mean:.2f} |")
        finally:
            cluster.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("startup")
    s.add_argument("--runs", type=int, default=3)
    s.add_argument("--before", metavar="REV", help="also measure git revision REV")
    n = sub.add_parser("nodes")
    n.add_argument("--trials", type=int, default=16)
    args = p.parse_args()
    if args.what == "startup":
        if args.before:
            startup(args.runs, args.before)
        startup(args.runs, None)
    else:
        nodes(args.trials)


if __name__ == "__main__":
    main()
