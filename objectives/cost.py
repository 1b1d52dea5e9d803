"""GPU cost of a deployment: sum over instances of GPUs per instance x $/GPU-hour of its type.

Every instance of a ``blis run`` cluster has the same GPU type and ``tp x dp`` GPUs, so the sum
reduces to ``num_instances x tp x dp x price[hardware]``. Hardware/TP left unset in the options
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


def deployment_of(options: dict) -> dict:
    """hardware / tp / dp / num_instances the simulator will use for ``options``."""
    entry = _model_defaults().get(str(options.get("model", "")).lower(), {})
    return {
        "hardware": options.get("hardware") or entry.get("GPU", ""),
        "tp": int(options.get("tp") or entry.get("tensor_parallelism", 1)),
        "dp": int(options.get("dp") or 1),
        "num_instances": int(options.get("num_instances") or 1),
    }


def num_gpus(deployment: dict) -> int:
    return int(deployment["num_instances"]) * int(deployment["tp"]) * int(deployment.get("dp") or 1)


def cost_per_hour(deployment: dict, prices: dict[str, float]) -> float:
    return num_gpus(deployment) * gpu_price(deployment["hardware"], prices)
