"""Routing policies, scorers and scorer-profile parsing (spec §10.3, §10.4)."""

import math
from collections import Counter

import numpy as np
import pytest

from blis.cluster.routing import (
    DEFAULT_SCORERS,
    ROUTING_POLICIES,
    SCORERS,
    LeastLoaded,
    PrefixAffinityScorer,
    RoundRobin,
    WeightedScoring,
    build_routing,
    parse_scorers,
)
from blis.cluster.snapshot import RouterState, Snapshot
from blis.config.schema import PolicyConfig
from blis.errors import ConfigError
from blis.request import Request

BS = 4


def req(tokens=(), rid="r", adapter=""):
    return Request(rid, np.asarray(tokens, dtype=np.int32), np.arange(4), 0, adapter=adapter)


def snap(i, qd=0, bs=0, kv=0.0, inflight=0, adapters=()):
    return Snapshot(index=i, id=f"instance_{i}", queue_depth=qd, batch_size=bs,
                    kv_utilization=kv, in_flight_requests=inflight,
                    resident_adapters=frozenset(adapters))


def state(*snaps, cached=None):
    fn = None if cached is None else (lambda i, r: cached.get(i, 0))
    return RouterState(snapshots=list(snaps), clock=0, cached_blocks=fn)


def score(name, st, r=None):
    return SCORERS[name](BS).score(r or req(), st)


# ---- scorers --------------------------------------------------------------------------------

def test_scorer_registry():
    assert set(SCORERS) == {"queue-depth", "kv-utilization", "load-balance", "active-requests",
                            "running-requests", "load-aware", "vllm-dp", "precise-prefix-cache",
                            "prefix-affinity", "no-hit-lru", "lora-affinity"}


def test_queue_depth_min_max_inverted():
    assert score("queue-depth", state(snap(0, qd=2), snap(1, qd=6), snap(2, qd=4))) == \
        [1.0, 0.0, 0.5]
    assert score("queue-depth", state(snap(0, qd=3), snap(1, qd=3))) == [1.0, 1.0]


def test_kv_utilization():
    assert score("kv-utilization", state(snap(0, kv=0.25), snap(1, kv=1.0))) == [0.75, 0.0]


def test_load_balance():
    st = state(snap(0), snap(1, qd=1, bs=1, inflight=1))
    assert score("load-balance", st) == [1.0, 0.25]


def test_active_requests():
    st = state(snap(0, inflight=0), snap(1, inflight=4), snap(2, inflight=1))
    assert score("active-requests", st) == [1.0, 0.0, 0.75]
    assert score("active-requests", state(snap(0), snap(1))) == [1.0, 1.0]
    assert score("active-requests", state(snap(0, inflight=2), snap(1, inflight=2))) == [0.0, 0.0]


def test_running_requests():
    assert score("running-requests", state(snap(0, bs=10), snap(1, bs=0))) == [0.0, 1.0]
    assert score("running-requests", state(snap(0, bs=7), snap(1, bs=7))) == [1.0, 1.0]


def test_load_aware():
    st = state(snap(0, qd=0), snap(1, qd=64), snap(2, qd=128), snap(3, qd=500))
    assert score("load-aware", st) == [0.5, 0.25, 0.0, 0.0]


def test_vllm_dp():
    # raw = 4q + b: 4, 9, 14
    st = state(snap(0, qd=1), snap(1, qd=2, bs=1), snap(2, qd=3, bs=2))
    assert score("vllm-dp", st) == [1.0, 0.5, 0.0]
    assert score("vllm-dp", state(snap(0, qd=1), snap(1, bs=4))) == [1.0, 1.0]


def test_precise_prefix_cache():
    st = state(snap(0), snap(1), snap(2), cached={0: 2, 1: 6, 2: 4})
    assert score("precise-prefix-cache", st) == [0.0, 1.0, 0.5]
    assert score("precise-prefix-cache", state(snap(0), snap(1), cached={})) == [1.0, 1.0]
    assert score("precise-prefix-cache", state(snap(0), snap(1))) == [1.0, 1.0]   # no query


