"""User input → validated ``SimConfig``: the single validation boundary for `blis run`, `blis
replay` and the search layer.

Options are a flat dict keyed by the ``blis run`` flag names with dashes turned into
underscores. A key that is present counts as "explicitly set", which is what the policy-bundle
precedence rule needs (a CLI flag beats the bundle; the bundle beats built-in defaults).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from blis.config.schema import (
    MAX_INT64,
    AutoscalerConfig,
    DelaySpec,
    DeploymentConfig,
    EngineConfig,
    LifecycleConfig,
    NodePoolConfig,
    PDConfig,
    PolicyConfig,
    SimConfig,
)
from blis.errors import ConfigError

_DIST_KEYS = ("prompt_tokens", "prompt_tokens_stdev", "prompt_tokens_min", "prompt_tokens_max",
              "output_tokens", "output_tokens_stdev", "output_tokens_min", "output_tokens_max",
              "prefix_tokens")

MAX_REQUESTS = 10_000_000          # per-request metrics arrays: ~0.3 GB at this size
MAX_INSTANCES = 4096
MAX_KV_BLOCKS = 1 << 24            # 268M tokens at block size 16: more than any GPU holds
MAX_DELAY_US = 1 << 53             # 285 years; larger delays overflow the event clock
MAX_SEED = (1 << 63) - 1           # seeds are int64, as in the reference


@dataclass(frozen=True)
class Option:
    """One ``blis run`` option, declared once: the CLI flag, ``blis.api.simulate`` key and study
    ``base``/parameter target all use ``name``; ``--help`` and the README flag table read ``help``.

    ``low``/``high`` bound numeric values (inclusive; ``low_open`` makes the lower bound strict).
    """

    name: str
    kind: object
    default: object
    help: str
    group: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    shown_default: str | None = None   # how --help and the README show the default
    registry: str = ""                 # "module:NAME" of the registry listing the valid names

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def choices(self) -> list[str]:
        """The registry's names (imported on demand: registries pull in numpy)."""
        if not self.registry:
            return []
        import importlib

        module, attr = self.registry.split(":")
        return list(getattr(importlib.import_module(module), attr))

    def default_text(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None or self.default == "":
            return ""
        if isinstance(self.default, bool):
            return str(self.default).lower()
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


def _o(name, kind, default, help, group, **kw) -> Option:
    return Option(name, kind, default, help, group, **kw)


DECLARATIONS: tuple[Option, ...] = (
    _o("seed", int, 42, "master seed; every random stream derives from it", "general",
       low=-MAX_SEED - 1, high=MAX_SEED),
    _o("horizon", int, MAX_INT64, "stop at this simulated time, µs", "general", low=0,
       shown_default="unbounded"),
    _o("model", str, "", "model id, e.g. qwen/qwen2.5-7b-instruct (see --list-models)", "deployment",
       shown_default="required"),
    _o("hardware", str, "", "GPU type (see --list-hardware)", "deployment",
       shown_default="from defaults.yaml"),
    _o("tp", int, 0, "tensor parallelism per instance; must divide the attention heads",
       "deployment", low=0, shown_default="from defaults.yaml"),
    _o("dp", int, 1, "data parallelism (MoE models with trained-physics only)", "deployment",
       low=1),
    _o("latency_model", str, "trained-physics", "step-time backend",
       "deployment",
       registry="blis.latency:LATENCY_MODELS"),
    _o("alpha_coeffs", list, None, "trained-physics alpha coefficients (comma-separated)",
       "deployment"),
    _o("beta_coeffs", list, None, "trained-physics beta coefficients (with --alpha-coeffs)",
       "deployment"),
    _o("coefficients", str, "", "trained-physics coefficients file written by `blis calibrate`",
       "deployment"),
    _o("max_model_len", int, 0, "context limit in tokens; 0 = the model's, capped by KV capacity",
       "deployment", low=0),
    _o("gpu_memory_utilization", float, 0.9, "share of GPU memory for weights+KV, in (0, 1]",
       "deployment", low=0, high=1, low_open=True),
    _o("model_config_folder", str, "", "directory of model config.json files (default: bundled)",
       "deployment"),
    _o("hardware_config", str, "", "GPU table JSON (default: bundled)", "deployment"),
    _o("total_kv_blocks", int, None, "KV blocks per instance", "engine", low=1,
       high=MAX_KV_BLOCKS, shown_default="auto"),
    _o("max_num_seqs", int, 256, "max running requests per instance (vLLM name)", "engine", low=1),
    _o("max_num_batched_tokens", int, 2048, "token budget per step (vLLM name)", "engine", low=1),
    _o("block_size_in_tokens", int, 16, "KV block size in tokens", "engine", low=1),
    _o("long_prefill_token_threshold", int, 0, "per-request prefill chunk cap; 0 = none", "engine",
       low=0),
    _o("kv_cpu_blocks", int, 0, "CPU KV tier size in blocks; 0 = GPU only", "engine", low=0,
       high=MAX_KV_BLOCKS),
    _o("kv_offload_threshold", float, 0.9, "accepted for compatibility, in [0, 1]; no effect",
       "engine", low=0, high=1),
    _o("kv_transfer_bandwidth", float, 100.0, "CPU->GPU KV reload bandwidth, tokens/µs", "engine",
       low=0, low_open=True),
    _o("kv_transfer_base_latency", int, 0, "fixed CPU->GPU reload latency per block, µs", "engine",
       low=0, high=MAX_DELAY_US),
    _o("num_instances", int, 1, "identical serving instances", "cluster", low=1,
       high=MAX_INSTANCES),
    _o("admission_policy", str, "always-admit", "admission policy",
       "cluster",
       registry="blis.cluster.admission:ADMISSION_POLICIES"),
    _o("admission_latency", int, 0, "admission decision delay, µs", "cluster", low=0,
       high=MAX_DELAY_US),
    _o("routing_latency", int, 0, "routing decision delay, µs", "cluster", low=0,
       high=MAX_DELAY_US),
    _o("token_bucket_capacity", float, 10000.0, "token-bucket size, tokens", "cluster", low=0,
       low_open=True),
    _o("token_bucket_refill_rate", float, 1000.0, "token-bucket refill, tokens/s", "cluster",
       low=0, low_open=True),
    _o("routing_policy", str, "round-robin", "routing policy", "cluster",
       registry="blis.cluster.routing:ROUTING_POLICIES"),
    _o("routing_scorers", str, "", "weighted routing only: scorers 'name:weight,...'", "cluster",
       shown_default="precise-prefix-cache:2,queue-depth:1,kv-utilization:1",
       registry="blis.cluster.routing:SCORERS"),
    _o("scheduler", str, "fcfs", "wait-queue order", "cluster",
       registry="blis.engine.scheduler:SCHEDULERS"),
    _o("preemption_policy", str, "fcfs", "victim on KV exhaustion (fcfs: batch tail)",
       "cluster",
       registry="blis.engine.scheduler:PREEMPTION_POLICIES"),
    _o("snapshot_refresh_interval", int, 50000, "staleness of the router's queue/KV view, µs",
       "cluster", low=0, high=MAX_DELAY_US),
    _o("cache_signal_delay", int, 50000, "staleness of the router's prefix-cache view, µs",
       "cluster", low=0, high=MAX_DELAY_US),
    _o("policy_config", "any", None, "policy bundle YAML; a flag given on the command line wins",
       "cluster", shown_default="none"),
    _o("workload", str, "distribution", "distribution, or a preset: chatbot, contentgen, "
       "summarization, multidoc", "workload"),
    _o("workload_spec", "any", None, "WorkloadSpec v2 YAML (overrides --workload)", "workload",
       shown_default="none"),
    _o("rate", float, 1.0, "arrival rate, requests/s (distribution and preset modes)", "workload",
       low=0, low_open=True),
    _o("num_requests", int, 100, "requests to generate (0 = until --horizon)", "workload", low=0,
       high=MAX_REQUESTS),
    _o("timeout", float, 300.0, "per-request timeout, s (>= 1e-6; negative disables)", "workload"),
    _o("prompt_tokens", int, 512, "mean input length (Gaussian)", "workload", low=0),
    _o("prompt_tokens_stdev", int, 256, "input length standard deviation", "workload", low=0),
    _o("prompt_tokens_min", int, 2, "minimum input length", "workload", low=0),
    _o("prompt_tokens_max", int, 7000, "maximum input length", "workload", low=0),
    _o("output_tokens", int, 512, "mean output length (Gaussian)", "workload", low=0),
    _o("output_tokens_stdev", int, 256, "output length standard deviation", "workload", low=0),
    _o("output_tokens_min", int, 2, "minimum output length", "workload", low=0),
    _o("output_tokens_max", int, 7000, "maximum output length", "workload", low=0),
    _o("prefix_tokens", int, 0, "shared prefix prepended to every prompt", "workload", low=0),
    _o("slo_ttft", str, "", "goodput TTFT targets per class, e.g. 'critical=100ms,standard=500ms'",
       "SLOs"),
    _o("slo_itl", str, "", "goodput ITL targets per class", "SLOs"),
    _o("slo_e2e", str, "", "goodput E2E targets per class", "SLOs"),
    _o("prefill_instances", int, 0, "P/D: instances in the prefill pool (the first P)", "P/D",
       low=0),
    _o("decode_instances", int, 0, "P/D: instances in the decode pool (the next D)", "P/D", low=0),
    _o("prefill_decode_instances", int, 0, "P/D: instances serving both roles (the next S)", "P/D",
       low=0),
    _o("pd_decider", str, "never", "P/D: when to disaggregate", "P/D",
       registry="blis.fleet.pd:DECIDERS"),
    _o("pd_prefix_threshold", int, 16, "P/D prefix-threshold: uncached input tokens above this "
       "disaggregate", "P/D", low=0),
    _o("pd_transfer_bandwidth", float, 25.0, "P/D: KV transfer bandwidth, GB/s", "P/D", low=0,
       low_open=True),
    _o("pd_transfer_base_latency", float, 0.05, "P/D: fixed KV transfer latency, ms", "P/D", low=0),
    _o("pd_transfer_contention", bool, False, "P/D: concurrent transfers share the bandwidth",
       "P/D"),
    _o("prefill_tp", int, 0, "P/D: tensor parallelism of prefill instances (0 = --tp)", "P/D",
       low=0),
    _o("decode_tp", int, 0, "P/D: tensor parallelism of decode/shared instances (0 = --tp)", "P/D",
       low=0),
    _o("prefill_hardware", str, "", "P/D: GPU of prefill instances (default --hardware)", "P/D"),
    _o("decode_hardware", str, "", "P/D: GPU of decode/shared instances (default --hardware)",
       "P/D"),
)
DECLARED: dict[str, Option] = {o.name: o for o in DECLARATIONS}
# output files of `blis run` / `blis replay` (not simulation options: no effect on results)
OUTPUT_DECLARATIONS: tuple[Option, ...] = (
    _o("metrics_path", str, "", "write cluster metrics + per-request rows as JSON", "outputs"),
    _o("results_path", str, "", "write the per-request results JSON array", "outputs"),
    _o("trace_output", str, "", "export the run as TraceV2 (<prefix>.yaml + <prefix>.csv)",
       "outputs"),
)


def flag_table() -> str:
    """The README's flag table, generated from the declarations (a test keeps them equal)."""
    rows = ["| group | flag (default) | meaning |", "|---|---|---|"]
    last = None
    for opt in DECLARATIONS + OUTPUT_DECLARATIONS:
        shown = opt.default_text()
        cell = f"`{opt.flag}`" + (f" ({shown})" if shown else "")
        meaning = opt.help
        if opt.registry:
            meaning += "; one of " + ", ".join(f"`{c}`" for c in opt.choices())
        bounds = _bounds_text(opt)
        if bounds:
            meaning += f"; {bounds}"
        rows.append(f"| {opt.group if opt.group != last else ''} | {cell} | {meaning} |")
        last = opt.group
    return "\n".join(rows) + "\n"


def _bounds_text(opt: Option) -> str:
    if opt.high is None or opt.high <= 1 or opt.high >= MAX_SEED:
        return ""
    return "at most 2^53" if opt.high == MAX_DELAY_US else f"at most {opt.high:,.0f}"
# name -> (type, default), the shape the rest of the code base reads
OPTIONS: dict[str, tuple] = {o.name: (o.kind, o.default) for o in DECLARATIONS}
ALIASES = {"max_num_running_reqs": "max_num_seqs", "max_num_scheduled_tokens": "max_num_batched_tokens"}
# options that describe how requests are generated: meaningless (and refused) for `blis replay`
WORKLOAD_OPTIONS = ("workload", "workload_spec", "rate", "num_requests", "timeout", *_DIST_KEYS)


def flag(name: str) -> str:
    return name.replace("_", "-")


def _coerce(name: str, kind, value):
    if value is None or kind == "any":
        return value
    try:
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(str(value).strip())
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            v = float(value)
            if math.isnan(v):
                raise ValueError
            return v
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes"):
                return True
            if text in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is list:
            items = value.split(",") if isinstance(value, str) else list(value)
            return [float(x) for x in items if str(x).strip() != ""]
        return str(value)
    except (TypeError, ValueError):
        want = {int: "an integer", float: "a number", list: "a comma-separated list of numbers",
                str: "a string", bool: "true or false"}[kind]
        raise ConfigError(flag(name), f"must be {want}, got {value!r}") from None


def _check_bounds(opt: Option, value) -> None:
    if value is None or opt.kind not in (int, float):
        return
    if opt.kind is float and math.isinf(value) and opt.name != "horizon":
        raise ConfigError(flag(opt.name), f"must be finite, got {value}")
    if opt.low is not None and (value <= opt.low if opt.low_open else value < opt.low):
        raise ConfigError(flag(opt.name), f"must be {'>' if opt.low_open else '>='} {opt.low:g}, "
                                          f"got {value:g}")
    if opt.high is not None and value > opt.high:
        raise ConfigError(flag(opt.name), f"must be <= {opt.high:g}, got {value:g}")


def normalize(options: dict) -> dict:
    """Known keys only, aliases resolved, values coerced to their types."""
    out = {}
    for key, value in options.items():
        name = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in OPTIONS:
            raise ConfigError(flag(name), "unknown option")
        out[name] = _coerce(name, OPTIONS[name][0], value)
    for name, value in out.items():
        _check_bounds(DECLARED[name], value)
    return out


def _get(opts: dict, name: str):
    return opts[name] if name in opts else OPTIONS[name][1]


def load_yaml_source(source, field: str) -> dict:
    """A dict given inline, or the YAML mapping in the file at ``source``."""
    if isinstance(source, dict):
        return source
    from blis.config.yamlsafe import load_yaml_file  # PyYAML on first use, not at `--help`

    path = Path(str(source))
    data = load_yaml_file(path, field)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(field, f"{path} must contain a YAML mapping")
    return data


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_UNIT_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0,
            "h": 3600000.0}


