"""Turn raw per-instance samples into the spec's MetricsOutput and derived summaries (§15).

Percentiles use linear interpolation between ``floor(rank)`` and ``ceil(rank)`` with
``rank = p/100 × (n−1)`` over values sorted ascending, exactly as the reference does.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

PCTS = (90, 95, 99)


def percentile(sorted_vals, p: float) -> float:
    n = len(sorted_vals)
    if n == 0:
        return 0.0
    rank = p / 100.0 * (n - 1)
    lo = int(math.floor(rank))
    hi = int(math.ceil(rank))
    v_lo = float(sorted_vals[lo])
    if lo == hi:
        return v_lo
    return v_lo + (float(sorted_vals[hi]) - v_lo) * (rank - lo)


def distribution(values) -> dict:
    """mean/p50/p90/p95/p99/min/max/count of raw values (no unit conversion)."""
    arr = np.sort(np.asarray(values, dtype=np.float64))
    n = int(arr.shape[0])
    if n == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0,
                "min": 0.0, "max": 0.0, "count": 0}
    return {"mean": float(arr.sum()) / n, "p50": percentile(arr, 50), "p90": percentile(arr, 90),
            "p95": percentile(arr, 95), "p99": percentile(arr, 99), "min": float(arr[0]),
            "max": float(arr[-1]), "count": n}


def _ms_fields(prefix: str, values, out: dict) -> None:
    arr = np.sort(np.asarray(values, dtype=np.float64))
    n = int(arr.shape[0])
    out[f"{prefix}_mean_ms"] = (float(arr.sum()) / n / 1000.0) if n else 0.0
    for p in PCTS:
        out[f"{prefix}_p{p}_ms"] = percentile(arr, p) / 1000.0 if n else 0.0


class IntHistogram:
    """Exact multiset of integer samples (ITL values in µs) in O(distinct values) memory.

    Samples are buffered as C integers (an ``array``: numpy reads it without converting each
    Python int) and folded into value counts in large batches; mean and percentiles computed
    from the counts equal those of the sorted list.
    """

    __slots__ = ("counts", "pending", "n")
    FOLD = 1 << 16  # a bounded buffer per instance

    def __init__(self):
        self.counts: dict[int, int] = {}
        self.pending = array("q")
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def extend(self, values) -> None:
        """Add samples: an iterable of ints or another histogram."""
        if isinstance(values, IntHistogram):
            values._fold()
            counts = self.counts
            for v, c in values.counts.items():
                counts[v] = counts.get(v, 0) + c
            self.n += values.n
            return
        pending = self.pending
        k = len(pending)
        if isinstance(values, list):
            pending.fromlist(values)  # the common case (a request's ITL list), in one C loop
        else:
            pending.extend(values)
        self.n += len(pending) - k
        if len(pending) >= self.FOLD:
            self._fold()

    def _fold(self) -> None:
        if not self.pending:
            return
        arr = np.frombuffer(self.pending, dtype=np.int64)
        self.pending = array("q")
        lo = int(arr.min())
        if int(arr.max()) - lo < 1 << 22:
            binned = np.bincount(arr - lo)
            vals = np.flatnonzero(binned)
            cnts = binned[vals]
            vals = vals + lo
        else:
            vals, cnts = np.unique(arr, return_counts=True)
        counts = self.counts
        for v, c in zip(vals.tolist(), cnts.tolist()):
            counts[v] = counts.get(v, 0) + c

    def sorted_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct values ascending and their counts."""
        self._fold()
        vals = np.fromiter(sorted(self.counts), dtype=np.int64, count=len(self.counts))
        cnts = np.fromiter((self.counts[v] for v in vals.tolist()), dtype=np.int64,
                           count=len(self.counts))
        return vals, cnts


