# Typed state for the compiled build of fast_path.py (Cython pure-Python mode; setup.py). The .py
# stays the source and, interpreted, the reference path: this file declares the instance state the
# fast path reads as C fields and makes its internal methods C calls. Methods the tests wrap
# (_evict_for, _unserved, _take_chunk) and step (overridden by tests/test_invariants.py) stay
# Python methods.
cimport cython
from blis.engine.kv_cache cimport KVCache
from blis.request cimport Request


cdef bint _before(t, Py_ssize_t src, tuple event) except -1
@cython.locals(s=Py_ssize_t)
cdef object _observer_bound(list heap, Py_ssize_t src)


cdef class FastPath:
    cdef public list heap, wait_q, running, itl_log, prefilling
    cdef public dict kv_due, exit_due
    cdef public KVCache kv
    cdef public Py_ssize_t src, n_lazy, step_count, run_keys, log_base, max_num_batched_tokens
    cdef public Py_ssize_t max_model_len
    cdef public long long next_step, horizon, clock, last_event_time, ctx_lazy, _bound_seq
    cdef public bint commutes, step_pending
    cdef public object cluster, push, _bound, lazy_time, latency, output_token_time, stats
    cdef public object scheduler, former, preemption_policy

    cdef object _observers(self)
    cdef object _limit(self)
    @cython.locals(n=Py_ssize_t, step=Py_ssize_t)
    cdef bint _pure_quiet(self)
    @cython.locals(stop=Py_ssize_t, n=Py_ssize_t, ctx=cython.longlong, step=Py_ssize_t, first=Py_ssize_t,
                   last=Py_ssize_t, cap=cython.longlong, latest=cython.longlong, log=list)
    cdef object _quiet_run(self, now, bound)
    cdef _one_step(self, now)
    @cython.locals(running=list, n=Py_ssize_t, n_dec=Py_ssize_t, pf=list, step=Py_ssize_t, kv=KVCache,
                   evs=list, preempted=Py_ssize_t, short=bint, budget=Py_ssize_t, need=Py_ssize_t,
                   opens=Py_ssize_t, due=dict, after_pop=Py_ssize_t, opens_next=bint, k_pf=Py_ssize_t,
                   i_pf=Py_ssize_t, key=Py_ssize_t, opens_block=bint, nxt=Py_ssize_t, lst=list, i=Py_ssize_t,
                   r=Request, new=list, moved=list, batch=list, used=Py_ssize_t, gone=list, exits=list, sizes=list,
                   wait_q=list)
    cdef bint _lazy_step(self, now) except -1
    cdef _track_prefill(self, Request r)
    @cython.locals(running=list, kv=KVCache, bs=Py_ssize_t, fill=list, blocks=dict, total=Py_ssize_t,
                   taken=Py_ssize_t, need=Py_ssize_t, sizes=list, j=Py_ssize_t, p=Py_ssize_t, left=Py_ssize_t,
                   c=Py_ssize_t, spare=Py_ssize_t, used=Py_ssize_t, r=Request)
    cdef _chunks(self)
    @cython.locals(keep=list, r=Request)
    cdef _prefills_advanced(self, Py_ssize_t step)
    cdef bint _can_lazify(self, Request r) except -1
    @cython.locals(running=list, step=Py_ssize_t, r=Request)
    cdef _lazify_all(self)
    @cython.locals(p=Py_ssize_t, last=Py_ssize_t, max_len=Py_ssize_t, bs=Py_ssize_t, fill=Py_ssize_t, due=list)
    cdef _lazify(self, Request r, Py_ssize_t first, Py_ssize_t key=*)
    @cython.locals(due=list)
    cdef _due(self, Py_ssize_t step, Py_ssize_t key, bint opens, Request r)
    cdef _drop_due(self, Request r)
    @cython.locals(first=Py_ssize_t, k=Py_ssize_t, b=Py_ssize_t)
    cdef _unlazy(self, Request r, Py_ssize_t through)
    @cython.locals(r=Request)
    cpdef _unlazy_all(self)
    cdef _trim_log(self)
