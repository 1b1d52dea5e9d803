"""The engine's fast path: lazy decoding and step chaining, in one place, with the plain
step (``Instance._reference_step``) as the reference it must reproduce byte for byte.
``BLIS_REFERENCE_STEPS=1`` turns all of it off; ``tests/test_fast_path.py`` compares both.

Lazy decoding. Most of a step's work in a busy instance is the same for every running request:
one decode token, one ITL sample equal to the step time, one more slot in the last KV block. With
a latency backend that only needs the number of decoders and their summed progress
(``step_time_with_decodes``), steadily decoding requests are therefore not visited each step.
Each one records the step it went lazy at (``lazy_from``); the instance logs every step's ITL
value and keeps the decoders' count and summed progress; the only per-request work left is
scheduled ahead in step-indexed buckets: ``kv_due[step] = [(run_key, opens_block, request)]``,
the steps at which its next token opens or completes a KV block (so block pops and hash
registrations happen at exactly the same step and in the same running order as step by step),
and ``exit_due[step] = [(run_key, request)]``, the step at which it completes or hits the
length cap. Preemption (``_evict_for``) and continuing chunked prefills (``prefilling``) run
inside the lazy step too. A request is written back (``_unlazy``) when it completes, times out,
is preempted, or when a step falls outside what the lazy step reproduces (a token budget that
runs out before the batch's last request, prefill chunks with too few free blocks); that step
then runs the reference code.
Everything observable between steps (queue lengths, KV occupancy, prefix hashes) is exact at all
times.

Eligibility, in one place: an instance decodes lazily while ``lazy_time`` (the backend's
``step_time_with_decodes``) is set, which ``disable_lazy_decoding`` clears for what the lazy
step does not reproduce; a request joins the lazy set when ``_can_lazify`` says so.

Step chaining: see ``FastPath.step``.
"""

from __future__ import annotations

import os

from blis.engine.batch_formation import BatchContext, evict, victim_index
from blis.events import EV_STEP, EV_TIMEOUT
from blis.request import COMPLETED, RUNNING, TIMED_OUT

_NEVER = 1 << 62  # a step number no run reaches
_NO_BATCH = ()  # a quiet step's newly scheduled batch


def _first(entry):
    return entry[0]


def reference_steps_only() -> bool:
    """The switch for differential testing: every step on the reference path."""
    return os.environ.get("BLIS_REFERENCE_STEPS") == "1"


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


