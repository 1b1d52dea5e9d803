"""vLLM-v1-style batch formation with chunked prefill and recompute preemption (spec §4.2–4.3).

Running requests are served first (continuing prefills, then one decode token each), then the
wait queue is admitted head-of-line while sequences, token budget and KV blocks allow. A request
that cannot get KV evicts victims (the batch tail, or the least urgent under ``priority``); a
victim loses all progress and goes back to the front of the wait queue.
"""

from __future__ import annotations

from blis.request import QUEUED, RUNNING


class BatchFormer:
    """Holds the per-step mutable state (token budget, preemption flag) of one instance."""

    __slots__ = ("inst", "budget", "preempted", "newly_scheduled")

    def __init__(self, inst):
        self.inst = inst
        self.budget = 0
        self.preempted = 0
        self.newly_scheduled: list = []

    def form(self) -> None:
        inst = self.inst
        running = inst.running
        max_len = inst.max_model_len
        thr = inst.long_prefill_threshold
        self.budget = inst.max_num_batched_tokens
        self.preempted = 0
        self.newly_scheduled = []
        for r in running:
            r.num_new_tokens = 0

        i = 0
        while i < len(running):
            if self.budget <= 0:
                break
            r = running[i]
            n = r.input_len - r.progress_index
            if n > 0:
                if 0 < thr < n:
                    n = thr
                if n > self.budget:
                    n = self.budget
                if max_len > 0:
                    n = min(n, max(max_len - 1 - r.progress_index, 0))
                ok, adj = self._preempt_for_tokens(r, n, i)
                i -= adj
                if not ok:
                    break
                self.budget -= n
                r.num_new_tokens = n
                r.computed_tokens += n
            if r.progress_index >= r.input_len and r.output_len > 0:
                if not (max_len > 0 and r.progress_index + 1 > max_len - 1):
                    ok, adj = self._preempt_for_tokens(r, 1, i)
                    i -= adj
                    if not ok:
                        break
                    self.budget -= 1
                    r.num_new_tokens = 1
                    r.computed_tokens += 1
            i += 1

        if not self.preempted:
            self.admit()

    def admit(self) -> None:
        """Admit wait-queue heads while sequences, the remaining budget and KV blocks allow."""
        inst = self.inst
        running = inst.running
        kv = inst.kv
        max_len = inst.max_model_len
        thr = inst.long_prefill_threshold
        waitq = inst.wait_q
        bs = kv.block_size
        max_seqs = inst.max_num_seqs
        while len(running) < max_seqs and waitq and self.budget > 0:
            r = waitq[0]
            if r.is_decode_sub_request and r.progress_index >= r.input_len:
                # P/D decode arrival: its input KV was reserved at transfer start (spec §4.2)
                n = 1 if r.output_len > 0 else 0
                if n and not kv.allocate(r, r.progress_index, r.progress_index + 1, None):
                    break
                self._schedule_head(r, n, r.progress_index + n)
                continue
            cached = kv.get_cached_blocks(r)
            start = len(cached) * bs
            n = r.input_len - start
            if 0 < thr < n:
                n = thr
            if n > self.budget:
                n = self.budget
            if max_len > 0:
                n = min(n, max(max_len - 1 - start, 0))
            if not kv.allocate(r, start, start + n, cached):
                break
            self._schedule_head(r, n, n + start)

    def _schedule_head(self, r, n: int, computed: int) -> None:
        """Move the wait-queue head ``r`` into the running batch with ``n`` new tokens."""
        inst = self.inst
        inst.wait_q.pop(0)
        inst.running.append(r)
        r.scheduled_step_idx = inst.step_count
        r.state = RUNNING
        self.budget -= n
        r.num_new_tokens = n
        r.computed_tokens = computed
        self.newly_scheduled.append(r)

    def _preempt_for_tokens(self, r, n: int, i: int) -> tuple[bool, int]:
        inst = self.inst
        kv = inst.kv
        running = inst.running
        adj = 0
        while True:
            if kv.allocate(r, r.progress_index, r.progress_index + n, None):
                return True, adj
            if not running:
                return False, adj
            self.preempted += 1
            if inst.preemption_policy == "priority":
                v = len(running) - 1
                best = running[v]
                for j in range(len(running) - 2, -1, -1):
                    c = running[j]
                    if (c.priority, c.arrival_time) > (best.priority, best.arrival_time):
                        v, best = j, c
            else:
                v = len(running) - 1
            victim = running.pop(v)
            if v < i - adj:
                adj += 1
            if victim.num_new_tokens > 0:
                self.budget += victim.num_new_tokens
                victim.num_new_tokens = 0
            victim.state = QUEUED
            victim.progress_index = 0
            victim.itl = []
            victim.ttft_set = False
            victim.computed_tokens = 0
            kv.release(victim)
            inst.wait_q.insert(0, victim)
            if victim is r:
                return False, adj
