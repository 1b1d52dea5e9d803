"""One vLLM-like serving instance: wait queue, running batch, KV cache and the step loop (§2.1, §4).

Events are pushed into the cluster's single heap (see ``blis.cluster.simulator``); this module owns what
happens when an instance event fires. Observational events of the reference (ScheduledEvent,
RequestLeftEvent) change no state, so they are not queued: their only visible effect, the
instance's end-of-simulation time, is tracked directly in ``last_event_time``.

The fast path (lazy decoding, step chaining) lives in ``blis.engine.fast_path``; this module
holds the reference step it must reproduce.
"""

from __future__ import annotations

from blis.engine.batch_formation import BatchContext, BatchFormer
from blis.engine.fast_path import FastPath, reference_steps_only
from blis.engine.kv_cache import KVCache
from blis.events import EV_QUEUED, EV_STEP, EV_TIMEOUT
from blis.request import COMPLETED, RUNNING, TIMED_OUT
from blis.results.metrics import IntHistogram


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


class Instance(FastPath):
    """Engine state of one instance. ``push(t, src, prio, payload)`` schedules into the cluster heap."""

    def __init__(self, index: int, deployment, engine_cfg, scheduler, preemption_policy: str,
                 push, horizon: int, on_finished, cluster):
        self.index = index
        self.id = f"instance_{index}"
        self.src = index + 1
        self.deployment = deployment
        self.latency = deployment.latency
        reference = reference_steps_only()
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
        self.prefilling: list = []  # [(run_key, req)]: continuing chunked prefills, batch order
        self.run_keys = 0
        self.kv_tiered = engine_cfg.kv_cpu_blocks > 0
        if self.kv_tiered:  # CPU KV tier (spec §5.8), mirrored every step: reference steps only
            from blis.engine.kv_tiered import TieredKVCache
            self.kv = TieredKVCache(deployment.total_kv_blocks, deployment.block_size,
                                    engine_cfg.kv_cpu_blocks, engine_cfg.kv_transfer_bandwidth,
                                    engine_cfg.kv_transfer_base_latency)
            self.disable_lazy_decoding()

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
        self._leave_fast_path(req)
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

    def finalize(self) -> None:
        """End of the run: write lazy progress back so requests read as step by step."""
        if self.n_lazy or self.prefilling:
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
