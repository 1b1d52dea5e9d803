"""Prefill/decode disaggregation (spec §12): pools, deciders, KV transfer and metric projection.

A disaggregated request is split into a prefill sub-request (``<id>_prefill``: the input, no
output tokens) that runs on a prefill-pool instance, and a decode sub-request (``<id>_decode``)
that starts on the decode pod chosen up front once the prefill's KV has been transferred. The
sub-requests are ordinary requests to the instances; this module owns the parent bookkeeping
and, after the run, folds the sub-requests' records back into one record per parent.

Deliberate choice: the transfer starts when the prefill step *ends* (the reference starts it at
that step's start time, one step early), so parent TTFT includes the whole prefill.
"""

from __future__ import annotations

import math
from dataclasses import replace

from blis.cluster.routing import build_routing
from blis.config.deployment import resolve_deployment
from blis.config.kv_capacity import kv_bytes_per_token
from blis.engine.instance import InstanceStats, merge_stats
from blis.errors import ConfigError
from blis.events import EV_KV_TRANSFER_COMPLETED, EV_KV_TRANSFER_STARTED, EV_PREFILL_ROUTING
from blis.request import COMPLETED, QUEUED, TIMED_OUT, WAITING_FOR_REMOTE_KVS, Request
from blis.results.metrics import distribution
from blis.rng import PartitionedRNG

ROLE_NONE, ROLE_PREFILL, ROLE_DECODE, ROLE_SHARED = "", "prefill", "decode", "prefill-decode"

# parent lifecycle
PREFILL, TRANSFER, DECODE, DONE, DROPPED, REJECTED = range(6)


# ---- deciders ------------------------------------------------------------------------------

class Decider:
    """Decides, after decode-first routing picked ``state.snapshots[pos]``, whether to split."""

    name = ""

    def __init__(self, threshold: int = 0, block_size: int = 16):
        self.threshold = threshold
        self.block_size = block_size

    def disaggregate(self, req, state, pos: int) -> bool:
        raise NotImplementedError


class NeverDecider(Decider):
    name = "never"

    def disaggregate(self, req, state, pos):
        return False


class AlwaysDecider(Decider):
    name = "always"

    def disaggregate(self, req, state, pos):
        return True


class PrefixThresholdDecider(Decider):
    """Split only when the chosen decode pod would have to compute more than ``threshold``
    input tokens itself: a prefix it already caches makes local prefill cheap."""

    name = "prefix-threshold"

    def disaggregate(self, req, state, pos):
        if req.input_len == 0:
            return False
        query = state.cached_blocks
        cached = query(state.snapshots[pos].index, req) if query is not None else 0
        return req.input_len - cached * self.block_size > self.threshold


DECIDERS: dict[str, type[Decider]] = {cls.name: cls for cls in (
    NeverDecider, AlwaysDecider, PrefixThresholdDecider)}


# ---- pools ---------------------------------------------------------------------------------

def instance_roles(pd_cfg, num_instances: int) -> list[str]:
    """Roles by index: prefill, then decode, then shared; the rest get no role (INV-PD-5)."""
    roles = ([ROLE_PREFILL] * pd_cfg.prefill_instances + [ROLE_DECODE] * pd_cfg.decode_instances
             + [ROLE_SHARED] * pd_cfg.prefill_decode_instances)
    return roles + [ROLE_NONE] * (num_instances - len(roles))


def pool_deployments(cfg, base) -> list:
    """Per-instance resolved deployments: the prefill pool uses the prefill overrides, decode and
    shared instances the decode overrides; the global config is never mutated (INV-P2-1)."""
    pd = cfg.pd
    by_role = {ROLE_NONE: base}
    for role, tp, hw, field in ((ROLE_PREFILL, pd.prefill_tp, pd.prefill_hardware, "prefill"),
                                (ROLE_DECODE, pd.decode_tp, pd.decode_hardware, "decode")):
        if not tp and not hw:
            by_role[role] = base
            continue
        dep = replace(cfg.deployment, tp=tp or cfg.deployment.tp,
                      hardware=hw or cfg.deployment.hardware)
        try:
            by_role[role] = resolve_deployment(dep, cfg.engine)
        except ConfigError as exc:
            name = f"{field}-{exc.field}" if exc.field in ("tp", "hardware") else exc.field
            raise ConfigError(name, f"{field} pool: {exc.message}") from None
    by_role[ROLE_SHARED] = by_role[ROLE_DECODE]
    return [by_role[r] for r in instance_roles(pd, cfg.num_instances)]


