"""Instance lifecycle on node pools (spec §13.1–13.2): placement, loading, warm-up, draining.

The fleet decides which instances exist and which are routable (``Active`` or ``WarmingUp``); it
keeps ``routable`` — the list the cluster routes over — in instance order. An instance is created
only once it has GPUs on a Ready node; until then the request to create it waits as pending,
and is placed when a node becomes Ready. Routing only ever sees routable instances, so no
instance serves a request before it has loaded.
"""

from __future__ import annotations

import bisect

from blis.config.schema import LifecycleConfig
from blis.errors import ConfigError
from blis.events import EV_INSTANCE, EV_NODE_READY
from blis.fleet.node_pools import NODE_PROVISIONING, NODE_READY, NodePools, pool_deployment, sample_delay
from blis.request import TIMED_OUT
from blis.rng import PartitionedRNG

SCHEDULING, LOADING, WARMING_UP, ACTIVE, DRAINING, TERMINATED = (
    "Scheduling", "Loading", "WarmingUp", "Active", "Draining", "Terminated")

# lifecycle events carry (kind, instance index)
LOADED, DRAINED = "loaded", "drained"


class Fleet:
    """Lifecycle state of every instance, the node inventory, and (optionally) the autoscaler."""

    def __init__(self, sim, cfg, deployment):
        self.sim = sim
        self.cfg = cfg
        self.lc = cfg.lifecycle or LifecycleConfig()
        rngs = PartitionedRNG(cfg.seed)
        self.loading_rng = rngs.for_subsystem("instance-loading")
        self.autoscaler_rng = rngs.for_subsystem("autoscaler")
        self.nodes = (NodePools(cfg.node_pools, rngs.for_subsystem("node-provisioning"))
                      if cfg.node_pools else None)
        self.gpu = deployment.gpu
        self.tp = deployment.tp
        self.state: list[str] = []
        self.ready_at: list[int] = []       # when the instance became routable (-1: never)
        self.ended_at: list[int] = []       # when it was terminated (-1: still alive)
        self.node_of: list = []
        self.warm_left: list[int] = []
        self.warm_ids: set[str] = set()     # requests whose TTFT gets the warm-up factor
        self.pending: list[tuple[str, int]] = []   # (gpu type, tp) waiting for a Ready node
        self.routable: list = []
        self._deps: dict = {}
        self.alive = 0
        self.peak_instances = 0
        self.placement_failures = 0
        self.drained_dropped = 0
        self.autoscaler = None
        sim.route_pool = self.routable

    def start(self) -> dict:
        """Bring up the initial instances; returns the cluster-event handlers."""
        sim, cfg = self.sim, self.cfg
        handlers = {EV_NODE_READY: self._node_ready, EV_INSTANCE: self._instance_event}
        if self.nodes is None:  # lifecycle without pools: the cluster's instances start ready
            for inst in sim.instances:
                self._track(inst, None)
                self._ready(inst.index, 0)
        else:
            pools = [p for p in cfg.node_pools if p.gpu_type == self.gpu]
            if not pools:
                raise ConfigError("node_pools", f"no pool has GPU type '{self.gpu}', the hardware "
                                                f"the instances run on (--hardware or the model's "
                                                f"default)")
            if all(p.gpus_per_node < self.tp for p in pools):
                raise ConfigError("node_pools", f"tp={self.tp} does not fit on any '{self.gpu}' "
                                                f"node (gpus_per_node too small)")
            for _ in range(cfg.num_instances):
                self._add(self.gpu, self.tp, 0, warm=self.lc.warm_start_initial_instances)
        if cfg.autoscaler is not None:
            from blis.fleet.autoscaler import Autoscaler
            self.autoscaler = Autoscaler(sim, cfg.autoscaler, self, self.autoscaler_rng)
            handlers.update(self.autoscaler.start())
        return handlers

    # ---- instances -----------------------------------------------------------------------
    def _deployment(self, pool, tp: int):
        key = (pool.name, tp)
        dep = self._deps.get(key)
        if dep is None:
            dep = self._deps[key] = pool_deployment(self.cfg, pool, tp)
        return dep

    def _track(self, inst, node) -> None:
        self.state.append(LOADING)
        self.ready_at.append(-1)
        self.ended_at.append(-1)
        self.node_of.append(node)
        self.warm_left.append(self.lc.warm_up_request_count)
        self.alive += 1
        self.peak_instances = max(self.peak_instances, self.alive)
        if self.lc.drain_policy == "IMMEDIATE":
            inst.disable_lazy_decoding()

    def _add(self, gpu: str, tp: int, t: int, warm: bool = False) -> None:
        """Place a new instance now, or leave it pending on a node being provisioned."""
        idx = len(self.sim.instances)
        node = self.nodes.place(idx, gpu, tp)
        if node is not None:
            self._create(idx, node, tp, t, warm)
            return
        waiting = sum(p_tp for p_gpu, p_tp in self.pending if p_gpu == gpu)
        if self.nodes.spare_provisioning(gpu) - waiting < tp:
            got = self.nodes.provision(gpu, t)
            if got is None:
                self.placement_failures += 1  # every pool of this GPU type is at max_nodes
                return
            node, ready = got
            self.sim.push(ready, 0, EV_NODE_READY, node)
        self.pending.append((gpu, tp))

    def _create(self, idx: int, node, tp: int, t: int, warm: bool) -> None:
        inst = self.sim.add_instance(self._deployment(node.pool, tp))
        self._track(inst, node)
        self.sim.instance_cost[idx] = node.pool.cost_per_hour * tp / node.pool.gpus_per_node
        if warm:
            self._ready(idx, t)
            return
        delay = sample_delay(self.lc.loading_delay, self.loading_rng)
        if delay == 0:
            self._ready(idx, t)
        else:
            self.sim.push(t + delay, 0, EV_INSTANCE, (LOADED, idx))

    def _ready(self, idx: int, t: int) -> None:
        self.state[idx] = WARMING_UP if self.warm_left[idx] > 0 else ACTIVE
        self.ready_at[idx] = t
        inst = self.sim.instances[idx]
        pos = bisect.bisect_left([i.index for i in self.routable], idx)
        self.routable.insert(pos, inst)

    def _instance_event(self, t: int, payload) -> None:
        kind, idx = payload
        if kind == LOADED:
            if self.state[idx] == LOADING:
                self._ready(idx, t)
        elif self.state[idx] == DRAINING and self.sim.in_flight[idx] == 0:
            self._terminate(idx, t)

    def _node_ready(self, t: int, node) -> None:
        if node.state != NODE_PROVISIONING:
            return
        node.state = NODE_READY
        waiting, self.pending = self.pending, []
        for gpu, tp in waiting:
            idx = len(self.sim.instances)
            placed = self.nodes.place(idx, gpu, tp)
            if placed is None:
                self.pending.append((gpu, tp))
            else:
                self._create(idx, placed, tp, t, warm=False)
        self.nodes.maybe_release(node, t)

    # ---- hooks called by the cluster -----------------------------------------------------
    def on_routed(self, req, idx: int) -> None:
        """Warm-up: the first N requests routed to a warming instance get the TTFT factor."""
        if self.state[idx] == WARMING_UP:
            self.warm_ids.add(req.id)
            self.warm_left[idx] -= 1
            if self.warm_left[idx] <= 0:
                self.state[idx] = ACTIVE

    def on_request_done(self, idx: int, t: int) -> None:
        """A draining instance whose last request just left (at ``t``, the end of its final
        step) is terminated then, through an event so its GPUs are released in time order."""
        if self.state[idx] == DRAINING and self.sim.in_flight[idx] == 0:
            self.sim.push(t, 0, EV_INSTANCE, (DRAINED, idx))

    # ---- scaling -------------------------------------------------------------------------
    def scale_up(self, gpu: str, tp: int, n: int, t: int) -> int:
        """Add ``n`` instances; returns how many were placed or are waiting for a node."""
        failures = self.placement_failures
        for _ in range(n):
            self._add(gpu, tp, t)
        return n - (self.placement_failures - failures)

    def scale_down(self, gpu: str, tp: int, n: int, t: int) -> int:
        """Cancel pending instances first, then drain Active ones, least in-flight work first
        (newest first on ties), so a drain ends soonest and drops least under IMMEDIATE. At
        least one routable instance always stays (scale-from-zero is not modelled). Returns
        how many instances were removed."""
        done = 0
        for i in range(len(self.pending) - 1, -1, -1):
            if done < n and self.pending[i] == (gpu, tp):
                del self.pending[i]
                done += 1
        spare = len(self.routable) - 1
        in_flight = self.sim.in_flight
        candidates = sorted((inst.index for inst in self.routable
                             if self.state[inst.index] == ACTIVE and inst.deployment.gpu == gpu
                             and inst.deployment.tp == tp), key=lambda i: (in_flight[i], -i))
        victims = candidates[:max(0, min(n - done, spare))]
        for idx in victims:
            self.drain(idx, t)
        return done + len(victims)

    def drain(self, idx: int, t: int) -> None:
        """Stop routing to ``idx``; WAIT finishes its work first, IMMEDIATE drops it."""
        sim = self.sim
        inst = sim.instances[idx]
        self.routable.remove(inst)
        self.state[idx] = DRAINING
        if self.lc.drain_policy == "IMMEDIATE":
            victims = inst.running + inst.wait_q
            inst.running = []
            inst.wait_q.clear()
            stats = inst.stats
            for r in victims:
                inst.kv.release(r)
                r.state = TIMED_OUT  # terminal, so its pending timeout event is discarded
                stats.dropped_unservable += 1
                stats.ttft.pop(r.id, None)
                stats.sched_delay.pop(r.id, None)
                self.drained_dropped += 1
                sim.request_finished(r, t, dropped=True)
        if self.state[idx] == DRAINING and sim.in_flight[idx] == 0:
            self._terminate(idx, t)

    def _terminate(self, idx: int, t: int) -> None:
        self.state[idx] = TERMINATED
        self.ended_at[idx] = t
        self.alive -= 1
        node = self.node_of[idx]
        if node is not None:
            self.nodes.release(node, idx)
            self.nodes.maybe_release(node, t)

    # ---- signals and results -------------------------------------------------------------
    def pending_capacity_tokens(self) -> int:
        """KV capacity on its way: Loading instances plus instances waiting for a node."""
        total = 0
        for inst in self.sim.instances:
            if self.state[inst.index] == LOADING:
                total += inst.kv.total_blocks * inst.kv.block_size
        for gpu, tp in self.pending:
            pool = next(p for p in self.cfg.node_pools if p.gpu_type == gpu)
            dep = self._deployment(pool, tp)
            total += dep.total_kv_blocks * dep.block_size
        return total

    def summary(self, t_end: int) -> dict:
        """Cost and size of the fleet over [0, t_end] (node pools only)."""
        gpu_hours, dollars = self.nodes.cost(t_end)
        out = {"gpu_hours": gpu_hours, "cost_usd": dollars, "peak_instances": self.peak_instances,
               "peak_nodes": self.nodes.peak_nodes, "placement_failures": self.placement_failures,
               "drained_dropped": self.drained_dropped}
        if self.autoscaler is not None:
            out["scale_ups"] = self.autoscaler.scale_ups
            out["scale_downs"] = self.autoscaler.scale_downs
        return out
