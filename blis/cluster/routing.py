"""Routing: pick one instance among the routable snapshots (spec §10.3, §10.4).

``route(req, state)`` returns a *position* in ``state.snapshots`` (``None`` when the list is
empty). It runs once per request with a handful of snapshots, so everything here is plain loops
over small lists; random draws happen only on genuine ties.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from blis.cluster.snapshot import RouterState
from blis.errors import ConfigError

DEFAULT_SCORERS: list[tuple[str, float]] = [
    ("precise-prefix-cache", 2.0), ("queue-depth", 1.0), ("kv-utilization", 1.0)]
PREFIX_AFFINITY_CAPACITY = 10_000
LOAD_AWARE_QUEUE_CAP = 128


# ---- scorers --------------------------------------------------------------------------------

def _min_max_inverted(raw: list) -> list[float]:
    """Lowest raw value scores 1, highest 0; all equal => 1.0 everywhere."""
    hi = max(raw)
    lo = min(raw)
    if hi == lo:
        return [1.0] * len(raw)
    span = hi - lo
    return [(hi - v) / span for v in raw]


def _min_max(raw: list) -> list[float]:
    """Highest raw value scores 1, lowest 0; all equal => 1.0 everywhere."""
    hi = max(raw)
    lo = min(raw)
    if hi == lo:
        return [1.0] * len(raw)
    span = hi - lo
    return [(v - lo) / span for v in raw]


class Scorer:
    """Scores every snapshot of a decision in [0, 1] (higher = better). Stateful scorers set
    ``observes = True`` and learn from ``observe`` after each decision."""

    name = ""
    observes = False

    def __init__(self, block_size: int = 16):
        self.block_size = block_size

    def score(self, req, state: RouterState) -> list[float]:
        raise NotImplementedError

    def observe(self, req, state: RouterState, pos: int) -> None:
        """The request was routed to ``state.snapshots[pos]``."""


class QueueDepthScorer(Scorer):
    name = "queue-depth"

    def score(self, req, state):
        return _min_max_inverted([s.queue_depth for s in state.snapshots])


class KVUtilizationScorer(Scorer):
    name = "kv-utilization"

    def score(self, req, state):
        return [1.0 - s.kv_utilization for s in state.snapshots]


class LoadBalanceScorer(Scorer):
    name = "load-balance"

    def score(self, req, state):
        return [1.0 / (1 + s.effective_load) for s in state.snapshots]


class ActiveRequestsScorer(Scorer):
    name = "active-requests"

    def score(self, req, state):
        inflight = [s.in_flight_requests for s in state.snapshots]
        top = max(inflight)
        if top == 0:
            return [1.0] * len(inflight)
        return [1.0 if f == 0 else (top - f) / top for f in inflight]


class RunningRequestsScorer(Scorer):
    name = "running-requests"

    def score(self, req, state):
        return _min_max_inverted([s.batch_size for s in state.snapshots])


class LoadAwareScorer(Scorer):
    name = "load-aware"

    def score(self, req, state):
        cap = LOAD_AWARE_QUEUE_CAP
        return [0.5 if s.queue_depth == 0 else 0.5 * (1.0 - min(s.queue_depth, cap) / cap)
                for s in state.snapshots]


class VLLMDPScorer(Scorer):
    """vLLM data-parallel balancing: waiting requests weigh 4× running ones."""

    name = "vllm-dp"

    def score(self, req, state):
        return _min_max_inverted([4 * s.queue_depth + s.batch_size for s in state.snapshots])


class PrecisePrefixCacheScorer(Scorer):
    """Prefers the instance holding the longest cached prefix, per the (delayed) cache query."""

    name = "precise-prefix-cache"

    def score(self, req, state):
        query = state.cached_blocks
        snaps = state.snapshots
        if query is None:
            return [1.0] * len(snaps)
        return _min_max([query(s.index, req) for s in snaps])


class PrefixAffinityScorer(Scorer):
    """Router-side guess of cache contents: per instance, an LRU set of the block hashes of the
    requests recently routed there. Needs no instance signal, so it is never stale."""

    name = "prefix-affinity"
    observes = True

    def __init__(self, block_size: int = 16, capacity: int = PREFIX_AFFINITY_CAPACITY):
        super().__init__(block_size)
        self.capacity = capacity
        self.index: dict[int, OrderedDict] = {}

    def score(self, req, state):
        hashes = req.block_hashes(self.block_size)
        snaps = state.snapshots
        if not hashes:
            return [0.0] * len(snaps)
        total = len(hashes)
        out = []
        for s in snaps:
            lru = self.index.get(s.index)
            n = 0
            if lru:
                for h in hashes:
                    if h not in lru:
                        break
                    n += 1
            out.append(n / total)
        return out

    def observe(self, req, state, pos):
        key = state.snapshots[pos].index
        lru = self.index.get(key)
        if lru is None:
            lru = self.index[key] = OrderedDict()
        move = lru.move_to_end
        for h in req.block_hashes(self.block_size):
            if h in lru:
                move(h)
            else:
                lru[h] = None
        while len(lru) > self.capacity:
            lru.popitem(last=False)


class NoHitLRUScorer(Scorer):
    """Spreads cache-cold requests over the least recently used instances (so cold prefixes do
    not pile up on one instance); cache-warm requests get a neutral 0.5 everywhere."""

    name = "no-hit-lru"
    observes = True

    def __init__(self, block_size: int = 16):
        super().__init__(block_size)
        self.used: OrderedDict = OrderedDict()   # instance index, least -> most recently used
        self._cold = False

    def score(self, req, state):
        snaps = state.snapshots
        n = len(snaps)
        query = state.cached_blocks
        if query is not None:
            for s in snaps:
                if query(s.index, req) >= 1:
                    self._cold = False
                    return [0.5] * n
        self._cold = True
        if n == 1:
            return [1.0]
        used = self.used
        fresh = [i for i, s in enumerate(snaps) if s.index not in used]
        pos_of = {s.index: i for i, s in enumerate(snaps)}
        order = fresh + [pos_of[k] for k in used if k in pos_of]
        out = [0.0] * n
        denom = n - 1
        for rank, i in enumerate(order):
            out[i] = 1.0 - rank / denom
        return out

    def observe(self, req, state, pos):
        if self._cold:
            key = state.snapshots[pos].index
            self.used.pop(key, None)
            self.used[key] = None


class LoRAAffinityScorer(Scorer):
    """Prefers instances where the request's adapter is already resident."""

    name = "lora-affinity"

    def score(self, req, state):
        snaps = state.snapshots
        adapter = req.adapter
        if not adapter:
            return [1.0] * len(snaps)
        return _min_max([1 if adapter in s.resident_adapters else 0 for s in snaps])


