"""vLLM-v1-style batch formation with chunked prefill and recompute preemption (spec §4.2–4.3).

Running requests are served first (continuing prefills, then one decode token each), then the
wait queue is admitted head-of-line while sequences, token budget and KV blocks allow. A request
that cannot get KV evicts victims (the batch tail, or the least urgent under ``priority``); a
victim loses all progress and goes back to the front of the wait queue.

The contract: ``form(ctx)`` takes a ``BatchContext`` (the step's queues and KV cache, which it
changes in place, and the token budget) and returns a ``BatchResult`` (who was admitted, how many
preemptions, the budget left). Batch formation schedules no events and records no metrics; the
instance does both from the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from blis.request import QUEUED, RUNNING


@dataclass(slots=True)
class BatchContext:
    """What one step's batch formation works on: the running batch and wait queue (reordered and
    moved between in place), the KV cache, the step's index and its token budget."""

    running: list
    wait_q: list
    kv: object
    step_index: int
    token_budget: int


@dataclass(slots=True)
class BatchResult:
    """What batch formation decided: requests admitted from the wait queue this step, the number
    of preemptions, and the token budget left over."""

    newly_scheduled: list
    preempted: int
    budget_left: int


class BatchFormer:
    """One instance's batch-formation rules (limits and preemption policy); keeps no state
    between steps."""

    __slots__ = ("max_num_seqs", "max_model_len", "long_prefill_threshold", "preemption_policy")

    def __init__(self, max_num_seqs: int, max_model_len: int, long_prefill_threshold: int,
                 preemption_policy: str):
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.long_prefill_threshold = long_prefill_threshold
        self.preemption_policy = preemption_policy

    def form(self, ctx: BatchContext) -> BatchResult:
        """Serve the running batch, then (if nothing was preempted) admit from the wait queue."""
        running = ctx.running
        max_len = self.max_model_len
        res = BatchResult([], 0, ctx.token_budget)
        for r in running:
            r.num_new_tokens = 0

        i = 0
        while i < len(running):
            if res.budget_left <= 0:
                break
            r = running[i]
            n = r.input_len - r.progress_index
            if n > 0:
                n = self.chunk_size(n, r.progress_index, res.budget_left)
                ok, adj = self._preempt_for_tokens(ctx, res, r, n, i)
                i -= adj
                if not ok:
                    break
                res.budget_left -= n
                r.num_new_tokens = n
                r.computed_tokens += n
            if r.progress_index >= r.input_len and r.output_len > 0:
                if not (max_len > 0 and r.progress_index + 1 > max_len - 1):
                    ok, adj = self._preempt_for_tokens(ctx, res, r, 1, i)
                    i -= adj
                    if not ok:
                        break
                    res.budget_left -= 1
                    r.num_new_tokens = 1
                    r.computed_tokens += 1
            i += 1

        if not res.preempted:
            self._admit(ctx, res)
        return res

    def chunk_size(self, remaining: int, position: int, budget: int) -> int:
        """Tokens a prefill with ``remaining`` input tokens left from sequence ``position`` gets
        this step: capped by the long-prefill threshold, the token budget and the model length."""
        n = remaining
        thr = self.long_prefill_threshold
        if 0 < thr < n:
            n = thr
        if n > budget:
            n = budget
        max_len = self.max_model_len
        if max_len > 0:
            n = min(n, max(max_len - 1 - position, 0))
        return n

    def admit(self, ctx: BatchContext) -> BatchResult:
        """Only the admission phase: the caller has already served the running batch."""
        res = BatchResult([], 0, ctx.token_budget)
        self._admit(ctx, res)
        return res

    def _admit(self, ctx: BatchContext, res: BatchResult) -> None:
        """Admit wait-queue heads while sequences, the remaining budget and KV blocks allow."""
        running = ctx.running
        kv = ctx.kv
        waitq = ctx.wait_q
        bs = kv.block_size
        max_seqs = self.max_num_seqs
        while len(running) < max_seqs and waitq and res.budget_left > 0:
            r = waitq[0]
            if r.is_decode_sub_request and r.progress_index >= r.input_len:
                # P/D decode arrival: its input KV was reserved at transfer start (spec §4.2)
                n = 1 if r.output_len > 0 else 0
                if n and not kv.allocate(r, r.progress_index, r.progress_index + 1, None):
                    break
                self._schedule_head(ctx, res, r, n, r.progress_index + n)
                continue
            cached = kv.get_cached_blocks(r)
            start = len(cached) * bs
            n = self.chunk_size(r.input_len - start, start, res.budget_left)
            if not kv.allocate(r, start, start + n, cached):
                break
            self._schedule_head(ctx, res, r, n, n + start)

    @staticmethod
    def _schedule_head(ctx: BatchContext, res: BatchResult, r, n: int, computed: int) -> None:
        """Move the wait-queue head ``r`` into the running batch with ``n`` new tokens."""
        ctx.wait_q.pop(0)
        ctx.running.append(r)
        r.scheduled_step_idx = ctx.step_index
        r.state = RUNNING
        res.budget_left -= n
        r.num_new_tokens = n
        r.computed_tokens = computed
        res.newly_scheduled.append(r)

    def _preempt_for_tokens(self, ctx: BatchContext, res: BatchResult, r, n: int, i: int) -> tuple[bool, int]:
        kv = ctx.kv
        running = ctx.running
        adj = 0
        while True:
            if kv.allocate(r, r.progress_index, r.progress_index + n, None):
                return True, adj
            if not running:
                return False, adj
            res.preempted += 1
            v = victim_index(running, self.preemption_policy)
            victim = running.pop(v)
            if v < i - adj:
                adj += 1
            if victim.num_new_tokens > 0:
                res.budget_left += victim.num_new_tokens
                victim.num_new_tokens = 0
            evict(victim, kv, ctx.wait_q)
            if victim is r:
                return False, adj


def victim_index(running: list, policy: str) -> int:
    """The running request to preempt: the batch tail, or under ``priority`` the least urgent
    (largest priority value, then latest arrival; the one nearest the tail on a tie)."""
    v = len(running) - 1
    if policy == "priority":
        best = running[v]
        for j in range(v - 1, -1, -1):
            c = running[j]
            if (c.priority, c.arrival_time) > (best.priority, best.arrival_time):
                v, best = j, c
    return v


def evict(victim, kv, wait_q: list) -> None:
    """Recompute preemption of ``victim`` (already out of the running batch): it loses all
    progress and its KV blocks, and goes back to the front of the wait queue."""
    victim.state = QUEUED
    victim.progress_index = 0
    victim.itl = []
    victim.ttft_set = False
    victim.computed_tokens = 0
    kv.release(victim)
    wait_q.insert(0, victim)
