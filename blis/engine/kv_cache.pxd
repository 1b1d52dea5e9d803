# Typed state for the compiled build of kv_cache.py (Cython pure-Python mode; setup.py). The .py
# stays the source and, interpreted, the reference path: this file only declares C types for
# its attributes and locals, and makes the internal methods C calls.
cimport cython
from blis.request cimport Request


cdef class KVCache:
    cdef public Py_ssize_t total_blocks, block_size
    cdef public list ref_count, block_hash, block_fill
    cdef public dict hash_to_block
    cdef public FreeList free
    cdef public dict request_blocks, request_base
    cdef public Py_ssize_t cache_hits, cache_misses
    cdef public object journal
    cdef public bint lazy_hashes
    cdef public list block_parent, block_chain
    cdef public dict children, pending, req_chain
    cdef public Py_ssize_t chains_made

    @cython.locals(h2b=dict, out=list)
    cpdef list get_cached_blocks(self, Request req)
    @cython.locals(bs=Py_ssize_t, n=Py_ssize_t, spare=Py_ssize_t, used=Py_ssize_t, effective=Py_ssize_t,
                   need=Py_ssize_t, from_free=Py_ssize_t, b=Py_ssize_t, owned=list, ref=list, free=FreeList)
    cpdef bint allocate(self, Request req, Py_ssize_t start, Py_ssize_t end, list cached=*) except -1
    @cython.locals(bs=Py_ssize_t, ref=list, fill=list, base=Py_ssize_t, pos=Py_ssize_t, last=Py_ssize_t,
                   room=Py_ssize_t, take=Py_ssize_t, b=Py_ssize_t, free=FreeList)
    cdef _commit(self, Request req, list owned, Py_ssize_t start, Py_ssize_t n, list cached, bint prefill)
    @cython.locals(b=Py_ssize_t, c=Py_ssize_t, j=dict)
    cdef Py_ssize_t _pop_free(self) except -1
    @cython.locals(bs=Py_ssize_t, b=Py_ssize_t, base=Py_ssize_t, a=Py_ssize_t, hashes=list)
    cdef _register(self, Request req, list owned, Py_ssize_t k)
    @cython.locals(j=dict, h2b=dict)
    cdef _publish(self, Py_ssize_t b, bytes h, bytes parent)
    @cython.locals(b=Py_ssize_t, k=Py_ssize_t, ch=_Chain, other=_Chain)
    cdef _decode_filled(self, Request req, list owned)
    @cython.locals(bs=Py_ssize_t, a=Py_ssize_t)
    cdef bytes _hash_of(self, Request req, Py_ssize_t k, bytes prev)
    @cython.locals(n=Py_ssize_t, step=Py_ssize_t, i=Py_ssize_t, b=Py_ssize_t, chain=list)
    cdef _materialize(self, _Chain ch)
    @cython.locals(ch=_Chain)
    cdef _detach(self, Request req)
    @cython.locals(ch=_Chain, c=Py_ssize_t)
    cdef _unchain(self, Py_ssize_t b)
    @cython.locals(b=Py_ssize_t)
    cpdef decode_pop(self, Request req)
    @cython.locals(owned=list, k=Py_ssize_t, b=Py_ssize_t, ch=_Chain)
    cpdef decode_fill(self, Request req)
    @cython.locals(ref=list, owned=list, b=Py_ssize_t, free=FreeList)
    cpdef release(self, Request req)
    @cython.locals(owned=list)
    cpdef Py_ssize_t last_fill(self, Request req) except -1
    @cython.locals(owned=list)
    cpdef sync_fill(self, Request req, Py_ssize_t end)


cdef class FreeList:
    cdef long long[::1] nxt, prv
    cdef public Py_ssize_t head, tail, n

    @cython.locals(b=Py_ssize_t, q=Py_ssize_t)
    cpdef Py_ssize_t popleft(self) except -1
    @cython.locals(p=Py_ssize_t, q=Py_ssize_t, nxt="long long[::1]", prv="long long[::1]")
    cpdef remove(self, Py_ssize_t b)
    @cython.locals(t=Py_ssize_t)
    cpdef push(self, Py_ssize_t b)


cdef class _Chain:
    cdef public bytes parent
    cdef public list blocks
    cdef public object src
    cdef public Py_ssize_t start, seq