def sub_request(req, role: str, output_tokens) -> Request:
    """``<id>_<role>``: the same prompt, arrival, deadline and metadata as ``req``, sharing its
    prefix hashes, with the given output tokens (none for the prefill half)."""
    sub = Request(f"{req.id}_{role}", req.input_tokens, output_tokens, req.arrival_time,
                  max_output_len=req.max_output_len, deadline=req.deadline,
                  slo_class=req.slo_class, tenant_id=req.tenant_id, model=req.model,
                  client_id=req.client_id, prefix_group=req.prefix_group,
                  prefix_length=req.prefix_length, session_id=req.session_id,
                  round_index=req.round_index)
    sub._block_hashes = req._block_hashes
    return sub


class Parent:
    """One disaggregated request: the original, its two sub-requests and the phase timestamps."""

    __slots__ = ("req", "prefill", "decode", "prefill_idx", "decode_idx", "state",
                 "prefill_enqueue", "prefill_complete", "transfer_start", "transfer_complete",
                 "decode_enqueue", "completion_time")

    def __init__(self, req, decode_idx: int):
        self.req = req
        self.decode_idx = decode_idx
        self.prefill_idx = -1
        self.decode = None
        self.state = PREFILL
        self.prefill_enqueue = self.prefill_complete = -1
        self.transfer_start = self.transfer_complete = -1
        self.decode_enqueue = self.completion_time = -1
        sub = sub_request(req, "prefill", req.input_tokens[:0])
        self.prefill = sub


