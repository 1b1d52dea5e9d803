"""One simulation run end to end: resolve the deployment, build the workload, run the cluster,
and package the results for stdout, files and the search layer."""

from __future__ import annotations

import bisect
import gc
import math
from dataclasses import dataclass, field

import numpy as np

from blis.cluster.simulator import ClusterSimulator
from blis.config.deployment import resolve_deployment
from blis.engine.instance import merge_stats
from blis.fleet.pd import pd_lines
from blis.request import COMPLETED
from blis.results.jsonfmt import dumps
from blis.results.metrics import Folder, distribution, goodput, jain_fairness, metrics_output
from blis.workload import generate_requests


def _cls(c: str) -> str:
    return c or "default"


@dataclass
class SimResult:
    cfg: object
    deployment: object
    sim: ClusterSimulator
    instances: list = field(default_factory=list)
    cluster: dict = field(default_factory=dict)
    per_class: dict = field(default_factory=dict)
    duration_s: float = 0.0
    pd: dict | None = None              # P/D summary (§12.4) when pools are configured
    fleet: dict | None = None           # cost and size of the fleet when node pools are configured
    _req_stats: object = None

    @property
    def req_stats(self):
        """Per-request maps (ttft, e2e, itl_mean, sched_delay) over the whole cluster, keyed by
        the user's request ids (P/D sub-requests already folded into their parents)."""
        if self._req_stats is None:
            self._req_stats = merge_stats(self.sim.instances)
        return self._req_stats

    # ---- views -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        sim = self.sim
        dep = self.deployment
        out = {
            "cluster": self.cluster,
            "instances": self.instances,
            "num_requests": len(sim.requests),
            "rejected_requests": sim.rejected,
            "routing_rejections": sim.routing_rejections,
            "shed_by_tier": dict(sorted(sim.shed_by_tier.items())),
            "per_class": self.per_class,
            "deployment": {
                "model": self.cfg.deployment.model, "hardware": dep.gpu, "tp": dep.tp,
                "num_instances": self.cfg.num_instances, "total_kv_blocks": dep.total_kv_blocks,
                "max_model_len": dep.max_model_len,
            },
        }
        if self.fleet is not None:
            out["deployment"].update(self.fleet)
        if self.pd is not None:
            out["pd"] = {k: (None if isinstance(v, float) and math.isinf(v) else v)
                         for k, v in self.pd.items()}
        return out

    def request_rows(self) -> list[dict]:
        """Per-request records (``requests`` array of the metrics file), sorted by arrival."""
        rows = []
        s = self.req_stats
        for req in sorted(self.sim.routed.values(), key=lambda r: (r.arrival_time, r.id)):
            row = {"arrived_at": req.arrival_time / 1e6, "requestID": req.id,
                   "num_prefill_tokens": req.input_len, "num_decode_tokens": req.output_len,
                   "ttft_ms": s.ttft.get(req.id, 0) / 1000.0,
                   "itl_ms": s.itl_mean.get(req.id, 0.0) / 1000.0,
                   "e2e_ms": s.e2e.get(req.id, 0) / 1000.0,
                   "scheduling_delay_ms": s.sched_delay.get(req.id, 0) / 1000.0}
            for key, val in (("slo_class", req.slo_class), ("tenant_id", req.tenant_id),
                             ("handled_by", req.assigned_instance), ("model", req.model),
                             ("adapter", req.adapter), ("length_capped", req.length_capped),
                             ("session_id", req.session_id)):
                if val:
                    row[key] = val
            row["round_index"] = req.round_index
            rows.append(row)
        return rows

    def render_stdout(self) -> str:
        """The ``blis run`` stdout layout (§15.1): per-instance JSON, cluster JSON, sections."""
        out = []
        if len(self.instances) > 1:
            for m in self.instances:
                out.append("=== Simulation Metrics ===")
                out.append(dumps(m))
        out.append("=== Simulation Metrics ===")
        out.append(dumps(self.cluster))
        out.extend(self._anomaly_lines())
        out.extend(self._kv_lines())
        out.extend(self._per_slo_lines())
        out.extend(self._tenant_lines())
        if self.pd is not None and self.sim.pd.parents:
            out.extend(pd_lines(self.pd))
        return "\n".join(out) + "\n"

    def _anomaly_lines(self) -> list[str]:
        sim = self.sim
        c = self.cluster
        hol = self.hol_blocking_events()
        inv = self.priority_inversions()
        vals = [inv, hol, sim.rejected, sim.routing_rejections, c["dropped_unservable"],
                c["length_capped_requests"], c["timed_out_requests"]]
        if not any(vals):
            return []
        lines = ["=== Anomaly Counters ==="]
        if inv is not None:
            lines.append(f"Priority Inversions: {inv}")
        lines += [f"HOL Blocking Events: {hol}",
                 f"Rejected Requests (Admission): {sim.rejected}"]
        for cls in sorted(sim.shed_by_tier):
            lines.append(f"  Shed ({cls}): {sim.shed_by_tier[cls]}")
        lines += [f"Rejected Requests (Routing): {sim.routing_rejections}",
                  f"Dropped Unservable: {c['dropped_unservable']}",
                  f"Timed Out Requests: {c['timed_out_requests']}",
                  f"Length-Capped Requests: {c['length_capped_requests']}"]
        return lines

    def priority_inversions(self) -> int | None:
        """Under priority-fcfs only (else None): per instance and SLO class, pairs of requests
        i before j (by arrival) with e2e_i > 2 × e2e_j (spec §15.3), counted in O(n log n)."""
        if self.cfg.policy.scheduler != "priority-fcfs":
            return None
        e2e = self.req_stats.e2e
        rows = [(r.assigned_instance, _cls(r.slo_class), r.arrival_time, r.id, e2e[r.id])
                for r in self.sim.routed.values() if r.id in e2e]
        if self.sim.fold is not None:
            rows += self.sim.fold.e2e_rows
        groups: dict[tuple, list] = {}
        for inst, cls, arrival, rid, v in rows:
            groups.setdefault((inst, cls), []).append((arrival, rid, v))
        total = 0
        for rows in groups.values():
            rows.sort()
            later: list = []  # e2e of requests after the current one, kept sorted
            for _, _, v in reversed(rows):
                total += bisect.bisect_left(later, v / 2)
                bisect.insort(later, v)
        return total

    def hol_blocking_events(self) -> int:
        if len(self.sim.instances) < 2:
            return 0
        avgs = []
        for inst in self.sim.instances:
            s = inst.stats
            avgs.append(s.queue_len_sum / s.queue_len_n if s.queue_len_n else 0.0)
        mean = sum(avgs) / len(avgs)
        if mean <= 0:
            return 0
        return sum(1 for a in avgs if a > 2 * mean)

    def cache_hit_rate(self) -> float:
        insts = self.sim.instances
        return sum(i.kv.hit_rate() for i in insts) / len(insts)

    def _kv_lines(self) -> list[str]:
        c = self.cluster
        pre_rate = c["preemption_count"] / c["completed_requests"] if c["completed_requests"] else 0.0
        hit = self.cache_hit_rate()
        thrash = self.kv_thrashing_rate()
        if pre_rate == 0 and hit == 0 and thrash == 0:
            return []
        return ["=== KV Cache Metrics ===", f"Preemption Rate: {pre_rate:.4f}",
                f"Cache Hit Rate: {hit:.4f}", f"KV Thrashing Rate: {thrash:.4f}"]

    def kv_thrashing_rate(self) -> float:
        """Mean over instances of CPU-tier evictions per mirrored block (0 without a CPU tier)."""
        insts = self.sim.instances
        if not insts:
            return 0.0
        return sum(i.kv.thrashing_rate() for i in insts if i.kv_tiered) / len(insts)

    def _per_slo_lines(self) -> list[str]:
        classes = sorted({_cls(r.slo_class) for r in self.sim.routed.values()}
                         | self.sim.fold_classes)
        if len(classes) < 2 and not (classes and self.cfg.slo_targets):
            return []
        lines = ["=== Per-SLO Metrics ==="]
        raw = self._raw_by_class()
        for cls in classes:
            lines.append(f"  {cls}:")
            for label, vals in zip(("TTFT:", "ITL: ", "E2E: "), raw.get(cls, ([], [], []))):
                d = distribution(vals)
                lines.append(f"    {label} mean={d['mean'] / 1000:.2f} ms p99={d['p99'] / 1000:.2f} ms "
                             f"(n={d['count']})")
        return lines

    def _tenant_lines(self) -> list[str]:
        fold = self.sim.fold
        tokens: dict[str, int] = dict(fold.tenant_tokens) if fold is not None else {}
        counts: dict[str, int] = dict(fold.tenant_counts) if fold is not None else {}
        for r in self.sim.routed.values():
            if r.state == COMPLETED and r.tenant_id:
                tokens[r.tenant_id] = tokens.get(r.tenant_id, 0) + r.output_len
                counts[r.tenant_id] = counts.get(r.tenant_id, 0) + 1
        if not tokens:
            return []
        lines = ["=== Per-Tenant Metrics ==="]
        for t in sorted(tokens):
            lines.append(f"  {t}: requests={counts[t]}, tokens={tokens[t]}")
        lines.append(f"  Jain Fairness Index: {jain_fairness([tokens[t] for t in sorted(tokens)]):.4f}")
        return lines

    def injected_by_class(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cls, n in self.sim.injected_by_class.items():
            out[_cls(cls)] = out.get(_cls(cls), 0) + n
        return out

    def completed_rows_by_class(self) -> dict[str, list]:
        """class -> [(ttft_ms, itl_ms, e2e_ms)] of completed requests, for goodput checks."""
        s = self.req_stats
        rows: dict[str, list] = {}
        for rid in sorted(self.sim.routed):
            r = self.sim.routed[rid]
            if rid in s.e2e:
                rows.setdefault(_cls(r.slo_class), []).append(
                    (s.ttft.get(rid, 0) / 1000.0, s.itl_mean[rid] / 1000.0, s.e2e[rid] / 1000.0))
        fold = self.sim.fold
        if fold is not None:  # completed requests were all folded: nothing left in ``rows``
            assert not rows
            return {cls: c.rows() for cls, c in fold.by_class.items()}
        return rows

    def _raw_by_class(self) -> dict:
        """class -> (TTFT µs list, per-request ITL µs list, E2E µs list), in request-id order."""
        s = self.req_stats
        out: dict[str, tuple] = {}
        for rid in sorted(self.sim.routed):
            r = self.sim.routed[rid]
            ttft, itl, e2e = out.setdefault(_cls(r.slo_class), ([], [], []))
            if rid in s.ttft:
                ttft.append(s.ttft[rid])
            if rid in s.e2e:
                e2e.append(s.e2e[rid])
                itl.append(s.itl_mean[rid])
        fold = self.sim.fold
        if fold is not None:
            for cls, c in fold.by_class.items():
                ttft, itl, e2e = out.get(cls, ([], [], []))
                out[cls] = tuple(np.concatenate([np.asarray(a, dtype=np.float64),
                                                 np.asarray(b, dtype=np.float64)])
                                 for a, b in ((c.ttft, ttft), (c.itl_mean, itl), (c.e2e, e2e)))
        return out


def _per_class_summary(res: SimResult) -> dict:
    sim = res.sim
    raw = res._raw_by_class()
    injected = res.injected_by_class()
    rejected = {_cls(c): n for c, n in sim.rejected_by_class.items()}
    targets = res.cfg.slo_targets
    by_class_rows = res.completed_rows_by_class()
    out = {}
    for cls in sorted(injected):
        ttft, itl, e2e = raw.get(cls, ([], [], []))
        dt, de = distribution(ttft), distribution(e2e)
        di = distribution(itl)
        tgt = targets.get(cls)
        if tgt:
            overall, _ = goodput({cls: by_class_rows.get(cls, [])}, {cls: injected[cls]},
                                 {cls: tgt}, res.duration_s)
        else:
            overall = {"slo_attainment": 0.0, "goodput_rps": 0.0}
        out[cls] = {
            "injected": injected[cls], "completed": len(e2e), "rejected": rejected.get(cls, 0),
            "ttft_mean_ms": dt["mean"] / 1000.0, "ttft_p90_ms": dt["p90"] / 1000.0,
            "ttft_p99_ms": dt["p99"] / 1000.0, "itl_mean_ms": di["mean"] / 1000.0,
            "e2e_mean_ms": de["mean"] / 1000.0, "e2e_p90_ms": de["p90"] / 1000.0,
            "e2e_p99_ms": de["p99"] / 1000.0,
            "slo_attainment": overall["slo_attainment"], "goodput_rps": overall["goodput_rps"],
        }
    return out


_runs_in_process = 0  # run_simulation calls so far in this process (GC handling below)


def run_simulation(cfg, requests: list | None = None, keep_requests: bool = True) -> SimResult:
    """Simulate ``cfg``; ``requests`` (e.g. from a replayed trace) replaces the generated workload.

    ``keep_requests=False`` (nothing will read per-request records: no request rows, no trace)
    draws token ids lazily and lets finished requests drop tokens, ITL lists and prefix hashes.
    """
    deployment = resolve_deployment(cfg.deployment, cfg.engine)
    lean = not keep_requests and not cfg.pd.enabled
    if requests is None:
        requests = generate_requests(cfg.workload, cfg.max_requests, cfg.horizon,
                                     cfg.timeout_override_us, lazy_tokens=lean,
                                     lazy_requests=lean)
    sim = ClusterSimulator(cfg, deployment, requests)
    sim.lean = lean
    if lean and sim.fleet is None and (getattr(requests, "in_arrival_order", False)
                                       or len({r.id for r in requests}) == len(requests)):
        # Summaries from values folded as requests finish, not from id-keyed maps (P/D
        # projection and warm-up TTFT factors need the maps; duplicate ids would merge).
        sim.fold = Folder()
        if cfg.policy.scheduler == "priority-fcfs":
            sim.fold.e2e_rows = []
    # The workload and the cluster live for the whole run: keep the cyclic GC from rescanning
    # them at every collection (about a fifth of a 100k-request run otherwise). Collect first:
    # freeze() would otherwise also pin the garbage of earlier runs in this process, which
    # then never gets collected (a long-lived worker grew ~24 MB per trial). The first run in
    # a process has no earlier run's garbage (at most start-up's, pinned once), so a one-shot
    # `blis run` skips the 20-140 ms full collection.
    global _runs_in_process
    if _runs_in_process:
        gc.collect()
    _runs_in_process += 1
    gc.freeze()
    try:
        sim.run()
    finally:
        gc.unfreeze()
    res = SimResult(cfg=cfg, deployment=deployment, sim=sim)
    horizon = cfg.horizon
    ended = []
    for inst in sim.instances:
        end = min(inst.last_event_time, horizon)
        ended.append(end)
        res.instances.append(metrics_output(inst.id, [inst.stats], len(inst.wait_q),
                                            len(inst.running), end))
    cluster_end = max(ended) if ended else 0
    res.duration_s = cluster_end / 1e6
    queued = sum(len(i.wait_q) for i in sim.instances)
    running = sum(len(i.running) for i in sim.instances)
    fleet = sim.fleet
    if fleet is not None and fleet.warm_ids and fleet.lc.warm_up_ttft_factor != 1.0:
        warmed = merge_stats(sim.instances)
        factor = fleet.lc.warm_up_ttft_factor
        for rid in fleet.warm_ids:
            if rid in warmed.ttft:
                warmed.ttft[rid] *= factor
        res._req_stats = warmed
        res.cluster = metrics_output("cluster", [warmed], queued, running, cluster_end)
    elif sim.pd is None:
        res.cluster = metrics_output("cluster", [i.stats for i in sim.instances], queued, running,
                                     cluster_end)
    else:
        projected, in_transfer = sim.pd.project(sim.instances)
        res._req_stats = projected
        res.cluster = metrics_output("cluster", [projected], queued, running + in_transfer,
                                     cluster_end)
        res.pd = sim.pd.summary(projected.ttft, sim.instances, res.duration_s)
    if fleet is not None and fleet.nodes is not None:
        res.fleet = fleet.summary(cluster_end)
        for key in ("gpu_hours", "cost_usd", "peak_instances"):
            res.cluster[key] = res.fleet[key]
    if cfg.slo_targets:
        overall, per = goodput(res.completed_rows_by_class(), res.injected_by_class(),
                               cfg.slo_targets, res.duration_s)
        if overall["goodput_rps"]:
            res.cluster["goodput_rps"] = overall["goodput_rps"]
        if overall["slo_attainment"]:
            res.cluster["slo_attainment"] = overall["slo_attainment"]
        if per:
            res.cluster["per_class"] = per
    res.per_class = _per_class_summary(res)
    if "per_class" not in res.cluster and any(c != "default" for c in res.per_class):
        res.cluster["per_class"] = {c: {k: v for k, v in row.items()
                                        if k not in ("slo_attainment", "goodput_rps")}
                                    for c, row in res.per_class.items()}
    _add_arrival_window_rate(res.cluster, requests)
    return res


def _add_arrival_window_rate(cluster: dict, requests) -> None:
    """``arrival_window_rps``: completed requests over the span from the first to the last
    arrival, placed after ``responses_per_sec`` (which also counts the drain after the last
    arrival, so an unsaturated run reads below its offered rate there)."""
    n = len(requests)
    span = (requests[n - 1].arrival_time - requests[0].arrival_time) / 1e6 if n > 1 else 0.0
    done = cluster.get("completed_requests", 0)
    rate = done / span if span > 0 else 0.0
    items = list(cluster.items())
    cluster.clear()
    for k, v in items:
        cluster[k] = v
        if k == "responses_per_sec":
            cluster["arrival_window_rps"] = rate
    cluster.setdefault("arrival_window_rps", rate)
