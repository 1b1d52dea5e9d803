"""Run the bad-input corpus (``cases.yaml``): each case in a fresh directory, as a child process
whose wall time and peak RSS are measured (``os.wait4``).

``python tests/bad_inputs/runner.py`` prints one outcome per case and the outcome counts.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MAX_SECONDS = 2.0
MAX_RSS_MB = 300.0
KILL_AFTER_S = 10.0             # wall seconds; a case still running then is "unbounded"
ADDRESS_SPACE_CAP = 6 << 30     # keeps a runaway case from taking the machine down


@dataclass
class Outcome:
    case: dict
    code: int | None
    stderr: str
    seconds: float      # CPU time (user + system): wall time is noise on a shared machine
    rss_mb: float
    wall: float

    @property
    def last_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""

    @property
    def kind(self) -> str:
        """named (the expected field, exit 2), wrong-field, internal, silent, unbounded or other."""
        if self.code is None or self.code < 0:
            return "unbounded"
        if self.code == 2 and self.last_line.startswith(f"error: {self.case['field']}: "):
            return "named"
        if self.code == 2 and re.match(r"error: \S", self.last_line):
            return "wrong-field"
        if "error: internal:" in self.stderr or "Traceback" in self.stderr:
            return "internal"
        if self.code == 0:
            return "silent"
        return "other"


def load_cases() -> list[dict]:
    return yaml.safe_load((HERE / "cases.yaml").read_text())


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_CAP, ADDRESS_SPACE_CAP))


def run_case(case: dict, workdir: Path) -> Outcome:
    for name, text in (case.get("files") or {}).items():
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(text)
    for name, hexdata in (case.get("binary_files") or {}).items():
        (workdir / name).write_bytes(bytes.fromhex(hexdata))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BLIS_DEBUG": ""}
    err = tempfile.TemporaryFile()
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "blis.cli", *case["argv"]], cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=err, env=env, preexec_fn=_limit)
    code = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() - start > KILL_AFTER_S:
            proc.kill()
            _, _, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    proc.returncode = code if code is not None else -9
    wall = time.monotonic() - start
    err.seek(0)
    return Outcome(case, code, err.read().decode(errors="replace"),
                   usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, wall)


def main() -> int:
    counts: dict[str, int] = {}
    for case in load_cases():
        with tempfile.TemporaryDirectory() as tmp:
            out = run_case(case, Path(tmp))
        slow = out.seconds >= MAX_SECONDS or out.rss_mb >= MAX_RSS_MB
        kind = out.kind + ("+costly" if slow and out.kind == "named" else "")
        counts[kind] = counts.get(kind, 0) + 1
        print(f"{kind:16} {case['id']:32} {out.seconds:6.2f}s cpu {out.rss_mb:7.0f}MB  "
              f"rc={out.code}  {out.last_line[:110]}")
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())), f"total={sum(counts.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
