"""Start-up imports only what the command needs: the search stack (optuna, ray, pandas, plotting)
never loads for `blis run`, and `--help` or a bad flag does not even load numpy or PyYAML.

Each case is a fresh interpreter whose ``sys.modules`` is read at exit, so an eager import added
anywhere on the path (a module-level import, a registry filled at import) fails here. Not timed:
speed is measured in ``benchmarks/``.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEARCH_STACK = {"optuna", "ray", "pandas", "scipy", "matplotlib", "plotly", "tqdm", "objectives",
                "search.driver", "blis.calibration.fit"}
NO_NUMPY = SEARCH_STACK | {"numpy", "yaml"}

_PROBE = """
import atexit, json, sys
atexit.register(lambda: open(sys.argv[1], "w").write(json.dumps(sorted(sys.modules))))
if sys.argv[2:] == ["import"]:
    import blis.cli
else:
    from blis.cli import main
    sys.exit(main(sys.argv[2:]))
"""


def _loaded(tmp_path, *args) -> tuple[set[str], subprocess.CompletedProcess]:
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    return set(json.loads(out.read_text())), proc


def _hits(modules: set[str], banned: set[str]) -> list[str]:
    return sorted(m for m in modules if m in banned or m.split(".")[0] in banned)


@pytest.mark.parametrize("args", [("import",), ("--help",), ("search", "--help")],
                         ids=["import", "help", "search-help"])
def test_help_and_import_load_neither_numpy_nor_yaml(tmp_path, args):
    modules, proc = _loaded(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert "blis.cli" in modules
    assert _hits(modules, NO_NUMPY) == []


@pytest.mark.parametrize("args, field", [
    (("run", "--model", "qwen/qwen2.5-7b-instruct", "--rate", "-1"), "rate"),
    (("run", "--num-requests", "5"), "model"),
], ids=["bad-rate", "no-model"])
def test_bad_flag_fails_before_loading_the_simulator(tmp_path, args, field):
    modules, proc = _loaded(tmp_path, *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {field}: ") and proc.stderr.count("\n") == 1
    assert _hits(modules, NO_NUMPY) == []
    assert "blis.simulation" not in modules


def test_run_loads_no_search_stack(tmp_path):
    modules, proc = _loaded(tmp_path, "run", "--model", "qwen/qwen2.5-7b-instruct",
                            "--num-requests", "5", "--num-instances", "2")
    assert proc.returncode == 0, proc.stderr
    assert '"completed_requests": 5' in proc.stdout
    assert "blis.simulation" in modules and "numpy" in modules
    assert _hits(modules, SEARCH_STACK) == []
    # replay/trace-only code stays out of a plain run too
    assert "blis.workload.tracev2" not in modules
