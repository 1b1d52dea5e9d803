"""Parameter targets: dotted paths from a search parameter into ``blis.api.simulate`` options.

Grammar (``<x>`` = a name chosen by the user):

* ``<option>`` - any ``blis run`` option (``blis.config.options.OPTIONS``) by its flag name with dashes
  -> underscores (``num_instances``, ``hardware``, ``tp``, ``max_num_seqs``, ``admission_policy``...).
* ``routing_scorers.<scorer>`` - weight of one scorer inside the ``routing_scorers``
  ``name:weight,...`` string; weight 0 removes the scorer.
* ``slo_ttft.<tier>`` / ``slo_itl.<tier>`` / ``slo_e2e.<tier>`` - an SLO target in ms inside the
  ``critical=100ms,...`` string.
* ``policy_config.<path>`` - a field of the inline policy bundle, e.g.
  ``policy_config.admission.gaie_qd_threshold``, ``policy_config.admission.probabilistic.sheddable.a``,
  ``policy_config.routing.scorers.<scorer>`` (weight; 0 removes it).
* ``workload_spec.<path>`` - a field of the inline WorkloadSpec, e.g. ``workload_spec.aggregate_rate``
  or ``workload_spec.clients.<client id>.rate_fraction`` (clients are addressed by ``id``).
* ``policy_config.autoscaler.<path>`` / ``policy_config.instance_lifecycle.<path>`` /
  ``policy_config.node_pools.<pool name>.<field>`` - autoscaler thresholds and windows, lifecycle
  delays, node-pool sizes and prices (pools are addressed by ``name``).

``decode_instances: rest`` (set by a study's ``pd_split:`` key) means "every instance not in the
prefill or shared pool": a fixed ``num_instances`` budget split by the ``prefill_instances``
parameter.
"""

from __future__ import annotations

import copy

from blis.cluster.routing import SCORERS as SCORER_REGISTRY
from blis.config.options import _BUNDLE_KEYS, OPTIONS
from blis.errors import ConfigError
from objectives.metrics import SLO_CLASSES

PD_REST = "rest"

SLO_OPTIONS = ("slo_ttft", "slo_itl", "slo_e2e")
STRUCTURED_OPTIONS = frozenset({"routing_scorers", "policy_config", "workload_spec", *SLO_OPTIONS})
SCALAR_OPTIONS = frozenset(OPTIONS) - STRUCTURED_OPTIONS
SCORERS = frozenset(SCORER_REGISTRY)  # the routing registry, not a copy of its names

_DIST = {"type": None, "params": {"<any>": None}, "file": None}
_CLIENT = {
    **dict.fromkeys(
        """id tenant_id slo_class model adapter rate_fraction concurrency think_time_us prefix_group
        prefix_length streaming timeout slo_target_us""".split()
    ),
    "arrival": dict.fromkeys(["process", "cv", "shape", "scale"]),
    "input_distribution": _DIST,
    "output_distribution": _DIST,
}
_SCHEMA = {
    **dict.fromkeys(SCALAR_OPTIONS),
    "routing_scorers": {"<scorer>": None},
    **{opt: {"<tier>": None} for opt in SLO_OPTIONS},
    "policy_config": {
        "admission": {
            **dict.fromkeys(sorted(_BUNDLE_KEYS["admission"] - {"slo_priorities", "probabilistic"})),
            "slo_priorities": {"<tier>": None},
            "probabilistic": {"<tier>": {"a": None, "b": None}},
        },
        "routing": {"policy": None, "scorers": {"<scorer>": None}},
        "scheduler": None,
        "preemption": {"policy": None},
        "tenant_budgets": {"<any>": None},
        "autoscaler": {
            **dict.fromkeys(
                "interval_us scale_up_stabilization_window_us scale_down_stabilization_window_us".split()
            ),
            "hpa_scrape_delay": dict.fromkeys(["mean", "stddev"]),
            "analyzer": dict.fromkeys("kv_cache_threshold scale_up_threshold scale_down_boundary avg_input_tokens".split()),
        },
        "instance_lifecycle": {
            **dict.fromkeys("warm_start_initial_instances warm_up_request_count warm_up_ttft_factor drain_policy".split()),
            "loading_delay": dict.fromkeys(["mean", "stddev"]),
        },
        "node_pools": {
            "<pool>": {
                **dict.fromkeys("gpu_type gpus_per_node gpu_memory_gib initial_nodes min_nodes max_nodes cost_per_hour".split()),
                "provisioning_delay": dict.fromkeys(["mean", "stddev"]),
            }
        },
    },
    "workload_spec": {
        **dict.fromkeys(["seed", "category", "aggregate_rate", "num_requests", "horizon"]),
        "clients": {"<client>": _CLIENT},
        "goodput_slo_targets": {"<tier>": dict.fromkeys(["ttft_ms", "itl_ms", "e2e_ms"])},
    },
}
# lists of records addressed by one of their fields: (path to the list) -> (key field, value field)
_KEYED_LISTS = {
    ("policy_config", "routing", "scorers"): ("name", "weight"),
    ("workload_spec", "clients"): ("id", None),
    ("policy_config", "node_pools"): ("name", None),
}


