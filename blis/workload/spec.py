"""The v2 WorkloadSpec: dataclasses, strict YAML parsing, validation, presets (spec §14.2, §14.3, §14.8).

Every ``blis run`` workload mode (spec file, ``--workload distribution``, presets) becomes one
``WorkloadSpec`` that a single generator turns into requests. Parsing is strict — an unknown key,
a wrong type or an invalid value raises ``ConfigError`` naming the dotted key path — because a
silently ignored typo would quietly change the experiment.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from blis.config.yamlsafe import load_yaml_text, read_text
from blis.errors import ConfigError
from blis.workload.arrivals import ARRIVAL_SAMPLERS
from blis.workload.lengths import make_length_sampler

SLO_CLASSES = ("", "critical", "standard", "sheddable", "batch", "background")
V1_CLASS_UPGRADE = {"realtime": "critical", "interactive": "standard"}
CATEGORIES = ("", "language", "multimodal", "reasoning")
CONTEXT_GROWTH = ("", "accumulate")
PREFIX_SHARING = ("", "shared", "per_member")
GOODPUT_DIMS = ("ttft_ms", "itl_ms", "e2e_ms")
DEFAULT_PREFIX_LENGTH = 50
SESSION_DEFAULT_TIMEOUT_US = 300_000_000
DEFAULT_RUN_TIMEOUT_US = 300_000_000
MAX_COHORT_POPULATION = 100_000
PRESETS = ("chatbot", "contentgen", "summarization", "multidoc")

_DEFAULTS_PATH = Path(__file__).resolve().parent.parent / "data" / "defaults.yaml"


# ---------------------------------------------------------------------------------------------
# Dataclasses
# ---------------------------------------------------------------------------------------------

@dataclass
class ArrivalSpec:
    process: str = ""
    cv: float | None = None
    shape: float | None = None
    scale: float | None = None


@dataclass
class DistSpec:
    type: str = ""
    params: dict[str, float] = field(default_factory=dict)
    file: str = ""


@dataclass
class NetworkSpec:
    """Client network metadata; it does not change ``blis run`` results (spec §19.11)."""

    rtt_ms: float = 0.0
    bandwidth_mbps: float = 0.0


@dataclass
class LifecycleWindow:
    """Half-open activity window ``[start_us, end_us)`` with optional per-window overrides."""

    start_us: int = 0
    end_us: int = 0
    trace_rate: float | None = None
    arrival: ArrivalSpec | None = None
    input_distribution: DistSpec | None = None
    output_distribution: DistSpec | None = None

    def has_overrides(self) -> bool:
        """Any override switches the whole workload to the time-varying path (§14.7)."""
        return (self.trace_rate is not None or self.arrival is not None
                or self.input_distribution is not None or self.output_distribution is not None)


@dataclass
class LifecycleSpec:
    windows: list[LifecycleWindow] = field(default_factory=list)


@dataclass
class MultimodalSpec:
    text_distribution: DistSpec | None = None
    image_distribution: DistSpec | None = None
    image_count_distribution: DistSpec | None = None
    audio_distribution: DistSpec | None = None
    audio_count_distribution: DistSpec | None = None
    video_distribution: DistSpec | None = None
    video_count_distribution: DistSpec | None = None


@dataclass
class MultiTurnSpec:
    max_rounds: int = 1
    think_time_us: int = 0
    context_growth: str = ""
    single_session: bool = False


@dataclass
class ReasoningSpec:
    reason_ratio_distribution: DistSpec | None = None
    multi_turn: MultiTurnSpec | None = None


@dataclass
class ClientSpec:
    id: str = ""
    tenant_id: str = ""
    slo_class: str = ""
    model: str = ""
    adapter: str = ""
    rate_fraction: float = 0.0
    concurrency: int = 0
    think_time_us: int = 0
    arrival: ArrivalSpec = field(default_factory=ArrivalSpec)
    input_distribution: DistSpec = field(default_factory=DistSpec)
    output_distribution: DistSpec = field(default_factory=DistSpec)
    prefix_group: str = ""
    prefix_length: int = 0
    streaming: bool = False
    network: NetworkSpec | None = None
    lifecycle: LifecycleSpec | None = None
    multimodal: MultimodalSpec | None = None
    reasoning: ReasoningSpec | None = None
    timeout: int | None = None
    slo_target_us: int = 0
    closed_loop: bool | None = None

    @property
    def multi_turn(self) -> MultiTurnSpec | None:
        return self.reasoning.multi_turn if self.reasoning is not None else None

    @property
    def windows(self) -> list[LifecycleWindow]:
        return self.lifecycle.windows if self.lifecycle is not None else []

    @property
    def is_session(self) -> bool:
        """Session clients get the 300 s default deadline when ``timeout`` is absent (§3.5)."""
        return self.concurrency > 0 or self.multi_turn is not None


@dataclass
class DiurnalSpec:
    peak_hour: int = 0
    peak_to_trough_ratio: float = 1.0


@dataclass
class SpikeSpec:
    start_time_us: int = 0
    duration_us: int = 0
    trace_rate: float | None = None


@dataclass
class DrainSpec:
    start_time_us: int = 0
    ramp_duration_us: int = 0


@dataclass
class CohortSpec:
    id: str = ""
    population: int = 0
    tenant_id: str = ""
    slo_class: str = ""
    model: str = ""
    adapter: str = ""
    arrival: ArrivalSpec = field(default_factory=ArrivalSpec)
    input_distribution: DistSpec = field(default_factory=DistSpec)
    output_distribution: DistSpec = field(default_factory=DistSpec)
    prefix_group: str = ""
    prefix_sharing: str = ""
    streaming: bool = False
    rate_fraction: float = 0.0
    prefix_length: int = 0
    reasoning: ReasoningSpec | None = None
    closed_loop: bool | None = None
    timeout: int | None = None
    slo_target_us: int = 0
    network: NetworkSpec | None = None
    multimodal: MultimodalSpec | None = None
    diurnal: DiurnalSpec | None = None
    spike: SpikeSpec | None = None
    drain: DrainSpec | None = None


@dataclass
class WorkloadSpec:
    version: str = "2"
    seed: int = 0
    category: str = ""
    aggregate_rate: float = 0.0
    num_requests: int = 0
    horizon: int = 0
    clients: list[ClientSpec] = field(default_factory=list)
    cohorts: list[CohortSpec] = field(default_factory=list)
    # class -> {"ttft_ms"|"itl_ms"|"e2e_ms": threshold}; only the dimensions given are stored
    goodput_slo_targets: dict[str, dict[str, float]] = field(default_factory=dict)
    inference_perf: Any = None  # blis.workload.inference_perf.InferencePerfSpec | None


# ---------------------------------------------------------------------------------------------
# YAML loading
# ---------------------------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads YAML 1.2 floats such as ``1e6``."""


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            dup = key in seen
            seen.add(key)
        except TypeError:
            continue
        if dup:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(path_or_text: str | os.PathLike, field_name: str, *, is_path: bool = True) -> Any:
    """Load one YAML document strictly; I/O and syntax problems become ConfigError(field_name)."""
    text = read_text(path_or_text, field_name) if is_path else str(path_or_text)
    try:
        return load_yaml_text(text, field_name, _StrictLoader)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(field_name, f"invalid YAML: {first}") from None