def _hist_ms_fields(prefix: str, hist: IntHistogram, out: dict) -> None:
    """``_ms_fields`` of the samples in ``hist``, with identical arithmetic."""
    n = len(hist)
    if not n:
        out[f"{prefix}_mean_ms"] = 0.0
        for p in PCTS:
            out[f"{prefix}_p{p}_ms"] = 0.0
        return
    vals, cnts = hist.sorted_counts()
    ends = np.cumsum(cnts)  # samples with rank < ends[i] have value <= vals[i]
    total = int(np.dot(vals, cnts)) if int(vals[-1]) * n < 1 << 62 else sum(
        v * c for v, c in zip(vals.tolist(), cnts.tolist()))
    out[f"{prefix}_mean_ms"] = float(total) / n / 1000.0

    def at(k: int) -> float:
        return float(vals[int(np.searchsorted(ends, k, side="right"))])

    for p in PCTS:
        rank = p / 100.0 * (n - 1)
        lo = int(math.floor(rank))
        hi = int(math.ceil(rank))
        v_lo = at(lo)
        out[f"{prefix}_p{p}_ms"] = (v_lo if lo == hi else
                                    v_lo + (at(hi) - v_lo) * (rank - lo)) / 1000.0


def _sorted_values(d: dict) -> list:
    return [d[k] for k in sorted(d)]


def _with_folded(d: dict, folded: list, name: str):
    """Values of the id-keyed map ``d`` plus the final values already folded out of it."""
    vals = _sorted_values(d)
    if not folded:
        return vals
    return np.concatenate([np.asarray(vals, dtype=np.float64)]
                          + [np.asarray(getattr(f, name), dtype=np.float64) for f in folded])


class FoldedValues:
    """Final per-request values of finished requests, without their ids (lean runs)."""

    __slots__ = ("ttft", "e2e", "sched_delay")

    def __init__(self):
        self.ttft = array("q")
        self.e2e = array("q")
        self.sched_delay = array("q")


class ClassValues:
    """One SLO class's final values (routed requests that were not dropped)."""

    __slots__ = ("ttft", "e2e", "itl_mean", "row_ttft")

    def __init__(self):
        self.ttft = array("q")       # every request with a TTFT
        self.e2e = array("q")        # completed requests ...
        self.itl_mean = array("d")   # ... their mean ITL ...
        self.row_ttft = array("q")   # ... and TTFT (0 if none), aligned with e2e

    def rows(self):
        """(ttft_ms, itl_ms, e2e_ms) of completed requests, as ``goodput`` reads them."""
        return _Rows(self)


class _Rows:
    __slots__ = ("c",)

    def __init__(self, c: ClassValues):
        self.c = c

    def __len__(self) -> int:
        return len(self.c.e2e)

    def __iter__(self):
        c = self.c
        for t, i, e in zip(c.row_ttft, c.itl_mean, c.e2e):
            yield t / 1000.0, i / 1000.0, e / 1000.0


class Folder:
    """Lean runs: a finished request's TTFT / E2E / mean ITL / scheduling delay leave the
    instance's id-keyed maps (final once the request completes, times out or is dropped) for
    per-instance and per-class arrays; tenants' completed counts and tokens are counted."""

    def __init__(self):
        self.by_class: dict[str, ClassValues] = {}
        self.tenant_tokens: dict[str, int] = {}
        self.tenant_counts: dict[str, int] = {}
        self.e2e_rows: list | None = None  # (instance, class, arrival, id, e2e) for inversions

    def take(self, stats, req, dropped: bool, completed: bool) -> None:
        rid = req.id
        ttft = stats.ttft.pop(rid, None)
        e2e = stats.e2e.pop(rid, None)
        if self.e2e_rows is not None and e2e is not None:
            self.e2e_rows.append((req.assigned_instance, req.slo_class or "default",
                                  req.arrival_time, rid, e2e))
        itl = stats.itl_mean.pop(rid, None)
        sched = stats.sched_delay.pop(rid, None)
        f = stats.folded
        if f is None:
            f = stats.folded = FoldedValues()
        if ttft is not None:
            f.ttft.append(ttft)
        if e2e is not None:
            f.e2e.append(e2e)
        if sched is not None:
            f.sched_delay.append(sched)
        if dropped:
            return
        cls = req.slo_class or "default"
        c = self.by_class.get(cls)
        if c is None:
            c = self.by_class[cls] = ClassValues()
        if ttft is not None:
            c.ttft.append(ttft)
        if e2e is not None:
            c.e2e.append(e2e)
            c.itl_mean.append(itl)
            c.row_ttft.append(ttft if ttft is not None else 0)
        if completed and req.tenant_id:
            t = req.tenant_id
            self.tenant_tokens[t] = self.tenant_tokens.get(t, 0) + req.output_len
            self.tenant_counts[t] = self.tenant_counts.get(t, 0) + 1


