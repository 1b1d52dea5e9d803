"""Pretty JSON with Go's float formatting, so output reads like the reference's (2-space indent,
whole floats printed without ``.0``, no exponent between 1e-6 and 1e21)."""

from __future__ import annotations

import json
import math

import numpy as np


def format_float(x: float) -> str:
    if not math.isfinite(x):
        raise ValueError(f"non-finite value {x} cannot be written as JSON")
    if x == int(x) and abs(x) < 1e21:
        return str(int(x))
    ax = abs(x)
    if 1e-6 <= ax < 1e21:
        return np.format_float_positional(x, unique=True, trim="-")
    mant, exp = repr(x).split("e")
    return f"{mant}e{exp[0]}{exp[1:].lstrip('0')}"


def dumps(obj, indent: int = 2, _level: int = 0) -> str:
    pad = " " * (indent * (_level + 1))
    end = " " * (indent * _level)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(str(k))}: {dumps(v, indent, _level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[]"
        items = [f"{pad}{dumps(v, indent, _level + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + end + "]"
    if isinstance(obj, bool) or obj is None:
        return json.dumps(obj)
    if isinstance(obj, (int, np.integer)):
        return str(int(obj))
    if isinstance(obj, (float, np.floating)):
        return format_float(float(obj))
    return json.dumps(obj)