# ---------------------------------------------------------------------------------------------
# Typed field readers (path-aware)
# ---------------------------------------------------------------------------------------------

def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(v: Any) -> str:
    return repr(v) if isinstance(v, (str, int, float, bool)) or v is None else type(v).__name__


class _Map:
    """A YAML mapping being read at ``path``; rejects keys outside ``allowed``."""

    def __init__(self, data: Any, path: str, allowed: tuple[str, ...], root_name: str = "workload-spec"):
        if not isinstance(data, dict):
            raise ConfigError(path or root_name, f"expected a mapping, got {_describe(data)}")
        for k in data:
            if not isinstance(k, str) or k not in allowed:
                raise ConfigError(_join(path, k), "unknown key")
        self.data = data
        self.path = path

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def sub(self, key: str) -> str:
        return _join(self.path, key)

    def text(self, key: str, default: str = "") -> str:
        v = self.data.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ConfigError(self.sub(key), f"expected a string, got {_describe(v)}")
        return str(v)

    def integer(self, key: str, default: int | None = 0) -> int | None:
        v = self.data.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(self.sub(key), f"expected an integer, got {_describe(v)}")
        if isinstance(v, float):
            if not math.isfinite(v) or v != int(v):
                raise ConfigError(self.sub(key), f"expected an integer, got {v!r}")
            v = int(v)
        return v

    def number(self, key: str, default: float | None = 0.0) -> float | None:
        v = self.data.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(self.sub(key), f"expected a number, got {_describe(v)}")
        return float(v)

    def flag(self, key: str, default: bool | None = False) -> bool | None:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise ConfigError(self.sub(key), f"expected true or false, got {_describe(v)}")
        return v

    def items(self, key: str) -> list:
        v = self.data.get(key)
        if v is None:
            return []
        if not isinstance(v, list):
            raise ConfigError(self.sub(key), f"expected a list, got {_describe(v)}")
        return v


def _require_finite(path: str, v: float | None, *, positive: bool = False,
                    nonneg: bool = False) -> None:
    if v is None:
        return
    if not math.isfinite(v):
        raise ConfigError(path, f"must be a finite number, got {v!r}")
    if positive and v <= 0:
        raise ConfigError(path, f"must be > 0, got {v:g}")
    if nonneg and v < 0:
        raise ConfigError(path, f"must be >= 0, got {v:g}")


def _require_nonneg_int(path: str, v: int | None) -> None:
    if v is not None and v < 0:
        raise ConfigError(path, f"must be >= 0, got {v}")


# ---------------------------------------------------------------------------------------------
# Block parsers
# ---------------------------------------------------------------------------------------------

def _parse_arrival(data: Any, path: str, required: bool) -> ArrivalSpec:
    if data is None:
        if required:
            raise ConfigError(_join(path, "process"),
                              "required; valid: " + ", ".join(sorted(ARRIVAL_SAMPLERS)))
        return ArrivalSpec()
    m = _Map(data, path, ("process", "cv", "shape", "scale"))
    a = ArrivalSpec(process=m.text("process"), cv=m.number("cv", None),
                    shape=m.number("shape", None), scale=m.number("scale", None))
    if a.process not in ARRIVAL_SAMPLERS:
        if not a.process:
            raise ConfigError(m.sub("process"),
                              "required; valid: " + ", ".join(sorted(ARRIVAL_SAMPLERS)))
        raise ConfigError(m.sub("process"), f"unknown arrival process {a.process!r}; valid: "
                          + ", ".join(sorted(ARRIVAL_SAMPLERS)))
    _require_finite(m.sub("cv"), a.cv, positive=True)
    if a.process == "weibull" and a.cv is not None and not 0.01 <= a.cv <= 10.4:
        raise ConfigError(m.sub("cv"), f"weibull cv must be in [0.01, 10.4], got {a.cv:g}")
    _require_finite(m.sub("shape"), a.shape, positive=True)
    _require_finite(m.sub("scale"), a.scale, positive=True)
    return a


