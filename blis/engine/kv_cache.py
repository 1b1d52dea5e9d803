"""Block KV cache with chained-hash prefix caching and an LRU free list (spec §5).

Blocks released by a request keep their hash on the free list, so a later request (or the same
request after preemption) can claim them again until they are popped for reuse. Allocation is
check-then-act: a refused allocation leaves no partial state (INV-4).

Lazy hashes of decode-filled blocks (``lazy_hashes=True``). A block that a decode token
completes holds output tokens, so a lookup can only reach it through the exact prefix before it
(its *parent* hash), and only a block published under the same parent can share its hash. When
no block mapped in ``hash_to_block`` has that parent, the block joins the request's *pending
chain* (parent hash + consecutive decode-filled blocks) instead of being hashed. A chain is
hashed and published, in order, only when something could observe it: a prefix lookup that
matched its parent and misses the next block, a publish under its parent, a second chain under
the same parent, or the start of a cache-signal journal. A chain block popped for reuse (the
deepest first, as released) simply leaves the chain, as its hash would have left the map.
Until then nothing observable differs from hashing at fill time; ``materialize_all`` gives
exactly the eager map (the differential tests compare it).
"""

from __future__ import annotations

from array import array

import numpy as np

from blis.request import block_digest, hash_block


class KVCache:
    """Per-instance cache of ``total_blocks`` blocks of ``block_size`` tokens."""

    def __init__(self, total_blocks: int, block_size: int, lazy_hashes: bool = False):
        self.total_blocks = int(total_blocks)
        self.block_size = int(block_size)
        self.ref_count = [0] * self.total_blocks
        self.block_hash: list[bytes | None] = [None] * self.total_blocks
        self.block_fill = [0] * self.total_blocks  # tokens written into each block
        self.hash_to_block: dict[bytes, int] = {}
        self.free = FreeList(self.total_blocks)
        self.request_blocks: dict[str, list[int]] = {}
        self.request_base: dict[str, int] = {}  # sequence position of a request's first block
        self.cache_hits = 0
        self.cache_misses = 0
        # When not None: hash -> whether it was in hash_to_block when the journal was (re)started.
        # The router's delayed prefix-cache view is the live map corrected by this journal, so a
        # cache-signal refresh costs O(1) instead of a copy of the whole map.
        self.journal: dict[bytes, bool] | None = None
        self.lazy_hashes = lazy_hashes
        if lazy_hashes:
            self.block_parent: list[bytes | None] = [None] * self.total_blocks
            self.children: dict[bytes, int] = {}  # parent hash -> mapped hashes under it
            self.block_chain: list[_Chain | None] = [None] * self.total_blocks
            self.pending: dict[bytes, _Chain] = {}  # parent hash -> pending chain
            self.req_chain: dict[str, _Chain] = {}  # request id -> its growing pending chain
            self.chains_made = 0

    # ---- queries -------------------------------------------------------------------------
    @property
    def free_block_count(self) -> int:
        return len(self.free)

    @property
    def used_blocks(self) -> int:
        return self.total_blocks - len(self.free)

    def utilization(self) -> float:
        return (self.total_blocks - len(self.free)) / self.total_blocks

    def hit_rate(self) -> float:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else 0.0

    def note_hash_change(self, h: bytes) -> None:
        """Call before changing ``hash_to_block[h]`` outside this class (tiers, subclasses), so
        the router's delayed prefix-cache view stays exact."""
        j = self.journal
        if j is not None and h not in j:
            j[h] = h in self.hash_to_block

    def get_cached_blocks(self, req) -> list[int]:
        """Block ids of the longest cached full-block prefix of ``req``'s input (pure query)."""
        h2b = self.hash_to_block
        out = []
        prev = b""
        for h in req.block_hashes(self.block_size):
            b = h2b.get(h)
            if b is None:
                if not self.reveal(prev):
                    break
                b = h2b.get(h)
                if b is None:
                    break
            out.append(b)
            prev = h
        return out

    def reveal(self, parent: bytes) -> bool:
        """A lookup matched ``parent`` and missed the next hash: publish the pending chain under
        ``parent`` (if any) so the lookup sees the map hashing at fill time would have built."""
        if self.lazy_hashes:
            ch = self.pending.get(parent)
            if ch is not None:
                self._materialize(ch)
                return True
        return False

    # ---- mutation ------------------------------------------------------------------------
    def allocate(self, req, start: int, end: int, cached: list[int] | None = None) -> bool:
        """Reserve room for tokens ``[start, end)`` of ``req``; False (and no change) if full."""
        bs = self.block_size
        owned = self.request_blocks.get(req.id)
        free = self.free
        if req.progress_index < req.input_len:
            n = end - start
            spare = 0
            if owned:
                used = self.block_fill[owned[-1]]
                if 0 < used < bs:
                    spare = bs - used
            effective = n - spare
            need = -(-effective // bs) if effective > 0 else 0
            from_free = 0
            if cached and owned is None:
                ref = self.ref_count
                for b in cached:
                    if ref[b] == 0:
                        from_free += 1
            if need + from_free > free.n:
                return False
            if n <= 0:
                return True
            self._commit(req, owned, start, n, cached, True)
        else:
            if not free.n:
                if owned is None or self.block_fill[owned[-1]] >= bs:
                    return False
            self._commit(req, owned, start, 1, cached, False)
        return True

    def _commit(self, req, owned, start, n, cached, prefill):
        """Write ``n`` tokens starting at sequence position ``start``: top up the request's last
        block, then take fresh blocks from the LRU end of the free list."""
        bs = self.block_size
        ref = self.ref_count
        fill = self.block_fill
        if owned is None:
            owned = []
            self.request_blocks[req.id] = owned
            base = start
            if cached:
                free = self.free
                for b in cached:
                    if ref[b] == 0:
                        free.remove(b)
                    ref[b] += 1
                    self.cache_hits += 1
                    owned.append(b)
                base -= len(cached) * bs
            self.request_base[req.id] = base
        pos = 0
        if owned:
            last = owned[-1]
            room = bs - fill[last]
            if room > 0:
                take = room if room < n else n
                fill[last] += take
                pos = take
                if fill[last] == bs:
                    if prefill or not self.lazy_hashes:
                        self._register(req, owned, len(owned) - 1)
                    else:
                        self._decode_filled(req, owned)
        while pos < n:
            b = self._pop_free()
            take = n - pos if n - pos < bs else bs
            fill[b] = take
            pos += take
            ref[b] = 1
            owned.append(b)
            if prefill and take == bs:
                self._register(req, owned, len(owned) - 1)

    def _pop_free(self) -> int:
        """Take the least recently freed block, dropping its stale prefix hash."""
        b = self.free.popleft()
        old = self.block_hash[b]
        if old is not None:
            if self.hash_to_block.get(old) == b:
                j = self.journal
                if j is not None and old not in j:
                    j[old] = True
                del self.hash_to_block[old]
                if self.lazy_hashes:
                    p = self.block_parent[b]
                    c = self.children[p] - 1
                    if c:
                        self.children[p] = c
                    else:
                        del self.children[p]
            self.block_hash[b] = None
        elif self.lazy_hashes and self.block_chain[b] is not None:
            self._unchain(b)
        self.cache_misses += 1
        return b

    def _register(self, req, owned: list[int], k: int) -> None:
        """Hash the now-full block ``owned[k]``, chained from the request's previous block.

        A block holds sequence positions ``base + k*bs`` onwards, so its tokens come straight from
        the request; full input blocks reuse the request's own chained prefix hashes.
        """
        bs = self.block_size
        b = owned[k]
        base = self.request_base[req.id]
        a = base + k * bs
        if base == 0 and a + bs <= req.input_len:
            hashes = req.block_hashes(bs)
            h = hashes[k]
            prev = hashes[k - 1] if k > 0 else b""
        else:
            if self.lazy_hashes and req.id in self.req_chain:
                self._materialize(self.req_chain[req.id])
            prev = (self.block_hash[owned[k - 1]] if k > 0 else b"") or b""
            h = hash_block(prev, req.tokens_between(a, a + bs))
        if self.lazy_hashes:
            ch = self.pending.get(prev)
            if ch is not None:
                self._materialize(ch)
        self._publish(b, h, prev)

    def _publish(self, b: int, h: bytes, parent: bytes) -> None:
        """Make full block ``b`` findable by its prefix hash ``h`` (journaled for the router)."""
        self.block_hash[b] = h
        j = self.journal
        h2b = self.hash_to_block
        if j is not None and h not in j:
            j[h] = h in h2b
        if self.lazy_hashes:
            if h not in h2b:
                self.children[parent] = self.children.get(parent, 0) + 1
            self.block_parent[b] = parent
        h2b[h] = b

    # ---- pending chains (module docstring) -----------------------------------------------
    def _decode_filled(self, req, owned: list[int]) -> None:
        """A decode token completed ``owned[-1]``: extend or start the request's pending chain,
        or hash it now when a block under the same parent could share its hash."""
        rid = req.id
        b = owned[-1]
        ch = self.req_chain.get(rid)
        if ch is not None:
            ch.blocks.append(b)
            self.block_chain[b] = ch
            return
        k = len(owned) - 1
        prev = (self.block_hash[owned[k - 1]] if k else b"") or b""
        other = self.pending.get(prev)
        if other is not None:
            self._materialize(other)
        if prev in self.children:
            self._publish(b, self._hash_of(req, k, prev), prev)
            return
        self.chains_made += 1
        ch = _Chain(prev, b, req, self.request_base[rid] + k * self.block_size, self.chains_made)
        self.pending[prev] = ch
        self.req_chain[rid] = ch
        self.block_chain[b] = ch

    def _hash_of(self, req, k: int, prev: bytes) -> bytes:
        """Hash of the request's full block ``k`` chained from ``prev`` (= ``hash_block``)."""
        bs = self.block_size
        a = self.request_base[req.id] + k * bs - req.input_len
        if a >= 0:
            data = req.output_tokens[a:a + bs].tobytes()
        else:
            data = req.tokens_between(a + req.input_len, a + req.input_len + bs).tobytes()
        return block_digest(prev + data)

    def _materialize(self, ch) -> None:
        """Hash and publish chain ``ch`` in fill order; it stops being pending."""
        del self.pending[ch.parent]
        src = ch.src
        n = len(ch.blocks)
        step = self.block_size * 4  # int32 token bytes per block
        if isinstance(src, bytes):
            data = src
        else:
            self.req_chain.pop(src.id, None)
            data = src.tokens_between(ch.start, ch.start + n * self.block_size).tobytes()
        prev = ch.parent
        chain = self.block_chain
        for i, b in enumerate(ch.blocks):
            chain[b] = None
            h = block_digest(prev + data[i * step:(i + 1) * step])
            self._publish(b, h, prev)
            prev = h

    def _detach(self, req) -> None:
        """``req`` releases its blocks: its pending chain keeps a copy of its tokens."""
        ch = self.req_chain.pop(req.id)
        ch.src = req.tokens_between(ch.start, ch.start + len(ch.blocks) * self.block_size).tobytes()

    def _unchain(self, b: int) -> None:
        """Pending block ``b`` is popped for reuse: it leaves its chain (its hash would have
        left the map now). Chains are popped deepest first; anything else is published first."""
        ch = self.block_chain[b]
        if ch.blocks[-1] != b or not isinstance(ch.src, bytes):
            self._materialize(ch)
            old = self.block_hash[b]
            if self.hash_to_block.get(old) == b:
                del self.hash_to_block[old]
                p = self.block_parent[b]
                c = self.children[p] - 1
                if c:
                    self.children[p] = c
                else:
                    del self.children[p]
            self.block_hash[b] = None
            return
        self.block_chain[b] = None
        ch.blocks.pop()
        if not ch.blocks:
            del self.pending[ch.parent]

    def materialize_all(self) -> None:
        """Publish every pending chain (oldest first): the map hashing at fill time builds."""
        if self.lazy_hashes:
            for ch in sorted(self.pending.values(), key=lambda c: c.seq):
                self._materialize(ch)

    def start_journal(self) -> None:
        """The router's delayed prefix view starts now: it sees the live map through a journal,
        so from here on every hash is published when its block fills."""
        self.materialize_all()
        self.lazy_hashes = False
        self.journal = {}

    # ---- decode steps the engine advances without materialising every token ---------------
    def decode_pop(self, req) -> None:
        """The next decode token of ``req`` opens a new block (its last block is full)."""
        b = self._pop_free()
        self.block_fill[b] = 1
        self.ref_count[b] = 1
        self.request_blocks[req.id].append(b)

    def decode_fill(self, req) -> None:
        """The next decode token of ``req`` completes its last block, which becomes cacheable.
        The block holds at least that output token, so it is never a pure input block."""
        rid = req.id
        owned = self.request_blocks[rid]
        k = len(owned) - 1
        b = owned[k]
        self.block_fill[b] = self.block_size
        if self.lazy_hashes:
            ch = self.req_chain.get(rid)
            if ch is None:
                self._decode_filled(req, owned)
            else:  # the common case, as in _decode_filled
                ch.blocks.append(b)
                self.block_chain[b] = ch
            return
        prev = (self.block_hash[owned[k - 1]] if k else b"") or b""
        self._publish(b, self._hash_of(req, k, prev), prev)

    def last_fill(self, req) -> int:
        owned = self.request_blocks[req.id]
        return self.block_fill[owned[-1]]

    def sync_fill(self, req, end: int) -> None:
        """``req`` now holds sequence positions up to ``end``: set its last block's fill."""
        owned = self.request_blocks[req.id]
        self.block_fill[owned[-1]] = end - self.request_base[req.id] - (len(owned) - 1) * self.block_size

    def release(self, req) -> None:
        """Drop ``req``'s references, deepest block first, so shared prefixes are evicted last."""
        if self.lazy_hashes and req.id in self.req_chain:
            self._detach(req)
        owned = self.request_blocks.pop(req.id, None)
        self.request_base.pop(req.id, None)
        if not owned:
            return
        ref = self.ref_count
        free = self.free
        for b in reversed(owned):
            ref[b] -= 1
            if ref[b] == 0:
                free.push(b)

    def check_conservation(self) -> bool:
        """INV-4: blocks referenced by someone plus free blocks equal the total."""
        in_use = sum(1 for c in self.ref_count if c > 0)
        return in_use + len(self.free) == self.total_blocks and all(
            self.ref_count[b] == 0 for b in self.free)


class _Chain:
    """Pending decode-filled blocks of one request, in sequence order from ``start``; ``src`` is
    the request while it holds them, then a copy of their tokens."""

    __slots__ = ("parent", "blocks", "src", "start", "seq")

    def __init__(self, parent: bytes, first: int, req, start: int, seq: int):
        self.seq = seq
        self.parent = parent
        self.blocks = [first]
        self.src = req
        self.start = start


class FreeList:
    """The LRU list of free block ids: a doubly linked list threaded through two id-indexed arrays,
    so taking the least recently freed block, freeing one (most recent end) and claiming a
    given one are O(1) without a node object per block (compiled, C arrays; ``kv_cache.pxd``).
    Iteration runs from the least recently freed block, as reuse does."""

    def __init__(self, n: int):
        ids = np.arange(-1, n + 1, dtype=np.int64).tobytes()  # 6x faster than from a range
        self.prv = array("q", ids[:-16])  # -1, 0, ..., n - 2
        self.nxt = array("q", ids[16:])   # 1, ..., n
        if n:
            self.nxt[n - 1] = -1
        self.head = 0 if n else -1
        self.tail = n - 1
        self.n = n

    def popleft(self) -> int:
        """Take the least recently freed block."""
        b = self.head
        if b < 0:
            raise IndexError("no free block")
        q = self.nxt[b]
        self.head = q
        if q >= 0:
            self.prv[q] = -1
        else:
            self.tail = -1
        self.prv[b] = -2
        self.n -= 1
        return b

    def remove(self, b: int) -> None:
        """Take free block ``b`` off the list (``prv[b] == -2`` marks a block not on it)."""
        nxt = self.nxt
        prv = self.prv
        p = prv[b]
        q = nxt[b]
        if p >= 0:
            nxt[p] = q
        else:
            self.head = q
        if q >= 0:
            prv[q] = p
        else:
            self.tail = p
        prv[b] = -2
        self.n -= 1

    def push(self, b: int) -> None:
        """Free block ``b``: it becomes the most recently freed."""
        t = self.tail
        self.prv[b] = t
        self.nxt[b] = -1
        if t >= 0:
            self.nxt[t] = b
        else:
            self.head = b
        self.tail = b
        self.n += 1

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __contains__(self, b) -> bool:
        return 0 <= b < len(self.prv) and self.prv[b] != -2

    def __iter__(self):
        b = self.head
        while b >= 0:
            yield b
            b = self.nxt[b]
