"""The router's view of the cluster at one decision (spec §10.1).

Snapshots are built by the cluster, already honouring signal staleness (§10.2); policies only read
them, so admission and routing never see live instance state (INV-7, INV-9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(slots=True)
class Snapshot:
    """Signals of one routable instance. ``index`` is the instance's position in the cluster."""

    index: int
    id: str
    queue_depth: int = 0
    batch_size: int = 0
    kv_utilization: float = 0.0
    free_kv_blocks: int = 0
    cache_hit_rate: float = 0.0
    in_flight_requests: int = 0
    preemption_count: int = 0
    total_kv_capacity_tokens: int = 0
    kv_tokens_in_use: int = 0
    max_batch_size: int = 0
    gpu_type: str = ""
    tp: int = 1
    cost_per_hour: float = 0.0
    resident_adapters: frozenset = frozenset()

    @property
    def effective_load(self) -> int:
        return self.queue_depth + self.batch_size + self.in_flight_requests


@dataclass(slots=True)
class RouterState:
    """Snapshots (in cluster order, filtered to routable instances), the clock, and the
    delayed prefix-cache query ``cached_blocks(instance_index, req) -> leading cached blocks``
    (``None`` when no cache signal is available: cache-aware scorers then see all instances equal).
    """

    snapshots: list[Snapshot]
    clock: int = 0
    cached_blocks: Callable[[int, object], int] | None = None
