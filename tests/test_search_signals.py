"""SIGINT (a terminal's Ctrl-C, sent to the whole process group) and SIGTERM stop a search cleanly."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_search_resume import STUDY, kill_session, load

REPO = Path(__file__).resolve().parents[1]


def _session_processes(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.parametrize("signum, to_group, code", [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)])
def test_signal_stops_the_search_marks_trials_and_leaves_no_ray_process(tmp_path, signum, to_group, code):
    from optuna.trial import TrialState

    study_file, out = tmp_path / "s.yaml", tmp_path / "out"
    study_file.write_text(yaml.safe_dump(dict(STUDY, name="resume")))
    command = [sys.executable, "-m", "search", "search", str(study_file), "--out", str(out), "--trials", "40", "--workers", "2", "--quiet"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        for _ in range(1200):
            if proc.poll() is not None:
                break
            if (out / "study.journal").exists() and any(t.state == TrialState.COMPLETE for t in load(out).get_trials(deepcopy=False)):
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode()
        (proc.send_signal if not to_group else lambda s: __import__("os").killpg(proc.pid, s))(signum)
        err = proc.communicate(timeout=60)[1].decode()
        assert proc.returncode == code, err
        assert err.strip().splitlines()[-1] == "interrupted: re-run the same command to resume", err
        assert "Traceback" not in err and "Check failed" not in err
        deadline = time.monotonic() + 10
        while _session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _session_processes(proc.pid), "Ray processes outlived the driver"
        trials = load(out).get_trials()
        assert not [t for t in trials if t.state == TrialState.RUNNING]
    finally:
        kill_session(proc.pid)
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