def test_precise_prefix_cache_queries_by_instance_index():
    seen = []
    st = RouterState(snapshots=[snap(5), snap(9)], clock=0,
                     cached_blocks=lambda i, r: seen.append(i) or i)
    assert score("precise-prefix-cache", st) == [0.0, 1.0]
    assert seen == [5, 9]


def test_lora_affinity():
    st = state(snap(0, adapters={"x"}), snap(1))
    assert score("lora-affinity", st) == [1.0, 1.0]                       # no adapter
    assert score("lora-affinity", st, req(adapter="x")) == [1.0, 0.0]
    assert score("lora-affinity", st, req(adapter="y")) == [1.0, 1.0]     # resident nowhere


def test_prefix_affinity_scores_leading_blocks_and_observes():
    pa = PrefixAffinityScorer(BS)
    st = state(snap(0), snap(1))
    a = req(range(12))                         # 3 full blocks
    b = req(list(range(8)) + [99, 98, 97, 96, 5])   # shares 2 leading blocks with a, 3 full
    assert pa.score(a, st) == [0.0, 0.0]
    pa.observe(a, st, 1)
    assert pa.score(a, st) == [0.0, 1.0]
    assert pa.score(b, st) == [0.0, pytest.approx(2 / 3)]
    assert pa.score(req(range(3)), st) == [0.0, 0.0]         # no full block => 0


def test_prefix_affinity_stops_at_first_miss():
    pa = PrefixAffinityScorer(BS)
    st = state(snap(0))
    pa.observe(req([7, 7, 7, 7] + list(range(4, 12))), st, 0)
    assert pa.score(req(range(12)), st) == [0.0]             # first block differs


def test_prefix_affinity_lru_eviction():
    pa = PrefixAffinityScorer(BS, capacity=3)
    st = state(snap(0))
    a = req(range(8))                            # hashes a1, a2
    c = req(range(100, 108))                     # hashes c1, c2
    pa.observe(a, st, 0)
    pa.observe(c, st, 0)                         # 4 hashes > 3: a1 (LRU) evicted
    assert pa.score(a, st) == [0.0]              # leading block gone
    assert pa.score(c, st) == [1.0]
    assert len(pa.index[0]) == 3
    pa.observe(req(range(4)), st, 0)             # re-insert a1 as MRU, evicting a2
    assert pa.score(a, st) == [0.5]
    pa.observe(c, st, 0)                         # touching refreshes recency: a1 is LRU again
    pa.observe(req(range(200, 204)), st, 0)
    assert pa.score(c, st) == [1.0] and pa.score(a, st) == [0.0]


def test_no_hit_lru():
    s = SCORERS["no-hit-lru"](BS)
    st = state(snap(0), snap(1), snap(2), cached={})
    r = req(range(8))
    assert s.score(r, st) == [1.0, 0.5, 0.0]     # all never used: snapshot order
    s.observe(r, st, 0)
    assert s.score(r, st) == [0.0, 1.0, 0.5]     # 1, 2 fresh, then 0
    s.observe(r, st, 1)
    assert s.score(r, st) == [0.5, 0.0, 1.0]     # 2 fresh, then 0 (LRU), then 1 (MRU)
    s.observe(r, st, 2)
    warm = state(snap(0), snap(1), snap(2), cached={1: 1})
    assert s.score(r, warm) == [0.5, 0.5, 0.5]
    s.observe(r, warm, 0)                        # warm requests do not touch the LRU
    assert s.score(r, st) == [1.0, 0.5, 0.0]
    assert s.score(r, state(snap(4), cached={})) == [1.0]


def test_scores_all_equal_give_one_for_min_max_scorers():
    st = state(snap(0, qd=2, bs=2), snap(1, qd=2, bs=2), cached={0: 1, 1: 1})
    for name in ("queue-depth", "running-requests", "vllm-dp", "precise-prefix-cache",
                 "lora-affinity"):
        assert score(name, st) == [1.0, 1.0], name


