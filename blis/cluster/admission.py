"""Admission control: the first cluster gate a request passes (spec §9, §18.2).

Every policy answers ``admit(req, state) -> (admitted, reason)`` from the router's (possibly
stale) snapshots and the request's arrival-time metadata only (INV-9).
"""

from __future__ import annotations

import math

from blis.cluster.slo import SLOPriorities
from blis.cluster.snapshot import RouterState
from blis.errors import ConfigError

DEFAULT_PROBABILISTIC_A = 300.0
DEFAULT_PROBABILISTIC_B = 5.0


class AdmissionPolicy:
    """Base class. ``on_routed`` / ``on_finished`` are cluster callbacks for stateful decorators."""

    name = ""
    # False: ``admit`` never reads its router state, so the cluster passes None instead of
    # building every instance's snapshot for each request
    reads_state = True

    def admit(self, req, state: RouterState | None) -> tuple[bool, str]:
        raise NotImplementedError

    def on_routed(self, req) -> None:
        """A request was injected into an instance."""

    def on_finished(self, req) -> None:
        """A routed request left its instance (completed, timed out, dropped or evicted)."""


class AlwaysAdmit(AdmissionPolicy):
    name = "always-admit"
    reads_state = False

    def admit(self, req, state):
        return True, ""


class RejectAll(AdmissionPolicy):
    """Pathological baseline: nothing gets through."""

    name = "reject-all"
    reads_state = False

    def admit(self, req, state):
        return False, "reject-all"


class TokenBucket(AdmissionPolicy):
    """Rate limit on input tokens: starts full, refills lazily at each decision."""

    name = "token-bucket"

    def __init__(self, capacity: float, refill_rate: float):
        self.capacity = float(capacity)
        self.refill_rate = float(refill_rate)   # tokens per second
        self.tokens = self.capacity
        self.last_refill = 0

    def admit(self, req, state):
        elapsed = state.clock - self.last_refill
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_rate / 1e6)
            self.last_refill = state.clock
        cost = req.input_len
        if self.tokens >= cost:
            self.tokens -= cost
            return True, ""
        return False, "insufficient tokens"


class TierShed(AdmissionPolicy):
    """Under load (busiest instance above ``threshold``) shed classes below ``min_priority``."""

    name = "tier-shed"

    def __init__(self, slo: SLOPriorities, threshold: int, min_priority: int):
        self.slo = slo
        self.threshold = threshold
        self.min_priority = min_priority

    def admit(self, req, state):
        max_load = 0
        for s in state.snapshots:
            load = s.effective_load
            if load > max_load:
                max_load = load
        if max_load <= self.threshold:
            return True, ""
        if self.slo.priority(req.slo_class) < self.min_priority:
            return False, f"tier-shed: class={req.slo_class} load={max_load}"
        return True, ""


def gaie_saturation(state: RouterState, qd_threshold: float, kv_threshold: float) -> float:
    """GAIE saturation: mean over instances of max(queue/qd, kv/kv); 1.0 when nothing is routable."""
    snaps = state.snapshots
    if not snaps:
        return 1.0
    total = 0.0
    for s in snaps:
        q = s.queue_depth / qd_threshold
        k = s.kv_utilization / kv_threshold
        total += q if q > k else k
    return total / len(snaps)


class GAIELegacy(AdmissionPolicy):
    """Deterministic GAIE shedding: sheddable classes rejected once saturation reaches 1."""

    name = "gaie-legacy"

    def __init__(self, slo: SLOPriorities, qd_threshold: float, kv_threshold: float):
        self.slo = slo
        self.qd_threshold = qd_threshold
        self.kv_threshold = kv_threshold

    def admit(self, req, state):
        if not self.slo.is_sheddable(req.slo_class):
            return True, ""
        sat = gaie_saturation(state, self.qd_threshold, self.kv_threshold)
        if sat >= 1.0:
            return False, f"gaie-saturated: class={req.slo_class} saturation={sat:.2f}"
        return True, ""


class Probabilistic(AdmissionPolicy):
    """The §18.2 discovered admitter: shed sheddable class c with p = min(1, a_c × sat^b_c)."""

    name = "probabilistic"

    def __init__(self, slo: SLOPriorities, rng, qd_threshold: float, kv_threshold: float,
                 params: dict[str, tuple[float, float]], default: tuple[float, float]):
        self.slo = slo
        self.rng = rng
        self.qd_threshold = qd_threshold
        self.kv_threshold = kv_threshold
        self.params = params
        self.default = default

    def rejection_probability(self, cls: str, saturation: float) -> float:
        a, b = self.params.get(cls, self.default)
        p = a * saturation ** b
        return 1.0 if p > 1.0 else p

    def admit(self, req, state):
        cls = req.slo_class
        if not self.slo.is_sheddable(cls):
            return True, ""
        sat = gaie_saturation(state, self.qd_threshold, self.kv_threshold)
        p = self.rejection_probability(cls, sat)
        if p <= 0.0:
            return True, ""
        if p >= 1.0 or self.rng.random() < p:
            return False, f"probabilistic-shed: class={cls} saturation={sat:.2f} p={p:.3f}"
        return True, ""


