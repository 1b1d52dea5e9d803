"""SLO classes and their two priority conventions (spec §8.1).

The cluster (GAIE) convention is "higher = more important, negative = sheddable"; instances use
the inverted vLLM convention "lower = more urgent", derived once from the same map.
"""

from __future__ import annotations

import math

from blis.errors import ConfigError

VALID_SLO_CLASSES = ("critical", "standard", "sheddable", "batch", "background", "")

DEFAULT_PRIORITIES = {"critical": 4, "standard": 3, "batch": -1, "sheddable": -2, "background": -3}
DEFAULT_PRIORITY = 3
PRIORITY_BOUND = 100


class SLOPriorities:
    """GAIE priority map with bundle overrides; unknown and empty classes count as standard (3)."""

    __slots__ = ("priorities", "max_priority")

    def __init__(self, overrides: dict[str, int] | None = None):
        pri = dict(DEFAULT_PRIORITIES)
        for cls, value in sorted((overrides or {}).items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value != int(value):
                raise ConfigError("admission.slo_priorities",
                                  f"priority of class '{cls}' must be an integer, got {value!r}")
            if not -PRIORITY_BOUND <= value <= PRIORITY_BOUND:
                raise ConfigError("admission.slo_priorities",
                                  f"priority of class '{cls}' must be in [-{PRIORITY_BOUND}, "
                                  f"{PRIORITY_BOUND}], got {value}")
            pri[str(cls)] = int(value)
        self.priorities = pri
        self.max_priority = max(DEFAULT_PRIORITY, max(pri.values()))

    def priority(self, cls: str) -> int:
        return self.priorities.get(cls, DEFAULT_PRIORITY)

    def is_sheddable(self, cls: str) -> bool:
        return self.priorities.get(cls, DEFAULT_PRIORITY) < 0

    def vllm_priority(self, cls: str) -> int:
        """Instance-side priority (lower = more urgent): maxPri − priority(cls)."""
        return self.max_priority - self.priorities.get(cls, DEFAULT_PRIORITY)
