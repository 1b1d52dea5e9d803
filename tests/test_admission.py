"""Admission policies, the SLO priority map and the tenant-budget decorator (spec §8.1, §9, §18.2)."""

import math

import numpy as np
import pytest

from blis.cluster.admission import (
    ADMISSION_POLICIES,
    Probabilistic,
    TenantBudget,
    TokenBucket,
    build_admission,
    gaie_saturation,
    parse_probabilistic_params,
)
from blis.cluster.slo import VALID_SLO_CLASSES, SLOPriorities
from blis.cluster.snapshot import RouterState, Snapshot
from blis.config.schema import PolicyConfig
from blis.errors import ConfigError
from blis.request import Request
from blis.rng import PartitionedRNG

SLO = SLOPriorities()


def req(cls="", n_in=10, tenant="", rid="r"):
    return Request(rid, np.arange(n_in), np.arange(4), 0, slo_class=cls, tenant_id=tenant)


def snap(i=0, qd=0, bs=0, kv=0.0, inflight=0):
    return Snapshot(index=i, id=f"instance_{i}", queue_depth=qd, batch_size=bs,
                    kv_utilization=kv, in_flight_requests=inflight)


def state(*snaps, clock=0):
    return RouterState(snapshots=list(snaps), clock=clock)


def build(slo=SLO, rng=None, n=4, seqs=256, **kw):
    return build_admission(PolicyConfig(**kw), slo, rng or np.random.default_rng(0), n, seqs)


# ---- SLO priority map -----------------------------------------------------------------------

def test_default_gaie_priorities_and_sheddability():
    assert [SLO.priority(c) for c in ("critical", "standard", "batch", "sheddable",
                                      "background", "", "mystery")] == [4, 3, -1, -2, -3, 3, 3]
    assert [c for c in VALID_SLO_CLASSES if SLO.is_sheddable(c)] == \
        ["sheddable", "batch", "background"]
    assert not SLO.is_sheddable("mystery")


def test_vllm_priority_defaults():
    got = {c: SLO.vllm_priority(c) for c in ("critical", "standard", "batch", "sheddable",
                                             "background", "")}
    assert got == {"critical": 0, "standard": 1, "batch": 5, "sheddable": 6, "background": 7,
                   "": 1}


def test_overrides_move_max_priority():
    slo = SLOPriorities({"critical": 10, "batch": 2})
    assert slo.max_priority == 10
    assert slo.vllm_priority("critical") == 0
    assert slo.vllm_priority("standard") == 7
    assert not slo.is_sheddable("batch")
    low = SLOPriorities({"critical": 1})
    assert low.max_priority == 3                      # maxPri never drops below 3
    assert low.vllm_priority("critical") == 2


@pytest.mark.parametrize("value", [101, -101, 1.5, math.nan, "4"])
def test_override_out_of_range_rejected(value):
    with pytest.raises(ConfigError) as e:
        SLOPriorities({"critical": value})
    assert e.value.field == "admission.slo_priorities"


def test_override_bounds_inclusive():
    slo = SLOPriorities({"critical": 100, "background": -100})
    assert slo.priority("critical") == 100 and slo.priority("background") == -100


# ---- simple policies ------------------------------------------------------------------------

def test_registry_names():
    assert set(ADMISSION_POLICIES) == {"always-admit", "reject-all", "token-bucket", "tier-shed",
                                       "gaie-legacy", "probabilistic"}


def test_always_admit_and_reject_all():
    assert build().admit(req("background"), state()) == (True, "")
    ok, reason = build(admission_policy="reject-all").admit(req("critical"), state(snap()))
    assert not ok and reason == "reject-all"


def test_unknown_policy():
    with pytest.raises(ConfigError) as e:
        build(admission_policy="nope")
    assert e.value.field == "admission-policy"
    assert "unknown policy 'nope'" in str(e.value) and "token-bucket" in str(e.value)


# ---- token bucket ---------------------------------------------------------------------------

