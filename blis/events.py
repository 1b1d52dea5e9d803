"""Every event type's same-tick priority, in one table.

All events share one heap of ``(time, source, priority, seq, payload)`` tuples, so at equal time the
order is: cluster events (source 0) before instance events (source = instance index + 1, lowest
index first), then priority (lower first), then push order. The numbers match the Go original's, so
event order, and hence every printed figure, matches it too. Plain ints, not an enum: they are
compared inside the heap on every push and pop.
"""

# ---- cluster events (source 0) ------------------------------------------------------------------
# A node that became ready at t can host an instance before anything else happens at t.
EV_NODE_READY = -2
# An instance that finished loading (or draining) at t changes what routing at t may pick.
EV_INSTANCE = -1
# Every request arriving at t is counted before any of them is admitted.
EV_ARRIVAL = 0
# Admission decides before routing, so a zero admission latency still keeps the pipeline order.
EV_ADMISSION = 1
# Routing (and the injection into an instance) comes last of a request's gateway stages.
EV_ROUTING = 2
# P/D: the prefill sub-request is routed after the parent's own routing decision.
EV_PREFILL_ROUTING = 4
# P/D: a transfer starts after prefill routing at the same tick and before one completes, so the
# fair-share bandwidth counts every transfer active at t.
EV_KV_TRANSFER_STARTED = 5
EV_KV_TRANSFER_COMPLETED = 6
# The autoscaler samples the fleet after every request event of its tick, and acts after sampling.
EV_SCALING_TICK = 8
EV_SCALE_ACTUATION = 9

# ---- instance events (source = instance index + 1) ----------------------------------------------
# A request enqueued at t is visible to the step that runs at t.
EV_QUEUED = 1
# One engine iteration.
EV_STEP = 3
# Client cancellation at the deadline: a completion at the same tick wins.
EV_TIMEOUT = 6

CLUSTER_EVENTS = {"node-ready": EV_NODE_READY, "instance-lifecycle": EV_INSTANCE,
                  "arrival": EV_ARRIVAL, "admission": EV_ADMISSION, "routing": EV_ROUTING,
                  "prefill-routing": EV_PREFILL_ROUTING, "kv-transfer-started": EV_KV_TRANSFER_STARTED,
                  "kv-transfer-completed": EV_KV_TRANSFER_COMPLETED, "scaling-tick": EV_SCALING_TICK,
                  "scale-actuation": EV_SCALE_ACTUATION}
INSTANCE_EVENTS = {"queued": EV_QUEUED, "step": EV_STEP, "timeout": EV_TIMEOUT}