class FastPath:
    """The fast-path half of ``Instance`` (a mixin: it works on the instance's own state)."""

    def disable_lazy_decoding(self) -> None:
        """Keep this instance on the reference step: the CPU KV tier mirrors every step, and an
        IMMEDIATE drain drops a running batch, neither of which the lazy step reproduces."""
        self.lazy_time = None

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
            if self.n_lazy or self.prefilling:
                self._unlazy_all()
        self._reference_step(now)
        if self.lazy_time is not None and self.running:
            self._lazify_all()

    def _lazy_step(self, now: int) -> bool:
        """The step with every running request lazy; False (nothing changed) when it cannot be
        reproduced that way."""
        running = self.running
        n = len(running)
        n_dec = self.n_lazy
        pf = self.prefilling
        if n_dec + len(pf) != n or n > self.max_num_batched_tokens or not (running or self.wait_q):
            return False
        step = self.step_count + 1
        kv = self.kv
        evs = self.kv_due.get(step)
        preempted = 0
        unserved = None
        short = False  # fewer free blocks than this step opens: the policy's victims are preempted
        budget = self.max_num_batched_tokens - n_dec
        if pf:
            chunks = self._chunks()
            if chunks is None:
                return False
            sizes, need = chunks
            budget -= sum(sizes)
        else:
            need = 0
        if evs or need:
            opens = need
            if evs:
                if need + len(evs) > len(kv.free):  # else no count can exceed the free blocks
                    for _key, opens_block, _req in evs:
                        opens += opens_block
            short = opens > len(kv.free)
            if short and pf:
                return False
            if evs:
                del self.kv_due[step]
        self.step_count = step
        wait_q = self.wait_q
        if wait_q:
            self.scheduler.order(wait_q)
        if evs:
            if len(evs) > 1:
                evs.sort()
            due = self.kv_due
            after_pop = step + kv.block_size - 1 if kv.block_size > 1 else step + 1
            opens_next = kv.block_size == 1
            k_pf = pf[0][0] if pf else _NEVER
            i_pf = 0
            for key, opens_block, r in evs:
                if key > k_pf:  # continuing prefills ahead of r in the batch take their chunks
                    while key > k_pf:
                        self._take_chunk(pf[i_pf][1], sizes[i_pf])
                        i_pf += 1
                        k_pf = pf[i_pf][0] if i_pf < len(pf) else _NEVER
                if short:
                    if r.lazy_from < 0:  # evicted earlier in this step
                        continue
                    if opens_block and not kv.free:
                        preempted += self._evict_for(r, step)
                        if r.state != RUNNING:
                            unserved = self._unserved(key, step)
                            break
                if opens_block:
                    kv.decode_pop(r)
                    nxt = after_pop
                    e = (key, opens_next, r)
                else:
                    kv.decode_fill(r)
                    nxt = step + 1
                    e = (key, True, r)
                if nxt <= r.exit_step:
                    r.kv_step = nxt
                    lst = due.get(nxt)
                    if lst is None:
                        due[nxt] = [e]
                    else:
                        lst.append(e)
                else:
                    r.kv_step = -1
            for i in range(i_pf, len(pf)):
                self._take_chunk(pf[i][1], sizes[i])
        elif pf:
            for i, (_key, r) in enumerate(pf):
                self._take_chunk(r, sizes[i])
        stats = self.stats
        if preempted:
            stats.preemptions += preempted
            n = len(running)
            n_dec = self.n_lazy
        if wait_q and not preempted:
            res = self.former.admit(BatchContext(running, wait_q, kv, step, budget))
            self._note_scheduled(now, res.newly_scheduled)
        else:  # = _note_scheduled with nothing admitted
            stats.queue_len_sum += len(wait_q)
            stats.queue_len_n += 1

        new = running[n:]
        moved = [r for _key, r in pf] + new if pf else new  # in batch order, as the reference
        batch = [r for r in moved if r.num_new_tokens > 0]
        if batch or n_dec:
            delta = self.lazy_time(batch, n_dec, self.ctx_lazy)
        else:  # everyone preempted or unserved: the reference step's empty batch
            delta = self.latency.step_time(batch)
        if delta < 1:
            delta = 1
        if not n_dec:
            self.itl_log = []
            self.log_base = step
        self.itl_log.append(delta + self.output_token_time)
        self.ctx_lazy += n_dec
        if moved:
            self._advance(moved, now, delta)
        used = kv.used_blocks
        if used > stats.peak_kv_blocks:
            stats.peak_kv_blocks = used

        gone = None  # requests this step completed, in batch order
        exits = self.exit_due.pop(step, None)
        if pf:  # they may complete too, in batch order with the lazy exits
            exits = (exits or []) + pf
        if exits:
            if len(exits) > 1:
                exits.sort(key=_first)
            gone = []
            for _, r in exits:
                if r.lazy_from >= 0:
                    self._unlazy(r, step)
                if self._finish(r, now, delta):
                    gone.append(r)
        for r in new:
            if self._finish(r, now, delta):
                if gone is None:
                    gone = []
                gone.append(r)
        if gone:
            for r in gone:  # a few per step: cheaper than filtering the whole batch
                running.remove(r)
        if pf:
            self._prefills_advanced(step)
        if unserved:
            for r in unserved:
                self._lazify(r, step + 1)
        for r in new:
            if r.state == RUNNING:
                if self._can_lazify(r):
                    self._lazify(r, step + 1)
                elif r.progress_index < r.input_len:
                    self._track_prefill(r)
        if len(self.itl_log) > 4096:
            self._trim_log()
        if running or self.wait_q:
            self.next_step = now + delta
        else:
            self.step_pending = False
        return True

    def _track_prefill(self, r) -> None:
        """``r`` continues its prefill in later steps: it gets the next batch-order key."""
        self.run_keys += 1
        r.run_key = self.run_keys
        self.prefilling.append((self.run_keys, r))

    def _chunks(self):
        """Continuing prefills in a lazy step: (the tokens each takes, the KV blocks they need), as batch
        formation's running pass computes them, or None when that pass would run out of token
        budget before the batch's last request (what comes after would not be served)."""
        running = self.running
        kv = self.kv
        bs = kv.block_size
        fill = kv.block_fill
        blocks = kv.request_blocks
        total = self.max_num_batched_tokens
        taken = need = 0
        sizes = []
        for j, (_key, r) in enumerate(self.prefilling):
            p = r.progress_index
            left = total - (running.index(r) - j) - taken  # decoders ahead take one token each
            if left <= 0:
                return None
            c = self.former.chunk_size(r.input_len - p, p, left)
            sizes.append(c)
            taken += c
            owned = blocks.get(r.id)
            spare = 0
            if owned:
                used = fill[owned[-1]]
                if 0 < used < bs:
                    spare = bs - used
            if c > spare:
                need += -(-(c - spare) // bs)
        if running[-1].lazy_from >= 0 and total - (len(running) - 1 - len(self.prefilling)) - taken <= 0:
            return None
        return sizes, need

    def _take_chunk(self, r, c: int) -> None:
        """Batch formation's running pass for continuing prefill ``r`` (its blocks are known to
        be free: ``_chunks``)."""
        self.kv.allocate(r, r.progress_index, r.progress_index + c, None)
        r.num_new_tokens = c
        r.computed_tokens += c

    def _prefills_advanced(self, step: int) -> None:
        """After a lazy step: continuing prefills that completed or finished their input leave
        the list; a finished one that now decodes joins the lazy set under its batch key."""
        keep = []
        for key, r in self.prefilling:
            if r.state != RUNNING:
                continue
            if r.progress_index < r.input_len:
                keep.append((key, r))
            elif self._can_lazify(r):
                self._lazify(r, step + 1, key)
        self.prefilling = keep

    def _leave_fast_path(self, r) -> None:
        """``r`` leaves the batch outside a step (a timeout): forget what the fast path holds."""
        if r.lazy_from >= 0:
            self._drop_due(r)
            self._unlazy(r, self.step_count)
        elif self.prefilling:
            self.prefilling = [e for e in self.prefilling if e[1] is not r]

    def _evict_for(self, r, step: int) -> int:
        """``r``'s next token needs a block and none is free: preempt victims (the policy's,
        ``victim_index``) until one is, as batch formation does. A victim served earlier in
        this step loses that token with the rest of its progress; when ``r`` itself is the
        victim, the running pass ends there (``_unserved``). Returns the number preempted."""
        running = self.running
        kv = self.kv
        policy = self.preemption_policy
        n = 0
        while not kv.free:
            victim = running.pop(victim_index(running, policy))
            n += 1
            self._drop_due(victim)
            self._unlazy(victim, step - 1)
            victim.num_new_tokens = 0
            evict(victim, kv, self.wait_q)
            if victim is r:
                break
        return n

    def _unserved(self, key: int, step: int) -> list:
        """The evicted request with batch key ``key`` ended the running pass: the requests after
        it get no token this step. They leave the lazy set as of the step before and rejoin it
        from the next one (under new keys, in batch order: they are the batch's tail)."""
        out = [r for r in self.running if r.run_key > key]
        for r in out:
            self._drop_due(r)
            self._unlazy(r, step - 1)
        return out

    def _can_lazify(self, r) -> bool:
        return (r.progress_index >= r.input_len and r.output_len > 0
                and r.id in self.kv.request_blocks)

    def _lazify_all(self) -> None:
        """After a reference step: go lazy if the whole batch is decoding and the lazy step is
        likely to apply (enough budget and free blocks), otherwise stay on the reference path."""
        running = self.running
        if len(running) > self.max_num_batched_tokens:
            return
        for r in running:
            if not self._can_lazify(r) and r.progress_index >= r.input_len:
                return
        step = self.step_count + 1
        self.itl_log = []
        self.log_base = step
        for r in running:
            if r.progress_index < r.input_len:
                self._track_prefill(r)
            else:
                self._lazify(r, step)

    def _lazify(self, r, first: int, key: int = 0) -> None:
        """``r`` (decoding, progress as of before step ``first``) decodes lazily from ``first``,
        under batch-order ``key`` (a new one unless it keeps its place as a former prefill)."""
        p = r.progress_index
        if not key:
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
                due = [e for e in due if e[-1] is not r]  # the request is both tuples' last field
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
        self.prefilling = []
        self.itl_log = []

    def _trim_log(self) -> None:
        first = min((r.lazy_from for r in self.running if r.lazy_from >= 0), default=0)
        drop = first - self.log_base
        if drop > 0:
            del self.itl_log[:drop]
            self.log_base = first