def test_token_bucket_worked_example():
    # capacity 1000 tokens, refill 1000 tokens/s = 0.001 tokens/µs; the bucket starts full.
    tb = build(admission_policy="token-bucket", token_bucket_capacity=1000,
               token_bucket_refill_rate=1000)
    assert tb.admit(req(n_in=600), state(clock=0))[0]          # 1000 -> 400
    assert tb.tokens == 400
    ok, reason = tb.admit(req(n_in=500), state(clock=0))       # 400 < 500: no refill at t=0
    assert not ok and reason == "insufficient tokens"
    assert tb.tokens == 400                                    # rejection costs nothing
    assert tb.admit(req(n_in=500), state(clock=100_000))[0]    # +0.1 s × 1000 = +100 -> 500 -> 0
    assert tb.tokens == pytest.approx(0.0)
    assert tb.last_refill == 100_000
    assert tb.admit(req(n_in=1000), state(clock=5_000_000))[0]  # refill capped at capacity
    assert not tb.admit(req(n_in=1), state(clock=5_000_000))[0]
    assert tb.admit(req(n_in=1), state(clock=5_001_000))[0]    # 1 ms => exactly 1 token


def test_token_bucket_request_larger_than_capacity_never_admitted():
    tb = TokenBucket(100, 1e9)
    assert not tb.admit(req(n_in=101), state(clock=10**9))[0]


@pytest.mark.parametrize("field,kw", [
    ("token-bucket-capacity", {"token_bucket_capacity": 0}),
    ("token-bucket-capacity", {"token_bucket_capacity": math.inf}),
    ("token-bucket-capacity", {"token_bucket_capacity": math.nan}),
    ("token-bucket-refill-rate", {"token_bucket_refill_rate": -1}),
])
def test_token_bucket_validation(field, kw):
    with pytest.raises(ConfigError) as e:
        build(admission_policy="token-bucket", **kw)
    assert e.value.field == field


# ---- tier-shed ------------------------------------------------------------------------------

def test_tier_shed_admits_everything_without_load():
    ts = build(admission_policy="tier-shed", tier_shed_threshold=2, tier_shed_min_priority=3)
    st = state(snap(0, qd=1), snap(1, bs=1, inflight=1))      # max EffectiveLoad 2 <= 2
    for cls in VALID_SLO_CLASSES:
        assert ts.admit(req(cls), st)[0]
    assert ts.admit(req("background"), state())[0]             # no snapshots => load 0


def test_tier_shed_under_load_sheds_below_min_priority():
    ts = build(admission_policy="tier-shed", tier_shed_threshold=2, tier_shed_min_priority=3)
    st = state(snap(0, qd=1, bs=1, inflight=1), snap(1))        # max EffectiveLoad 3 > 2
    verdict = {c: ts.admit(req(c), st)[0] for c in VALID_SLO_CLASSES}
    assert verdict == {"critical": True, "standard": True, "": True, "batch": False,
                       "sheddable": False, "background": False}
    assert ts.admit(req("batch"), st)[1].startswith("tier-shed")
    strict = build(admission_policy="tier-shed", tier_shed_threshold=2, tier_shed_min_priority=4)
    assert not strict.admit(req("standard"), st)[0] and strict.admit(req("critical"), st)[0]


def test_tier_shed_cli_default_sheds_only_negative_priorities():
    ts = build(admission_policy="tier-shed")                   # threshold 0, min priority 0
    st = state(snap(0, inflight=1))
    assert ts.admit(req("standard"), st)[0]
    assert not ts.admit(req("batch"), st)[0]


# ---- gaie-legacy ----------------------------------------------------------------------------

def test_gaie_saturation_formula():
    st = state(snap(0, qd=4, kv=0.0), snap(1, qd=0, kv=0.4))   # max(0.8, 0), max(0, 0.5)
    assert gaie_saturation(st, 5.0, 0.8) == pytest.approx(0.65)
    assert gaie_saturation(state(), 5.0, 0.8) == 1.0


def test_gaie_legacy_boundary_exactly_one():
    g = build(admission_policy="gaie-legacy")
    at_one = state(snap(0, qd=4), snap(1, qd=6))                 # (0.8 + 1.2) / 2 = 1.0
    assert gaie_saturation(at_one, 5.0, 0.8) == 1.0
    ok, reason = g.admit(req("sheddable"), at_one)
    assert not ok and reason.startswith("gaie-saturated")
    below = state(snap(0, qd=4), snap(1, qd=5))                  # 0.9
    assert g.admit(req("sheddable"), below)[0]
    for cls in ("critical", "standard", ""):
        assert g.admit(req(cls), state(snap(0, qd=100)))[0]


