"""Bounded YAML loading: ordinary anchors still work; bombs, cycles and bad bytes are refused."""

import pytest

from blis.config.yamlsafe import MAX_NODES, load_yaml_file, load_yaml_text
from blis.errors import ConfigError


def test_ordinary_anchors_load_and_share():
    data = load_yaml_text("base: &b {mean: 5, std: 1}\nin: *b\nout: *b\n", "f")
    assert data["in"] == data["out"] == {"mean": 5, "std": 1}


def test_expansion_just_below_the_cap_loads_and_above_is_refused():
    side = 1000   # 1000 x 1000 leaves ~= MAX_NODES
    doc = "a: &a [" + ",".join(["1"] * side) + "]\nb: [" + ",".join(["*a"] * (side - 5)) + "]\n"
    assert len(load_yaml_text(doc, "f")["b"]) == side - 5
    big = doc.replace(",".join(["*a"] * (side - 5)), ",".join(["*a"] * (MAX_NODES // side + 1)))
    with pytest.raises(ConfigError, match="expands to more than") as e:
        load_yaml_text(big, "f")
    assert e.value.field == "f"


def test_recursive_alias_is_refused():
    with pytest.raises(ConfigError, match="recursive"):
        load_yaml_text("a: &a [1, *a]\n", "f")


def test_file_errors_name_the_field(tmp_path):
    (tmp_path / "x.yaml").write_bytes(b"a: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8") as e:
        load_yaml_file(tmp_path / "x.yaml", "policy-config")
    assert e.value.field == "policy-config"
    with pytest.raises(ConfigError, match="is a directory"):
        load_yaml_file(tmp_path, "policy-config")
    with pytest.raises(ConfigError, match="file not found"):
        load_yaml_file(tmp_path / "none.yaml", "policy-config")