class PDCoordinator:
    """Owns the pools, the decider and every parent; the cluster calls in at routing, on
    sub-request completion and for the three P/D cluster events."""

    def __init__(self, sim, cfg):
        self.sim = sim
        pd = cfg.pd
        self.roles = instance_roles(pd, cfg.num_instances)
        self.decider = DECIDERS[pd.decider](pd.prefix_threshold, cfg.engine.block_size)
        # the prefill pool gets its own policy object (same config, own RNG stream): sharing the
        # decode router's state would, e.g., make round-robin alternate between the two pools
        # and pin every request to one pod of each
        self.prefill_routing = build_routing(
            cfg.policy, PartitionedRNG(cfg.seed).for_subsystem("router-prefill"),
            cfg.engine.block_size)
        self.bandwidth = pd.transfer_bandwidth_gbps * 1000.0    # GB/s -> bytes/µs
        self.base_latency_us = pd.transfer_base_latency_ms * 1000.0
        self.contention = pd.transfer_contention
        self.block_size = cfg.engine.block_size
        self.parents: list[Parent] = []
        self.subs: dict[str, Parent] = {}
        self.transfers_initiated = 0
        self.transfers_completed = 0
        self.dropped_at_decode_kv = 0
        self.active_transfers = 0
        self.peak_transfers = 0
        self.depth_samples = 0
        self.depth_sum = 0
        self.prefill_pool: list = []
        self.decode_pool: list = []

    def attach(self, instances: list) -> dict:
        """Pools from the roles; returns the cluster-event handlers keyed by priority."""
        self.prefill_pool = [inst for inst, r in zip(instances, self.roles)
                             if r in (ROLE_PREFILL, ROLE_SHARED)]
        self.decode_pool = [inst for inst, r in zip(instances, self.roles)
                            if r in (ROLE_DECODE, ROLE_SHARED)]
        return {EV_PREFILL_ROUTING: self._prefill_routing,
                EV_KV_TRANSFER_STARTED: self._transfer_started,
                EV_KV_TRANSFER_COMPLETED: self._transfer_completed}

    # ---- routing -------------------------------------------------------------------------
    def route(self, req, t: int) -> None:
        """Decode-first routing (§12.2): pick the decode pod, then ask the decider."""
        sim = self.sim
        state = sim.router_state(req, self.decode_pool)
        pos = sim.routing.route(req, state)
        if pos is None:
            sim.routing_rejections += 1
            return
        idx = state.snapshots[pos].index
        if not self.decider.disaggregate(req, state, pos):
            sim.dispatch(req, idx, t)
            return
        parent = Parent(req, idx)
        self.parents.append(parent)
        self.subs[parent.prefill.id] = parent
        sim.push(t + sim.routing_latency, 0, EV_PREFILL_ROUTING, parent)

    def _prefill_routing(self, t: int, parent: Parent) -> None:
        sim = self.sim
        sub = parent.prefill
        state = sim.router_state(sub, self.prefill_pool)
        pos = self.prefill_routing.route(sub, state)
        if pos is None:
            sim.routing_rejections += 1
            parent.state = REJECTED
            return
        idx = state.snapshots[pos].index
        parent.prefill_idx = idx
        parent.prefill_enqueue = t
        req = parent.req
        req.assigned_instance = sim.instances[parent.decode_idx].id
        sim.dispatch(req, idx, t, runs=sub)

    # ---- sub-request completion ----------------------------------------------------------
    def on_finished(self, req, tick: int, dropped: bool) -> bool:
        """Handles a finished sub-request (True) or leaves a whole request to the cluster."""
        parent = self.subs.get(req.id)
        if parent is None:
            return False
        if req is parent.prefill:
            if dropped:
                self._end(parent, DROPPED)
            elif req.state == COMPLETED:
                parent.state = TRANSFER
                parent.prefill_complete = tick
                self.sim.push(tick, 0, EV_KV_TRANSFER_STARTED, parent)
            else:
                parent.req.state = TIMED_OUT
                self._end(parent, DONE)
            return True
        parent.req.state = req.state
        if req.state == COMPLETED:
            parent.req.length_capped = req.length_capped
            parent.completion_time = tick + self.sim.instances[parent.decode_idx].post_decode_overhead
        self._end(parent, DONE)
        return True

    def _end(self, parent: Parent, state: int) -> None:
        parent.state = state
        sim = self.sim
        sim.admission.on_finished(parent.req)
        if state == DROPPED:
            sim.routed.pop(parent.req.id, None)

    # ---- KV transfer ---------------------------------------------------------------------
    def _transfer_started(self, t: int, parent: Parent) -> None:
        """Reserve the decode pod's KV for the whole input, then time the transfer."""
        parent.transfer_start = t
        req = parent.req
        inst = self.sim.instances[parent.decode_idx]
        sub = sub_request(req, "decode", req.output_tokens)
        sub.is_decode_sub_request = True
        sub.state = WAITING_FOR_REMOTE_KVS
        if not inst.kv.allocate(sub, 0, sub.input_len, None):
            self.dropped_at_decode_kv += 1
            self._end(parent, DROPPED)
            return
        sub.progress_index = sub.input_len
        sub.computed_tokens = sub.input_len
        parent.decode = sub
        self.subs[sub.id] = parent
        self.transfers_initiated += 1
        bw = self.bandwidth
        if self.contention:
            self.active_transfers += 1
            if self.active_transfers > self.peak_transfers:
                self.peak_transfers = self.active_transfers
            self.depth_samples += 1
            self.depth_sum += self.active_transfers
            bw /= self.active_transfers
        prefill_dep = self.sim.instances[parent.prefill_idx].deployment
        blocks = -(-req.input_len // self.block_size)
        nbytes = blocks * self.block_size * kv_bytes_per_token(prefill_dep.model_config,
                                                               prefill_dep.tp)
        duration = max(1, math.ceil(self.base_latency_us + nbytes / bw))
        self.sim.push(t + duration, 0, EV_KV_TRANSFER_COMPLETED, parent)

    def _transfer_completed(self, t: int, parent: Parent) -> None:
        self.transfers_completed += 1
        if self.contention:
            self.active_transfers -= 1
        parent.transfer_complete = t
        parent.decode_enqueue = t
        parent.state = DECODE
        sim = self.sim
        sub = parent.decode
        sub.state = QUEUED
        sub.priority = sim.slo.vllm_priority(sub.slo_class)
        idx = parent.decode_idx
        sub.assigned_instance = sim.instances[idx].id
        sim.in_flight[idx] += 1
        sim.instances[idx].enqueue_decode_sub_request(sub, t)

    # ---- after the run -------------------------------------------------------------------
    def project(self, instances: list) -> tuple[InstanceStats, int]:
        """Cluster-level stats with per-request maps keyed by parent id (INV-PD-6), completed
        prefill sub-requests removed, decode-KV drops counted as unservable; plus the number of
        requests still between prefill and decode (reported as still running)."""
        out = merge_stats(instances)
        ttft, e2e, itl, sched = out.ttft, out.e2e, out.itl_mean, out.sched_delay
        in_transfer = 0
        for p in self.parents:
            if p.prefill_idx < 0:
                continue
            pid = p.req.id
            pre = p.prefill.id
            if p.prefill.state == COMPLETED:
                out.completed -= 1
            if p.state == TRANSFER:
                in_transfer += 1
            pre_ttft = ttft.pop(pre, None)
            e2e.pop(pre, None)
            itl.pop(pre, None)
            pre_sd = sched.pop(pre, None)
            if pre_sd is not None:
                sched[pid] = pre_sd
            dec = p.decode.id if p.decode is not None else None
            dec_ttft = ttft.pop(dec, None)
            dec_e2e = e2e.pop(dec, None)
            dec_itl = itl.pop(dec, None)
            dec_sd = sched.pop(dec, None)
            first = None
            if dec_ttft is not None:            # preempted on the decode pod and re-prefilled
                first = dec_ttft
            elif dec_sd is not None and p.decode.itl:
                first = dec_sd + p.decode.itl[0]
            elif pre_ttft is not None:
                first = pre_ttft
            if first is not None:
                ttft[pid] = first
            if dec_e2e is not None:
                if dec_ttft is not None:
                    total = dec_e2e
                elif dec_sd is not None:
                    total = dec_sd + dec_e2e
                else:
                    total = p.completion_time - p.req.arrival_time
                e2e[pid] = total
                itl[pid] = dec_itl
                p.req.completion_time = p.req.arrival_time + total
        out.dropped_unservable += self.dropped_at_decode_kv
        return out, in_transfer

    def summary(self, ttft: dict, instances: list, duration_s: float) -> dict:
        """The ``=== PD Metrics ===`` numbers (§12.4); TTFT/transfer distributions in µs."""
        pre_done = sum(inst.stats.completed for inst, r in zip(instances, self.roles)
                       if r in (ROLE_PREFILL, ROLE_SHARED))
        dec_done = sum(inst.stats.completed for inst, r in zip(instances, self.roles)
                       if r in (ROLE_DECODE, ROLE_SHARED))
        pre_rps = pre_done / duration_s if duration_s > 0 else 0.0
        dec_rps = dec_done / duration_s if duration_s > 0 else 0.0
        hi, lo = max(pre_rps, dec_rps), min(pre_rps, dec_rps)
        imbalance = 1.0 if hi == 0 else (math.inf if lo <= 0 else hi / lo)
        parents = sorted(self.parents, key=lambda p: p.req.id)
        ttfts = [ttft[p.req.id] for p in parents if ttft.get(p.req.id, 0) > 0]
        transfers = [p.transfer_complete - p.transfer_start for p in parents
                     if p.transfer_start >= 0 and p.transfer_complete >= p.transfer_start]
        out = {
            "disaggregated_requests": self.transfers_completed,
            "dropped_at_decode_kv": self.dropped_at_decode_kv,
            "transfers_initiated": self.transfers_initiated,
            "prefill_throughput": pre_rps, "decode_throughput": dec_rps,
            "load_imbalance_ratio": imbalance,
            "parent_ttft_us": distribution(ttfts), "kv_transfer_us": distribution(transfers),
        }
        if self.contention:
            out["peak_concurrent_transfers"] = self.peak_transfers
            out["mean_transfer_queue_depth"] = (self.depth_sum / self.depth_samples
                                                if self.depth_samples else 0.0)
        return out


def pd_lines(summary: dict) -> list[str]:
    """stdout section; ``inf`` marks one idle pool."""
    ratio = summary["load_imbalance_ratio"]
    lines = ["=== PD Metrics ===",
             f"Disaggregated Requests: {summary['disaggregated_requests']}",
             f"Dropped at Decode KV: {summary['dropped_at_decode_kv']}",
             f"Prefill Throughput: {summary['prefill_throughput']:.4f} sub-req/s",
             f"Decode Throughput: {summary['decode_throughput']:.4f} sub-req/s",
             "Load Imbalance Ratio: " + ("inf (one pool idle)" if math.isinf(ratio)
                                         else f"{ratio:.4f}")]
    for label, key in (("Parent TTFT", "parent_ttft_us"), ("KV Transfer Duration", "kv_transfer_us")):
        d = summary[key]
        if d["count"]:
            lines.append(f"{label} (μs): mean={d['mean']:.1f} p50={d['p50']:.1f} "
                         f"p95={d['p95']:.1f} p99={d['p99']:.1f}")
    if "peak_concurrent_transfers" in summary:
        lines.append(f"Peak Concurrent Transfers: {summary['peak_concurrent_transfers']}")
        lines.append(f"Mean Transfer Queue Depth: {summary['mean_transfer_queue_depth']:.4f}")
    return lines
