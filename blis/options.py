"""User input → validated ``SimConfig``: the single validation boundary for `blis run`, `blis
replay` and the search layer.

Options are a flat dict keyed by the ``blis run`` flag names with dashes turned into
underscores. A key that is present counts as "explicitly set", which is what the policy-bundle
precedence rule needs (a CLI flag beats the bundle; the bundle beats built-in defaults).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from blis.config import (MAX_INT64, AutoscalerConfig, DelaySpec, DeploymentConfig, EngineConfig,
                         LifecycleConfig, NodePoolConfig, PDConfig, PolicyConfig, SimConfig)
from blis.errors import ConfigError

_DIST_KEYS = ("prompt_tokens", "prompt_tokens_stdev", "prompt_tokens_min", "prompt_tokens_max",
              "output_tokens", "output_tokens_stdev", "output_tokens_min", "output_tokens_max",
              "prefix_tokens")

# option name -> (type, default); type is int, float, str, list or "any"
OPTIONS: dict[str, tuple] = {
    "seed": (int, 42), "horizon": (int, MAX_INT64), "num_instances": (int, 1),
    "model": (str, ""), "hardware": (str, ""), "tp": (int, 0), "dp": (int, 1),
    "latency_model": (str, "trained-physics"), "alpha_coeffs": (list, None),
    "beta_coeffs": (list, None), "coefficients": (str, ""), "max_model_len": (int, 0),
    "gpu_memory_utilization": (float, 0.9), "model_config_folder": (str, ""),
    "hardware_config": (str, ""),
    "total_kv_blocks": (int, None), "max_num_seqs": (int, 256),
    "max_num_batched_tokens": (int, 2048), "block_size_in_tokens": (int, 16),
    "long_prefill_token_threshold": (int, 0),
    "admission_policy": (str, "always-admit"), "admission_latency": (int, 0),
    "routing_latency": (int, 0), "token_bucket_capacity": (float, 10000.0),
    "token_bucket_refill_rate": (float, 1000.0), "routing_policy": (str, "round-robin"),
    "routing_scorers": (str, ""), "scheduler": (str, "fcfs"), "preemption_policy": (str, "fcfs"),
    "snapshot_refresh_interval": (int, 50000), "cache_signal_delay": (int, 50000),
    "policy_config": ("any", None),
    "workload": (str, "distribution"), "workload_spec": ("any", None), "rate": (float, 1.0),
    "num_requests": (int, 100), "timeout": (float, 300.0),
    "prompt_tokens": (int, 512), "prompt_tokens_stdev": (int, 256), "prompt_tokens_min": (int, 2),
    "prompt_tokens_max": (int, 7000), "output_tokens": (int, 512),
    "output_tokens_stdev": (int, 256), "output_tokens_min": (int, 2),
    "output_tokens_max": (int, 7000), "prefix_tokens": (int, 0),
    "slo_ttft": (str, ""), "slo_itl": (str, ""), "slo_e2e": (str, ""),
    "prefill_instances": (int, 0), "decode_instances": (int, 0),
    "prefill_decode_instances": (int, 0), "pd_decider": (str, "never"),
    "pd_prefix_threshold": (int, 16), "pd_transfer_bandwidth": (float, 25.0),
    "pd_transfer_base_latency": (float, 0.05), "pd_transfer_contention": (bool, False),
    "prefill_tp": (int, 0), "decode_tp": (int, 0), "prefill_hardware": (str, ""),
    "decode_hardware": (str, ""),
    "kv_cpu_blocks": (int, 0), "kv_offload_threshold": (float, 0.9),
    "kv_transfer_bandwidth": (float, 100.0), "kv_transfer_base_latency": (int, 0),
}
ALIASES = {"max_num_running_reqs": "max_num_seqs", "max_num_scheduled_tokens": "max_num_batched_tokens"}
NON_NEGATIVE = ("horizon", "admission_latency", "routing_latency", "snapshot_refresh_interval",
                "cache_signal_delay", "max_model_len", "long_prefill_token_threshold", "tp",
                "prefix_tokens", "prefill_instances", "decode_instances", "prefill_decode_instances",
                "pd_prefix_threshold", "pd_transfer_base_latency", "prefill_tp", "decode_tp",
                "kv_cpu_blocks", "kv_transfer_base_latency")
POSITIVE = ("num_instances", "max_num_seqs", "max_num_batched_tokens", "block_size_in_tokens",
            "dp", "total_kv_blocks", "pd_transfer_bandwidth", "kv_transfer_bandwidth")


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


def normalize(options: dict) -> dict:
    """Known keys only, aliases resolved, values coerced to their types."""
    out = {}
    for key, value in options.items():
        name = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in OPTIONS:
            raise ConfigError(flag(name), "unknown option")
        out[name] = _coerce(name, OPTIONS[name][0], value)
    for name in NON_NEGATIVE:
        if name in out and out[name] is not None and out[name] < 0:
            raise ConfigError(flag(name), f"must be >= 0, got {out[name]}")
    for name in POSITIVE:
        if name in out and out[name] is not None and out[name] <= 0:
            raise ConfigError(flag(name), f"must be > 0, got {out[name]}")
    return out


def _get(opts: dict, name: str):
    return opts[name] if name in opts else OPTIONS[name][1]


def load_yaml_source(source, field: str) -> dict:
    """A dict given inline, or the YAML mapping in the file at ``source``."""
    if isinstance(source, dict):
        return source
    path = Path(str(source))
    if not path.is_file():
        raise ConfigError(field, f"file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
        raise ConfigError(field, f"invalid YAML in {path}: {first}") from None
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
    from blis.admission import ADMISSION_POLICIES
    from blis.routing import ROUTING_POLICIES, SCORERS
    from blis.scheduler import PREEMPTION_POLICIES, SCHEDULERS

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
    from blis.pd import DECIDERS

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
    from blis.routing import parse_scorers
    from blis.workload import parse_workload_spec, preset_spec, synthesize_distribution_spec

    opts = normalize(options)
    if opts.get("coefficients"):  # a `blis calibrate` output file supplies both vectors
        from blis.calibrate import read_coeffs
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

    cfg = SimConfig(num_instances=_get(opts, "num_instances"), deployment=dep, engine=engine,
                    policy=pol)
    cfg.pd = _pd_config(opts, cfg.num_instances)
    _infra_config(bundle, cfg, replay)
    timeout = _get(opts, "timeout")
    if timeout == 0:
        raise ConfigError("timeout", "must be non-zero (seconds; negative disables)")
    timeout_us = int(timeout * 1e6) if timeout > 0 else 0
    spec_targets = {}
    if replay:
        cfg.seed = _get(opts, "seed")
        cfg.horizon = _get(opts, "horizon")
        cfg.max_requests = opts.get("num_requests", 0)
        cfg.slo_targets = _merge_targets({}, opts)
        return cfg
    if opts.get("workload_spec") is not None:
        if opts["workload_spec"] == "":
            raise ConfigError("workload-spec", "is empty")
        spec = parse_workload_spec(opts["workload_spec"])
        cfg.seed = opts["seed"] if "seed" in opts else spec.seed
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
    cfg.workload = spec
    cfg.slo_targets = _merge_targets(spec_targets, opts)
    return cfg


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
