"""Simulator throughput benchmark: simulated requests per wall-second and peak memory.

Fixed workloads (4 instances, weighted routing, qwen/qwen2.5-7b-instruct, default workload
distribution):
  a  10,000 requests at 100 req/s   (busy, not overloaded)
  b  10,000 requests at 500 req/s   (overloaded)
  c  100,000 requests at 100 req/s  (long run)
  d  a with --prefix-tokens 512     (shared prefixes: cache hits, prefix-scorer hashing)
  e  a with --latency-model roofline --hardware H100 --tp 1
  f  5,000 requests at 100 req/s with --total-kv-blocks 3000 (KV pressure, preemptions)
  h  2,000 requests of ~3,000 prompt tokens, --long-prefill-token-threshold 512 (chunked prefills
     continuing next to a decoding batch)
  g  the README quickstart (100 requests) as a whole `blis run` process: start-up included
     (bytecode cached, median of 5 runs after an untimed one)
By default routing signals are fresh (--snapshot-refresh-interval 0 --cache-signal-delay 0,
as in the Go reference figures); ``--default-flags`` also runs each workload with the CLI's
default signal delays. Each run is a fresh subprocess, so peak memory (ru_maxrss) is its own;
for a-f the time covers workload generation, simulation and formatting the stdout report,
"events" counts the events pushed into the cluster heap, "steps" the engine steps (chained
steps run without a heap event, see ``Instance.step``).

    python benchmarks/bench.py            # a-h
    python benchmarks/bench.py --quick    # 1/10 of the requests, for a smoke check
    python benchmarks/bench.py --only a --default-flags --reference
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

WORKLOADS = {
    "a": (10_000, 100.0, {}), "b": (10_000, 500.0, {}), "c": (100_000, 100.0, {}),
    "d": (10_000, 100.0, {"prefix_tokens": 512}),
    "e": (10_000, 100.0, {"latency_model": "roofline", "hardware": "H100", "tp": 1}),
    "f": (5_000, 100.0, {"total_kv_blocks": 3000}),
    "g": (100, None, {}),
    "h": (2_000, 100.0, {"prompt_tokens": 3000, "prompt_tokens_stdev": 500,
                         "long_prefill_token_threshold": 512}),
}
QUICKSTART = ["run", "--model", "qwen/qwen2.5-7b-instruct", "--num-instances", "4",
              "--routing-policy", "weighted"]
BASE = {"model": "qwen/qwen2.5-7b-instruct", "num_instances": 4, "routing_policy": "weighted"}
FRESH = {"snapshot_refresh_interval": 0, "cache_signal_delay": 0}


def child(spec: dict) -> None:
    """Run one workload in this process and print its measurements as JSON."""
    import inspect

    from blis.config.options import build_config
    from blis.simulation import run_simulation

    # as `blis run` without per-request files; older revisions (for before/after) lack the flag
    lean = {"keep_requests": False} if "keep_requests" in inspect.signature(
        run_simulation).parameters else {}
    t0 = time.perf_counter()
    res = run_simulation(build_config(spec), **lean)
    res.render_stdout()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"wall_s": wall, "completed": res.cluster["completed_requests"],
                      "peak_mib": peak, "events": res.sim.seq,
                      "steps": sum(i.step_count for i in res.sim.instances)}))


def run_quickstart(fresh: bool, env: dict) -> dict:
    """Workload g: the whole ``blis run`` process, interpreter start-up and imports included,
    as an installed package runs it: with its bytecode cached (pip compiles it at install). An
    untimed first run writes the cache even where PYTHONDONTWRITEBYTECODE is set (it would add
    the compiling of ~40 modules, ~0.1 s, to every run); the median of five runs is reported."""
    argv = QUICKSTART + (["--snapshot-refresh-interval", "0", "--cache-signal-delay", "0"]
                         if fresh else [])
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    runs = []
    for _ in range(6):
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from blis.cli import main; "
                                 "sys.exit(main(sys.argv[1:]))", *argv], env=env,
                                stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        runs.append((time.perf_counter() - t0, usage.ru_maxrss / 1024))
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"quickstart failed with exit code {os.waitstatus_to_exitcode(status)}")
    wall, peak = sorted(runs[1:])[2]
    return {"wall_s": wall, "peak_mib": peak, "events": None, "steps": None}


def run_one(name: str, fresh: bool, reference: bool, quick: bool) -> dict:
    n, rate, extra = WORKLOADS[name]
    env = dict(os.environ)
    env.pop("BLIS_REFERENCE_STEPS", None)
    if reference:
        env["BLIS_REFERENCE_STEPS"] = "1"
    if name == "g":
        m = run_quickstart(fresh, env)
    else:
        if quick:
            n //= 10
        spec = dict(BASE, rate=rate, num_requests=n, **extra, **(FRESH if fresh else {}))
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                             capture_output=True, text=True, check=True).stdout
        m = json.loads(out.strip().splitlines()[-1])
    m.update(name=name, n=n, rate=rate, flags="delay 0" if fresh else "default")
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="run 1/10 of each workload's requests")
    ap.add_argument("--only", default="abcdefgh", help="workloads to run, e.g. 'ab' (default a-h)")
    ap.add_argument("--default-flags", action="store_true",
                    help="also run each workload with the default routing-signal delays")
    ap.add_argument("--reference", action="store_true",
                    help="step-by-step reference engine (BLIS_REFERENCE_STEPS=1)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.child:
        child(json.loads(ns.child))
        return 0
    rows = []
    print(f"{'workload':<10}{'flags':<9}{'requests':>9}{'wall s':>9}{'req/s':>9}"
          f"{'steps':>10}{'events':>10}{'us/event':>10}{'peak MiB':>10}")
    for name in ns.only:
        for fresh in ((True, False) if ns.default_flags else (True,)):
            m = run_one(name, fresh, ns.reference, ns.quick)
            rows.append(m)
            n, ev = m["n"], m["events"]
            per_ev = f"{m['wall_s'] / ev * 1e6:>10.1f}" if ev else f"{'':>10}"
            print(f"{name:<10}{m['flags']:<9}{n:>9}{m['wall_s']:>9.2f}{n / m['wall_s']:>9.0f}"
                  f"{m['steps'] or '':>10}{ev or '':>10}{per_ev}{m['peak_mib']:>10.0f}", flush=True)
    if ns.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