SCORERS: dict[str, type[Scorer]] = {cls.name: cls for cls in (
    QueueDepthScorer, KVUtilizationScorer, LoadBalanceScorer, ActiveRequestsScorer,
    RunningRequestsScorer, LoadAwareScorer, VLLMDPScorer, PrecisePrefixCacheScorer,
    PrefixAffinityScorer, NoHitLRUScorer, LoRAAffinityScorer)}


# ---- policies -------------------------------------------------------------------------------

class RoutingPolicy:
    """Base class. ``last_scores`` holds the per-snapshot scores of the last decision when the
    policy has them (for decision tracing), else ``None``."""

    name = ""
    last_scores: list[float] | None = None

    def route(self, req, state: RouterState) -> int | None:
        raise NotImplementedError


class RoundRobin(RoutingPolicy):
    """Cycles a run-long counter over whatever the current filtered snapshot list is."""

    name = "round-robin"

    def __init__(self):
        self.counter = 0

    def route(self, req, state):
        n = len(state.snapshots)
        if n == 0:
            return None
        pos = self.counter % n
        self.counter += 1
        return pos


class LeastLoaded(RoutingPolicy):
    name = "least-loaded"

    def __init__(self, rng):
        self.rng = rng

    def route(self, req, state):
        snaps = state.snapshots
        if not snaps:
            return None
        loads = [s.effective_load for s in snaps]
        low = min(loads)
        tied = [i for i, v in enumerate(loads) if v == low]
        if len(tied) == 1:
            return tied[0]
        return tied[int(self.rng.integers(len(tied)))]