def test_gaie_legacy_no_snapshots_sheds_sheddable():
    g = build(admission_policy="gaie-legacy")
    assert not g.admit(req("batch"), state())[0]
    assert g.admit(req("critical"), state())[0]


@pytest.mark.parametrize("field,kw", [
    ("admission.gaie_qd_threshold", {"gaie_qd_threshold": 0}),
    ("admission.gaie_kv_threshold", {"gaie_kv_threshold": 0}),
    ("admission.gaie_kv_threshold", {"gaie_kv_threshold": 1.01}),
    ("admission.gaie_kv_threshold", {"gaie_kv_threshold": math.nan}),
])
def test_gaie_validation(field, kw):
    for policy in ("gaie-legacy", "probabilistic"):
        with pytest.raises(ConfigError) as e:
            build(admission_policy=policy, **kw)
        assert e.value.field == field


def test_gaie_kv_threshold_one_allowed():
    """1.0 is the upper end of (0, 1]: accepted, and a full KV cache then saturates exactly."""
    p = build(admission_policy="gaie-legacy", gaie_kv_threshold=1.0)
    assert p.kv_threshold == 1.0
    assert not p.admit(req("sheddable"), state(snap(kv=1.0)))[0]
    assert p.admit(req("sheddable"), state(snap(kv=0.99)))[0]
    with pytest.raises(ConfigError):
        build(admission_policy="gaie-legacy", gaie_kv_threshold=1.0 + 1e-9)


# ---- probabilistic --------------------------------------------------------------------------

def counting_rng(seed=0):
    """A Generator wrapper that counts draws."""
    class R:
        def __init__(self):
            self.g = np.random.default_rng(seed)
            self.draws = 0

        def random(self):
            self.draws += 1
            return self.g.random()
    return R()


def test_probabilistic_zero_saturation_never_sheds_and_never_draws():
    rng = counting_rng()
    p = build(admission_policy="probabilistic", rng=rng)
    idle = state(snap(0), snap(1))
    assert all(p.admit(req(c), idle)[0] for c in ("batch", "sheddable", "background") * 100)
    assert rng.draws == 0


def test_probabilistic_high_saturation_sheds_all_sheddable():
    rng = counting_rng()
    p = build(admission_policy="probabilistic", rng=rng)
    busy = state(snap(0, qd=5), snap(1, kv=0.8))                 # saturation 1 => p = min(1, 300)
    for c in ("batch", "sheddable", "background"):
        ok, reason = p.admit(req(c), busy)
        assert not ok and reason.startswith("probabilistic-shed")
    assert rng.draws == 0
    assert not p.admit(req("batch"), state())[0]                # no snapshots => saturation 1


def test_probabilistic_never_rejects_protected_classes():
    p = build(admission_policy="probabilistic")
    flooded = state(snap(0, qd=1000, kv=1.0))
    for c in ("critical", "standard", "", "unknown-class"):
        assert all(p.admit(req(c), flooded)[0] for _ in range(200))


def test_probabilistic_empirical_rate_matches_formula():
    p = build(admission_policy="probabilistic",
              rng=PartitionedRNG(7).for_subsystem("admission"))
    mid = state(snap(0, kv=0.2), snap(1, qd=1, kv=0.2))         # max(0.2, 0.25) on both
    assert gaie_saturation(mid, 5.0, 0.8) == pytest.approx(0.25)
    expected = 300 * 0.25 ** 5                                  # 0.29296875
    n = 20_000
    rejected = sum(not p.admit(req("sheddable"), mid)[0] for _ in range(n))
    assert rejected / n == pytest.approx(expected, abs=0.015)   # ~4.6 standard errors


