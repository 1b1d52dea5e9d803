"""Soak benchmark: does memory stay flat over a long, unattended run?

    python benchmarks/soak.py simulate 1000      # N simulate() calls of the admission study's base
    python benchmarks/soak.py study 2000         # an M-trial admission study at --workers 2

``simulate`` prints the process RSS every N/10 calls and the growth after the first tenth
(warm-up: imports, allocator pools). ``study`` runs ``blis search`` in its own session and
samples every process of that session (driver, Ray, workers) every 2 s, printing the largest
RSS seen per process and over time.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "admission_discovery.yaml"


def _rss_mb(pid: str = "self") -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * 4096 / 2**20
    except (OSError, IndexError):
        return 0.0


def soak_simulate(n: int) -> None:
    from blis.api import simulate

    base = yaml.safe_load(STUDY.read_text())["base"]
    t0, warm = time.perf_counter(), None
    print(f"{'calls':>6} {'rss MiB':>8} {'s':>7}")
    for i in range(1, n + 1):
        simulate(copy.deepcopy(base))
        if i % max(1, n // 10) == 0 or i == n:
            rss = _rss_mb()
            warm = rss if warm is None else warm
            print(f"{i:>6} {rss:>8.0f} {time.perf_counter() - t0:>7.1f}", flush=True)
    print(f"growth after warm-up: {_rss_mb() - warm:+.0f} MiB over {n - max(1, n // 10)} calls")


def _session(sid: int) -> dict[int, str]:
    procs = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            name, rest = text[text.index("(") + 1:text.rindex(")")], text.rsplit(")", 1)[1].split()
        except (OSError, ValueError, IndexError):
            continue
        if int(rest[3]) == sid:
            procs[int(stat.parent.name)] = name
    return procs


def soak_study(m: int, workers: int) -> None:
    out = Path(tempfile.mkdtemp(prefix="blis-soak-"))
    cmd = [sys.executable, "-m", "search", "search", str(STUDY), "--trials", str(m), "--workers", str(workers),
           "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL)
    peak: dict[int, tuple[str, float]] = {}
    t0 = time.monotonic()
    print(f"{'min':>6} {'procs':>5} {'total MiB':>9} {'largest MiB':>11}")
    next_print = 0.0
    while proc.poll() is None:
        sizes = {pid: (name, _rss_mb(str(pid))) for pid, name in _session(proc.pid).items()}
        for pid, (name, rss) in sizes.items():
            if rss > peak.get(pid, ("", 0.0))[1]:
                peak[pid] = (name, rss)
        if time.monotonic() - t0 >= next_print and sizes:
            print(f"{(time.monotonic() - t0) / 60:>6.1f} {len(sizes):>5} {sum(r for _, r in sizes.values()):>9.0f} "
                  f"{max(r for _, r in sizes.values()):>11.0f}", flush=True)
            next_print += 60
        time.sleep(2)
    print(f"exit {proc.returncode} after {(time.monotonic() - t0) / 60:.1f} min; output in {out}")
    for pid, (name, rss) in sorted(peak.items(), key=lambda kv: -kv[1][1])[:8]:
        print(f"  peak {rss:7.0f} MiB  pid {pid}  {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["simulate", "study"])
    p.add_argument("count", type=int)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    if args.mode == "simulate":
        soak_simulate(args.count)
    else:
        soak_study(args.count, args.workers)


if __name__ == "__main__":
    main()
