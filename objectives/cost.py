"""GPU cost of a deployment: sum over instances of GPUs per instance x $/GPU-hour of its type.

Instances come in groups of one GPU type and ``tp x dp`` GPUs each: the whole cluster, or with
prefill/decode pools the prefill pool (``prefill_tp``/``prefill_hardware``), the decode and shared
instances (``decode_tp``/``decode_hardware``) and any instances left without a role (the main
``tp``/``hardware``); a pool override left unset falls back to the main value. Hardware/TP left unset in the options
resolve to the model's entry in ``blis/data/defaults.yaml``, as the simulator does, so cost is
known before simulating (which lets the study loader reject cost constraints no point can meet).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import yaml

from objectives.pricing import gpu_price


@lru_cache(maxsize=1)
def _model_defaults() -> dict:
    text = resources.files("blis").joinpath("data", "defaults.yaml").read_text()
    return yaml.safe_load(text).get("defaults", {})


_POOL_KEYS = ("prefill_instances", "decode_instances", "prefill_decode_instances", "prefill_tp",
              "decode_tp", "prefill_hardware", "decode_hardware")


def deployment_of(options: dict) -> dict:
    """hardware / tp / dp / num_instances (and P/D pool sizes and overrides) the simulator will
    use for ``options``."""
    entry = _model_defaults().get(str(options.get("model", "")).lower(), {})
    dep = {
        "hardware": options.get("hardware") or entry.get("GPU", ""),
        "tp": int(options.get("tp") or entry.get("tensor_parallelism", 1)),
        "dp": int(options.get("dp") or 1),
        "num_instances": int(options.get("num_instances") or 1),
    }
    for key in _POOL_KEYS:
        if options.get(key):
            dep[key] = options[key]
    return dep


def instance_groups(deployment: dict) -> list[tuple[int, str, int]]:
    """(instances, GPU type, GPUs per instance) of each homogeneous group."""
    d = deployment
    dp = int(d.get("dp") or 1)
    n = int(d["num_instances"])
    p = int(d.get("prefill_instances") or 0)
    dec = int(d.get("decode_instances") or 0) + int(d.get("prefill_decode_instances") or 0)
    if not p + dec:
        return [(n, d["hardware"], int(d["tp"]) * dp)]
    return [(p, d.get("prefill_hardware") or d["hardware"], int(d.get("prefill_tp") or d["tp"]) * dp),
            (dec, d.get("decode_hardware") or d["hardware"], int(d.get("decode_tp") or d["tp"]) * dp),
            (max(0, n - p - dec), d["hardware"], int(d["tp"]) * dp)]


def num_gpus(deployment: dict) -> int:
    return sum(count * gpus for count, _, gpus in instance_groups(deployment))


def cost_per_hour(deployment: dict, prices: dict[str, float]) -> float:
    return sum(count * gpus * gpu_price(hw, prices)
               for count, hw, gpus in instance_groups(deployment) if count)
