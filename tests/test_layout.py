"""The package layout's import rules (each package's docstring states them) hold in the code."""

import ast
import re
from pathlib import Path

import blis

BLIS = Path(blis.__file__).parent

# package -> the blis packages/modules it must never import
FORBIDDEN = {
    "engine": {"cluster", "fleet", "config", "workload", "calibration", "simulation", "cli", "api"},
    "results": {"engine", "cluster", "fleet", "config", "workload", "latency", "calibration"},
    "latency": {"engine", "cluster", "fleet", "workload", "calibration", "simulation"},
    "workload": {"engine", "cluster", "fleet", "latency", "calibration", "simulation"},
    "cluster": {"config", "workload", "calibration", "simulation", "cli", "api"},
}


def blis_imports(path: Path) -> set[str]:
    """Second-level names of every ``blis.X`` a module imports, at any depth of the module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "blis" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_packages_import_only_what_their_docstring_allows():
    broken = []
    for pkg, forbidden in FORBIDDEN.items():
        for path in (BLIS / pkg).rglob("*.py"):
            bad = blis_imports(path) & forbidden
            if bad:
                broken.append(f"{path.relative_to(BLIS)} imports {sorted(bad)}")
    assert broken == []


def test_the_fleet_uses_only_the_clusters_public_interface():
    private = re.compile(r"\bsim\._\w+")
    uses = [f"{p.name}: {m}" for p in (BLIS / "fleet").glob("*.py")
            for m in private.findall(p.read_text())]
    assert uses == []


def test_every_package_says_what_it_owns():
    for init in BLIS.glob("*/__init__.py"):
        if init.parent.name == "data":
            continue
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init.parent.name}/__init__.py has no docstring"


def test_every_cited_spec_section_is_listed_in_the_docs():
    listed = set(re.findall(r"^\| (\d+(?:\.\d+)*) \|", (BLIS.parent / "docs" / "spec-sections.md").read_text(),
                            re.MULTILINE))
    ref = re.compile(r"§\s?(\d+(?:\.\d+)*)(?:[–-](\d+(?:\.\d+)*))?")
    cited = set()
    for top in ("blis", "search", "objectives", "tests"):
        for p in (BLIS.parent / top).rglob("*.py"):
            for m in ref.finditer(p.read_text()):
                cited.update(n for n in m.groups() if n)
    assert sorted(cited - listed) == []