def parse_slo_targets(text: str, field: str) -> dict[str, float]:
    """``"critical=100ms,standard=0.5s"`` → {class: milliseconds}; bare numbers are ms."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise ConfigError(field, f"expected class=duration, got '{part}'")
        cls, dur = (x.strip() for x in part.split("=", 1))
        m = _DURATION.match(dur)
        if not m:
            raise ConfigError(field, f"invalid duration '{dur}' for class '{cls}'")
        val = float(m.group(1)) * _UNIT_MS[m.group(2) or "ms"]
        if val <= 0:
            raise ConfigError(field, f"target for '{cls}' must be > 0")
        out[cls] = val
    return out


_BUNDLE_KEYS = {
    "admission": {"policy", "token_bucket_capacity", "token_bucket_refill_rate",
                  "tier_shed_threshold", "tier_shed_min_priority", "gaie_qd_threshold",
                  "gaie_kv_threshold", "slo_priorities", "probabilistic"},
    "routing": {"policy", "scorers"},
    "priority": {"policy"},
    "scheduler": None,
    "preemption": {"policy"},
    "tenant_budgets": None,
    "node_pools": None,
    "instance_lifecycle": None,
    "autoscaler": None,
}
_POOL_KEYS = ("name", "gpu_type", "gpus_per_node", "gpu_memory_gib", "initial_nodes", "min_nodes",
              "max_nodes", "provisioning_delay", "cost_per_hour")
_POOL_REQUIRED = ("name", "gpu_type", "gpus_per_node", "gpu_memory_gib", "max_nodes")
_LIFECYCLE_KEYS = ("loading_delay", "warm_start_initial_instances", "warm_up_request_count",
                   "warm_up_ttft_factor", "drain_policy")
DRAIN_POLICIES = ("WAIT", "IMMEDIATE")
_AUTOSCALER_KEYS = ("interval_us", "scale_up_stabilization_window_us",
                    "scale_down_stabilization_window_us", "hpa_scrape_delay", "analyzer")
_ANALYZER_KEYS = ("kv_cache_threshold", "scale_up_threshold", "scale_down_boundary",
                  "avg_input_tokens")


def _check_keys(data: dict, allowed, where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(where, "must be a mapping")
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}" if where else str(key), "unknown key")


def apply_policy_bundle(bundle: dict, opts: dict, pol: PolicyConfig) -> None:
    """Fill ``pol`` from a policy bundle where the corresponding flag was not given (R18)."""
    _check_keys(bundle, _BUNDLE_KEYS, "")
    adm = bundle.get("admission") or {}
    if isinstance(adm, dict) and "slo_targets" in adm:
        raise ConfigError("admission.slo_targets",
                          "deadline-ordered dispatch needs gateway flow control, which is not implemented yet")
    _check_keys(adm, _BUNDLE_KEYS["admission"], "admission")
    if "policy" in adm and "admission_policy" not in opts:
        pol.admission_policy = str(adm["policy"])
        if pol.admission_policy == "tier-shed":
            pol.tier_shed_min_priority = 3
    for key in ("token_bucket_capacity", "token_bucket_refill_rate"):
        if key in adm and key not in opts:
            setattr(pol, key, _coerce(f"admission.{key}", float, adm[key]))
    for key, kind in (("tier_shed_threshold", int), ("tier_shed_min_priority", int),
                      ("gaie_qd_threshold", float), ("gaie_kv_threshold", float)):
        if key in adm:
            setattr(pol, key, _coerce(f"admission.{key}", kind, adm[key]))
    if "slo_priorities" in adm:
        pri = adm["slo_priorities"] or {}
        _check_keys(pri, {"critical", "standard", "sheddable", "batch", "background"},
                    "admission.slo_priorities")
        pol.slo_priorities = {k: _coerce(f"admission.slo_priorities.{k}", int, v)
                              for k, v in pri.items()}
    if "probabilistic" in adm:
        params = adm["probabilistic"] or {}
        _check_keys(params, {"critical", "standard", "sheddable", "batch", "background",
                             "default"}, "admission.probabilistic")
        pol.probabilistic_params = {}
        for cls, ab in params.items():
            _check_keys(ab or {}, {"a", "b"}, f"admission.probabilistic.{cls}")
            pol.probabilistic_params[cls] = {
                k: _coerce(f"admission.probabilistic.{cls}.{k}", float, v)
                for k, v in (ab or {}).items()}
    rt = bundle.get("routing") or {}
    _check_keys(rt, _BUNDLE_KEYS["routing"], "routing")
    if "policy" in rt and "routing_policy" not in opts:
        pol.routing_policy = str(rt["policy"])
    if "scorers" in rt and not opts.get("routing_scorers"):
        scorers = []
        for i, item in enumerate(rt["scorers"] or []):
            _check_keys(item, {"name", "weight"}, f"routing.scorers[{i}]")
            if "name" not in item:
                raise ConfigError(f"routing.scorers[{i}].name", "is required")
            scorers.append((str(item["name"]),
                            _coerce(f"routing.scorers[{i}].weight", float, item.get("weight", 1.0))))
        pol.routing_scorers = scorers
    if "scheduler" in bundle and "scheduler" not in opts:
        pol.scheduler = str(bundle["scheduler"])
    pre = bundle.get("preemption") or {}
    _check_keys(pre, _BUNDLE_KEYS["preemption"], "preemption")
    if "policy" in pre and "preemption_policy" not in opts:
        pol.preemption_policy = str(pre["policy"])
    if "tenant_budgets" in bundle:
        budgets = bundle["tenant_budgets"] or {}
        if not isinstance(budgets, dict):
            raise ConfigError("tenant_budgets", "must be a mapping of tenant -> fraction")
        pol.tenant_budgets = {}
        for tenant, frac in budgets.items():
            f = _coerce(f"tenant_budgets.{tenant}", float, frac)
            if not 0 <= f <= 1:
                raise ConfigError(f"tenant_budgets.{tenant}", f"must be in [0, 1], got {f}")
            pol.tenant_budgets[str(tenant)] = f


def _number(value, where: str, kind=float, minimum: float | None = None,
            strict: bool = False) -> float:
    """A finite number of ``kind`` (>= or, with ``strict``, > ``minimum``)."""
    try:
        v = _coerce(where, kind, value)
    except ConfigError:
        raise ConfigError(where, f"must be {'an integer' if kind is int else 'a number'}, "
                                 f"got {value!r}") from None
    if v is None or not math.isfinite(v):
        raise ConfigError(where, f"must be a finite number, got {value!r}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ConfigError(where, f"must be {'>' if strict else '>='} {minimum:g}, got {v:g}")
    return v


def _delay(raw, where: str) -> DelaySpec:
    if raw is None:
        return DelaySpec()
    _check_keys(raw, ("mean", "stddev"), where)
    return DelaySpec(mean=_number(raw.get("mean", 0), f"{where}.mean", minimum=0),
                     stddev=_number(raw.get("stddev", 0), f"{where}.stddev", minimum=0))


def _node_pools(raw) -> list[NodePoolConfig]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("node_pools", "must be a non-empty list of pools")
    pools, names = [], set()
    for i, item in enumerate(raw):
        where = f"node_pools[{i}]"
        _check_keys(item, _POOL_KEYS, where)
        for key in _POOL_REQUIRED:
            if key not in item:
                raise ConfigError(f"{where}.{key}", "is required")
        name = str(item["name"])
        if not name or name in names:
            raise ConfigError(f"{where}.name", f"must be a unique non-empty name, got {name!r}")
        names.add(name)
        pool = NodePoolConfig(
            name=name, gpu_type=str(item["gpu_type"]),
            gpus_per_node=int(_number(item["gpus_per_node"], f"{where}.gpus_per_node", int, 1)),
            gpu_memory_gib=_number(item["gpu_memory_gib"], f"{where}.gpu_memory_gib", strict=True,
                                   minimum=0),
            initial_nodes=int(_number(item.get("initial_nodes", 0), f"{where}.initial_nodes", int, 0)),
            min_nodes=int(_number(item.get("min_nodes", 0), f"{where}.min_nodes", int, 0)),
            max_nodes=int(_number(item["max_nodes"], f"{where}.max_nodes", int, 1)),
            provisioning_delay=_delay(item.get("provisioning_delay"), f"{where}.provisioning_delay"),
            cost_per_hour=_number(item.get("cost_per_hour", 0), f"{where}.cost_per_hour", minimum=0))
        if pool.max_nodes < pool.initial_nodes:
            raise ConfigError(f"{where}.max_nodes", f"({pool.max_nodes}) must be >= initial_nodes "
                                                    f"({pool.initial_nodes})")
        if pool.min_nodes > pool.max_nodes:
            raise ConfigError(f"{where}.min_nodes", f"({pool.min_nodes}) must be <= max_nodes "
                                                    f"({pool.max_nodes})")
        pools.append(pool)
    return pools


def _lifecycle(raw) -> LifecycleConfig:
    _check_keys(raw or {}, _LIFECYCLE_KEYS, "instance_lifecycle")
    raw = raw or {}
    drain = str(raw.get("drain_policy", "WAIT"))
    if drain == "REDIRECT":
        raise ConfigError("instance_lifecycle.drain_policy",
                          "REDIRECT is not supported; use WAIT or IMMEDIATE")
    if drain not in DRAIN_POLICIES:
        raise ConfigError("instance_lifecycle.drain_policy",
                          f"unknown policy '{drain}'; choose one of {', '.join(DRAIN_POLICIES)}")
    warm = raw.get("warm_start_initial_instances", False)
    if not isinstance(warm, bool):
        raise ConfigError("instance_lifecycle.warm_start_initial_instances",
                          f"must be true or false, got {warm!r}")
    factor = _number(raw.get("warm_up_ttft_factor", 1.0), "instance_lifecycle.warm_up_ttft_factor",
                     minimum=1)
    return LifecycleConfig(
        loading_delay=_delay(raw.get("loading_delay"), "instance_lifecycle.loading_delay"),
        warm_start_initial_instances=warm,
        warm_up_request_count=int(_number(raw.get("warm_up_request_count", 0),
                                          "instance_lifecycle.warm_up_request_count", int, 0)),
        warm_up_ttft_factor=factor, drain_policy=drain)


def _autoscaler(raw) -> AutoscalerConfig:
    _check_keys(raw or {}, _AUTOSCALER_KEYS, "autoscaler")
    raw = raw or {}
    an = raw.get("analyzer") or {}
    _check_keys(an, _ANALYZER_KEYS, "autoscaler.analyzer")
    cfg = AutoscalerConfig(
        interval_us=int(_number(raw.get("interval_us", 0), "autoscaler.interval_us", int, 0)),
        scale_up_stabilization_window_us=int(_number(
            raw.get("scale_up_stabilization_window_us", 0),
            "autoscaler.scale_up_stabilization_window_us", int, 0)),
        scale_down_stabilization_window_us=int(_number(
            raw.get("scale_down_stabilization_window_us", 0),
            "autoscaler.scale_down_stabilization_window_us", int, 0)),
        hpa_scrape_delay=_delay(raw.get("hpa_scrape_delay"), "autoscaler.hpa_scrape_delay"))
    for key in ("kv_cache_threshold", "scale_up_threshold", "scale_down_boundary"):
        if key in an:
            v = _number(an[key], f"autoscaler.analyzer.{key}", strict=True, minimum=0)
            if v > 1:
                raise ConfigError(f"autoscaler.analyzer.{key}", f"must be in (0, 1], got {v:g}")
            setattr(cfg, key, v)
    if "avg_input_tokens" in an:
        cfg.avg_input_tokens = _number(an["avg_input_tokens"], "autoscaler.analyzer.avg_input_tokens",
                                       strict=True, minimum=0)
    if cfg.scale_down_boundary >= cfg.scale_up_threshold:
        raise ConfigError("autoscaler.analyzer.scale_down_boundary",
                          f"({cfg.scale_down_boundary:g}) must be < scale_up_threshold "
                          f"({cfg.scale_up_threshold:g})")
    return cfg


def _infra_config(bundle: dict, cfg: SimConfig, replay: bool) -> None:
    """node_pools / instance_lifecycle / autoscaler bundle sections (spec §13, §16.3)."""
    present = [k for k in ("node_pools", "instance_lifecycle", "autoscaler") if k in bundle]
    if not present:
        return
    if replay and ("node_pools" in present or "autoscaler" in present):
        raise ConfigError(f"policy-config.{present[0]}",
                          "node pools and the autoscaler are not supported by replay (INV-13)")
    if "node_pools" in bundle:
        cfg.node_pools = _node_pools(bundle["node_pools"])
    if "instance_lifecycle" in bundle:
        cfg.lifecycle = _lifecycle(bundle["instance_lifecycle"])
    if "autoscaler" in bundle:
        cfg.autoscaler = _autoscaler(bundle["autoscaler"])
        if cfg.autoscaler.interval_us == 0:
            cfg.autoscaler = None
        elif not cfg.node_pools:
            raise ConfigError("autoscaler", "needs node_pools to place new instances on")
    if cfg.pd.enabled:
        key = "node_pools" if cfg.node_pools else "instance_lifecycle"
        raise ConfigError(key, "cannot be combined with prefill/decode pools")


def _validate_policy_names(pol: PolicyConfig) -> None:
    from blis.cluster.admission import ADMISSION_POLICIES
    from blis.cluster.routing import ROUTING_POLICIES, SCORERS
    from blis.engine.scheduler import PREEMPTION_POLICIES, SCHEDULERS

    for field, value, registry in (("admission-policy", pol.admission_policy, ADMISSION_POLICIES),
                                   ("routing-policy", pol.routing_policy, ROUTING_POLICIES),
                                   ("scheduler", pol.scheduler, SCHEDULERS),
                                   ("preemption-policy", pol.preemption_policy, PREEMPTION_POLICIES)):
        if value not in registry:
            raise ConfigError(field, f"unknown policy '{value}'; choose one of {', '.join(registry)}")
    for name, weight in pol.routing_scorers:
        if name not in SCORERS:
            raise ConfigError("routing-scorers", f"unknown scorer '{name}'; choose one of {', '.join(SCORERS)}")
        if not (math.isfinite(weight) and weight > 0):
            raise ConfigError("routing-scorers", f"weight of '{name}' must be finite and > 0")


def _pd_config(opts: dict, num_instances: int) -> PDConfig:
    """Pool sizes must fit the cluster; an enabled split needs both a prefill and a decode side."""
    from blis.fleet.pd import DECIDERS

    pd = PDConfig(
        prefill_instances=_get(opts, "prefill_instances"),
        decode_instances=_get(opts, "decode_instances"),
        prefill_decode_instances=_get(opts, "prefill_decode_instances"),
        decider=_get(opts, "pd_decider"), prefix_threshold=_get(opts, "pd_prefix_threshold"),
        transfer_bandwidth_gbps=_get(opts, "pd_transfer_bandwidth"),
        transfer_base_latency_ms=_get(opts, "pd_transfer_base_latency"),
        transfer_contention=_get(opts, "pd_transfer_contention"),
        prefill_tp=_get(opts, "prefill_tp"), decode_tp=_get(opts, "decode_tp"),
        prefill_hardware=_get(opts, "prefill_hardware"),
        decode_hardware=_get(opts, "decode_hardware"))
    if pd.decider not in DECIDERS:
        raise ConfigError("pd-decider", f"unknown decider '{pd.decider}'; choose one of "
                                        f"{', '.join(DECIDERS)}")
    for name, value in (("pd-transfer-bandwidth", pd.transfer_bandwidth_gbps),
                        ("pd-transfer-base-latency", pd.transfer_base_latency_ms)):
        if not math.isfinite(value):
            raise ConfigError(name, f"must be finite, got {value}")
    pools = pd.prefill_instances + pd.decode_instances + pd.prefill_decode_instances
    if not pd.enabled:
        for name in ("pd_decider", "pd_prefix_threshold", "pd_transfer_bandwidth",
                     "pd_transfer_base_latency", "pd_transfer_contention", "prefill_tp",
                     "decode_tp", "prefill_hardware", "decode_hardware"):
            if name in opts and opts[name] != OPTIONS[name][1]:
                raise ConfigError(flag(name), "needs prefill/decode pools (--prefill-instances and "
                                              "--decode-instances, or --prefill-decode-instances)")
        return pd
    if pools > num_instances:
        raise ConfigError("prefill-instances",
                          f"prefill ({pd.prefill_instances}) + decode ({pd.decode_instances}) + "
                          f"prefill-decode ({pd.prefill_decode_instances}) instances exceed "
                          f"--num-instances {num_instances}")
    if pd.prefill_decode_instances == 0 and (pd.prefill_instances == 0 or pd.decode_instances == 0):
        raise ConfigError("prefill-instances" if pd.prefill_instances == 0 else "decode-instances",
                          "disaggregation needs both --prefill-instances and --decode-instances "
                          "> 0 (or shared --prefill-decode-instances)")
    return pd


def build_config(options: dict, replay: bool = False) -> SimConfig:
    """Validate user options and assemble the run configuration.

    With ``replay`` the requests come from a trace, so no workload is synthesized.
    """
    opts = normalize(options)
    if opts.get("coefficients"):  # a `blis calibrate` output file supplies both vectors
        from blis.latency.coefficients import read_coeffs
        fitted = read_coeffs(opts["coefficients"])
        opts.setdefault("alpha_coeffs", fitted["alpha"])
        opts.setdefault("beta_coeffs", fitted["beta"])
    dep = DeploymentConfig(
        model=_get(opts, "model"), hardware=_get(opts, "hardware"), tp=_get(opts, "tp"),
        dp=_get(opts, "dp"), latency_model=_get(opts, "latency_model"),
        alpha_coeffs=_get(opts, "alpha_coeffs"), beta_coeffs=_get(opts, "beta_coeffs"),
        max_model_len=_get(opts, "max_model_len"),
        gpu_memory_utilization=_get(opts, "gpu_memory_utilization"),
        model_config_folder=_get(opts, "model_config_folder"),
        hardware_config=_get(opts, "hardware_config"))
    if not dep.model:
        raise ConfigError("model", "is required (e.g. --model qwen/qwen2.5-7b-instruct)")
    if (dep.alpha_coeffs is None) != (dep.beta_coeffs is None):
        raise ConfigError("alpha-coeffs", "--alpha-coeffs and --beta-coeffs must be given together")
    if dep.alpha_coeffs is not None and opts.get("latency_model") == "roofline":
        raise ConfigError("latency-model", "roofline takes no --alpha-coeffs/--beta-coeffs")
    engine = EngineConfig(
        total_kv_blocks=_get(opts, "total_kv_blocks"), max_num_seqs=_get(opts, "max_num_seqs"),
        max_num_batched_tokens=_get(opts, "max_num_batched_tokens"),
        block_size=_get(opts, "block_size_in_tokens"),
        long_prefill_token_threshold=_get(opts, "long_prefill_token_threshold"),
        kv_cpu_blocks=_get(opts, "kv_cpu_blocks"),
        kv_offload_threshold=_get(opts, "kv_offload_threshold"),
        kv_transfer_bandwidth=_get(opts, "kv_transfer_bandwidth"),
        kv_transfer_base_latency=_get(opts, "kv_transfer_base_latency"))
    if not 0 <= engine.kv_offload_threshold <= 1:
        raise ConfigError("kv-offload-threshold",
                          f"must be in [0, 1], got {engine.kv_offload_threshold:g}")
    if not math.isfinite(engine.kv_transfer_bandwidth):
        raise ConfigError("kv-transfer-bandwidth", "must be finite")
    if engine.kv_cpu_blocks == 0:
        for name in ("kv_transfer_bandwidth", "kv_transfer_base_latency"):
            if name in opts:
                raise ConfigError(flag(name), "needs a CPU tier (--kv-cpu-blocks > 0)")

    from blis.cluster.routing import parse_scorers

    pol = PolicyConfig(
        admission_policy=_get(opts, "admission_policy"),
        admission_latency=_get(opts, "admission_latency"),
        routing_latency=_get(opts, "routing_latency"),
        token_bucket_capacity=_get(opts, "token_bucket_capacity"),
        token_bucket_refill_rate=_get(opts, "token_bucket_refill_rate"),
        routing_policy=_get(opts, "routing_policy"),
        routing_scorers=parse_scorers(opts["routing_scorers"]) if opts.get("routing_scorers") else [],
        scheduler=_get(opts, "scheduler"), preemption_policy=_get(opts, "preemption_policy"),
        snapshot_refresh_interval=_get(opts, "snapshot_refresh_interval"),
        cache_signal_delay=_get(opts, "cache_signal_delay"))
    bundle = {}
    if opts.get("policy_config") is not None:
        bundle = load_yaml_source(opts["policy_config"], "policy-config")
        apply_policy_bundle(bundle, opts, pol)
    _validate_policy_names(pol)
    _validate_policy_parameters(pol, opts, bundle)

    cfg = SimConfig(num_instances=_get(opts, "num_instances"), deployment=dep, engine=engine,
                    policy=pol)
    cfg.pd = _pd_config(opts, cfg.num_instances)
    _infra_config(bundle, cfg, replay)
    resolved = _resolve(cfg)
    timeout = _get(opts, "timeout")
    if timeout == 0 or 0 < timeout < 1e-6:
        raise ConfigError("timeout", f"must be >= 1e-6 s (1 µs) or negative to disable, got {timeout:g}")
    timeout_us = int(timeout * 1e6) if timeout > 0 else 0
    spec_targets = {}
    if replay:
        for name in WORKLOAD_OPTIONS:
            if name in opts:
                raise ConfigError(flag(name), "blis replay takes its requests from the trace; "
                                              "workload flags do not apply")
        cfg.seed = _get(opts, "seed")
        cfg.horizon = _get(opts, "horizon")
        cfg.max_requests = 0
        cfg.slo_targets = _merge_targets({}, opts)
        return cfg
    # numpy comes with the workload package: bad flags above fail without loading it
    from blis.workload import parse_workload_spec, preset_spec, synthesize_distribution_spec

    if opts.get("workload_spec") is not None:
        if opts["workload_spec"] == "":
            raise ConfigError("workload-spec", "is empty")
        spec = parse_workload_spec(opts["workload_spec"])
        # An explicit seed (--seed, a study's per-trial seed) reseeds the spec's streams too;
        # the spec's own seed: is only the default.
        if "seed" in opts:
            spec = replace(spec, seed=_get(opts, "seed"))
        cfg.seed = spec.seed
        cfg.horizon = opts["horizon"] if "horizon" in opts else (spec.horizon or MAX_INT64)
        cfg.max_requests = opts["num_requests"] if "num_requests" in opts else spec.num_requests
        cfg.timeout_override_us = timeout_us if "timeout" in opts else None
        spec_targets = spec.goodput_slo_targets or {}
    else:
        cfg.seed = _get(opts, "seed")
        cfg.horizon = _get(opts, "horizon")
        cfg.max_requests = _get(opts, "num_requests")
        name = _get(opts, "workload")
        rate = _get(opts, "rate")
        if name == "distribution":
            spec = synthesize_distribution_spec(
                rate, cfg.max_requests, cfg.seed, **{k: _get(opts, k) for k in _DIST_KEYS})
        else:
            spec = preset_spec(name, rate, cfg.max_requests, cfg.seed)
        cfg.timeout_override_us = timeout_us
    if cfg.max_requests <= 0 and cfg.horizon >= MAX_INT64:
        raise ConfigError("num-requests", "workload requires either --num-requests > 0 or --horizon")
    if opts.get("prefix_tokens", 0) > resolved.max_model_len:
        raise ConfigError("prefix-tokens", f"{opts['prefix_tokens']} exceeds the context limit "
                                           f"({resolved.max_model_len} tokens)")
    _check_workload(spec)
    cfg.workload = spec
    cfg.slo_targets = _merge_targets(spec_targets, opts)
    _check_target_classes(cfg.slo_targets, spec, opts)
    return cfg


def _resolve(cfg: SimConfig):
    """Resolve the deployment now (model fits the GPU, TP divides the heads, context within the
    model, GPU names known, every P/D pool), so a study pre-flight catches what a run would."""
    from blis.config.deployment import resolve_deployment
    from blis.config.model_config import derive_max_model_len

    resolved = resolve_deployment(cfg.deployment, cfg.engine)
    limit = derive_max_model_len(resolved.model_config)
    if cfg.deployment.max_model_len > limit:
        raise ConfigError("max-model-len", f"{cfg.deployment.max_model_len} exceeds the model's "
                                           f"context length ({limit} tokens)")
    if cfg.pd.enabled:
        from blis.fleet.pd import pool_deployments

        pool_deployments(cfg, resolved)
    return resolved


def _validate_policy_parameters(pol: PolicyConfig, opts: dict, bundle: dict) -> None:
    """Policy parameters are checked here, not when the policy is first built mid-run."""
    from blis.cluster.admission import _gaie_thresholds, _positive, parse_probabilistic_params

    if pol.admission_policy == "token-bucket":
        for key in ("token_bucket_capacity", "token_bucket_refill_rate"):
            where = flag(key) if key in opts else f"admission.{key}"
            _positive(where, getattr(pol, key))
    if pol.admission_policy in ("gaie-legacy", "probabilistic"):
        _gaie_thresholds(pol)
    if pol.admission_policy == "probabilistic":
        parse_probabilistic_params(pol.probabilistic_params)
    if pol.routing_scorers and pol.routing_policy != "weighted":
        where = "routing-scorers" if opts.get("routing_scorers") else "routing.scorers"
        raise ConfigError(where, f"scorers apply only to --routing-policy weighted, not "
                                 f"'{pol.routing_policy}'")


def _check_workload(spec) -> None:
    """Workload-spec checks that would otherwise be silent clamps or merges."""
    seen: set[str] = set()
    for i, client in enumerate(spec.clients):
        if client.id and client.id in seen:
            raise ConfigError(f"clients[{i}].id", f"duplicate client id {client.id!r}")
        seen.add(client.id)
        for side in ("input_distribution", "output_distribution"):
            dist = getattr(client, side)
            if dist.type == "constant" and float(dist.params.get("value", 1)) < 1:
                raise ConfigError(f"clients[{i}].{side}.params.value",
                                  f"a constant length must be >= 1, got {dist.params['value']:g}")


def _check_target_classes(targets: dict, spec, opts: dict) -> None:
    groups = list(spec.clients) + list(spec.cohorts)
    if not groups:
        return
    classes = {g.slo_class or "default" for g in groups}
    for dim in ("ttft", "itl", "e2e"):
        for cls in parse_slo_targets(opts.get(f"slo_{dim}", ""), f"slo-{dim}"):
            if cls not in classes:
                raise ConfigError(f"slo-{dim}", f"class {cls!r} is not in the workload "
                                                f"(classes: {', '.join(sorted(classes))})")


def _merge_targets(spec_targets: dict, opts: dict) -> dict:
    """Per class and dimension: CLI beats the workload spec; all-zero classes are dropped."""
    merged: dict[str, dict[str, float]] = {}
    for cls, tgt in spec_targets.items():
        tgt = tgt if isinstance(tgt, dict) else vars(tgt)
        merged[cls] = {f"{d}_ms": float(tgt.get(f"{d}_ms", 0) or 0) for d in ("ttft", "itl", "e2e")}
    for dim in ("ttft", "itl", "e2e"):
        text = opts.get(f"slo_{dim}", "")
        for cls, ms in parse_slo_targets(text, f"slo-{dim}").items():
            merged.setdefault(cls, {"ttft_ms": 0.0, "itl_ms": 0.0, "e2e_ms": 0.0})[f"{dim}_ms"] = ms
    return {c: t for c, t in sorted(merged.items()) if any(v > 0 for v in t.values())}
