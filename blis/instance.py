"""One vLLM-like serving instance: wait queue, running batch, KV cache and the step loop (§2.1, §4).

Events are pushed into the cluster's single heap (see ``blis.cluster``); this module owns what
happens when an instance event fires. Observational events of the reference (ScheduledEvent,
RequestLeftEvent) change no state, so they are not queued: their only visible effect, the
instance's end-of-simulation time, is tracked directly in ``last_event_time``.
"""

from __future__ import annotations

from blis.batch_formation import BatchFormer
from blis.kv_cache import KVCache
from blis.request import COMPLETED, QUEUED, RUNNING, TIMED_OUT

# instance event priorities (lower fires first at equal time)
EV_QUEUED = 1
EV_STEP = 3
EV_TIMEOUT = 6


class InstanceStats:
    """Counters and raw samples one instance accumulates; aggregated by ``blis.metrics``."""

    __slots__ = (
        "completed", "dropped_unservable", "timed_out", "length_capped", "preemptions",
        "kv_allocation_failures", "total_input_tokens", "total_output_tokens", "peak_kv_blocks",
        "ttft", "e2e", "itl_mean", "sched_delay", "itl_samples", "queue_len_samples",
        "completed_ids",
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
        self.itl_samples: list[int] = []
        self.queue_len_samples: list[int] = []
        self.completed_ids: list[str] = []


class Instance:
    """Engine state of one instance. ``push(t, src, prio, payload)`` schedules into the cluster heap."""

    def __init__(self, index: int, deployment, engine_cfg, scheduler, preemption_policy: str,
                 push, horizon: int, on_finished):
        self.index = index
        self.id = f"instance_{index}"
        self.src = index + 1
        self.deployment = deployment
        self.latency = deployment.latency
        self.kv = KVCache(deployment.total_kv_blocks, deployment.block_size)
        self.max_num_seqs = engine_cfg.max_num_seqs
        self.max_num_batched_tokens = engine_cfg.max_num_batched_tokens
        self.long_prefill_threshold = engine_cfg.long_prefill_token_threshold
        self.max_model_len = deployment.max_model_len
        self.scheduler = scheduler
        self.preemption_policy = preemption_policy
        self.push = push
        self.horizon = horizon
        self.on_finished = on_finished
        self.wait_q: list = []
        self.running: list = []
        self.step_pending = False
        self.step_count = 0
        self.clock = 0
        self.last_event_time = 0
        self.stats = InstanceStats()
        self.former = BatchFormer(self)
        self.alpha2 = self.latency.output_token_processing_time()
        self.alpha1pd = self.latency.post_decode_fixed_overhead()

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
        mml = self.max_model_len
        n_in = req.input_len
        if req.max_output_len == 0 and mml > 0 and n_in < mml:
            req.max_output_len = mml - n_in
        bs = self.kv.block_size
        if (req.max_output_len < 0
                or (mml > 0 and (n_in >= mml or (req.max_output_len > 0 and n_in + req.max_output_len > mml)))
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
        self.wait_q.append(req)
        if 0 < req.deadline <= self.horizon:
            self.push(req.deadline, self.src, EV_TIMEOUT, req)
        if not self.step_pending:
            self.step_pending = True
            self.push(t, self.src, EV_STEP, None)

    def timeout(self, req, t: int) -> None:
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
        running = self.running
        if not running and not self.wait_q:
            self.step_pending = False
            return
        self.step_count += 1
        self.scheduler.order(self.wait_q)
        former = self.former
        former.form()
        stats = self.stats
        stats.preemptions += former.preempted
        sched_delay = stats.sched_delay
        for r in former.newly_scheduled:
            r.schedule_time = now
            sched_delay[r.id] = now - r.arrival_time
        stats.queue_len_samples.append(len(self.wait_q))

        batch = [r for r in running if r.num_new_tokens > 0]
        delta = self.latency.step_time(batch)
        if delta < 1:
            delta = 1
        a2 = self.alpha2
        ttft = stats.ttft
        for r in running:
            if r.progress_index < r.input_len:
                r.progress_index = r.computed_tokens
            elif r.num_new_tokens > 0:
                r.progress_index += 1
                r.itl.append(delta + a2)
            if not r.ttft_set and r.progress_index == r.input_len:
                r.ttft_set = True
                r.first_token_time = now + delta + a2 - r.arrival_time
                ttft[r.id] = r.first_token_time
        used = self.kv.used_blocks
        if used > stats.peak_kv_blocks:
            stats.peak_kv_blocks = used

        remaining = []
        mml = self.max_model_len
        for r in running:
            n_out = r.output_len
            if r.progress_index >= r.input_len + (n_out if n_out > 1 else 1) - 1:
                if n_out > 0 and r.progress_index < r.input_len + n_out:
                    if not self.kv.allocate(r, r.progress_index, r.progress_index + 1, None):
                        stats.kv_allocation_failures += 1
                self._complete(r, now, delta, capped=False)
            elif mml > 0 and r.progress_index >= mml - 1:
                self._complete(r, now, delta, capped=True)
            else:
                remaining.append(r)
        self.running = remaining
        if remaining or self.wait_q:
            self.push(now + delta, self.src, EV_STEP, None)
        else:
            self.step_pending = False

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
        e2e = r.first_token_time + itl_sum + (self.alpha1pd if n_out > 0 else 0)
        stats.e2e[r.id] = e2e
        r.completion_time = r.arrival_time + e2e
        if capped:
            r.length_capped = True
            stats.length_capped += 1
            stats.itl_mean[r.id] = itl_sum / max(len(itl) - 1, 1) if n_out > 0 else 0.0
        else:
            stats.itl_mean[r.id] = itl_sum / max(n_out - 1, 1) if n_out > 0 else 0.0
        stats.itl_samples.extend(itl)
        stats.completed_ids.append(r.id)
        self.on_finished(r, left, dropped=False)

    # ---- signals for snapshots ----------------------------------------------------------------
    def queue_depth(self) -> int:
        return len(self.wait_q)

    def batch_size(self) -> int:
        return len(self.running)