def test_probabilistic_per_class_params_and_default_fallback():
    per_class, default = parse_probabilistic_params(
        {"batch": {"a": 1, "b": 1}, "default": {"a": 0.5}})
    assert default == (0.5, 5.0)
    assert per_class == {"batch": (1.0, 1.0)}
    p = Probabilistic(SLO, np.random.default_rng(0), 5.0, 0.8, per_class, default)
    assert p.rejection_probability("batch", 0.3) == pytest.approx(0.3)
    assert p.rejection_probability("sheddable", 0.5) == pytest.approx(0.5 * 0.5 ** 5)
    assert p.rejection_probability("sheddable", 2.0) == 1.0
    assert parse_probabilistic_params({}) == ({}, (300.0, 5.0))


@pytest.mark.parametrize("params", [
    {"batch": {"a": -1}}, {"default": {"b": 0}}, {"batch": {"a": math.inf}},
    {"batch": {"c": 1}}, {"batch": 3},
])
def test_probabilistic_param_validation(params):
    with pytest.raises(ConfigError) as e:
        build(admission_policy="probabilistic", probabilistic_params=params)
    assert e.value.field == "admission.probabilistic_params"


def test_probabilistic_deterministic_for_same_seed():
    mid = state(snap(0, kv=0.2))

    def run(seed):
        p = build(admission_policy="probabilistic",
                  rng=PartitionedRNG(seed).for_subsystem("admission"))
        return [p.admit(req("batch"), mid)[0] for _ in range(500)]
    assert run(3) == run(3)
    assert run(3) != run(4)


# ---- tenant budgets -------------------------------------------------------------------------

def test_tenant_budget_decorator():
    # capacity = 1 instance × 2 seqs = 2; budget 0.5 => over budget once in-flight > 1
    tb = build(n=1, seqs=2, tenant_budgets={"a": 0.5})
    assert isinstance(tb, TenantBudget) and tb.name == "always-admit"
    st = state(snap())
    assert tb.admit(req("batch", tenant="a"), st)[0]
    tb.on_routed(req("batch", tenant="a"))
    assert tb.admit(req("batch", tenant="a"), st)[0]           # 1 > 1 is false
    tb.on_routed(req("critical", tenant="a"))
    assert tb.admit(req("batch", tenant="a"), st) == (False, "tenant-budget-shed")
    assert tb.admit(req("critical", tenant="a"), st)[0]        # non-sheddable protected
    assert tb.admit(req("batch", tenant="b"), st)[0]           # tenant without a budget
    assert tb.admit(req("batch", tenant=""), st)[0]
    tb.on_finished(req("batch", tenant="a"))
    assert tb.admit(req("batch", tenant="a"), st)[0]
    for _ in range(5):
        tb.on_finished(req("batch", tenant="a"))
    assert tb.in_flight["a"] == 0                              # floored at zero


def test_tenant_budget_checked_before_inner_policy():
    tb = build(admission_policy="reject-all", n=1, seqs=1, tenant_budgets={"a": 0.0})
    assert tb.admit(req("batch", tenant="a"), state())[1] == "reject-all"
    tb.on_routed(req("batch", tenant="a"))                     # 1 > 0 × 1 => over budget
    assert tb.admit(req("batch", tenant="a"), state())[1] == "tenant-budget-shed"
    assert tb.admit(req("standard", tenant="a"), state())[1] == "reject-all"


def test_tenant_budget_capacity_floored_at_one():
    tb = build(n=0, seqs=0, tenant_budgets={"a": 1.0})
    tb.on_routed(req("batch", tenant="a"))
    assert tb.admit(req("batch", tenant="a"), state())[0]
    tb.on_routed(req("batch", tenant="a"))
    assert not tb.admit(req("batch", tenant="a"), state())[0]


@pytest.mark.parametrize("frac", [-0.1, 1.5, math.nan])
def test_tenant_budget_validation(frac):
    with pytest.raises(ConfigError) as e:
        build(tenant_budgets={"a": frac})
    assert e.value.field == "tenant_budgets"


def test_plain_policies_have_noop_callbacks():
    """Callbacks of undecorated policies change neither their state nor their decisions."""
    for name in ("always-admit", "reject-all", "token-bucket"):
        p = build(admission_policy=name, token_bucket_capacity=15)
        before = dict(vars(p))
        assert p.on_routed(req()) is None and p.on_finished(req()) is None
        assert vars(p) == before
        assert p.admit(req(n_in=10), state())[0] == (name != "reject-all")
