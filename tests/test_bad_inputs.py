"""Every case of the bad-input corpus (tests/bad_inputs/cases.yaml) ends with one
``error: <field>: ...`` line naming the expected field, exit 2, within 2 s of CPU time and
300 MB of peak RSS, and leaves behind none of the files it must not create."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "bad_inputs"))
from runner import MAX_RSS_MB, MAX_SECONDS, load_cases, run_case  # noqa: E402

CASES = load_cases()


def test_corpus_ids_are_unique():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 50


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_is_refused_cheaply(case, tmp_path):
    out = run_case(case, tmp_path)
    assert out.code == 2, out.stderr[-2000:]
    assert out.last_line.startswith(f"error: {case['field']}: "), out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr[-2000:]
    assert out.seconds < MAX_SECONDS, f"{out.seconds:.2f} s CPU"
    assert out.rss_mb < MAX_RSS_MB, f"{out.rss_mb:.0f} MB"
    for name in case.get("absent") or []:
        assert not (tmp_path / name).exists(), f"{name} was created"
