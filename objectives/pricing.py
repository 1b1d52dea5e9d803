"""Illustrative GPU list prices used by the ``gpu_cost_per_hour`` metric.

The numbers are round on-demand list prices of the kind public clouds advertised in 2024-2025
for one GPU of each type, in US dollars per GPU-hour. They are **illustrative, not quotes**:
they only need to rank configurations sensibly. Override them per study with the ``pricing:``
key of a study file (``pricing: {H100: 2.10}``), which is merged over this table.
"""

from __future__ import annotations

import math

from blis.errors import ConfigError

GPU_PRICES_PER_HOUR: dict[str, float] = {
    "H100": 4.00,
    "A100-80": 2.50,
    "A100-SXM": 2.50,
    "L40S": 1.20,
}


def price_table(overrides: dict | None = None, field: str = "pricing") -> dict[str, float]:
    """The built-in table with ``overrides`` merged in; prices must be finite and >= 0."""
    table = dict(GPU_PRICES_PER_HOUR)
    if overrides is None:
        return table
    if not isinstance(overrides, dict):
        raise ConfigError(field, "must be a mapping of GPU type to $ per GPU-hour")
    for gpu, price in overrides.items():
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise ConfigError(f"{field}.{gpu}", f"price must be a finite number >= 0, got {price!r}")
        table[str(gpu)] = float(price)
    return table


def gpu_price(hardware: str, table: dict[str, float]) -> float:
    """$ per GPU-hour of ``hardware``; an unpriced GPU is a configuration error, not zero cost."""
    try:
        return table[hardware]
    except KeyError:
        raise ConfigError(
            "pricing", f"no price for GPU type {hardware!r} (priced: {', '.join(sorted(table))}); add it under pricing:"
        ) from None
