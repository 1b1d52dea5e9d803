"""One declaration per option: the CLI, --help and the README flag table are generated from
``blis.config.options.DECLARATIONS``; these tests fail when any of them drifts."""

from pathlib import Path

import pytest

from blis.cli import build_parser
from blis.config.options import DECLARATIONS, OPTIONS, OUTPUT_DECLARATIONS, build_config, flag_table
from blis.errors import ConfigError

README = Path(__file__).resolve().parent.parent / "README.md"
from conftest import MODEL


def test_readme_flag_table_is_generated_from_the_declarations():
    text = README.read_text()
    start = text.index("<!-- flag-table")
    body = text[text.index("\n", start) + 1:text.index("<!-- /flag-table -->")]
    assert body == flag_table(), "README flag table drifted: paste blis.config.options.flag_table()"


def test_every_run_flag_has_a_help_line_and_a_declaration():
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    flags = {a.option_strings[0]: a for a in run._actions if a.option_strings}
    for opt in DECLARATIONS + OUTPUT_DECLARATIONS:
        assert opt.flag in flags and opt.help and flags[opt.flag].help.startswith(opt.help)
    assert set(OPTIONS) == {o.name for o in DECLARATIONS}


@pytest.mark.parametrize("opt", [o for o in DECLARATIONS if o.high is not None and o.high > 1],
                         ids=lambda o: o.name)
def test_declared_upper_bounds_are_enforced(opt):
    value = int(opt.high) + 1 if opt.kind is int else opt.high * 2
    with pytest.raises(ConfigError) as exc:
        build_config({"model": MODEL, opt.name: value})
    assert exc.value.field == opt.name.replace("_", "-")
    if opt.kind is int and opt.low is not None and opt.low >= 0:
        assert exc.value.message.startswith("must be <=")


def test_registry_names_reach_help():
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    text = run.format_help()
    from blis.cluster.admission import ADMISSION_POLICIES

    for name in ADMISSION_POLICIES:
        assert name in text
