"""One vLLM-like serving instance: wait queue, running batch, KV cache and the step loop (§2.1, §4).

Events are pushed into the cluster's single heap (see ``blis.cluster.simulator``); this module owns what
happens when an instance event fires. Observational events of the reference (ScheduledEvent,
RequestLeftEvent) change no state, so they are not queued: their only visible effect, the
instance's end-of-simulation time, is tracked directly in ``last_event_time``.

Lazy decoding. Most of a step's work in a busy instance is the same for every running request:
one decode token, one ITL sample equal to the step time, one more slot in the last KV block. With
a latency backend that only needs the number of decoders and their summed progress
(``step_time_with_decodes``), steadily decoding requests are therefore not visited each step.
Each one records the step it went lazy at (``lazy_from``); the instance logs every step's ITL
value and keeps the decoders' count and summed progress; the only per-request work left is
scheduled ahead in step-indexed buckets: the steps at which its next token opens or completes a
KV block (so block pops and hash registrations happen at exactly the same step and in the same
running order as step by step), and the step at which it completes or hits the length cap.
A request is written back (``_unlazy``) when it completes, times out, or when a step falls
outside what the lazy step reproduces (continuing prefills, a token budget smaller than the
batch, not enough free blocks for this step's pops); that step then runs the reference code.
Everything observable between steps (queue lengths, KV occupancy, prefix hashes) is exact at all
times. ``BLIS_REFERENCE_STEPS=1`` turns the lazy path off (the differential tests compare both).
"""

from __future__ import annotations

import os

from blis.engine.batch_formation import BatchContext, BatchFormer
from blis.engine.kv_cache import KVCache
from blis.events import EV_QUEUED, EV_STEP, EV_TIMEOUT
from blis.request import COMPLETED, RUNNING, TIMED_OUT
from blis.results.metrics import IntHistogram

_NEVER = 1 << 62  # a step number no run reaches
_NO_BATCH = ()  # a quiet step's newly scheduled batch


def _before(t: int, src: int, event) -> bool:
    """A step of instance ``src`` at ``t`` pops before heap entry ``event`` (it would get a
    larger sequence number, so equal keys mean after)."""
    return t < event[0] or (t == event[0] and (src < event[1] or (src == event[1]
                                                                 and EV_STEP < event[2])))


def _observer_bound(heap: list, src: int):
    """The first heap entry that can observe instance ``src``: a cluster event or its own,
    except timeouts of finished requests (they fire as no-ops, and finished stays finished)."""
    best = None
    for e in heap:
        s = e[1]
        if (s == 0 or s == src) and (best is None or e < best):
            if e[2] == EV_TIMEOUT and e[4].state in (COMPLETED, TIMED_OUT):
                continue
            best = e
    return best


class InstanceStats:
    """Counters and raw samples one instance accumulates; aggregated by ``blis.results.metrics``."""

    __slots__ = (
        "completed", "dropped_unservable", "timed_out", "length_capped", "preemptions",
        "kv_allocation_failures", "total_input_tokens", "total_output_tokens", "peak_kv_blocks",
        "ttft", "e2e", "itl_mean", "sched_delay", "itl_samples", "queue_len_sum", "queue_len_n",
        "folded",
    )

    def __init__(self):
        self.completed = 0
        self.dropped_unservable = 0
        self.timed_out = 0
        self.length_capped = 0
        self.preemptions = 0
        self.kv_allocation_failures = 0
        self.total_input_tokens = 0
        self.total_output_tokens = 0
        self.peak_kv_blocks = 0
        self.ttft: dict[str, int] = {}
        self.e2e: dict[str, int] = {}
        self.itl_mean: dict[str, float] = {}
        self.sched_delay: dict[str, int] = {}
        self.itl_samples = IntHistogram()  # ITL samples of completed requests
        self.queue_len_sum = 0  # wait-queue length summed over steps (HOL detection)
        self.queue_len_n = 0
        self.folded = None  # lean runs: values of finished requests (blis.results.metrics.Folder)


