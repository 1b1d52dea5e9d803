"""Turn a WorkloadSpec into the request list a run injects (spec §14.6, §14.7, §14.10).

RNG layout: the ``"workload-gen"`` stream of ``PartitionedRNG(spec.seed)`` first draws the shared
prefixes (client order), then one seed per generating client. Each client splits its seed into
independent streams for arrivals, input lengths, output lengths, auxiliary draws (session ids,
reason ratios, multimodal counts) and token ids, so a client's k-th request never depends on how
many requests are generated after it: raising ``num_requests`` or the horizon only appends.

Generation is two-phase for speed: arrival times of every client are produced first, merged with
a stable sort and truncated to ``max_requests``; lengths and tokens (the expensive part) are then
drawn only for the surviving requests, vectorised per client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from blis.errors import ConfigError
from blis.request import MAX_TOKEN_ID, Request
from blis.rng import PartitionedRNG, make_generator
from blis.workload.arrivals import make_arrival_sampler
from blis.workload.lengths import LengthSampler, make_length_sampler
from blis.workload.spec import (
    DEFAULT_PREFIX_LENGTH,
    SESSION_DEFAULT_TIMEOUT_US,
    ArrivalSpec,
    ClientSpec,
    DistSpec,
    MultimodalSpec,
    WorkloadSpec,
    expand_cohorts,
)

_T_LIMIT = 1 << 62
"""Arrival times stop here even with an unbounded horizon (146,000 years), keeping int64 safe."""


def compute_deadline(arrival: int, timeout: int | None, is_session: bool) -> int:
    """Absolute deadline (0 = none): absent timeout means 300 s for session clients only."""
    if timeout is None:
        return arrival + SESSION_DEFAULT_TIMEOUT_US if is_session else 0
    if timeout <= 0:
        return 0
    return arrival + timeout


def _child(rng: np.random.Generator) -> np.random.Generator:
    """Go's ``rand.New(rand.NewSource(rng.Int63()))``."""
    return make_generator(int(rng.integers(0, 1 << 63)))