class TenantBudget(AdmissionPolicy):
    """Decorator: a tenant over its share of cluster slots has its sheddable traffic shed
    before the inner policy is consulted (so the inner policy sees no side effect)."""

    def __init__(self, inner: AdmissionPolicy, budgets: dict[str, float], slo: SLOPriorities,
                 num_instances: int, max_num_seqs: int):
        self.inner = inner
        self.name = inner.name
        self.reads_state = inner.reads_state
        self.slo = slo
        capacity = max(1, int(num_instances) * int(max_num_seqs))
        self.limits = {t: f * capacity for t, f in budgets.items()}
        self.in_flight: dict[str, int] = {}

    def is_over_budget(self, tenant: str) -> bool:
        if not tenant:
            return False
        limit = self.limits.get(tenant)
        return limit is not None and self.in_flight.get(tenant, 0) > limit

    def admit(self, req, state):
        if self.is_over_budget(req.tenant_id) and self.slo.is_sheddable(req.slo_class):
            return False, "tenant-budget-shed"
        return self.inner.admit(req, state)

    def on_routed(self, req) -> None:
        tenant = req.tenant_id
        if tenant:
            self.in_flight[tenant] = self.in_flight.get(tenant, 0) + 1
        self.inner.on_routed(req)

    def on_finished(self, req) -> None:
        tenant = req.tenant_id
        if tenant:
            n = self.in_flight.get(tenant, 0)
            if n > 0:
                self.in_flight[tenant] = n - 1
        self.inner.on_finished(req)


ADMISSION_POLICIES = {
    "always-admit": AlwaysAdmit,
    "reject-all": RejectAll,
    "token-bucket": TokenBucket,
    "tier-shed": TierShed,
    "gaie-legacy": GAIELegacy,
    "probabilistic": Probabilistic,
}


def _finite(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _positive(field: str, value) -> float:
    if not _finite(value) or value <= 0:
        raise ConfigError(field, f"must be a finite number > 0, got {value!r}")
    return float(value)


def _gaie_thresholds(cfg) -> tuple[float, float]:
    qd = _positive("admission.gaie_qd_threshold", cfg.gaie_qd_threshold)
    kv = cfg.gaie_kv_threshold
    if not _finite(kv) or not 0 < kv <= 1:
        raise ConfigError("admission.gaie_kv_threshold", f"must be in (0, 1], got {kv!r}")
    return qd, float(kv)


def parse_probabilistic_params(
        params: dict[str, dict[str, float]] | None,
) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    """Validate per-class ``{"a", "b"}`` entries; missing values fall back to the ``default``
    entry, then to the published controller (a=300, b=5)."""
    field = "admission.probabilistic_params"
    params = params or {}

    def entry(name, raw, base):
        if not isinstance(raw, dict):
            raise ConfigError(field, f"entry '{name}' must be a mapping with keys a and b")
        unknown = sorted(set(raw) - {"a", "b"})
        if unknown:
            raise ConfigError(field, f"entry '{name}': unknown key(s) {', '.join(unknown)}; "
                                     f"expected a and b")
        a = raw.get("a", base[0])
        b = raw.get("b", base[1])
        if not _finite(a) or a < 0:
            raise ConfigError(field, f"entry '{name}': a must be a finite number >= 0, got {a!r}")
        if not _finite(b) or b <= 0:
            raise ConfigError(field, f"entry '{name}': b must be a finite number > 0, got {b!r}")
        return float(a), float(b)

    default = (DEFAULT_PROBABILISTIC_A, DEFAULT_PROBABILISTIC_B)
    if "default" in params:
        default = entry("default", params["default"], default)
    per_class = {str(cls): entry(cls, raw, default)
                 for cls, raw in sorted(params.items()) if cls != "default"}
    return per_class, default


def _tenant_budgets(budgets: dict[str, float]) -> dict[str, float]:
    for tenant, frac in sorted(budgets.items()):
        if not _finite(frac) or not 0 <= frac <= 1:
            raise ConfigError("tenant_budgets",
                              f"budget of tenant '{tenant}' must be in [0, 1], got {frac!r}")
    return {str(t): float(f) for t, f in budgets.items()}


def build_admission(policy_cfg, slo: SLOPriorities, rng, num_instances: int,
                    max_num_seqs: int) -> AdmissionPolicy:
    """Instantiate ``policy_cfg.admission_policy`` (validating its parameters), wrapped in the
    tenant-budget decorator when budgets are configured."""
    name = policy_cfg.admission_policy
    if name == "always-admit":
        policy: AdmissionPolicy = AlwaysAdmit()
    elif name == "reject-all":
        policy = RejectAll()
    elif name == "token-bucket":
        policy = TokenBucket(
            _positive("token-bucket-capacity", policy_cfg.token_bucket_capacity),
            _positive("token-bucket-refill-rate", policy_cfg.token_bucket_refill_rate))
    elif name == "tier-shed":
        policy = TierShed(slo, policy_cfg.tier_shed_threshold, policy_cfg.tier_shed_min_priority)
    elif name == "gaie-legacy":
        policy = GAIELegacy(slo, *_gaie_thresholds(policy_cfg))
    elif name == "probabilistic":
        qd, kv = _gaie_thresholds(policy_cfg)
        per_class, default = parse_probabilistic_params(policy_cfg.probabilistic_params)
        policy = Probabilistic(slo, rng, qd, kv, per_class, default)
    else:
        raise ConfigError("admission-policy", f"unknown policy '{name}'; choose one of "
                                              f"{', '.join(ADMISSION_POLICIES)}")
    if policy_cfg.tenant_budgets:
        policy = TenantBudget(policy, _tenant_budgets(policy_cfg.tenant_budgets), slo,
                              num_instances, max_num_seqs)
    return policy
