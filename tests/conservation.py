"""Request conservation (INV-1) checks shared by the feature test modules."""

from blis.config.schema import MAX_INT64


def check_conservation(res):
    """INV-1 per instance and for the cluster; with no horizon, every request is accounted for
    and nothing is left queued or running."""
    sim, c = res.sim, res.cluster
    for m in res.instances + [c]:
        assert m["injected_requests"] == (m["completed_requests"] + m["still_queued"]
                                          + m["still_running"] + m["dropped_unservable"]
                                          + m["timed_out_requests"])
    if res.cfg.horizon >= MAX_INT64:
        assert len(sim.requests) == c["injected_requests"] + sim.rejected + sim.routing_rejections
        assert c["still_queued"] == 0 and c["still_running"] == 0