class AlwaysBusiest(RoutingPolicy):
    """Pathological baseline: the most loaded instance, first on ties."""

    name = "always-busiest"

    def route(self, req, state):
        snaps = state.snapshots
        if not snaps:
            return None
        best = 0
        best_load = -1
        for i, s in enumerate(snaps):
            load = s.effective_load
            if load > best_load:
                best, best_load = i, load
        return best


class WeightedScoring(RoutingPolicy):
    """Weighted sum of clamped scorer outputs; argmax with uniform random tie-breaking."""

    name = "weighted"

    def __init__(self, scorers: list[tuple[str, float]], rng, block_size: int = 16):
        scorers = validate_scorers(scorers or DEFAULT_SCORERS)
        total = sum(w for _, w in scorers)
        self.profile = [(name, w / total) for name, w in scorers]
        self.scorers = [(SCORERS[name](block_size), w) for name, w in self.profile]
        self.observers = [s for s, _ in self.scorers if s.observes]
        self.rng = rng
        self.last_scores = None

    def route(self, req, state):
        n = len(state.snapshots)
        if n == 0:
            return None
        totals = [0.0] * n
        for scorer, w in self.scorers:
            scores = scorer.score(req, state)
            for i in range(n):
                v = scores[i]
                if v > 1.0:
                    v = 1.0
                elif not v >= 0.0:
                    v = 0.0
                totals[i] += v * w
        self.last_scores = totals
        best = max(totals)
        tied = [i for i in range(n) if totals[i] == best]
        pos = tied[0] if len(tied) == 1 else tied[int(self.rng.integers(len(tied)))]
        for obs in self.observers:
            obs.observe(req, state, pos)
        return pos


ROUTING_POLICIES = {
    "round-robin": RoundRobin,
    "least-loaded": LeastLoaded,
    "always-busiest": AlwaysBusiest,
    "weighted": WeightedScoring,
}


def validate_scorers(scorers, field: str = "routing-scorers") -> list[tuple[str, float]]:
    """Known names, finite weights > 0, no duplicates."""
    seen = set()
    out = []
    for name, weight in scorers:
        if name not in SCORERS:
            raise ConfigError(field, f"unknown scorer '{name}'; choose one of "
                                     f"{', '.join(SCORERS)}")
        if name in seen:
            raise ConfigError(field, f"duplicate scorer '{name}'")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight) or weight <= 0:
            raise ConfigError(field, f"weight of scorer '{name}' must be a finite number > 0, "
                                     f"got {weight!r}")
        seen.add(name)
        out.append((name, float(weight)))
    return out


def parse_scorers(text: str, field: str = "routing-scorers") -> list[tuple[str, float]]:
    """Parse ``"name:weight,name:weight"``; an empty string means "use the default profile"."""
    text = text.strip()
    if not text:
        return []
    pairs = []
    for item in text.split(","):
        item = item.strip()
        name, sep, weight = item.partition(":")
        name = name.strip()
        if not sep or not name or not weight.strip():
            raise ConfigError(field, f"invalid entry '{item}'; expected name:weight")
        try:
            w = float(weight)
        except ValueError:
            raise ConfigError(field, f"weight of scorer '{name}' is not a number: "
                                     f"'{weight.strip()}'") from None
        pairs.append((name, w))
    return validate_scorers(pairs, field)


def build_routing(policy_cfg, rng, block_size: int) -> RoutingPolicy:
    """Instantiate ``policy_cfg.routing_policy``; the router RNG only breaks ties."""
    name = policy_cfg.routing_policy
    if name == "round-robin":
        return RoundRobin()
    if name == "least-loaded":
        return LeastLoaded(rng)
    if name == "always-busiest":
        return AlwaysBusiest()
    if name == "weighted":
        return WeightedScoring(policy_cfg.routing_scorers, rng, block_size)
    raise ConfigError("routing-policy", f"unknown policy '{name}'; choose one of "
                                        f"{', '.join(ROUTING_POLICIES)}")
