"""Bounded YAML reading for every user file (policy bundle, workload spec, study, trace header).

A few hundred bytes of anchors and aliases can stand for billions of nodes ("billion laughs");
PyYAML shares the aliased objects, so loading is cheap but any later walk, copy or error
message over the value is not. We count the *expanded* size of the composed node graph (each
shared node counted once per reference, memoised, so the count itself is linear) and refuse a
document above ``MAX_NODES``, and refuse files above ``MAX_BYTES`` before reading them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from blis.errors import ConfigError

MAX_BYTES = 64 << 20      # a 64 MiB YAML file is not a configuration
MAX_NODES = 1_000_000     # expanded nodes (scalars + collections) per document


def _expanded_size(root: yaml.Node, field: str) -> int:
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(field, "recursive YAML alias (a value that contains itself)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += size(child)
                if total > MAX_NODES:
                    break
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > MAX_NODES:
                    break
        active.discard(key)
        sizes[key] = total
        return total

    return size(root)


def load_yaml_text(text: str, field: str, loader=yaml.SafeLoader) -> Any:
    """Parse one YAML document with ``loader`` after checking its expanded size."""
    ldr = loader(text)
    try:
        node = ldr.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, field) > MAX_NODES:
            raise ConfigError(field, f"YAML expands to more than {MAX_NODES:,} nodes "
                                     "(aliases/anchors repeating a value)")
        return ldr.construct_document(node)
    finally:
        ldr.dispose()


def read_text(path: str | os.PathLike, field: str) -> str:
    """A user file's UTF-8 text; a missing file, a directory, an oversized or non-UTF-8 file
    is a ConfigError naming ``field``."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(field, f"{p} is a directory, not a file")
    try:
        if p.stat().st_size > MAX_BYTES:
            raise ConfigError(field, f"{p} is larger than {MAX_BYTES >> 20} MiB")
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(field, f"cannot read {p}: file not found") from None
    except OSError as exc:
        raise ConfigError(field, f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(field, f"{p} is not UTF-8 text (byte {exc.start})") from None


def load_yaml_file(path: str | os.PathLike, field: str, loader=yaml.SafeLoader) -> Any:
    """``load_yaml_text`` of ``read_text``; syntax errors name ``field`` with their first line."""
    text = read_text(path, field)
    try:
        return load_yaml_text(text, field, loader)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(field, f"invalid YAML in {path}: {first}") from None
