"""WVA-style model autoscaler (spec §13.3): collect → analyze → optimize → stabilize → actuate.

Every ``interval_us`` the routable replicas are measured in KV tokens: supply is capacity times
``kv_cache_threshold``, demand is tokens in use plus queued requests times ``avg_input_tokens``.
Demand above ``scale_up_threshold`` of supply (counting capacity still loading) adds replicas of
the cheapest variant; supply that stays sufficient at ``scale_down_boundary`` even without the
largest replica removes replicas of the most expensive one. A decision must persist for its
stabilization window, then takes effect after a sampled HPA scrape delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from blis.events import EV_SCALE_ACTUATION, EV_SCALING_TICK
from blis.fleet.node_pools import sample_delay


@dataclass
class Variant:
    """Replicas of one (GPU type, TP) variant as seen by one tick."""

    gpu: str
    tp: int
    cost: float = 0.0
    replicas: int = 0
    supply: float = 0.0
    demand: float = 0.0


@dataclass
class Analysis:
    required: float = 0.0      # > 0: scale-up signal, in KV tokens
    spare: float = 0.0         # > 0: scale-down signal, in KV tokens
    variants: list[Variant] = field(default_factory=list)


def analyze(snapshots: list, pending_tokens: float, cfg) -> Analysis:
    """V2 saturation analyzer over the routable replicas' snapshots."""
    out = Analysis()
    if not snapshots:
        return out
    by_variant: dict[tuple, Variant] = {}
    total_supply = total_demand = max_supply = 0.0
    for s in snapshots:
        if s.total_kv_capacity_tokens <= 0:
            continue
        supply = s.total_kv_capacity_tokens * cfg.kv_cache_threshold
        demand = s.kv_tokens_in_use + s.queue_depth * cfg.avg_input_tokens
        v = by_variant.get((s.gpu_type, s.tp))
        if v is None:
            v = by_variant[(s.gpu_type, s.tp)] = Variant(s.gpu_type, s.tp, s.cost_per_hour)
        v.replicas += 1
        v.supply += supply
        v.demand += demand
        total_supply += supply
        total_demand += demand
        max_supply = max(max_supply, supply)
    out.variants = sorted(by_variant.values(), key=lambda v: (v.cost, v.gpu, v.tp))
    replicas = sum(v.replicas for v in out.variants)
    required = (total_demand / cfg.scale_up_threshold
                - (total_supply + pending_tokens * cfg.kv_cache_threshold))
    if required > 0:
        out.required = required
    elif replicas > 1:
        spare = total_supply - total_demand / cfg.scale_down_boundary
        if spare > 0 and total_supply - max_supply > total_demand / cfg.scale_down_boundary:
            out.spare = spare
    return out


def optimize(a: Analysis) -> tuple[Variant, int] | None:
    """Unlimited engine: +N of the cheapest variant, or −N of the most expensive one."""
    if a.required > 0 and a.variants:
        v = a.variants[0]
        return v, max(1, math.ceil(a.required / (v.supply / v.replicas)))
    if a.spare > 0:
        for v in reversed(a.variants):
            if v.replicas > 0:
                return v, -min(v.replicas, max(1, math.floor(a.spare / (v.supply / v.replicas))))
    return None


class Autoscaler:
    """Tick loop and stabilization windows; scaling itself is done by the fleet."""

    def __init__(self, sim, cfg, fleet, rng):
        self.sim = sim
        self.cfg = cfg
        self.fleet = fleet
        self.rng = rng
        self.up_since = -1      # first tick of the current uninterrupted scale-up signal
        self.down_since = -1
        self.scale_ups = 0      # replicas added (placed or waiting for a node)
        self.scale_downs = 0    # replicas removed (drained or cancelled)
        self.decisions: list[tuple[int, str, int, int]] = []   # (time, gpu, tp, delta)

    def start(self) -> dict:
        self.sim.push(0, 0, EV_SCALING_TICK, None)
        return {EV_SCALING_TICK: self._tick, EV_SCALE_ACTUATION: self._actuate}

    def _tick(self, t: int, _payload) -> None:
        sim = self.sim
        snaps = [sim.snapshot(inst) for inst in self.fleet.routable]
        decision = optimize(analyze(snaps, self.fleet.pending_capacity_tokens(), self.cfg))
        delta = decision[1] if decision else 0
        if delta <= 0:
            self.up_since = -1
        if delta >= 0:
            self.down_since = -1
        if delta > 0:
            if self.up_since < 0:
                self.up_since = t
            passed = t - self.up_since >= self.cfg.scale_up_stabilization_window_us
        elif delta < 0:
            if self.down_since < 0:
                self.down_since = t
            passed = t - self.down_since >= self.cfg.scale_down_stabilization_window_us
        else:
            passed = False
        if passed:
            self.up_since = self.down_since = -1
            v = decision[0]
            sim.push(t + sample_delay(self.cfg.hpa_scrape_delay, self.rng), 0, EV_SCALE_ACTUATION,
                     (v.gpu, v.tp, delta))
        if (sim.horizon >= (1 << 63) - 1 and sim.n_arrived >= len(sim.requests)
                and not any(sim.in_flight)):
            return  # nothing left to serve: stop ticking so the run can end
        sim.push(t + self.cfg.interval_us, 0, EV_SCALING_TICK, None)

    def _actuate(self, t: int, payload) -> None:
        gpu, tp, delta = payload
        if delta > 0:
            done = self.fleet.scale_up(gpu, tp, delta, t)
            self.scale_ups += done
            if done:
                self.decisions.append((t, gpu, tp, done))
        else:
            done = self.fleet.scale_down(gpu, tp, -delta, t)
            self.scale_downs += done
            if done:
                self.decisions.append((t, gpu, tp, -done))
