"""Batch formation (spec §4.2–4.3) on a bare instance: budgets, chunking, HOL, preemption."""

import numpy as np

from blis.engine.batch_formation import BatchContext, BatchFormer
from blis.engine.kv_cache import KVCache
from blis.request import QUEUED, RUNNING, Request


class Inst:
    """The state an instance hands batch formation, without the instance."""

    def __init__(self, blocks=1000, bs=16, max_seqs=256, budget=2048, thr=0, mml=0, policy="fcfs"):
        self.kv = KVCache(blocks, bs)
        self.running, self.wait_q = [], []
        self.max_num_seqs, self.max_num_batched_tokens = max_seqs, budget
        self.long_prefill_threshold, self.max_model_len = thr, mml
        self.preemption_policy, self.step_count = policy, 1
        self.former = BatchFormer(max_seqs, mml, thr, policy)

    def form(self):
        return self.former.form(BatchContext(self.running, self.wait_q, self.kv, self.step_count,
                                             self.max_num_batched_tokens))


_seq = iter(range(10**6))


def mk(n_in, n_out=5, arrival=None, priority=0.0):
    i = next(_seq)
    r = Request(f"r{i}", np.arange(n_in) + 1000 * i, np.arange(n_out), arrival if arrival is not None else i)
    r.priority = priority
    return r


def run_prefill(inst, *reqs):
    """Admit ``reqs`` in one step and execute their prefill as the engine would."""
    inst.wait_q.extend(reqs)
    inst.form()
    for r in reqs:
        r.progress_index = r.computed_tokens


def test_chunked_prefill_limited_by_token_budget_and_threshold():
    inst = Inst(budget=2048)
    r = mk(3000)
    inst.wait_q.append(r)
    inst.form()
    assert r.num_new_tokens == 2048 and r.state == RUNNING
    inst2 = Inst(budget=2048, thr=512)
    r2 = mk(3000)
    inst2.wait_q.append(r2)
    inst2.form()
    assert r2.num_new_tokens == 512


def test_running_requests_served_before_waiting_ones():
    inst = Inst(budget=100)
    a = mk(40)
    run_prefill(inst, a)
    b = mk(200)
    inst.wait_q.append(b)
    inst.form()
    assert a.num_new_tokens == 1  # decode token first
    assert b.num_new_tokens == 99  # the rest of the budget


def test_prefill_finishing_this_step_gets_no_decode_token_in_same_step():
    inst = Inst()
    r = mk(10)
    inst.wait_q.append(r)
    inst.form()
    assert r.num_new_tokens == 10  # prefill only; decode starts next step


def test_max_num_seqs_caps_admission():
    inst = Inst(max_seqs=2)
    for _ in range(4):
        inst.wait_q.append(mk(8))
    inst.form()
    assert len(inst.running) == 2 and len(inst.wait_q) == 2


def test_head_of_line_blocking_on_kv():
    inst = Inst(blocks=4, bs=16)
    big = mk(100)  # needs 7 blocks: cannot fit
    small = mk(10)
    inst.wait_q.extend([big, small])
    inst.form()
    assert inst.running == [] and inst.wait_q == [big, small]


def test_fcfs_preemption_evicts_tail_and_requeues_at_front():
    inst = Inst(blocks=2, bs=4)
    a, b = mk(4, n_out=8), mk(4, n_out=8)
    run_prefill(inst, a, b)
    assert inst.kv.free_block_count == 0
    b.itl = [5, 5]
    b.ttft_set = True
    res = inst.form()  # a's decode needs a new block: b (the tail) is preempted
    assert res.preempted == 1
    assert inst.running == [a] and a.num_new_tokens == 1
    assert inst.wait_q[0] is b
    assert b.state == QUEUED and b.progress_index == 0 and b.itl == [] and not b.ttft_set
    assert inst.kv.check_conservation()


def test_no_admission_in_a_step_with_preemption():
    inst = Inst(blocks=2, bs=4)
    a, b = mk(4, n_out=8), mk(4, n_out=8)
    run_prefill(inst, a, b)
    c = mk(1)
    inst.wait_q.append(c)
    inst.form()
    assert c not in inst.running


def test_priority_preemption_evicts_least_urgent_with_index_compensation():
    inst = Inst(blocks=4, bs=4, policy="priority")
    lazy = mk(4, n_out=8, priority=7)
    urgent = mk(4, n_out=8, priority=0)
    mid = mk(4, n_out=8, priority=1)
    run_prefill(inst, lazy, urgent, mid)
    assert inst.running == [lazy, urgent, mid] and inst.kv.free_block_count == 1
    res = inst.form()
    # lazy took the last free block, then urgent evicted it (an entry *before* the cursor)
    assert res.preempted == 1 and inst.wait_q[0] is lazy
    assert inst.running == [urgent, mid]
    # INV-12: the request after the evicted one still got its decode token
    assert urgent.num_new_tokens == 1 and mid.num_new_tokens == 1
    assert res.budget_left == 2048 - 2
    assert inst.kv.check_conservation()


def test_self_preemption_when_cache_too_small():
    inst = Inst(blocks=1, bs=4)
    r = mk(4, n_out=8)
    run_prefill(inst, r)
    inst.form()
    assert inst.running == [] and inst.wait_q == [r]


def test_max_model_len_clamps_prefill_chunk():
    inst = Inst(mml=50)
    r = mk(40, n_out=100)
    inst.wait_q.append(r)
    inst.form()
    assert r.num_new_tokens == 40
    r2 = mk(60, n_out=1)
    inst.wait_q.append(r2)
    inst.form()
    assert r2.num_new_tokens == 49  # mml - 1 - start


def test_fully_cached_prompt_admitted_with_zero_new_tokens():
    inst = Inst(bs=4)
    a = mk(8)
    run_prefill(inst, a)
    inst.running.clear()
    inst.kv.release(a)
    b = Request("copy", a.input_tokens.copy(), np.arange(3), 99)
    inst.wait_q.append(b)
    inst.form()
    assert b in inst.running and b.num_new_tokens == 0 and b.computed_tokens == 8