def merge_stats(instances) -> InstanceStats:
    """All instances' counters and per-request records in one stats object."""
    out = InstanceStats()
    for inst in instances:
        s = inst.stats
        for name in ("completed", "dropped_unservable", "timed_out", "length_capped", "preemptions",
                     "kv_allocation_failures", "total_input_tokens", "total_output_tokens"):
            setattr(out, name, getattr(out, name) + getattr(s, name))
        out.ttft.update(s.ttft)
        out.e2e.update(s.e2e)
        out.itl_mean.update(s.itl_mean)
        out.sched_delay.update(s.sched_delay)
        out.itl_samples.extend(s.itl_samples)
    return out


class Instance:
    """Engine state of one instance. ``push(t, src, prio, payload)`` schedules into the cluster heap."""

    def __init__(self, index: int, deployment, engine_cfg, scheduler, preemption_policy: str,
                 push, horizon: int, on_finished, cluster):
        self.index = index
        self.id = f"instance_{index}"
        self.src = index + 1
        self.deployment = deployment
        self.latency = deployment.latency
        reference = os.environ.get("BLIS_REFERENCE_STEPS") == "1"
        self.kv = KVCache(deployment.total_kv_blocks, deployment.block_size,
                          lazy_hashes=not reference and engine_cfg.kv_cpu_blocks <= 0)
        self.max_num_seqs = engine_cfg.max_num_seqs
        self.max_num_batched_tokens = engine_cfg.max_num_batched_tokens
        self.long_prefill_threshold = engine_cfg.long_prefill_token_threshold
        self.max_model_len = deployment.max_model_len
        self.scheduler = scheduler
        self.preemption_policy = preemption_policy
        self.push = push
        # the cluster and its event heap, read (never changed) to chain steps (``step``)
        self.cluster = None if reference else cluster
        self.heap = None if reference else cluster.heap
        self._bound = None  # first heap entry that can observe this instance, as of push
        self._bound_seq = -1  # number ``cluster.seq`` (pushes so far) when it was found
        # set by the cluster when other instances' events cannot spawn events that observe this
        # one (no P/D hand-offs, no fleet lifecycle): quiet steps may then pass them (``step``)
        self.commutes = False
        self.horizon = horizon
        self.on_finished = on_finished
        self.wait_q: list = []
        self.running: list = []
        self.step_pending = False
        self.next_step = -1  # time of the step the current one schedules (``step``)
        self.step_count = 0
        self.clock = 0
        self.last_event_time = 0
        self.stats = InstanceStats()
        self.former = BatchFormer(self.max_num_seqs, self.max_model_len, self.long_prefill_threshold,
                                  preemption_policy)
        self.output_token_time = self.latency.output_token_processing_time()
        self.post_decode_overhead = self.latency.post_decode_fixed_overhead()
        self.lazy_time = None if reference else self.latency.step_time_with_decodes
        self.n_lazy = 0
        self.ctx_lazy = 0  # summed progress of the lazy decoders as of the next step
        self.itl_log: list[int] = []  # ITL value of step log_base + i
        self.log_base = 0
        self.kv_due: dict[int, list] = {}  # step -> [(run_key, opens_block, req)]
        self.exit_due: dict[int, list] = {}  # step -> [(run_key, req)]
        self.run_keys = 0
        self.kv_tiered = engine_cfg.kv_cpu_blocks > 0
        if self.kv_tiered:  # CPU KV tier (spec §5.8), mirrored every step: reference steps only
            from blis.engine.kv_tiered import TieredKVCache
            self.kv = TieredKVCache(deployment.total_kv_blocks, deployment.block_size,
                                    engine_cfg.kv_cpu_blocks, engine_cfg.kv_transfer_bandwidth,
                                    engine_cfg.kv_transfer_base_latency)
            self.lazy_time = None

    # ---- entry points ----------------------------------------------------------------------
    def inject(self, req, t: int) -> None:
        """Routed request arrives at ``t``; it joins the queue after the model's queueing delay."""
        req.assigned_instance = self.id
        self.push(t + self.latency.queueing_time(req), self.src, EV_QUEUED, req)

    def handle(self, t: int, prio: int, payload) -> bool:
        """Run one instance event; returns False for a lazily cancelled timeout (clock untouched)."""
        if prio == EV_TIMEOUT and payload.state in (COMPLETED, TIMED_OUT):
            return False
        self.clock = t
        if t > self.last_event_time:
            self.last_event_time = t
        if prio == EV_STEP:
            self.step(t)
        elif prio == EV_QUEUED:
            self.enqueue(payload, t)
        else:
            self.timeout(payload, t)
        return True

    # ---- enqueue / timeout -----------------------------------------------------------------
    def enqueue(self, req, t: int) -> None:
        if req.state == TIMED_OUT:
            return
        max_len = self.max_model_len
        n_in = req.input_len
        if req.max_output_len == 0 and max_len > 0 and n_in < max_len:
            req.max_output_len = max_len - n_in
        bs = self.kv.block_size
        if (req.max_output_len < 0
                or (max_len > 0 and (n_in >= max_len or (req.max_output_len > 0 and n_in + req.max_output_len > max_len)))
                or -(-n_in // bs) > self.kv.total_blocks):
            self.stats.dropped_unservable += 1
            self.on_finished(req, t, dropped=True)
            return
        self.stats.total_input_tokens += n_in
        req.enqueue_time = t
        if 0 < req.deadline <= t:
            req.state = TIMED_OUT
            self.stats.timed_out += 1
            self.on_finished(req, t, dropped=False)
            return
        self._join_wait_queue(req, t)

    def _note_scheduled(self, now: int, newly_scheduled: list) -> None:
        """Stamp the requests this step admitted and sample the wait-queue length (HOL metric)."""
        stats = self.stats
        sched_delay = stats.sched_delay
        for r in newly_scheduled:
            r.schedule_time = now
            sched_delay[r.id] = now - r.arrival_time
        stats.queue_len_sum += len(self.wait_q)
        stats.queue_len_n += 1

    def _join_wait_queue(self, req, t: int) -> None:
        """Queue ``req``, arm its deadline, and make sure a step will look at it (INV-8)."""
        self.wait_q.append(req)
        if 0 < req.deadline <= self.horizon:
            self.push(req.deadline, self.src, EV_TIMEOUT, req)
        if not self.step_pending:
            self.step_pending = True
            self.push(t, self.src, EV_STEP, None)

    def enqueue_decode_sub_request(self, req, t: int) -> None:
        """P/D decode arrival (spec §4.7): KV is already reserved, so no guards, no input-token
        counting and no queueing delay; a deadline that passed during the transfer ends it."""
        req.enqueue_time = t
        if 0 < req.deadline <= t:
            req.state = TIMED_OUT
            self.stats.timed_out += 1
            self.kv.release(req)
            self.on_finished(req, t, dropped=False)
            return
        self._join_wait_queue(req, t)

    def timeout(self, req, t: int) -> None:
        if req.lazy_from >= 0:
            self._drop_due(req)
            self._unlazy(req, self.step_count)
        was_running = req.state == RUNNING
        req.state = TIMED_OUT
        self.stats.timed_out += 1
        self.kv.release(req)
        req.computed_tokens = 0
        if was_running:
            self.running.remove(req)
        else:
            self.wait_q.remove(req)
        if not self.running and not self.step_pending and self.wait_q:
            self.step_pending = True
            self.push(t, self.src, EV_STEP, None)
        self.on_finished(req, t, dropped=False)

    # ---- the engine step -------------------------------------------------------------------
    def step(self, now: int) -> None:
        """Run the step due at ``now`` and, while nothing else could fire before the next one,
        run that right away instead of pushing and popping it (step chaining, off with
        ``BLIS_REFERENCE_STEPS=1``). The next step goes first when it is ahead of the heap's
        top. A pure-quiet step (``_pure_quiet``: it touches nothing outside this instance) may
        also go ahead of other instances' events, as it commutes with them, when those cannot
        spawn an event that observes this instance (``commutes``), as long as it stays ahead of
        every event that can (``_observers``); runs of such steps go through ``_quiet_run``."""
        heap = self.heap
        src = self.src
        while True:
            if heap is not None and not self.wait_q and self._pure_quiet():
                t = self._quiet_run(now, self._limit())
            else:
                self.next_step = -1
                self._one_step(now)
                t = self.next_step
                if t < 0:
                    return
            if heap is None or t > self.horizon:
                break
            if heap and not _before(t, src, heap[0]):
                if not self.commutes or self.wait_q or not self._pure_quiet():
                    break
                bound = self._observers()
                if bound is not None and not _before(t, src, bound):
                    break
            now = t
            self.clock = t
            if t > self.last_event_time:
                self.last_event_time = t
        self.push(t, src, EV_STEP, None)

    def _observers(self):
        """The first heap entry that can observe this instance (``_observer_bound``), found
        again only after a push: pops alone leave a found entry a lower bound (safe), and a
        streamed arrival (pushed without a new ``seq``) only ever follows an earlier arrival,
        itself an observer no earlier than the found entry."""
        seq = self.cluster.seq
        if seq != self._bound_seq:
            heap = self.heap
            self._bound = _observer_bound(heap, self.src) if len(heap) <= 512 else heap[0]
            self._bound_seq = seq
        return self._bound

    def _limit(self):
        """The heap entry quiet steps must stay ahead of (None: nothing can fire)."""
        heap = self.heap
        if not heap:
            return None
        return self._observers() if self.commutes else heap[0]

    def _pure_quiet(self) -> bool:
        """The next step is a lazy one with nothing at all to do but time itself: no admission,
        no KV block, no exit (``_quiet_run`` runs it)."""
        n = self.n_lazy
        if self.wait_q or not n or n != len(self.running) or n > self.max_num_batched_tokens:
            return False
        step = self.step_count + 1
        return step not in self.kv_due and step not in self.exit_due

    def _quiet_run(self, now: int, bound) -> int:
        """Run the pure-quiet step due at ``now`` and the ones after it while they stay pure
        quiet and ahead of heap entry ``bound`` (None: nothing can observe this instance) and
        the horizon; returns the time of the first step not run. Each such step is exactly what
        ``_lazy_step`` does with nothing due: one ITL value from the decoders' totals and one
        wait-queue sample of 0; the decoder count is fixed, so only the summed progress moves."""
        stop = min(min(self.kv_due, default=_NEVER), min(self.exit_due, default=_NEVER))
        n = self.n_lazy
        ctx = self.ctx_lazy
        step = self.step_count
        first = step
        lazy_time = self.lazy_time
        token_time = self.output_token_time
        log = self.itl_log
        cap = self.horizon  # the latest time a further step may start at
        if bound is not None:
            latest = bound[0] if _before(bound[0], self.src, bound) else bound[0] - 1
            if latest < cap:
                cap = latest
        last = stop - 1
        append = log.append
        while True:
            step += 1
            delta = lazy_time(_NO_BATCH, n, ctx)
            if delta < 1:
                delta = 1
            append(delta + token_time)
            ctx += n
            t = now + delta
            if step >= last or t > cap:
                break
            now = t
        self.step_count = step
        self.ctx_lazy = ctx
        self.stats.queue_len_n += step - first
        self.clock = now
        if now > self.last_event_time:
            self.last_event_time = now
        if len(log) > 4096:
            self._trim_log()
        return t

    def _one_step(self, now: int) -> None:
        """One engine step; sets ``next_step`` to the time of the next one (or leaves it -1)."""
        if self.lazy_time is not None:
            if self._lazy_step(now):
                return
            if self.n_lazy:
                self._unlazy_all()
        self._reference_step(now)
        if self.lazy_time is not None and self.running:
            self._lazify_all()

    def _reference_step(self, now: int) -> None:
        """One step exactly as specified: every running request is visited."""
        running = self.running
        if not running and not self.wait_q:
            self.step_pending = False
            return
        self.step_count += 1
        self.scheduler.order(self.wait_q)
        res = self.former.form(BatchContext(running, self.wait_q, self.kv, self.step_count,
                                            self.max_num_batched_tokens))
        stats = self.stats
        stats.preemptions += res.preempted
        self._note_scheduled(now, res.newly_scheduled)

        batch = [r for r in running if r.num_new_tokens > 0]
        delta = self.latency.step_time(batch)
        if self.kv_tiered:
            delta += self.kv.take_transfer_latency()
            self.kv.mirror_to_cpu(running)
        if delta < 1:
            delta = 1
        self._advance(running, now, delta)
        used = self.kv.used_blocks
        if used > stats.peak_kv_blocks:
            stats.peak_kv_blocks = used

        remaining = []
        for r in running:
            if not self._finish(r, now, delta):
                remaining.append(r)
        self.running = remaining
        if remaining or self.wait_q:
            self.next_step = now + delta
        else:
            self.step_pending = False

    def _advance(self, reqs, now: int, delta: int) -> None:
        """Apply one step's progress to ``reqs`` (prefill chunks, decode tokens, first tokens)."""
        token_time = self.output_token_time
        ttft = self.stats.ttft
        for r in reqs:
            if r.progress_index < r.input_len:
                r.progress_index = r.computed_tokens
            elif r.num_new_tokens > 0:
                r.progress_index += 1
                r.itl.append(delta + token_time)
            if not r.ttft_set and r.progress_index == r.input_len:
                r.ttft_set = True
                r.first_token_time = now + delta + token_time - r.arrival_time
                ttft[r.id] = r.first_token_time

    def _finish(self, r, now: int, delta: int) -> bool:
        """Complete ``r`` if this step produced its last token or hit the length cap."""
        n_out = r.output_len
        p = r.progress_index
        if p >= r.input_len + (n_out if n_out > 1 else 1) - 1:
            if n_out > 0 and p < r.input_len + n_out:
                if not self.kv.allocate(r, p, p + 1, None):
                    self.stats.kv_allocation_failures += 1
            self._complete(r, now, delta, capped=False)
            return True
        max_len = self.max_model_len
        if max_len > 0 and p >= max_len - 1:
            self._complete(r, now, delta, capped=True)
            return True
        return False

    # ---- lazy decoding (module docstring) ----------------------------------------------------
    def _lazy_step(self, now: int) -> bool:
        """The step with every running request lazy; False (nothing changed) when it cannot be
        reproduced that way."""
        running = self.running
        n = len(running)
        if self.n_lazy != n or n > self.max_num_batched_tokens or not (running or self.wait_q):
            return False
        step = self.step_count + 1
        kv = self.kv
        evs = self.kv_due.get(step)
        if evs:
            opens = 0
            for e in evs:
                opens += e[1]
            if opens > len(kv.free):
                return False
            del self.kv_due[step]
        self.step_count = step
        self.scheduler.order(self.wait_q)
        if evs:
            if len(evs) > 1:
                evs.sort()
            due = self.kv_due
            after_pop = step + kv.block_size - 1 if kv.block_size > 1 else step + 1
            opens_next = kv.block_size == 1
            pop, fill = kv.decode_pop, kv.decode_fill
            for e in evs:
                r = e[2]
                if e[1]:
                    pop(r)
                    nxt = after_pop
                    e = (e[0], opens_next, r)
                else:
                    fill(r)
                    nxt = step + 1
                    e = (e[0], True, r)
                if nxt <= r.exit_step:
                    r.kv_step = nxt
                    lst = due.get(nxt)
                    if lst is None:
                        due[nxt] = [e]
                    else:
                        lst.append(e)
                else:
                    r.kv_step = -1
        res = self.former.admit(BatchContext(self.running, self.wait_q, self.kv, self.step_count,
                                             self.max_num_batched_tokens - n))
        stats = self.stats
        self._note_scheduled(now, res.newly_scheduled)

        new = running[n:]
        delta = self.lazy_time([r for r in new if r.num_new_tokens > 0], n, self.ctx_lazy)
        if delta < 1:
            delta = 1
        if not n:
            self.itl_log = []
            self.log_base = step
        self.itl_log.append(delta + self.output_token_time)
        self.ctx_lazy += n
        if new:
            self._advance(new, now, delta)
        used = kv.used_blocks
        if used > stats.peak_kv_blocks:
            stats.peak_kv_blocks = used

        done = False
        exits = self.exit_due.pop(step, None)
        if exits:
            if len(exits) > 1:
                exits.sort()
            for _, r in exits:
                self._unlazy(r, step)
                self._finish(r, now, delta)
            done = True
        for r in new:
            if self._finish(r, now, delta):
                done = True
        if done:
            self.running = running = [r for r in running if r.state == RUNNING]
        for r in new:
            if r.state == RUNNING and self._can_lazify(r):
                self._lazify(r, step + 1)
        if len(self.itl_log) > 4096:
            self._trim_log()
        if running or self.wait_q:
            self.next_step = now + delta
        else:
            self.step_pending = False
        return True

    def _can_lazify(self, r) -> bool:
        return (r.progress_index >= r.input_len and r.output_len > 0
                and r.id in self.kv.request_blocks)

    def _lazify_all(self) -> None:
        """After a reference step: go lazy if the whole batch is decoding and the lazy step is
        likely to apply (enough budget and free blocks), otherwise stay on the reference path."""
        running = self.running
        if len(running) > self.max_num_batched_tokens or len(running) > len(self.kv.free):
            return
        for r in running:
            if not self._can_lazify(r):
                return
        step = self.step_count + 1
        self.itl_log = []
        self.log_base = step
        for r in running:
            self._lazify(r, step)

    def _lazify(self, r, first: int) -> None:
        """``r`` (decoding, progress as of before step ``first``) decodes lazily from ``first``."""
        p = r.progress_index
        self.run_keys += 1
        key = self.run_keys
        r.run_key = key
        r.lazy_from = first
        self.n_lazy += 1
        self.ctx_lazy += p
        last = first + r.input_len + r.output_len - 2 - p
        max_len = self.max_model_len
        if max_len > 0 and first + max_len - 2 - p < last:
            last = first + max_len - 2 - p
        r.exit_step = last
        due = self.exit_due.get(last)
        if due is None:
            self.exit_due[last] = [(key, r)]
        else:
            due.append((key, r))
        bs = self.kv.block_size
        fill = self.kv.last_fill(r)
        if fill >= bs:
            self._due(first, key, True, r)
        elif first + bs - fill - 1 <= last:
            self._due(first + bs - fill - 1, key, False, r)
        else:
            r.kv_step = -1

    def _due(self, step: int, key: int, opens: bool, r) -> None:
        r.kv_step = step
        due = self.kv_due.get(step)
        if due is None:
            self.kv_due[step] = [(key, opens, r)]
        else:
            due.append((key, opens, r))

    def _drop_due(self, r) -> None:
        """Forget ``r``'s scheduled block and exit steps (it leaves the lazy set early)."""
        for table, step in ((self.kv_due, r.kv_step), (self.exit_due, r.exit_step)):
            due = table.get(step)
            if due is not None:
                due = [e for e in due if e[-1] is not r]
                if due:
                    table[step] = due
                else:
                    del table[step]

    def _unlazy(self, r, through: int) -> None:
        """Write back the steps ``r.lazy_from .. through`` into ``r`` and its last KV block."""
        first = r.lazy_from
        k = through - first + 1
        r.lazy_from = -1
        self.n_lazy -= 1
        if k > 0:
            r.progress_index += k
            r.computed_tokens += k
            r.num_new_tokens = 1
            b = self.log_base
            r.itl.extend(self.itl_log[first - b:through + 1 - b])
            self.kv.sync_fill(r, r.progress_index)
        self.ctx_lazy -= r.progress_index

    def _unlazy_all(self) -> None:
        step = self.step_count
        for r in self.running:
            if r.lazy_from >= 0:
                self._unlazy(r, step)
        self.kv_due.clear()
        self.exit_due.clear()
        self.itl_log = []

    def _trim_log(self) -> None:
        first = min((r.lazy_from for r in self.running if r.lazy_from >= 0), default=0)
        drop = first - self.log_base
        if drop > 0:
            del self.itl_log[:drop]
            self.log_base = first

    def finalize(self) -> None:
        """End of the run: write lazy progress back so requests read as step by step."""
        if self.n_lazy:
            self._unlazy_all()

    def _complete(self, r, now: int, delta: int, capped: bool) -> None:
        stats = self.stats
        r.state = COMPLETED
        self.kv.release(r)
        r.finished_step_idx = self.step_count
        left = now + delta
        if left <= self.horizon and left > self.last_event_time:
            self.last_event_time = left
        stats.completed += 1
        n_out = r.output_len
        decode_tokens = r.progress_index - r.input_len
        if decode_tokens < n_out:
            decode_tokens += 1
        if decode_tokens > 0:
            stats.total_output_tokens += decode_tokens
        itl = r.itl
        itl_sum = sum(itl)
        e2e = r.first_token_time + itl_sum + (self.post_decode_overhead if n_out > 0 else 0)
        stats.e2e[r.id] = e2e
        r.completion_time = r.arrival_time + e2e
        if capped:
            r.length_capped = True
            stats.length_capped += 1
            stats.itl_mean[r.id] = itl_sum / max(len(itl) - 1, 1) if n_out > 0 else 0.0
        else:
            stats.itl_mean[r.id] = itl_sum / max(n_out - 1, 1) if n_out > 0 else 0.0
        stats.itl_samples.extend(itl)
        self.on_finished(r, left, dropped=False)