# ---- simple policies ------------------------------------------------------------------------

def test_registry_and_empty_snapshots():
    assert set(ROUTING_POLICIES) == {"round-robin", "least-loaded", "always-busiest", "weighted"}
    rng = np.random.default_rng(0)
    for name in ROUTING_POLICIES:
        assert build_routing(PolicyConfig(routing_policy=name), rng, BS).route(req(), state()) \
            is None


def test_round_robin_cycles_over_filtered_list():
    rr = RoundRobin()
    three = state(snap(0), snap(1), snap(2))
    assert [rr.route(req(), three) for _ in range(4)] == [0, 1, 2, 0]
    two = state(snap(0), snap(2))                # counter persists: 4 % 2, 5 % 2, ...
    assert [rr.route(req(), two) for _ in range(3)] == [0, 1, 0]
    assert rr.counter == 7


def test_least_loaded_picks_minimum_and_ties_roughly_uniform():
    ll = LeastLoaded(np.random.default_rng(1))
    assert ll.route(req(), state(snap(0, qd=2), snap(1, bs=1), snap(2, inflight=3))) == 1
    st = state(snap(0, qd=1), snap(1, bs=1), snap(2, inflight=5), snap(3, inflight=1))
    n = 30_000
    counts = Counter(ll.route(req(), st) for _ in range(n))
    assert set(counts) == {0, 1, 3}
    for pos in (0, 1, 3):
        assert counts[pos] / n == pytest.approx(1 / 3, abs=0.02)


def test_least_loaded_single_minimum_draws_nothing():
    class NoDraw:
        def integers(self, n):
            raise AssertionError("unexpected draw")
    assert LeastLoaded(NoDraw()).route(req(), state(snap(0, qd=1), snap(1))) == 1


def test_always_busiest_first_on_ties():
    p = build_routing(PolicyConfig(routing_policy="always-busiest"), None, BS)
    assert p.route(req(), state(snap(0, qd=1), snap(1, qd=3), snap(2, bs=3))) == 1


def test_unknown_routing_policy():
    with pytest.raises(ConfigError) as e:
        build_routing(PolicyConfig(routing_policy="random"), None, BS)
    assert e.value.field == "routing-policy" and "round-robin" in str(e.value)


# ---- weighted -------------------------------------------------------------------------------

def test_weighted_default_profile_normalised():
    w = build_routing(PolicyConfig(routing_policy="weighted"), np.random.default_rng(0), BS)
    assert DEFAULT_SCORERS == [("precise-prefix-cache", 2.0), ("queue-depth", 1.0),
                               ("kv-utilization", 1.0)]
    assert w.profile == [("precise-prefix-cache", 0.5), ("queue-depth", 0.25),
                         ("kv-utilization", 0.25)]


def test_weighted_default_profile_decision():
    w = WeightedScoring([], np.random.default_rng(0), BS)
    # prefix: inst 1 holds the whole prefix; queue: inst 0 idle; kv equal.
    st = state(snap(0, qd=0, kv=0.5), snap(1, qd=4, kv=0.5), cached={0: 0, 1: 3})
    assert w.route(req(range(12)), st) == 1
    assert w.last_scores == pytest.approx([0.25 + 0.125, 0.5 + 0.125])
    busy = state(snap(0, qd=0, kv=0.0), snap(1, qd=4, kv=1.0), snap(2, qd=4, kv=1.0),
                 cached={0: 2, 1: 4, 2: 0})
    assert w.route(req(range(12)), busy) == 0
    assert w.last_scores == pytest.approx([0.25 + 0.25 + 0.25, 0.5, 0.0])


def test_weighted_clamps_scores():
    w = WeightedScoring([("kv-utilization", 1)], np.random.default_rng(0), BS)
    st = state(snap(0, kv=1.5), snap(1, kv=-0.5))            # raw -0.5 and 1.5
    assert w.route(req(), st) == 1
    assert w.last_scores == [0.0, 1.0]