def client_ids(options: dict) -> list[str]:
    spec = options.get("workload_spec")
    if not isinstance(spec, dict):
        return []
    return [str(c.get("id")) for c in spec.get("clients") or [] if isinstance(c, dict)]


def pool_names(options: dict) -> list[str]:
    bundle = options.get("policy_config")
    if not isinstance(bundle, dict):
        return []
    return [str(p.get("name")) for p in bundle.get("node_pools") or [] if isinstance(p, dict)]


def check_target(path: str, base: dict, field: str) -> None:
    """Reject a target path that names no simulator option (ConfigError naming ``field``)."""
    parts = path.split(".")
    node: dict | None = _SCHEMA
    for depth, part in enumerate(parts):
        if node is None:
            raise ConfigError(field, f"unknown parameter target {path!r}: {'.'.join(parts[:depth])} takes no sub-field")
        if part in node:
            node = node[part]
            continue
        wildcard = next((k for k in node if k.startswith("<")), None)
        if wildcard is None:
            where = ".".join(parts[:depth]) or "options"
            known = ", ".join(sorted(node)) if depth else "any blis run option"
            raise ConfigError(field, f"unknown parameter target {path!r}: {part!r} is not a field of {where} (known: {known})")
        if wildcard == "<tier>" and part not in SLO_CLASSES:
            raise ConfigError(field, f"unknown SLO tier {part!r} in {path!r} (known: {', '.join(SLO_CLASSES)})")
        if wildcard == "<scorer>" and part not in SCORERS:
            raise ConfigError(field, f"unknown routing scorer {part!r} in {path!r} (known: {', '.join(sorted(SCORERS))})")
        if wildcard == "<pool>" and part not in pool_names(base):
            raise ConfigError(field, f"no node pool named {part!r} in base.policy_config.node_pools (names: {', '.join(pool_names(base)) or 'none'})")
        if wildcard == "<client>" and part not in client_ids(base):
            raise ConfigError(field, f"no client with id {part!r} in base.workload_spec (ids: {', '.join(client_ids(base)) or 'none'})")
        node = node[wildcard]
    if parts[0] in ("policy_config", "workload_spec") and len(parts) > 1 and not isinstance(base.get(parts[0], {}), dict):
        raise ConfigError(field, f"{parts[0]} must be inline (or a file the study loader can read) to set {path!r}")


def _parse_pairs(text: str, sep: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (s.strip() for s in str(text or "").split(","))):
        key, _, value = item.partition(sep)
        pairs[key.strip()] = value.strip()
    return pairs


def _set_keyed(items: list, key_field: str, value_field: str | None, key: str, match: dict | None, value) -> None:
    """Set one record of a keyed list: a scorer's weight (0 drops it) or a whole record."""
    if value_field is None:
        if match is not None:
            items.remove(match)
        items.append(value)
    elif not value:
        if match is not None:
            items.remove(match)
    elif match is not None:
        match[value_field] = value
    else:
        items.append({key_field: key, value_field: value})


def _set_nested(root: dict, prefix: tuple, keys: list[str], value) -> None:
    node = root
    for i, key in enumerate(keys):
        here = prefix + tuple(keys[:i])
        last = i == len(keys) - 1
        if here in _KEYED_LISTS:
            key_field, value_field = _KEYED_LISTS[here]
            items = node
            match = next((it for it in items if str(it.get(key_field)) == key), None)
            if last:
                _set_keyed(items, key_field, value_field, key, match, value)
                return
            if match is None:
                match = {key_field: key}
                items.append(match)
            node = match
            continue
        if last:
            node[key] = value
            return
        nxt_is_list = here + (key,) in _KEYED_LISTS
        child = node.get(key)
        if child is None:
            child = [] if nxt_is_list else {}
            node[key] = child
        node = child


def apply_params(base: dict, params: dict) -> dict:
    """A deep copy of ``base`` options with every ``path -> value`` of ``params`` written in."""
    options = copy.deepcopy(base)
    for path, value in params.items():
        parts = path.split(".")
        root, rest = parts[0], parts[1:]
        if not rest:
            options[root] = value
        elif root == "routing_scorers":
            weights = _parse_pairs(options.get(root, ""), ":")
            if value:
                weights[rest[0]] = f"{value:g}"
            else:
                weights.pop(rest[0], None)
            options[root] = ",".join(f"{k}:{w}" for k, w in weights.items())
        elif root in SLO_OPTIONS:
            targets = _parse_pairs(options.get(root, ""), "=")
            targets[rest[0]] = f"{value:g}ms"
            options[root] = ",".join(f"{k}={v}" for k, v in targets.items())
        else:
            _set_nested(options.setdefault(root, {}), (root,), rest, value)
    if options.get("decode_instances") == PD_REST:
        rest_of = int(options.get("num_instances") or 1) - int(options.get("prefill_instances") or 0)
        options["decode_instances"] = rest_of - int(options.get("prefill_decode_instances") or 0)
    return options