def _in_windows(times: np.ndarray, windows: list[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(times.shape[0], dtype=bool)
    for s, e in windows:
        mask |= (times >= s) & (times < e)
    return mask


def _dist_sampler(d: DistSpec, field_path: str) -> LengthSampler:
    return make_length_sampler(d.type, d.params, field_path, d.file)


def _arrival_sampler(a: ArrivalSpec, rate_per_us: float, rng, field_path: str):
    return make_arrival_sampler(a.process, rate_per_us, rng, cv=a.cv, shape=a.shape,
                                scale=a.scale, field=f"{field_path}.process")


@dataclass
class _Plan:
    """Phase-1 output of one generating client, plus what phase 2 needs to materialise it."""

    path: str
    spec: ClientSpec
    timeout: int | None
    prefix: np.ndarray
    time_varying: bool
    override: bool
    in_rng: np.random.Generator
    out_rng: np.random.Generator
    aux_rng: np.random.Generator
    tok_rng: np.random.Generator
    arrivals: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # single-shot requests: sampler group (index into ``samplers``) per local request
    group: np.ndarray | None = None
    samplers: list[tuple[LengthSampler, LengthSampler]] = field(default_factory=list)
    # session requests: one record per emitted round, in emission order
    sessions: list[str] = field(default_factory=list)
    rec_session: list[int] = field(default_factory=list)
    rec_round: list[int] = field(default_factory=list)
    rec_in: list[int] = field(default_factory=list)
    rec_out: list[int] = field(default_factory=list)
    rec_rr: list[float] = field(default_factory=list)
    rec_time: list[int] = field(default_factory=list)

    @property
    def is_session(self) -> bool:
        return self.spec.multi_turn is not None

    # -- phase 1 helpers ------------------------------------------------------------------

    @cached_property
    def reason_ratio_sampler(self) -> LengthSampler | None:
        r = self.spec.reasoning
        if r is None or r.reason_ratio_distribution is None:
            return None
        return _dist_sampler(r.reason_ratio_distribution,
                             f"{self.path}.reasoning.reason_ratio_distribution")

    def emit_session(self, start: int, limit: int, in_s: LengthSampler, out_s: LengthSampler,
                     windows: list[tuple[int, int]]) -> int:
        """Open-loop session: round r+1 arrives ``think_time_us + outputLen_r`` after round r."""
        mt = self.spec.multi_turn
        rr_s = self.reason_ratio_sampler
        sid = f"sess_{int(self.aux_rng.integers(0, 1 << 63))}"
        si = len(self.sessions)
        self.sessions.append(sid)
        last_end = max(e for _, e in windows) if windows else None
        in_len = int(in_s.sample(self.in_rng, 1)[0])
        out_len = int(out_s.sample(self.out_rng, 1)[0])
        t = start
        emitted = 0
        for r in range(mt.max_rounds):
            if t >= limit or (last_end is not None and t >= last_end):
                break
            if r > 0:
                in_len = int(in_s.sample(self.in_rng, 1)[0])
                out_len = int(out_s.sample(self.out_rng, 1)[0])
            rr = 0.0
            if rr_s is not None:
                rr = min(max(float(rr_s.sample(self.aux_rng, 1)[0]) / 100.0, 0.0), 1.0)
            if not windows or any(s <= t < e for s, e in windows):
                self.rec_session.append(si)
                self.rec_round.append(r)
                self.rec_in.append(in_len)
                self.rec_out.append(out_len)
                self.rec_rr.append(rr)
                self.rec_time.append(t)
                emitted += 1
            t = t + mt.think_time_us + out_len
        return emitted

    # -- phase 2: materialise surviving requests ------------------------------------------

    def build(self, local: np.ndarray, ids: list[str], lazy_tokens: bool = False) -> list[Request]:
        if self.is_session:
            return self._build_sessions(local, ids)
        return self._build_single(local, ids, lazy_tokens)

    def _lengths(self, groups: np.ndarray):
        """Input/output lengths (and multimodal counts) for the survivors, run by sampler group."""
        n = groups.shape[0]
        in_len = np.empty(n, dtype=np.int64)
        out_len = np.empty(n, dtype=np.int64)
        mm = self.spec.multimodal
        modal = {k: np.zeros(n, dtype=np.int64) for k in ("text", "image", "audio", "video")} \
            if mm is not None else None
        bounds = np.flatnonzero(np.diff(groups)) + 1
        starts = np.concatenate(([0], bounds)).astype(int)
        ends = np.concatenate((bounds, [n])).astype(int)
        for a, b in zip(starts, ends):
            if a == b:
                continue
            in_s, out_s = self.samplers[int(groups[a])]
            if mm is not None:
                parts = _multimodal_lengths(mm, self.path, self.in_rng, b - a)
                for k, v in parts.items():
                    modal[k][a:b] = v
                total = sum(parts.values())
                short = total < 1
                modal["text"][a:b][short] += 1 - total[short]
                in_len[a:b] = np.maximum(total, 1)
            else:
                in_len[a:b] = in_s.sample(self.in_rng, b - a)
            out_len[a:b] = out_s.sample(self.out_rng, b - a)
        return in_len, out_len, modal

    def _build_single(self, local: np.ndarray, ids, lazy_tokens: bool = False,
                      as_factory: bool = False):
        """The requests, or with ``as_factory`` a function ``k -> request k`` (the draws are
        made here either way, so requests can then be created in any order, or never)."""
        c = self.spec
        n = local.shape[0]
        in_len, out_len, modal = self._lengths(self.group[local])
        rr_s = self.reason_ratio_sampler
        rr = np.zeros(n) if rr_s is None else np.clip(rr_s.sample(self.aux_rng, n) / 100.0, 0.0, 1.0)
        prefix = self.prefix
        p = prefix.shape[0]
        seg = p + in_len + out_len
        starts = np.concatenate(([0], np.cumsum(seg)[:-1])) if n else np.empty(0, dtype=np.int64)
        # one vectorised draw for every segment [prefix | input | output]; the prefix slots are
        # then stamped over, which keeps each request's tokens a function of earlier ones only
        if lazy_tokens:
            stream = _TokenStream(self.tok_rng, prefix, seg, starts, p + in_len)
        else:
            buf = self.tok_rng.integers(0, MAX_TOKEN_ID, size=int(seg.sum()), dtype=np.int32)
            if p:
                _stamp_prefix(buf, prefix, starts)
        arrivals = self.arrivals[local]
        timeout = self.timeout

        def make(k: int) -> Request:
            s = int(starts[k])
            mid = s + p + int(in_len[k])
            end = mid + int(out_len[k])
            t = int(arrivals[k])
            if self.time_varying:
                deadline = t + timeout if (timeout is not None and timeout > 0
                                           and self.override) else 0
            else:
                deadline = compute_deadline(t, timeout, c.is_session)
            if lazy_tokens:
                req = Request(ids[k], _NO_TOKENS, _NO_TOKENS, t, max_output_len=int(out_len[k]),
                              deadline=deadline, slo_class=c.slo_class, tenant_id=c.tenant_id,
                              model=c.model, client_id=c.id, prefix_group=c.prefix_group,
                              prefix_length=p, streaming=c.streaming, adapter=c.adapter,
                              slo_target_us=c.slo_target_us, reason_ratio=float(rr[k]))
                req.defer_tokens(mid - s, end - mid, stream, k)
            else:
                req = Request(ids[k], buf[s:mid], buf[mid:end], t, max_output_len=int(out_len[k]),
                              deadline=deadline, slo_class=c.slo_class, tenant_id=c.tenant_id,
                              model=c.model, client_id=c.id, prefix_group=c.prefix_group,
                              prefix_length=p, streaming=c.streaming, adapter=c.adapter,
                              slo_target_us=c.slo_target_us, reason_ratio=float(rr[k]))
            if modal is not None:
                req.text_tokens = int(modal["text"][k])
                req.image_tokens = int(modal["image"][k])
                req.audio_tokens = int(modal["audio"][k])
                req.video_tokens = int(modal["video"][k])
            return req

        if as_factory:
            return make
        return [make(k) for k in range(n)]

    def _build_sessions(self, local: np.ndarray, ids: list[str]) -> list[Request]:
        c = self.spec
        mt = c.multi_turn
        accumulate = mt.context_growth == "accumulate"
        prefix = self.prefix
        sess = np.asarray(self.rec_session)[local]
        ins = np.asarray(self.rec_in)[local]
        outs = np.asarray(self.rec_out)[local]
        out: list[Request] = []
        k = 0
        n = local.shape[0]
        while k < n:
            j = k
            while j < n and sess[j] == sess[k]:
                j += 1
            draws = self.tok_rng.integers(0, MAX_TOKEN_ID, size=int(ins[k:j].sum() + outs[k:j].sum()),
                                          dtype=np.int32)
            context = [prefix]
            off = 0
            for q in range(k, j):
                li = int(local[q])
                new_in = draws[off:off + int(ins[q])]
                off += int(ins[q])
                out_tok = draws[off:off + int(outs[q])]
                off += int(outs[q])
                if accumulate:
                    context.append(new_in)
                    inp = np.concatenate(context)
                    context.append(out_tok)
                else:
                    inp = np.concatenate((prefix, new_in))
                t = int(self.arrivals[li])
                out.append(Request(
                    ids[q], inp, out_tok, t, max_output_len=int(outs[q]),
                    deadline=compute_deadline(t, self.timeout, True), slo_class=c.slo_class,
                    tenant_id=c.tenant_id, model=c.model, client_id=c.id,
                    prefix_group=c.prefix_group, prefix_length=int(prefix.shape[0]),
                    session_id=self.sessions[int(sess[q])], round_index=self.rec_round[li],
                    streaming=c.streaming, adapter=c.adapter, slo_target_us=c.slo_target_us,
                    reason_ratio=self.rec_rr[li], think_time_us=mt.think_time_us))
            k = j
        return out


_NO_TOKENS = np.empty(0, dtype=np.int32)


class _TokenStream:
    """One client's token buffer drawn chunk by chunk, in request order, when requests first
    use their tokens: the same numbers as the single draw (PCG64 draws concatenate), but only
    chunks whose requests are still unloaded are held here, and a chunk is freed once its
    requests drop their views."""

    CHUNK = 1024

    def __init__(self, rng, prefix: np.ndarray, seg: np.ndarray, starts: np.ndarray,
                 n_in: np.ndarray):
        self.rng = rng
        self.prefix = prefix
        self.seg = seg
        self.starts = starts
        self.n_in = n_in
        self.drawn = 0
        self.live: dict[int, list] = {}  # chunk -> [buffer, requests not yet served]

    def _chunk(self, k: int) -> list:
        c = k // self.CHUNK
        while self.drawn <= c:
            lo = self.drawn * self.CHUNK
            hi = min(lo + self.CHUNK, self.seg.shape[0])
            buf = self.rng.integers(0, MAX_TOKEN_ID, size=int(self.seg[lo:hi].sum()),
                                    dtype=np.int32)
            if self.prefix.shape[0]:
                _stamp_prefix(buf, self.prefix, self.starts[lo:hi] - self.starts[lo])
            self.live[self.drawn] = [buf, hi - lo]
            self.drawn += 1
        return self.live[c]

    def _served(self, k: int, entry: list) -> None:
        entry[1] -= 1
        if not entry[1]:
            del self.live[k // self.CHUNK]

    def views(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Input and output tokens of the client's ``k``-th request."""
        entry = self._chunk(k)
        s = int(self.starts[k] - self.starts[k - k % self.CHUNK])
        mid = s + int(self.n_in[k])
        end = s + int(self.seg[k])
        buf = entry[0]
        self._served(k, entry)
        return buf[s:mid], buf[mid:end]

    def release(self, k: int) -> None:
        """Request ``k`` finished without ever needing its tokens."""
        self._served(k, self._chunk(k))


def _stamp_prefix(buf: np.ndarray, prefix: np.ndarray, starts: np.ndarray,
                  chunk: int = 8192) -> None:
    """Overwrite the first ``len(prefix)`` slots of every request segment with the prefix.

    Chunking bounds the temporary index arrays (chunk × prefix length).
    """
    offs = np.arange(prefix.shape[0])
    for k0 in range(0, starts.shape[0], chunk):
        block = starts[k0:k0 + chunk]
        buf[(block[:, None] + offs[None, :]).ravel()] = np.tile(prefix, block.shape[0])


def _multimodal_lengths(mm: MultimodalSpec, path: str, rng, n: int) -> dict[str, np.ndarray]:
    """Per-modality token counts (§14.11): text sample, then count × per-item samples."""
    parts = {"text": np.zeros(n, dtype=np.int64)}
    if mm.text_distribution is not None:
        parts["text"] = _dist_sampler(mm.text_distribution, f"{path}.multimodal.text_distribution") \
            .sample(rng, n)
    for kind in ("image", "audio", "video"):
        item = getattr(mm, f"{kind}_distribution")
        count = getattr(mm, f"{kind}_count_distribution")
        if item is None or count is None:
            parts[kind] = np.zeros(n, dtype=np.int64)
            continue
        counts = _dist_sampler(count, f"{path}.multimodal.{kind}_count_distribution").sample(rng, n)
        items = _dist_sampler(item, f"{path}.multimodal.{kind}_distribution").sample(
            rng, int(counts.sum()))
        offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
        parts[kind] = np.add.reduceat(items, offsets) if n else np.zeros(0, dtype=np.int64)
    return parts


# ---------------------------------------------------------------------------------------------
# Rates
# ---------------------------------------------------------------------------------------------

def _windows_key(c: ClientSpec, with_rate: bool = False):
    if not c.windows:
        return None
    if with_rate:
        return tuple((w.start_us, w.end_us, w.trace_rate) for w in c.windows)
    return tuple((w.start_us, w.end_us) for w in c.windows)


def _overlap(a, b) -> bool:
    if a is None or b is None:
        return True
    return any(s1 < e2 and s2 < e1 for s1, e1, *_ in a for s2, e2, *_ in b)


def client_rates(clients: list[ClientSpec], aggregate_rate: float) -> list[float]:
    """Per-client req/s: ``aggregate × (fraction / Σ fractions of overlapping clients)``.

    The evaluation order matches BLIS so constant-arrival spacing ``int(1 / (rate/1e6))`` agrees
    to the microsecond (e.g. 99,999 µs at 10 req/s).

    Without lifecycle windows every client overlaps every other, which reduces to plain
    normalisation. Concurrency clients have no rate. Clients sharing a window set are grouped so
    large cohorts stay linear.
    """
    sums: dict = {}
    for c in clients:
        if c.concurrency == 0:
            key = _windows_key(c)
            sums[key] = sums.get(key, 0.0) + c.rate_fraction
    denom = {k: sum(v for k2, v in sums.items() if _overlap(k, k2)) for k in sums}
    rates = []
    for c in clients:
        if c.concurrency > 0:
            rates.append(0.0)
            continue
        d = denom[_windows_key(c)]
        rates.append(aggregate_rate * (c.rate_fraction / d) if d > 0 else 0.0)
    return rates


class _CoActive:
    """Σ of co-active trace rates over a window (§14.7), computed per window-set group."""

    def __init__(self, clients: list[ClientSpec]):
        self.groups: dict = {}
        for c in clients:
            if c.concurrency > 0:
                continue
            key = _windows_key(c, with_rate=True)
            cnt, fsum = self.groups.get(key, (0, 0.0))
            self.groups[key] = (cnt + 1, fsum + c.rate_fraction)
        self._cache: dict = {}

    def total(self, s: int, e: int) -> float:
        hit = self._cache.get((s, e))
        if hit is not None:
            return hit
        total = 0.0
        for key, (cnt, fsum) in self.groups.items():
            if key is None:
                total += fsum
                continue
            for ws, we, tr in key:
                if ws < e and s < we:
                    total += fsum if tr is None else cnt * tr
                    break
        self._cache[(s, e)] = total
        return total


# ---------------------------------------------------------------------------------------------
# Phase 1 per client
# ---------------------------------------------------------------------------------------------

def _plan_single_arrivals(sampler, limit: int, cap: int, windows: list[tuple[int, int]]) -> np.ndarray:
    """Open-loop arrival times: advance by one IAT, then emit (so the first lands at one IAT)."""
    last_end = max(e for _, e in windows) if windows else None
    chunks = []
    n = 0
    t = 0
    while True:
        want = min(max(cap - n, 256), 1 << 16) if cap else 8192
        times = t + np.cumsum(sampler.next(want))
        stop_at = int(np.searchsorted(times, limit, side="left"))
        if last_end is not None:
            stop_at = min(stop_at, int(np.searchsorted(times, last_end, side="left")))
        stopped = stop_at < times.shape[0]
        seg = times[:stop_at]
        if windows:
            seg = seg[_in_windows(seg, windows)]
        if cap and n + seg.shape[0] >= cap:
            seg = seg[:cap - n]
            stopped = True
        chunks.append(seg)
        n += seg.shape[0]
        if stopped:
            break
        t = int(times[-1])
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)


def _plan_standard(plan: _Plan, rate: float, iat_rng, limit: int, cap: int) -> None:
    c = plan.spec
    windows = [(w.start_us, w.end_us) for w in c.windows]
    sampler = _arrival_sampler(c.arrival, rate / 1e6, iat_rng, f"{plan.path}.arrival")
    in_s = _dist_sampler(c.input_distribution, f"{plan.path}.input_distribution")
    out_s = _dist_sampler(c.output_distribution, f"{plan.path}.output_distribution")
    unbounded = cap == 0 and limit >= _T_LIMIT and not windows
    if not plan.is_session:
        if unbounded:
            raise ConfigError("num_requests", "workload requires either num_requests or --horizon")
        plan.arrivals = _plan_single_arrivals(sampler, limit, cap, windows)
        plan.group = np.zeros(plan.arrivals.shape[0], dtype=np.int64)
        plan.samplers = [(in_s, out_s)]
        return
    mt = c.multi_turn
    if mt.single_session:
        start = (windows[0][0] if windows else 0) + sampler.next_one()
        if start < limit:
            plan.emit_session(start, limit, in_s, out_s, windows)
        return
    if unbounded:
        raise ConfigError("num_requests", "workload requires either num_requests or --horizon")
    last_end = max(e for _, e in windows) if windows else None
    t = 0
    n = 0
    while cap == 0 or n < cap:
        t += sampler.next_one()
        if t >= limit:
            break
        if windows and not any(s <= t < e for s, e in windows):
            if t >= last_end:
                break
            continue
        n += plan.emit_session(t, limit, in_s, out_s, windows)


def _plan_time_varying(plan: _Plan, spec: WorkloadSpec, coactive: _CoActive, iat_rng,
                       limit: int) -> None:
    """Per-window generation: N = ceil(rate·D) gaps rescaled to fill the window exactly."""
    c = plan.spec
    windows = [(w.start_us, w.end_us) for w in c.windows]
    chunks: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    first_session = True
    for wi, w in enumerate(c.windows):
        wp = f"{plan.path}.lifecycle.windows[{wi}]"
        if w.start_us >= limit:
            continue
        start, end = w.start_us, min(w.end_us, limit)
        dur = end - start
        if dur <= 0:
            continue
        if spec.aggregate_rate == 0 and w.trace_rate is not None:
            rate = w.trace_rate
        else:
            trace = w.trace_rate if w.trace_rate is not None else c.rate_fraction
            total = coactive.total(start, end)
            rate = spec.aggregate_rate * trace / total if total > 0 else 0.0
        count = math.ceil(rate * dur / 1e6)
        if count <= 0:
            continue
        arrival = w.arrival if w.arrival is not None else c.arrival
        sampler = _arrival_sampler(arrival, rate / 1e6, iat_rng,
                                   f"{wp}.arrival" if w.arrival is not None else f"{plan.path}.arrival")
        iats = sampler.next(count).astype(np.float64)
        scaled = np.floor(iats * dur / iats.sum()).astype(np.int64)
        scaled[-1] += dur - int(scaled.sum())
        times = start + np.cumsum(scaled)
        times = times[:int(np.searchsorted(times, end, side="left"))]
        in_d = w.input_distribution if w.input_distribution is not None else c.input_distribution
        out_d = w.output_distribution if w.output_distribution is not None else c.output_distribution
        in_s = _dist_sampler(in_d, f"{wp}.input_distribution" if w.input_distribution is not None
                             else f"{plan.path}.input_distribution")
        out_s = _dist_sampler(out_d, f"{wp}.output_distribution" if w.output_distribution is not None
                              else f"{plan.path}.output_distribution")
        if plan.is_session:
            for t in times.tolist():
                if c.multi_turn.single_session and not first_session:
                    break
                first_session = False
                plan.emit_session(int(t), limit, in_s, out_s, windows)
            continue
        chunks.append(times)
        groups.append(np.full(times.shape[0], len(plan.samplers), dtype=np.int64))
        plan.samplers.append((in_s, out_s))
    if not plan.is_session:
        plan.arrivals = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
        plan.group = np.concatenate(groups) if groups else np.empty(0, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def _check_supported(clients: list[tuple[str, ClientSpec]]) -> None:
    for path, c in clients:
        if c.concurrency > 0:
            raise ConfigError(f"{path}.concurrency", "closed-loop concurrency clients are not "
                                                     "supported yet")
        if c.multi_turn is not None and c.closed_loop is not False:
            raise ConfigError(f"{path}.reasoning.multi_turn", "closed-loop sessions are not "
                                                              "supported yet; set closed_loop: false")


def generate_requests(spec: WorkloadSpec, max_requests: int, horizon: int,
                      timeout_override_us: int | None = None,
                      lazy_tokens: bool = False, lazy_requests: bool = False) -> list[Request]:
    """All requests of ``spec`` sorted by arrival, capped at ``max_requests`` (0 = no cap).

    ``horizon`` (µs) bounds arrival times. ``timeout_override_us`` (an explicit ``--timeout``)
    replaces every client's ``timeout``: > 0 is a per-request timeout in µs, 0 disables deadlines.
    IDs are ``request_<i>`` in arrival order. ``lazy_tokens``: single-shot clients draw their
    token ids in chunks as requests first use them (identical values, see ``_TokenStream``),
    so a long run holds only the tokens of requests in flight. ``lazy_requests`` (with
    ``lazy_tokens``, no multi-turn sessions): a ``LazyRequests`` sequence that creates each
    ``Request`` when it is first read, with the same values.
    """
    if spec.inference_perf is not None:
        from blis.workload.inference_perf import generate_inference_perf
        return generate_inference_perf(spec.inference_perf, spec.seed, max(int(max_requests), 0),
                                       min(int(horizon), _T_LIMIT), timeout_override_us)
    clients = [(f"clients[{i}]", c) for i, c in enumerate(spec.clients)] + expand_cohorts(spec)
    _check_supported(clients)
    specs = [c for _, c in clients]
    rng = PartitionedRNG(spec.seed).for_subsystem("workload-gen")

    prefixes: dict[str, np.ndarray] = {}
    for c in specs:
        if c.prefix_group and c.prefix_group not in prefixes:
            prefixes[c.prefix_group] = rng.integers(
                0, MAX_TOKEN_ID, size=c.prefix_length or DEFAULT_PREFIX_LENGTH, dtype=np.int32)

    max_requests = max(int(max_requests), 0)
    cap = 2 * max_requests
    limit = min(int(horizon), _T_LIMIT)
    override = timeout_override_us is not None
    time_varying = any(w.has_overrides() for c in specs for w in c.windows)
    empty = np.empty(0, dtype=np.int32)

    plans: list[_Plan] = []
    rates = client_rates(specs, spec.aggregate_rate)
    coactive = _CoActive(specs) if time_varying else None
    for (path, c), rate in zip(clients, rates):
        if time_varying:
            if not c.windows:
                import logging  # only for this warning: logging costs ~3 ms of start-up

                logging.getLogger(__name__).warning(
                    "%s (%s) has no lifecycle windows and generates nothing on the "
                    "time-varying path", path, c.id)
                continue
        elif rate <= 0:
            continue
        client_rng = _child(rng)
        iat_rng = _child(client_rng)
        plan = _Plan(path=path, spec=c,
                     timeout=timeout_override_us if override else c.timeout,
                     prefix=empty if time_varying or not c.prefix_group else prefixes[c.prefix_group],
                     time_varying=time_varying, override=override,
                     in_rng=_child(client_rng), out_rng=_child(client_rng),
                     aux_rng=_child(client_rng), tok_rng=_child(client_rng))
        if time_varying:
            _plan_time_varying(plan, spec, coactive, iat_rng, limit)
        else:
            _plan_standard(plan, rate, iat_rng, limit, cap)
        if plan.is_session:
            plan.arrivals = np.asarray(plan.rec_time, dtype=np.int64)
        plans.append(plan)

    sizes = np.array([p.arrivals.shape[0] for p in plans], dtype=np.int64)
    if not plans or sizes.sum() == 0:
        return []
    all_t = np.concatenate([p.arrivals for p in plans])
    order = np.argsort(all_t, kind="stable")
    if max_requests > 0:
        order = order[:max_requests]
    owner = np.repeat(np.arange(len(plans)), sizes)
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    kept_owner = owner[order]
    kept_local = order - offsets[kept_owner]
    by_client = np.lexsort((kept_local, kept_owner))
    requests: list[Request | None] = [None] * order.shape[0]
    bounds = np.searchsorted(kept_owner[by_client], np.arange(len(plans) + 1), side="left")
    if lazy_requests and lazy_tokens and not any(p.is_session for p in plans):
        within = np.empty(order.shape[0], dtype=np.int64)
        makers = []
        for pi, plan in enumerate(plans):
            sel = by_client[bounds[pi]:bounds[pi + 1]]
            within[sel] = np.arange(sel.shape[0])
            makers.append(plan._build_single(kept_local[sel], _Ids(sel), True, as_factory=True)
                          if sel.shape[0] else None)
        return LazyRequests(makers, kept_owner, within)
    for pi, plan in enumerate(plans):
        sel = by_client[bounds[pi]:bounds[pi + 1]]
        if sel.shape[0] == 0:
            continue
        positions = sel.tolist()
        built = plan.build(kept_local[sel], [f"request_{g}" for g in positions], lazy_tokens)
        for g, req in zip(positions, built):
            requests[g] = req
    return requests


class _Ids:
    """``request_<g>`` for the k-th selected global position, built on demand."""

    __slots__ = ("pos",)

    def __init__(self, pos: np.ndarray):
        self.pos = pos

    def __getitem__(self, k: int) -> str:
        return f"request_{int(self.pos[k])}"


class LazyRequests:
    """The workload in arrival order, each ``Request`` created when first read (by index or by
    iteration) and not kept: the cluster streams arrivals from it, so a lean run holds only
    the requests that have arrived and not finished."""

    in_arrival_order = True

    def __init__(self, makers: list, owner: np.ndarray, within: np.ndarray):
        self.makers = makers
        self.owner = owner
        self.within = within

    def __len__(self) -> int:
        return int(self.owner.shape[0])

    def __getitem__(self, g: int) -> Request:
        if g < 0:
            g += len(self)
        if not 0 <= g < len(self):
            raise IndexError(g)
        return self.makers[int(self.owner[g])](int(self.within[g]))

    def __iter__(self):
        for g in range(len(self)):
            yield self[g]
