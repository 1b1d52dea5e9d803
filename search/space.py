"""Search-space parameters: kinds, ranges, optional activation conditions, Optuna suggestions.

A parameter's name is its target path (see ``objectives.paths``), which is also the Optuna
parameter name, so a stored trial's params map straight back onto simulator options.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import optuna

from blis.errors import ConfigError

KINDS = ("int", "float", "categorical")
_KEYS = {
    "int": {"type", "low", "high", "step", "log", "when"},
    "float": {"type", "low", "high", "step", "log", "when"},
    "categorical": {"type", "choices", "when"},
}


def params_key(params: dict) -> str:
    """A configuration's identity: equal parameters, equal key (duplicates are found by it)."""
    return json.dumps(params, sort_keys=True, default=str)


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()
    when: dict = field(default_factory=dict)

    def active(self, params: dict) -> bool:
        """A conditional parameter is sampled only when every ``when`` parameter holds an allowed value."""
        return all(params.get(dep) in allowed for dep, allowed in self.when.items())

    def contains(self, value) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and int(value) != value:
            return False
        return self.low <= value <= self.high

    def extremes(self) -> list:
        """Values that bound the parameter's effect: every choice, or both ends of the range."""
        if self.kind == "categorical":
            return list(self.choices)
        lo, hi = (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)
        return [lo] if lo == hi else [lo, hi]

    def to_dict(self) -> dict:
        d: dict = {"type": self.kind}
        if self.kind == "categorical":
            d["choices"] = list(self.choices)
        else:
            d.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                d["step"] = self.step
        if self.when:
            d["when"] = {k: list(v) for k, v in self.when.items()}
        return d


def _number(raw: dict, key: str, field: str, integer: bool) -> float | None:
    v = raw.get(key)
    if v is None:
        return None
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not math.isfinite(v):
        raise ConfigError(f"{field}.{key}", f"must be {'an integer' if integer else 'a finite number'}, got {v!r}")
    return v


def parse_parameter(name: str, raw: object, field: str, earlier: dict[str, Parameter]) -> Parameter:
    if not isinstance(raw, dict):
        raise ConfigError(field, "must be a mapping with a type: int | float | categorical")
    kind = raw.get("type")
    if kind not in KINDS:
        raise ConfigError(f"{field}.type", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = set(raw) - _KEYS[kind]
    if unknown:
        raise ConfigError(f"{field}.{sorted(unknown)[0]}", f"unknown key for a {kind} parameter (allowed: {', '.join(sorted(_KEYS[kind]))})")
    when = _parse_when(raw.get("when"), f"{field}.when", earlier)
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{field}.choices", "must be a non-empty list")
        if any(not isinstance(c, (str, int, float, bool, type(None))) for c in choices):
            raise ConfigError(f"{field}.choices", "choices must be scalars (str, number, bool, null)")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{field}.choices", "duplicate choice")
        return Parameter(name, kind, choices=tuple(choices), when=when)
    integer = kind == "int"
    low, high = _number(raw, "low", field, integer), _number(raw, "high", field, integer)
    if low is None or high is None:
        raise ConfigError(field, f"a {kind} parameter needs low and high")
    if low > high:
        raise ConfigError(field, f"inverted range: low {low} > high {high}")
    step = _number(raw, "step", field, integer)
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{field}.log", f"must be true or false, got {log!r}")
    if step is not None:
        if step <= 0:
            raise ConfigError(f"{field}.step", f"must be > 0, got {step}")
        if log:
            raise ConfigError(f"{field}.step", "cannot be combined with log: true")
        span = (high - low) / step
        if abs(span - round(span)) > 1e-9:
            raise ConfigError(field, f"high - low ({high - low:g}) is not a multiple of step {step:g}")
    if log and low <= 0:
        raise ConfigError(f"{field}.low", f"must be > 0 with log: true, got {low}")
    if not integer:
        low, high, step = float(low), float(high), None if step is None else float(step)
    return Parameter(name, kind, low=low, high=high, step=step, log=log, when=when)


def _parse_when(raw: object, field: str, earlier: dict[str, Parameter]) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(field, "must be a mapping {earlier categorical parameter: value or [values]}")
    when = {}
    for dep, allowed in raw.items():
        parent = earlier.get(dep)
        if parent is None or parent.kind != "categorical":
            raise ConfigError(f"{field}.{dep}", "must name a categorical parameter declared earlier")
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        missing = [v for v in values if v not in parent.choices]
        if missing:
            raise ConfigError(f"{field}.{dep}", f"{missing[0]!r} is not among its choices {list(parent.choices)}")
        when[dep] = values
    return when


def suggest(trial: optuna.trial.Trial, parameters: list[Parameter]) -> dict:
    """Ask ``trial`` for every active parameter, in declaration order (conditions see earlier values)."""
    params: dict = {}
    for p in parameters:
        if not p.active(params):
            continue
        if p.kind == "categorical":
            params[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    return params


def _values(p: Parameter) -> list | None:
    """Every value of a parameter, or None for a continuous one."""
    if p.kind == "categorical":
        return list(p.choices)
    if p.kind == "int":
        return list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
    if p.step is None:
        return None
    return [p.low + i * p.step for i in range(int(round((p.high - p.low) / p.step)) + 1)]


def configurations(parameters: list[Parameter]):
    """Every distinct configuration of a finite space (conditions respected), as params dicts
    holding only the active parameters, in declaration order."""
    values = [_values(p) for p in parameters]
    if any(v is None for v in values):
        raise ValueError("a continuous parameter has no finite set of configurations")

    def walk(i: int, assigned: dict):
        if i == len(parameters):
            yield dict(assigned)
            return
        p = parameters[i]
        if not p.active(assigned):
            yield from walk(i + 1, assigned)
            return
        for v in values[i]:
            assigned[p.name] = v
            yield from walk(i + 1, assigned)
        del assigned[p.name]

    yield from walk(0, {})


def space_size(parameters: list[Parameter], limit: int = 1_000_000) -> int | None:
    """How many distinct configurations the space holds (conditions respected), or None when
    it is continuous or larger than ``limit``: then it cannot run out."""
    values = [_values(p) for p in parameters]
    if any(v is None for v in values):
        return None

    def count(i: int, assigned: dict) -> int:
        if i == len(parameters):
            return 1
        p = parameters[i]
        if not p.active(assigned):
            return count(i + 1, assigned)
        if not any(q.when and p.name in q.when for q in parameters[i + 1:]):
            return len(values[i]) * count(i + 1, assigned)  # nothing later depends on it
        return sum(count(i + 1, {**assigned, p.name: v}) for v in values[i])

    n = count(0, {})
    return n if n <= limit else None
