"""The shared-clock cluster loop: arrivals → admission → routing → instances (spec §2.2, §9, §10).

All events, cluster and instance alike, live in one heap keyed by
``(time, source, priority, seq)`` where source 0 is the cluster and ``1 + i`` instance ``i``.
That single key reproduces the reference's two rules at once: cluster events fire before
instance events at the same time, and among instances the lowest index goes first.
"""

from __future__ import annotations

import heapq

from blis.cluster.admission import build_admission
from blis.cluster.routing import build_routing
from blis.cluster.slo import SLOPriorities
from blis.cluster.snapshot import RouterState, Snapshot
from blis.engine.instance import Instance
from blis.engine.scheduler import build_scheduler
from blis.events import EV_ADMISSION, EV_ARRIVAL, EV_ROUTING
from blis.request import COMPLETED
from blis.rng import PartitionedRNG


class ClusterSimulator:
    """Runs one simulation of ``cfg.num_instances`` identical instances over ``requests``."""

    def __init__(self, cfg, deployment, requests: list):
        self.cfg = cfg
        self.deployment = deployment
        self.requests = requests
        pol = cfg.policy
        self.horizon = cfg.horizon
        self.heap: list = []
        self.seq = 0
        self.clock = 0
        self.clock_regressions = 0
        self.slo = SLOPriorities(pol.slo_priorities)
        rngs = PartitionedRNG(cfg.seed)
        self.admission = build_admission(pol, self.slo, rngs.for_subsystem("admission"),
                                         cfg.num_instances, cfg.engine.max_num_seqs)
        self.routing = build_routing(pol, rngs.for_subsystem("router"), deployment.block_size)
        self.admission_latency = pol.admission_latency
        self.routing_latency = pol.routing_latency
        # optional subsystems register handlers for their cluster-event priorities here
        self.handlers: dict = {}
        self.pd = None
        self.fleet = None
        deployments = [deployment] * cfg.num_instances
        if cfg.pd.enabled:
            from blis.fleet.pd import PDCoordinator, pool_deployments
            self.pd = PDCoordinator(self, cfg)
            deployments = pool_deployments(cfg, deployment)
        elif cfg.node_pools:
            deployments = []  # the fleet places the initial instances on nodes
        self.instances = [
            Instance(i, deployments[i], cfg.engine, build_scheduler(pol.scheduler),
                     pol.preemption_policy, self.push, cfg.horizon, self.request_finished, self)
            for i in range(len(deployments))
        ]
        self.route_pool = self.instances  # instances routing may pick
        if self.pd is not None:
            self.handlers.update(self.pd.attach(self.instances))
        n = len(self.instances)
        self.instance_cost = [0.0] * n   # $/hour of each instance's GPUs (node pools only)
        self.in_flight = [0] * n
        self.refresh_interval = pol.snapshot_refresh_interval
        self._signals = [(0, 0, 0.0, 0, 0.0, 0)] * n
        self._signal_time = [0] * n
        self.cache_delay = pol.cache_signal_delay
        self._cache_maps = [{} for _ in range(n)]
        self._cache_time = 0
        self.injected_by_class: dict[str, int] = {}
        self.rejected = 0
        self.routing_rejections = 0
        self.shed_by_tier: dict[str, int] = {}
        self.rejected_by_class: dict[str, int] = {}
        self.routed: dict[str, object] = {}
        self.arrived: list = []
        self.lean = False  # finished requests drop their bulky data (no per-request output)
        self.fold = None  # lean runs: blis.results.metrics.Folder takes finished requests' values
        self.fold_classes: set[str] = set()  # classes of finished routed requests (fold)
        self.n_arrived = 0
        self._arrivals = None  # iterator of a streamed workload (LazyRequests)
        self._arrival_seq = 0
        self._model = cfg.deployment.model.lower()
        if cfg.node_pools or cfg.lifecycle is not None:
            from blis.fleet.lifecycle import Fleet
            self.fleet = Fleet(self, cfg, deployment)
            self.handlers.update(self.fleet.start())

    def add_instance(self, deployment) -> Instance:
        """A new instance (node pools / autoscaler); it takes the next index."""
        pol = self.cfg.policy
        inst = Instance(len(self.instances), deployment, self.cfg.engine,
                        build_scheduler(pol.scheduler), pol.preemption_policy, self.push,
                        self.horizon, self.request_finished, self)
        self.instances.append(inst)
        self.instance_cost.append(0.0)
        self.in_flight.append(0)
        self._signals.append((0, 0, 0.0, 0, 0.0, 0))
        self._signal_time.append(0)
        self._cache_maps.append({})
        return inst

    def push(self, t: int, src: int, prio: int, payload) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, src, prio, self.seq, payload))

    # ---- router view of the instances -----------------------------------------------------
    def snapshot(self, inst) -> Snapshot:
        i = inst.index
        clock = self.clock
        if self.refresh_interval <= 0 or clock - self._signal_time[i] >= self.refresh_interval:
            kv = inst.kv
            self._signals[i] = (len(inst.wait_q), len(inst.running), kv.utilization(),
                                kv.free_block_count, kv.hit_rate(), inst.stats.preemptions)
            self._signal_time[i] = clock
        qd, bsz, util, free, hit, pre = self._signals[i]
        kv = inst.kv
        total = kv.total_blocks
        return Snapshot(
            index=i, id=inst.id, queue_depth=qd, batch_size=bsz, kv_utilization=util,
            free_kv_blocks=free, cache_hit_rate=hit, in_flight_requests=self.in_flight[i],
            preemption_count=pre, total_kv_capacity_tokens=total * kv.block_size,
            kv_tokens_in_use=int(round(util * total)) * kv.block_size,
            max_batch_size=inst.max_num_seqs, gpu_type=inst.deployment.gpu,
            tp=inst.deployment.tp, cost_per_hour=self.instance_cost[i])

    def router_state(self, req, pool: list | None = None) -> RouterState:
        """Snapshots of ``pool`` (default: the routable instances) serving the request's model."""
        self._refresh_cache_signal()
        want = req.model.lower() if req.model else ""
        snaps = [self.snapshot(inst) for inst in (self.route_pool if pool is None else pool)
                 if not want or not self._model or want == self._model]
        return RouterState(snapshots=snaps, clock=self.clock, cached_blocks=self._cached_blocks)

    def _refresh_cache_signal(self) -> None:
        """The delayed prefix-cache view is refreshed at router decisions (§10.2)."""
        if self.cache_delay > 0 and self.clock - self._cache_time >= self.cache_delay:
            self._cache_time = self.clock
            for inst in self.instances:  # from now on: the live map seen through a journal
                inst.kv.start_journal()
                self._cache_maps[inst.index] = None

    def _cached_blocks(self, index: int, req) -> int:
        kv = self.instances[index].kv
        h2b = kv.hash_to_block
        journal = None
        if self.cache_delay > 0:
            if self._cache_maps[index] is None:
                journal = kv.journal
            else:  # no refresh yet
                h2b = self._cache_maps[index]
        n = 0
        prev = b""
        for h in req.block_hashes(self.deployment.block_size):
            if journal and h in journal:
                if not journal[h]:
                    break
            elif h not in h2b and not (kv.reveal(prev) and h in h2b):
                break
            n += 1
            prev = h
        return n

    # ---- bookkeeping callbacks -------------------------------------------------------------
    def request_finished(self, req, tick: int, dropped: bool) -> None:
        idx = int(req.assigned_instance.rsplit("_", 1)[1])
        if self.in_flight[idx] > 0:
            self.in_flight[idx] -= 1
        if self.fleet is not None:
            self.fleet.on_request_done(idx, tick)
        if self.pd is not None and self.pd.on_finished(req, tick, dropped):
            return
        self.admission.on_finished(req)
        if dropped:
            self.routed.pop(req.id, None)
        if self.fold is not None:
            self.fold.take(self.instances[idx].stats, req, dropped, req.state == COMPLETED)
            if not dropped:
                self.routed.pop(req.id, None)
                self.fold_classes.add(req.slo_class or "default")
        if self.lean:
            req.drop_payload()

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        heap = self.heap
        reqs = self.requests
        if getattr(reqs, "in_arrival_order", False):
            # Stream arrivals: the next one is pushed when the previous fires, with the
            # sequence number it would have had if all were pushed up front (same event order).
            self._arrivals = iter(reqs)
            self._arrival_seq = self.seq
            self.seq += len(reqs)
            self._push_next_arrival()
        else:
            for req in reqs:
                self.seq += 1
                heap.append((req.arrival_time, 0, EV_ARRIVAL, self.seq, req))
        heapq.heapify(heap)
        horizon = self.horizon
        instances = self.instances
        for inst in instances:  # their events push nothing another instance's state decides
            inst.commutes = self.pd is None and self.fleet is None
        pop = heapq.heappop
        last = 0
        while heap:
            t, src, prio, _, payload = pop(heap)
            if t > horizon:
                break
            if t < last:
                self.clock_regressions += 1
            if src == 0:
                last = t
                self.clock = t
                self._cluster_event(t, prio, payload)
            elif instances[src - 1].handle(t, prio, payload):
                last = t
                self.clock = t
        for inst in instances:
            inst.finalize()

    def _push_next_arrival(self) -> None:
        req = next(self._arrivals, None)
        if req is not None:
            self._arrival_seq += 1
            heapq.heappush(self.heap, (req.arrival_time, 0, EV_ARRIVAL, self._arrival_seq, req))

    def _cluster_event(self, t: int, prio: int, req) -> None:
        if prio == EV_ARRIVAL:
            if self._arrivals is not None:
                self._push_next_arrival()
            cls = req.slo_class
            self.injected_by_class[cls] = self.injected_by_class.get(cls, 0) + 1
            self.n_arrived += 1
            if not self.lean:
                self.arrived.append(req)
            self.push(t + self.admission_latency, 0, EV_ADMISSION, req)
        elif prio == EV_ADMISSION:
            adm = self.admission
            if adm.reads_state:
                ok, _reason = adm.admit(req, self.router_state(req))
            else:
                self._refresh_cache_signal()
                ok, _reason = adm.admit(req, None)
            if ok:
                self.push(t + self.routing_latency, 0, EV_ROUTING, req)
            else:
                self.rejected += 1
                cls = req.slo_class
                self.rejected_by_class[cls] = self.rejected_by_class.get(cls, 0) + 1
                tier = cls or "standard"
                self.shed_by_tier[tier] = self.shed_by_tier.get(tier, 0) + 1
        elif prio == EV_ROUTING:
            if self.pd is not None:
                self.pd.route(req, t)
                return
            state = self.router_state(req)
            pos = self.routing.route(req, state)
            if pos is None:
                self.routing_rejections += 1
                return
            self.dispatch(req, state.snapshots[pos].index, t)
        else:
            self.handlers[prio](t, req)

    def dispatch(self, req, idx: int, t: int, runs=None) -> None:
        """Hand routed request ``req`` to instance ``idx``; under P/D the instance ``runs`` a
        sub-request of it instead."""
        self.in_flight[idx] += 1
        if self.fleet is not None:
            self.fleet.on_routed(req, idx)
        self.admission.on_routed(req)
        self.routed[req.id] = req
        inst = self.instances[idx]
        if runs is None:
            runs = req
            if t > inst.last_event_time:  # Go advances the instance clock when a request is routed
                inst.last_event_time = t
        runs.priority = self.slo.vllm_priority(runs.slo_class)
        inst.inject(runs, t)
