"""Instance wait-queue orderings (spec §8.2), applied with a stable sort before each step."""

from __future__ import annotations

from blis.errors import ConfigError


class Scheduler:
    """Reorders the wait queue in place; ``fcfs`` leaves arrival (and preemption) order alone."""

    name = "fcfs"

    def order(self, queue: list) -> None:
        return None


class PriorityFCFS(Scheduler):
    name = "priority-fcfs"

    def order(self, queue):
        if len(queue) > 1:
            queue.sort(key=lambda r: (r.priority, r.arrival_time, r.id))


class ShortestJobFirst(Scheduler):
    name = "sjf"

    def order(self, queue):
        if len(queue) > 1:
            queue.sort(key=lambda r: (r.input_len, r.arrival_time, r.id))


class ReversePriority(Scheduler):
    """Pathological ordering kept for parity with BLIS experiments."""

    name = "reverse-priority"

    def order(self, queue):
        if len(queue) > 1:
            queue.sort(key=lambda r: (-r.priority, r.arrival_time, r.id))


SCHEDULERS = {cls.name: cls for cls in (Scheduler, PriorityFCFS, ShortestJobFirst, ReversePriority)}

PREEMPTION_POLICIES = ("fcfs", "priority")


def build_scheduler(name: str) -> Scheduler:
    cls = SCHEDULERS.get(name)
    if cls is None:
        raise ConfigError("scheduler", f"unknown scheduler '{name}'; choose one of {', '.join(SCHEDULERS)}")
    return cls()