def metrics_output(instance_id: str, parts: list, still_queued: int, still_running: int,
                   sim_ended_us: int) -> dict:
    """MetricsOutput for one instance (``parts`` = [stats]) or the cluster (all instances)."""
    completed = sum(s.completed for s in parts)
    dropped = sum(s.dropped_unservable for s in parts)
    timed_out = sum(s.timed_out for s in parts)
    total_out = sum(s.total_output_tokens for s in parts)
    duration = sim_ended_us / 1e6
    out = {
        "instance_id": instance_id,
        "completed_requests": completed,
        "still_queued": still_queued,
        "still_running": still_running,
        "injected_requests": completed + still_queued + still_running + dropped + timed_out,
        "total_input_tokens": sum(s.total_input_tokens for s in parts),
        "total_output_tokens": total_out,
        "vllm_estimated_duration_s": duration,
        "responses_per_sec": completed / duration if completed and duration > 0 else 0.0,
        "tokens_per_sec": total_out / duration if duration > 0 else 0.0,
    }
    if completed > 0:
        e2e, ttft, itl, sched = {}, {}, IntHistogram(), {}
        for s in parts:
            e2e.update(s.e2e)
            ttft.update(s.ttft)
            itl.extend(s.itl_samples)
            sched.update(s.sched_delay)
        folded = [s.folded for s in parts if s.folded is not None]
        _ms_fields("e2e", _with_folded(e2e, folded, "e2e"), out)
        _ms_fields("ttft", _with_folded(ttft, folded, "ttft"), out)
        _hist_ms_fields("itl", itl, out)
        sd = np.sort(np.asarray(_with_folded(sched, folded, "sched_delay"), dtype=np.float64))
        out["scheduling_delay_p99_ms"] = percentile(sd, 99) / 1000.0 if len(sd) else 0.0
    else:
        for prefix in ("e2e", "ttft", "itl"):
            out[f"{prefix}_mean_ms"] = 0.0
            for p in PCTS:
                out[f"{prefix}_p{p}_ms"] = 0.0
        out["scheduling_delay_p99_ms"] = 0.0
    failures = sum(s.kv_allocation_failures for s in parts)
    if failures:
        out["kv_allocation_failures"] = failures
    out["preemption_count"] = sum(s.preemptions for s in parts)
    out["dropped_unservable"] = dropped
    out["length_capped_requests"] = sum(s.length_capped for s in parts)
    out["timed_out_requests"] = timed_out
    return out


def jain_fairness(values) -> float:
    n = len(values)
    if n == 0:
        return 0.0
    sq = sum(v * v for v in values)
    if sq == 0:
        return 1.0
    return sum(values) ** 2 / (n * sq)


def goodput(requests_by_class: dict, injected_by_class: dict, targets: dict, duration_s: float):
    """Per-class and overall SLO attainment / goodput over completed requests (§15.6).

    ``requests_by_class[c]`` = list of (ttft_ms, itl_ms, e2e_ms) of completed requests.
    """
    per_class = {}
    total_good = 0
    total_injected = 0
    for cls in sorted(targets):
        tgt = targets[cls]
        dims = [(d, float(tgt.get(f"{d}_ms", 0) or 0)) for d in ("ttft", "itl", "e2e")]
        dims = [(d, v) for d, v in dims if v > 0]
        if not dims:
            continue
        rows = requests_by_class.get(cls, [])
        injected = injected_by_class.get(cls, 0)
        good = 0
        passes = {d: 0 for d, _ in dims}
        for ttft_ms, itl_ms, e2e_ms in rows:
            vals = {"ttft": ttft_ms, "itl": itl_ms, "e2e": e2e_ms}
            ok = True
            for d, limit in dims:
                if vals[d] is not None and vals[d] <= limit:
                    passes[d] += 1
                else:
                    ok = False
            good += ok
        n = len(rows)
        per_class[cls] = {
            "slo_attainment": good / injected if injected else 0.0,
            "count": injected,
            "goodput_rps": good / duration_s if duration_s > 0 else 0.0,
            "slo_attainment_by_dim": {d: (passes[d] / n if n else 0.0) for d, _ in dims},
        }
        total_good += good
        total_injected += injected
    overall = {
        "slo_attainment": total_good / total_injected if total_injected else 0.0,
        "goodput_rps": total_good / duration_s if duration_s > 0 else 0.0,
    }
    return overall, per_class