def test_weighted_ties_random_and_deterministic():
    def run(seed):
        w = WeightedScoring([("queue-depth", 1)], np.random.default_rng(seed), BS)
        st = state(snap(0), snap(1), snap(2), snap(3, qd=1))
        return [w.route(req(), st) for _ in range(4000)]
    a = run(5)
    assert a == run(5)
    assert a != run(6)
    counts = Counter(a)
    assert set(counts) == {0, 1, 2}
    assert all(abs(counts[i] / 4000 - 1 / 3) < 0.04 for i in range(3))


def test_weighted_notifies_observers_after_choice():
    w = WeightedScoring([("prefix-affinity", 4), ("queue-depth", 3)], np.random.default_rng(0),
                        BS)
    r = req(range(16))
    st = state(snap(0, qd=1), snap(1), snap(2, qd=1))
    assert w.route(r, st) == 1                               # cold: queue depth decides
    st2 = state(snap(0), snap(1, qd=1), snap(2))
    assert w.route(r, st2) == 1                              # affinity 4/7 beats queue 3/7
    pa = w.scorers[0][0]
    assert list(pa.index) == [1]


def test_weighted_routes_by_instance_index_across_filtering():
    w = WeightedScoring([("prefix-affinity", 1)], np.random.default_rng(0), BS)
    r = req(range(8))
    w.route(r, state(snap(7)))
    assert w.route(r, state(snap(3), snap(7), snap(9))) == 1


def test_build_weighted_from_config():
    cfg = PolicyConfig(routing_policy="weighted",
                       routing_scorers=[("prefix-affinity", 4.0), ("queue-depth", 3.0)])
    w = build_routing(cfg, np.random.default_rng(0), BS)
    assert w.profile == [("prefix-affinity", 4 / 7), ("queue-depth", 3 / 7)]
    bad = PolicyConfig(routing_policy="weighted", routing_scorers=[("nope", 1.0)])
    with pytest.raises(ConfigError):
        build_routing(bad, np.random.default_rng(0), BS)


# ---- parsing --------------------------------------------------------------------------------

def test_parse_scorers():
    assert parse_scorers("") == []
    assert parse_scorers("  ") == []
    assert parse_scorers("prefix-affinity:4, queue-depth:3") == \
        [("prefix-affinity", 4.0), ("queue-depth", 3.0)]
    assert parse_scorers("kv-utilization:0.5") == [("kv-utilization", 0.5)]


@pytest.mark.parametrize("text,fragment", [
    ("queue-depth", "expected name:weight"),
    ("queue-depth:", "expected name:weight"),
    (":1", "expected name:weight"),
    ("queue-depth:abc", "not a number"),
    ("queue-depth:0", "> 0"),
    ("queue-depth:-1", "> 0"),
    ("queue-depth:inf", "> 0"),
    ("queue-depth:nan", "> 0"),
    ("queue-depth:1,queue-depth:2", "duplicate"),
    ("bogus:1", "unknown scorer 'bogus'"),
    ("queue-depth:1,,kv-utilization:1", "expected name:weight"),
])
def test_parse_scorers_errors(text, fragment):
    with pytest.raises(ConfigError) as e:
        parse_scorers(text)
    assert e.value.field == "routing-scorers"
    assert fragment in str(e.value)


def test_determinism_same_seed_full_profile():
    def run(seed):
        w = WeightedScoring([("prefix-affinity", 2), ("no-hit-lru", 1), ("load-balance", 1)],
                            np.random.default_rng(seed), BS)
        rng = np.random.default_rng(99)
        out = []
        for k in range(300):
            toks = rng.integers(0, 4, size=int(rng.integers(4, 20)))
            st = state(*[snap(i, qd=int(rng.integers(0, 3))) for i in range(4)], cached={})
            out.append(w.route(req(toks, rid=str(k)), st))
        return out
    assert run(1) == run(1)
    assert not math.isnan(sum(run(2)))
