"""INV-9 oracle knowledge boundary: admission and routing decide from what a real gateway knows.

They may read a request's ``max_output_len`` but never its actual output (``output_len`` or the
output tokens): those are known only to the engine once the tokens are generated.
"""

import pytest
from conftest import MODEL

import blis.cluster.simulator as cluster_mod
from blis.config.options import build_config
from blis.simulation import run_simulation

FORBIDDEN = frozenset({"output_len", "_output_tokens", "output_tokens"})


class OracleGuard:
    """Stands in for a request inside admission and routing; reading its output fails the test."""

    __slots__ = ("_req",)

    def __init__(self, req):
        object.__setattr__(self, "_req", req)

    def __getattr__(self, name):
        if name in FORBIDDEN:
            raise AssertionError(f"INV-9: {name} read outside the engine")
        return getattr(object.__getattribute__(self, "_req"), name)

    def __setattr__(self, name, value):
        setattr(object.__getattribute__(self, "_req"), name, value)


@pytest.fixture
def guarded(monkeypatch):
    original = cluster_mod.ClusterSimulator.__init__
    calls = {"admit": 0, "route": 0}

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        admit, route = self.admission.admit, self.routing.route

        def guarded_admit(req, state):
            calls["admit"] += 1
            return admit(OracleGuard(req), state)

        def guarded_route(req, state):
            calls["route"] += 1
            return route(OracleGuard(req), state)

        self.admission.admit = guarded_admit
        self.routing.route = guarded_route

    monkeypatch.setattr(cluster_mod.ClusterSimulator, "__init__", init)
    return calls


ALL_SCORERS = ("queue-depth:1,kv-utilization:1,load-balance:1,active-requests:1,running-requests:1,"
               "load-aware:1,vllm-dp:1,precise-prefix-cache:1,prefix-affinity:1,no-hit-lru:1,"
               "lora-affinity:1")
ROUTINGS = [{"routing_policy": p} for p in ("round-robin", "least-loaded", "always-busiest")] + [
    {"routing_policy": "weighted", "routing_scorers": ALL_SCORERS}]


@pytest.mark.parametrize("routing", ROUTINGS, ids=lambda r: r["routing_policy"])
@pytest.mark.parametrize("admission", ["always-admit", "token-bucket", "gaie-legacy", "probabilistic",
                                       "tier-shed"])
def test_admission_and_routing_never_read_the_actual_output(guarded, routing, admission):
    cfg = build_config({"model": MODEL, "num_instances": 2, "rate": 400, "num_requests": 60,
                        "prompt_tokens": 300, "output_tokens": 40, "prefix_tokens": 64,
                        "admission_policy": admission, "seed": 3, **routing})
    res = run_simulation(cfg)
    assert guarded["admit"] == 60
    assert guarded["route"] > 0
    assert res.cluster["completed_requests"] > 0