def _parse_dist(data: Any, path: str) -> DistSpec:
    m = _Map(data, path, ("type", "params", "file"))
    params_raw = m.raw("params")
    params: dict[str, Any] = {}
    if params_raw is not None:
        if not isinstance(params_raw, dict):
            raise ConfigError(m.sub("params"), f"expected a mapping, got {_describe(params_raw)}")
        for k, v in params_raw.items():
            key = str(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(_join(m.sub("params"), key), f"expected a number, got {_describe(v)}")
            if not math.isfinite(v):
                raise ConfigError(_join(m.sub("params"), key), f"must be a finite number, got {v!r}")
            params[key] = float(v)
    d = DistSpec(type=m.text("type"), params=params, file=m.text("file"))
    make_length_sampler(d.type, d.params, path, d.file)
    return d


def _parse_opt_dist(data: Any, path: str) -> DistSpec | None:
    return None if data is None else _parse_dist(data, path)


def _parse_required_dist(m: _Map, key: str) -> DistSpec:
    if not m.has(key):
        raise ConfigError(m.sub(key), "required (a mapping with a 'type')")
    return _parse_dist(m.raw(key), m.sub(key))


def _parse_network(data: Any, path: str) -> NetworkSpec | None:
    if data is None:
        return None
    m = _Map(data, path, ("rtt_ms", "bandwidth_mbps"))
    n = NetworkSpec(rtt_ms=m.number("rtt_ms"), bandwidth_mbps=m.number("bandwidth_mbps"))
    _require_finite(m.sub("rtt_ms"), n.rtt_ms, nonneg=True)
    _require_finite(m.sub("bandwidth_mbps"), n.bandwidth_mbps, nonneg=True)
    return n


def _parse_lifecycle(data: Any, path: str) -> LifecycleSpec | None:
    if data is None:
        return None
    m = _Map(data, path, ("windows",))
    items = m.items("windows")
    if not items:
        raise ConfigError(m.sub("windows"), "must list at least one window")
    windows = []
    for i, w in enumerate(items):
        wp = f"{m.sub('windows')}[{i}]"
        wm = _Map(w, wp, ("start_us", "end_us", "trace_rate", "arrival", "input_distribution",
                          "output_distribution"))
        win = LifecycleWindow(
            start_us=wm.integer("start_us"), end_us=wm.integer("end_us"),
            trace_rate=wm.number("trace_rate", None),
            arrival=_parse_arrival(wm.raw("arrival"), wm.sub("arrival"), False) if wm.has("arrival") else None,
            input_distribution=_parse_opt_dist(wm.raw("input_distribution"), wm.sub("input_distribution")),
            output_distribution=_parse_opt_dist(wm.raw("output_distribution"), wm.sub("output_distribution")))
        if win.start_us < 0:
            raise ConfigError(wm.sub("start_us"), f"must be >= 0, got {win.start_us}")
        if win.end_us <= win.start_us:
            raise ConfigError(wm.sub("end_us"), f"must be > start_us ({win.start_us}), got {win.end_us}")
        _require_finite(wm.sub("trace_rate"), win.trace_rate, positive=True)
        windows.append(win)
    return LifecycleSpec(windows=windows)


def _parse_multimodal(data: Any, path: str) -> MultimodalSpec | None:
    if data is None:
        return None
    keys = ("text_distribution", "image_distribution", "image_count_distribution",
            "audio_distribution", "audio_count_distribution", "video_distribution",
            "video_count_distribution")
    m = _Map(data, path, keys)
    return MultimodalSpec(**{k: _parse_opt_dist(m.raw(k), m.sub(k)) for k in keys})


def _parse_reasoning(data: Any, path: str) -> ReasoningSpec | None:
    if data is None:
        return None
    m = _Map(data, path, ("reason_ratio_distribution", "multi_turn"))
    mt = None
    if m.has("multi_turn"):
        mm = _Map(m.raw("multi_turn"), m.sub("multi_turn"),
                  ("max_rounds", "think_time_us", "context_growth", "single_session"))
        mt = MultiTurnSpec(max_rounds=mm.integer("max_rounds"), think_time_us=mm.integer("think_time_us"),
                           context_growth=mm.text("context_growth"),
                           single_session=mm.flag("single_session"))
        if mt.max_rounds < 1:
            raise ConfigError(mm.sub("max_rounds"), f"must be >= 1, got {mt.max_rounds}")
        _require_nonneg_int(mm.sub("think_time_us"), mt.think_time_us)
        if mt.context_growth not in CONTEXT_GROWTH:
            raise ConfigError(mm.sub("context_growth"),
                              f"must be empty or 'accumulate', got {mt.context_growth!r}")
    return ReasoningSpec(
        reason_ratio_distribution=_parse_opt_dist(m.raw("reason_ratio_distribution"),
                                                  m.sub("reason_ratio_distribution")),
        multi_turn=mt)


def _parse_slo_class(m: _Map) -> str:
    cls = m.text("slo_class")
    cls = V1_CLASS_UPGRADE.get(cls, cls)
    if cls not in SLO_CLASSES:
        raise ConfigError(m.sub("slo_class"), f"unknown slo_class {cls!r}; valid: critical, "
                                              "standard, sheddable, batch, background, or empty")
    return cls


_CLIENT_KEYS = ("id", "tenant_id", "slo_class", "model", "adapter", "rate_fraction", "concurrency",
                "think_time_us", "arrival", "input_distribution", "output_distribution",
                "prefix_group", "prefix_length", "streaming", "network", "lifecycle", "multimodal",
                "reasoning", "timeout", "slo_target_us", "closed_loop")


def _parse_client(data: Any, path: str) -> ClientSpec:
    m = _Map(data, path, _CLIENT_KEYS)
    c = ClientSpec(
        id=m.text("id"), tenant_id=m.text("tenant_id"), slo_class=_parse_slo_class(m),
        model=m.text("model"), adapter=m.text("adapter"), rate_fraction=m.number("rate_fraction"),
        concurrency=m.integer("concurrency"), think_time_us=m.integer("think_time_us"),
        prefix_group=m.text("prefix_group"), prefix_length=m.integer("prefix_length"),
        streaming=m.flag("streaming"), timeout=m.integer("timeout", None),
        slo_target_us=m.integer("slo_target_us"), closed_loop=m.flag("closed_loop", None))
    _require_nonneg_int(m.sub("concurrency"), c.concurrency)
    _require_nonneg_int(m.sub("think_time_us"), c.think_time_us)
    if c.concurrency > 0:
        if c.rate_fraction != 0:
            raise ConfigError(m.sub("rate_fraction"), "concurrency and rate_fraction are mutually exclusive")
        c.arrival = _parse_arrival(m.raw("arrival"), m.sub("arrival"), False)
    else:
        _require_finite(m.sub("rate_fraction"), c.rate_fraction, positive=True)
        c.arrival = _parse_arrival(m.raw("arrival"), m.sub("arrival"), True)
    c.input_distribution = _parse_required_dist(m, "input_distribution")
    c.output_distribution = _parse_required_dist(m, "output_distribution")
    _require_nonneg_int(m.sub("prefix_length"), c.prefix_length)
    _require_nonneg_int(m.sub("timeout"), c.timeout)
    _require_nonneg_int(m.sub("slo_target_us"), c.slo_target_us)
    c.network = _parse_network(m.raw("network"), m.sub("network"))
    c.lifecycle = _parse_lifecycle(m.raw("lifecycle"), m.sub("lifecycle"))
    c.multimodal = _parse_multimodal(m.raw("multimodal"), m.sub("multimodal"))
    c.reasoning = _parse_reasoning(m.raw("reasoning"), m.sub("reasoning"))
    return c


_COHORT_KEYS = ("id", "population", "tenant_id", "slo_class", "model", "adapter", "arrival",
                "input_distribution", "output_distribution", "prefix_group", "prefix_sharing",
                "streaming", "rate_fraction", "prefix_length", "reasoning", "closed_loop", "timeout",
                "slo_target_us", "network", "multimodal", "diurnal", "spike", "drain")


def _parse_cohort(data: Any, path: str) -> CohortSpec:
    m = _Map(data, path, _COHORT_KEYS)
    c = CohortSpec(
        id=m.text("id"), population=m.integer("population"), tenant_id=m.text("tenant_id"),
        slo_class=_parse_slo_class(m), model=m.text("model"), adapter=m.text("adapter"),
        prefix_group=m.text("prefix_group"), prefix_sharing=m.text("prefix_sharing"),
        streaming=m.flag("streaming"), rate_fraction=m.number("rate_fraction"),
        prefix_length=m.integer("prefix_length"), closed_loop=m.flag("closed_loop", None),
        timeout=m.integer("timeout", None), slo_target_us=m.integer("slo_target_us"))
    if not 1 <= c.population <= MAX_COHORT_POPULATION:
        raise ConfigError(m.sub("population"),
                          f"must be in [1, {MAX_COHORT_POPULATION}], got {c.population}")
    _require_finite(m.sub("rate_fraction"), c.rate_fraction, positive=True)
    c.arrival = _parse_arrival(m.raw("arrival"), m.sub("arrival"), True)
    c.input_distribution = _parse_required_dist(m, "input_distribution")
    c.output_distribution = _parse_required_dist(m, "output_distribution")
    if c.prefix_sharing not in PREFIX_SHARING:
        raise ConfigError(m.sub("prefix_sharing"),
                          f"must be 'shared' or 'per_member', got {c.prefix_sharing!r}")
    _require_nonneg_int(m.sub("prefix_length"), c.prefix_length)
    _require_nonneg_int(m.sub("timeout"), c.timeout)
    _require_nonneg_int(m.sub("slo_target_us"), c.slo_target_us)
    c.network = _parse_network(m.raw("network"), m.sub("network"))
    c.multimodal = _parse_multimodal(m.raw("multimodal"), m.sub("multimodal"))
    c.reasoning = _parse_reasoning(m.raw("reasoning"), m.sub("reasoning"))
    if m.has("diurnal"):
        dm = _Map(m.raw("diurnal"), m.sub("diurnal"), ("peak_hour", "peak_to_trough_ratio"))
        c.diurnal = DiurnalSpec(peak_hour=dm.integer("peak_hour"),
                                peak_to_trough_ratio=dm.number("peak_to_trough_ratio", 1.0))
        if not 0 <= c.diurnal.peak_hour <= 23:
            raise ConfigError(dm.sub("peak_hour"), f"must be in [0, 23], got {c.diurnal.peak_hour}")
        r = c.diurnal.peak_to_trough_ratio
        if not math.isfinite(r) or r < 1.0:
            raise ConfigError(dm.sub("peak_to_trough_ratio"), f"must be a finite number >= 1, got {r!r}")
    if m.has("spike"):
        sm = _Map(m.raw("spike"), m.sub("spike"), ("start_time_us", "duration_us", "trace_rate"))
        c.spike = SpikeSpec(start_time_us=sm.integer("start_time_us"), duration_us=sm.integer("duration_us"),
                            trace_rate=sm.number("trace_rate", None))
        _require_nonneg_int(sm.sub("start_time_us"), c.spike.start_time_us)
        if c.spike.duration_us <= 0:
            raise ConfigError(sm.sub("duration_us"), f"must be > 0, got {c.spike.duration_us}")
        _require_finite(sm.sub("trace_rate"), c.spike.trace_rate, positive=True)
    if m.has("drain"):
        dm = _Map(m.raw("drain"), m.sub("drain"), ("start_time_us", "ramp_duration_us"))
        c.drain = DrainSpec(start_time_us=dm.integer("start_time_us"),
                            ramp_duration_us=dm.integer("ramp_duration_us"))
        _require_nonneg_int(dm.sub("start_time_us"), c.drain.start_time_us)
        if c.drain.ramp_duration_us <= 0:
            raise ConfigError(dm.sub("ramp_duration_us"),
                              f"must be > 0, got {c.drain.ramp_duration_us}")
    return c


def parse_goodput_targets(data: Any, path: str = "goodput_slo_targets",
                          root_name: str = "workload-spec") -> dict[str, dict[str, float]]:
    """``{class: {ttft_ms, itl_ms, e2e_ms}}``; classes are SLO classes or ``default`` (unclassed)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {_describe(data)}")
    out: dict[str, dict[str, float]] = {}
    for cls_raw, dims in data.items():
        cls = V1_CLASS_UPGRADE.get(str(cls_raw), str(cls_raw))
        cp = _join(path, cls_raw)
        if cls != "default" and (cls not in SLO_CLASSES or cls == ""):
            raise ConfigError(cp, "unknown SLO class; valid: critical, standard, sheddable, "
                                  "batch, background, default")
        m = _Map(dims, cp, GOODPUT_DIMS, root_name)
        entry: dict[str, float] = {}
        for d in GOODPUT_DIMS:
            v = m.number(d, None)
            if v is not None:
                _require_finite(m.sub(d), v, nonneg=True)
                entry[d] = v
        out[cls] = entry
    return out


_TOP_KEYS = ("version", "seed", "category", "aggregate_rate", "num_requests", "horizon", "clients",
             "cohorts", "servegen_data", "inference_perf", "goodput_slo_targets")


def parse_workload_spec(source: str | os.PathLike | dict | WorkloadSpec) -> WorkloadSpec:
    """Strictly parse and validate a v2 (or auto-upgraded v1) WorkloadSpec.

    ``source`` is a YAML file path, an already-loaded mapping, or a ``WorkloadSpec`` (returned
    as-is). Raises ``ConfigError`` on any unknown key, wrong type or rule violation (§14.3).
    """
    if isinstance(source, WorkloadSpec):
        return source
    from blis.workload import inference_perf as ipf

    data = source if isinstance(source, dict) else load_yaml(source, "workload-spec")
    if data is None:
        raise ConfigError("workload-spec", "is empty")
    if ipf.is_profile(data):
        data = ipf.profile_to_spec_dict(data)  # what `blis convert inference-perf` writes
    m = _Map(data, "", _TOP_KEYS)
    if m.has("servegen_data"):
        raise ConfigError("servegen_data", "is not supported by this port; convert it to "
                                           "explicit clients")
    ip = None
    if m.has("inference_perf"):
        if m.has("clients") or m.has("cohorts"):
            raise ConfigError("inference_perf", "cannot be combined with clients or cohorts")
        ip = ipf.parse_inference_perf(m.raw("inference_perf"))
    version = m.text("version")
    if version not in ("", "1", "2"):
        raise ConfigError("version", f"unsupported workload spec version {version!r}; use \"2\"")
    spec = WorkloadSpec(
        version="2", seed=m.integer("seed"), category=m.text("category"),
        aggregate_rate=m.number("aggregate_rate"), num_requests=m.integer("num_requests"),
        horizon=m.integer("horizon"),
        clients=[_parse_client(c, f"clients[{i}]") for i, c in enumerate(m.items("clients"))],
        cohorts=[_parse_cohort(c, f"cohorts[{i}]") for i, c in enumerate(m.items("cohorts"))],
        goodput_slo_targets=parse_goodput_targets(m.raw("goodput_slo_targets")),
        inference_perf=ip)
    if ip is not None and spec.num_requests == 0:
        spec.num_requests = sum(ip.stage_counts())  # every request the load generator sends
    validate_workload_spec(spec)
    return spec


def validate_workload_spec(spec: WorkloadSpec) -> None:
    """Cross-field rules of §14.3 (per-field checks already ran while parsing)."""
    if spec.category not in CATEGORIES:
        raise ConfigError("category", f"unknown category {spec.category!r}; valid: language, "
                                      "multimodal, reasoning, or empty")
    if not (-(1 << 63) <= spec.seed < (1 << 63)):
        raise ConfigError("seed", f"must fit in int64, got {spec.seed}")
    _require_nonneg_int("num_requests", spec.num_requests)
    _require_nonneg_int("horizon", spec.horizon)
    if spec.inference_perf is not None:
        return
    if not spec.clients and not spec.cohorts:
        raise ConfigError("clients", "at least one client or cohort is required")

    rate_based = [c for c in spec.clients if c.concurrency == 0]
    if rate_based or spec.cohorts:
        r = spec.aggregate_rate
        if not math.isfinite(r) or r < 0:
            raise ConfigError("aggregate_rate", f"must be a finite number > 0 "
                                                f"(0 = absolute-rate mode), got {r!r}")
        if r == 0:
            for i, c in enumerate(spec.clients):
                if c.concurrency == 0 and (not c.windows or any(w.trace_rate is None for w in c.windows)):
                    raise ConfigError(f"clients[{i}].lifecycle", "aggregate_rate 0 (absolute-rate "
                                      "mode) requires lifecycle windows that all set trace_rate")
            for i, c in enumerate(spec.cohorts):
                if c.spike is None or c.spike.trace_rate is None:
                    raise ConfigError(f"cohorts[{i}].spike.trace_rate", "aggregate_rate 0 "
                                      "(absolute-rate mode) requires spike.trace_rate on every cohort")

    classed = [(f"clients[{i}]", c.slo_class) for i, c in enumerate(spec.clients)]
    classed += [(f"cohorts[{i}]", c.slo_class) for i, c in enumerate(spec.cohorts)]
    with_class = [p for p, cls in classed if cls]
    if with_class:
        for p, cls in classed:
            if not cls:
                raise ConfigError(f"{p}.slo_class", f"mixed slo_class specification: {with_class[0]} "
                                  "sets a class but this one does not; set slo_class on every "
                                  "client/cohort or on none")

    has_conc = any(c.concurrency > 0 for c in spec.clients)
    mt = [f"clients[{i}]" for i, c in enumerate(spec.clients) if c.multi_turn is not None]
    mt += [f"cohorts[{i}]" for i, c in enumerate(spec.cohorts)
           if c.reasoning is not None and c.reasoning.multi_turn is not None]
    if has_conc and mt:
        raise ConfigError(f"{mt[0]}.reasoning.multi_turn", "concurrency clients and multi-turn "
                          "clients cannot be mixed in the same spec")


# ---------------------------------------------------------------------------------------------
# Cohort expansion (§14.8)
# ---------------------------------------------------------------------------------------------

_HOUR_US = 3_600_000_000


def _cohort_windows(c: CohortSpec) -> list[LifecycleWindow]:
    windows: list[LifecycleWindow] = []
    if c.diurnal is not None:
        ratio = c.diurnal.peak_to_trough_ratio
        for h in range(24):
            m_h = ((1 + math.cos(2 * math.pi * (h - c.diurnal.peak_hour) / 24)) / 2) \
                * (1 - 1 / ratio) + 1 / ratio
            dur = min(max(int(_HOUR_US * m_h), 1), _HOUR_US)
            windows.append(LifecycleWindow(start_us=h * _HOUR_US, end_us=h * _HOUR_US + dur))
    if c.spike is not None:
        tr = None if c.spike.trace_rate is None else c.spike.trace_rate / c.population
        windows.append(LifecycleWindow(start_us=c.spike.start_time_us,
                                       end_us=c.spike.start_time_us + c.spike.duration_us,
                                       trace_rate=tr))
    if c.drain is not None:
        start, ramp = c.drain.start_time_us, c.drain.ramp_duration_us
        if start > 0:
            windows.append(LifecycleWindow(start_us=0, end_us=start))
        seg = ramp // 10
        for i in range(10):
            active = seg * (10 - i) // 10
            if active > 0:
                s = start + i * seg
                windows.append(LifecycleWindow(start_us=s, end_us=s + active))
    return windows


def expand_cohorts(spec: WorkloadSpec) -> list[tuple[str, ClientSpec]]:
    """Member clients ``"<id>-<j>"`` of every cohort, each tagged with its cohort's key path."""
    out: list[tuple[str, ClientSpec]] = []
    for ci, c in enumerate(spec.cohorts):
        windows = _cohort_windows(c)
        for j in range(c.population):
            group = c.prefix_group
            if group and c.prefix_sharing == "per_member":
                group = f"{group}-{j}"
            out.append((f"cohorts[{ci}]", ClientSpec(
                id=f"{c.id}-{j}", tenant_id=c.tenant_id, slo_class=c.slo_class, model=c.model,
                adapter=c.adapter, rate_fraction=c.rate_fraction / c.population,
                arrival=c.arrival, input_distribution=c.input_distribution,
                output_distribution=c.output_distribution, prefix_group=group,
                prefix_length=c.prefix_length, streaming=c.streaming, network=c.network,
                lifecycle=LifecycleSpec(windows=windows) if windows else None,
                multimodal=c.multimodal, reasoning=c.reasoning, timeout=c.timeout,
                slo_target_us=c.slo_target_us, closed_loop=c.closed_loop)))
    return out


# ---------------------------------------------------------------------------------------------
# Synthesized specs: distribution mode and presets (§14.2)
# ---------------------------------------------------------------------------------------------

def _check_length_flags(prefix: str, mean: int, stdev: int, lo: int, hi: int) -> None:
    """The CLI's (quirky but enforced) checks on one set of length flags."""
    if lo < 1:
        raise ConfigError(f"{prefix}-min", f"must be >= 1, got {lo}")
    if hi < 1:
        raise ConfigError(f"{prefix}-max", f"must be >= 1, got {hi}")
    if stdev < 0:
        raise ConfigError(f"{prefix}-stdev", f"must be >= 0, got {stdev}")
    if lo > hi:
        raise ConfigError(f"{prefix}-min", f"must be <= {prefix}-max ({hi}), got {lo}")
    if not lo <= mean <= hi:
        raise ConfigError(prefix, f"mean must be within [{lo}, {hi}], got {mean}")
    if stdev > hi:
        raise ConfigError(f"{prefix}-stdev", f"must be <= {prefix}-max ({hi}), got {stdev}")
    if stdev != 0 and stdev < lo:
        raise ConfigError(f"{prefix}-stdev", f"must be 0 or >= {prefix}-min ({lo}), got {stdev}")


def _gaussian(mean, stdev, lo, hi) -> DistSpec:
    return DistSpec(type="gaussian", params={"mean": float(mean), "std_dev": float(stdev),
                                             "min": float(lo), "max": float(hi)})


def synthesize_distribution_spec(rate: float, num_requests: int, seed: int,
                                 prompt_tokens: int = 512, prompt_tokens_stdev: int = 256,
                                 prompt_tokens_min: int = 2, prompt_tokens_max: int = 7000,
                                 output_tokens: int = 512, output_tokens_stdev: int = 256,
                                 output_tokens_min: int = 2, output_tokens_max: int = 7000,
                                 prefix_tokens: int = 0) -> WorkloadSpec:
    """The one-client spec behind ``--workload distribution`` and the presets.

    Arrivals are ``constant`` (evenly spaced, first at ``int(1e6/rate)`` µs), lengths gaussian.
    The client carries the ``blis run`` default 300 s timeout; an explicit ``--timeout`` is applied
    through ``generate_requests(timeout_override_us=...)``.
    """
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise ConfigError("rate", f"must be a number, got {rate!r}") from None
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError("rate", f"must be a finite number > 0, got {rate!r}")
    if num_requests < 0:
        raise ConfigError("num-requests", f"must be >= 0, got {num_requests}")
    if prefix_tokens < 0:
        raise ConfigError("prefix-tokens", f"must be >= 0, got {prefix_tokens}")
    _check_length_flags("prompt-tokens", prompt_tokens, prompt_tokens_stdev,
                        prompt_tokens_min, prompt_tokens_max)
    _check_length_flags("output-tokens", output_tokens, output_tokens_stdev,
                        output_tokens_min, output_tokens_max)
    client = ClientSpec(
        id="distribution", rate_fraction=1.0, arrival=ArrivalSpec(process="constant"),
        input_distribution=_gaussian(prompt_tokens, prompt_tokens_stdev, prompt_tokens_min,
                                     prompt_tokens_max),
        output_distribution=_gaussian(output_tokens, output_tokens_stdev, output_tokens_min,
                                      output_tokens_max),
        timeout=DEFAULT_RUN_TIMEOUT_US)
    if prefix_tokens > 0:
        client.prefix_group = "shared"
        client.prefix_length = prefix_tokens
    return WorkloadSpec(version="2", seed=int(seed), category="language", aggregate_rate=rate,
                        num_requests=int(num_requests), clients=[client])


def load_presets(path: str | os.PathLike | None = None) -> dict[str, dict[str, int]]:
    """The ``workloads:`` section of ``defaults.yaml`` (bundled copy unless ``path``)."""
    data = load_yaml(path or _DEFAULTS_PATH, "defaults")
    presets = (data or {}).get("workloads") or {}
    if not isinstance(presets, dict):
        raise ConfigError("defaults.workloads", "expected a mapping of preset names")
    return presets


@functools.lru_cache(maxsize=1)
def bundled_presets() -> dict[str, dict[str, int]]:
    """``load_presets()`` of the bundled file, parsed once per process (0.15 s a parse): a search
    builds a configuration per trial and per pre-flight probe. Read-only for callers."""
    return load_presets()


def preset_spec(name: str, rate: float, num_requests: int, seed: int) -> WorkloadSpec:
    """Synthesized spec for ``--workload <name>``; ``distribution`` uses the CLI defaults."""
    if name == "distribution":
        return synthesize_distribution_spec(rate, num_requests, seed)
    presets = bundled_presets()
    if name not in PRESETS or name not in presets:
        raise ConfigError("workload", f"unknown preset {name!r}; choose chatbot, contentgen, "
                                      "summarization, multidoc or distribution")
    p = presets[name]
    return synthesize_distribution_spec(
        rate, num_requests, seed,
        prompt_tokens=int(p["prompt_tokens"]), prompt_tokens_stdev=int(p["prompt_tokens_stdev"]),
        prompt_tokens_min=int(p["prompt_tokens_min"]), prompt_tokens_max=int(p["prompt_tokens_max"]),
        output_tokens=int(p["output_tokens"]), output_tokens_stdev=int(p["output_tokens_stdev"]),
        output_tokens_min=int(p["output_tokens_min"]), output_tokens_max=int(p["output_tokens_max"]),
        prefix_tokens=int(p.get("prefix_tokens") or 0))


# ---------------------------------------------------------------------------------------------
# Serialisation back to a plain mapping
# ---------------------------------------------------------------------------------------------

def _arrival_dict(a: ArrivalSpec) -> dict:
    d: dict[str, Any] = {"process": a.process}
    for k in ("cv", "shape", "scale"):
        v = getattr(a, k)
        if v is not None:
            d[k] = v
    return d


def _dist_dict(dist: DistSpec) -> dict:
    d: dict[str, Any] = {"type": dist.type}
    if dist.params:
        d["params"] = dict(dist.params)
    if dist.file:
        d["file"] = dist.file
    return d


def _put(d: dict, key: str, value: Any) -> None:
    """Omit defaults so written specs stay readable (parsing restores them)."""
    if value is None or value == "" or value is False or (value == 0 and not isinstance(value, bool)):
        return
    d[key] = value


def _network_dict(n: NetworkSpec) -> dict:
    return {"rtt_ms": n.rtt_ms, "bandwidth_mbps": n.bandwidth_mbps}


def _multimodal_dict(mm: MultimodalSpec) -> dict:
    return {k: _dist_dict(getattr(mm, k)) for k in MultimodalSpec.__dataclass_fields__
            if getattr(mm, k) is not None}


def _reasoning_dict(r: ReasoningSpec) -> dict:
    d: dict[str, Any] = {}
    if r.reason_ratio_distribution is not None:
        d["reason_ratio_distribution"] = _dist_dict(r.reason_ratio_distribution)
    if r.multi_turn is not None:
        mt = r.multi_turn
        md: dict[str, Any] = {"max_rounds": mt.max_rounds, "think_time_us": mt.think_time_us}
        _put(md, "context_growth", mt.context_growth)
        _put(md, "single_session", mt.single_session)
        d["multi_turn"] = md
    return d


def _window_dict(w: LifecycleWindow) -> dict:
    d: dict[str, Any] = {"start_us": w.start_us, "end_us": w.end_us}
    if w.trace_rate is not None:
        d["trace_rate"] = w.trace_rate
    if w.arrival is not None:
        d["arrival"] = _arrival_dict(w.arrival)
    if w.input_distribution is not None:
        d["input_distribution"] = _dist_dict(w.input_distribution)
    if w.output_distribution is not None:
        d["output_distribution"] = _dist_dict(w.output_distribution)
    return d


def _common_dict(d: dict, c: ClientSpec | CohortSpec) -> None:
    _put(d, "tenant_id", c.tenant_id)
    _put(d, "slo_class", c.slo_class)
    _put(d, "model", c.model)
    _put(d, "adapter", c.adapter)


def _client_dict(c: ClientSpec) -> dict:
    d: dict[str, Any] = {"id": c.id}
    _common_dict(d, c)
    if c.concurrency > 0:
        d["concurrency"] = c.concurrency
        _put(d, "think_time_us", c.think_time_us)
    else:
        d["rate_fraction"] = c.rate_fraction
    if c.arrival.process:
        d["arrival"] = _arrival_dict(c.arrival)
    d["input_distribution"] = _dist_dict(c.input_distribution)
    d["output_distribution"] = _dist_dict(c.output_distribution)
    _put(d, "prefix_group", c.prefix_group)
    _put(d, "prefix_length", c.prefix_length)
    _put(d, "streaming", c.streaming)
    if c.network is not None:
        d["network"] = _network_dict(c.network)
    if c.lifecycle is not None:
        d["lifecycle"] = {"windows": [_window_dict(w) for w in c.lifecycle.windows]}
    if c.multimodal is not None:
        d["multimodal"] = _multimodal_dict(c.multimodal)
    if c.reasoning is not None:
        d["reasoning"] = _reasoning_dict(c.reasoning)
    if c.timeout is not None:
        d["timeout"] = c.timeout
    _put(d, "slo_target_us", c.slo_target_us)
    if c.closed_loop is not None:
        d["closed_loop"] = c.closed_loop
    return d


def _cohort_dict(c: CohortSpec) -> dict:
    d: dict[str, Any] = {"id": c.id, "population": c.population}
    _common_dict(d, c)
    d["rate_fraction"] = c.rate_fraction
    d["arrival"] = _arrival_dict(c.arrival)
    d["input_distribution"] = _dist_dict(c.input_distribution)
    d["output_distribution"] = _dist_dict(c.output_distribution)
    _put(d, "prefix_group", c.prefix_group)
    _put(d, "prefix_sharing", c.prefix_sharing)
    _put(d, "prefix_length", c.prefix_length)
    _put(d, "streaming", c.streaming)
    if c.network is not None:
        d["network"] = _network_dict(c.network)
    if c.multimodal is not None:
        d["multimodal"] = _multimodal_dict(c.multimodal)
    if c.reasoning is not None:
        d["reasoning"] = _reasoning_dict(c.reasoning)
    if c.timeout is not None:
        d["timeout"] = c.timeout
    _put(d, "slo_target_us", c.slo_target_us)
    if c.closed_loop is not None:
        d["closed_loop"] = c.closed_loop
    if c.diurnal is not None:
        d["diurnal"] = {"peak_hour": c.diurnal.peak_hour,
                        "peak_to_trough_ratio": c.diurnal.peak_to_trough_ratio}
    if c.spike is not None:
        sd: dict[str, Any] = {"start_time_us": c.spike.start_time_us,
                              "duration_us": c.spike.duration_us}
        if c.spike.trace_rate is not None:
            sd["trace_rate"] = c.spike.trace_rate
        d["spike"] = sd
    if c.drain is not None:
        d["drain"] = {"start_time_us": c.drain.start_time_us,
                      "ramp_duration_us": c.drain.ramp_duration_us}
    return d


def _inference_perf_dict(ip) -> dict:
    stages = []
    for st in ip.stages:
        sd: dict[str, Any] = {"rate": st.rate, "duration": st.duration}
        if st.input_distribution is not None:
            sd["input_distribution"] = _dist_dict(st.input_distribution)
        if st.output_distribution is not None:
            sd["output_distribution"] = _dist_dict(st.output_distribution)
        stages.append(sd)
    sp = {"num_unique_system_prompts": ip.num_unique_system_prompts,
          "num_users_per_system_prompt": ip.num_users_per_system_prompt,
          "system_prompt_len": ip.system_prompt_len, "question_len": ip.question_len,
          "output_len": ip.output_len, "enable_multi_turn_chat": ip.enable_multi_turn_chat}
    return {"stages": stages, "shared_prefix": sp, "load_type": ip.load_type}


def spec_to_dict(spec: WorkloadSpec) -> dict:
    """Plain mapping that ``parse_workload_spec`` reads back into an equal spec."""
    d: dict[str, Any] = {"version": spec.version, "seed": spec.seed}
    _put(d, "category", spec.category)
    d["aggregate_rate"] = spec.aggregate_rate
    _put(d, "num_requests", spec.num_requests)
    _put(d, "horizon", spec.horizon)
    if spec.clients:
        d["clients"] = [_client_dict(c) for c in spec.clients]
    if spec.cohorts:
        d["cohorts"] = [_cohort_dict(c) for c in spec.cohorts]
    if spec.goodput_slo_targets:
        d["goodput_slo_targets"] = {k: dict(v) for k, v in spec.goodput_slo_targets.items()}
    if spec.inference_perf is not None:
        d["inference_perf"] = _inference_perf_dict(spec.inference_perf)
    return d
