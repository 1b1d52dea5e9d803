"""Block KV cache with chained-hash prefix caching and an LRU free list (spec §5).

Blocks released by a request keep their hash on the free list, so a later request (or the same
request after preemption) can claim them again until they are popped for reuse. Allocation is
check-then-act: a refused allocation leaves no partial state (INV-4).
"""

from __future__ import annotations

from collections import OrderedDict
from hashlib import blake2b


from blis.request import hash_block


class KVCache:
    """Per-instance cache of ``total_blocks`` blocks of ``block_size`` tokens."""

    def __init__(self, total_blocks: int, block_size: int):
        self.total_blocks = int(total_blocks)
        self.block_size = int(block_size)
        self.ref_count = [0] * self.total_blocks
        self.block_hash: list[bytes | None] = [None] * self.total_blocks
        self.block_fill = [0] * self.total_blocks  # tokens written into each block
        self.hash_to_block: dict[bytes, int] = {}
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(self.total_blocks))
        self.request_blocks: dict[str, list[int]] = {}
        self.request_base: dict[str, int] = {}  # sequence position of a request's first block
        self.cache_hits = 0
        self.cache_misses = 0
        self.mutations = 0  # bumped whenever hash_to_block changes
        # When not None: hash -> whether it was in hash_to_block when the journal was (re)started.
        # The router's delayed prefix-cache view is the live map corrected by this journal, so a
        # cache-signal refresh costs O(1) instead of a copy of the whole map.
        self.journal: dict[bytes, bool] | None = None

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
        for h in req.block_hashes(self.block_size):
            b = h2b.get(h)
            if b is None:
                break
            out.append(b)
        return out

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
            if need + from_free > len(free):
                return False
            if n <= 0:
                return True
            self._commit(req, owned, start, n, cached, True)
        else:
            if not free:
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
                        del free[b]
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
                    self._register(req, owned, len(owned) - 1)
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
        b, _ = self.free.popitem(last=False)
        old = self.block_hash[b]
        if old is not None:
            if self.hash_to_block.get(old) == b:
                j = self.journal
                if j is not None and old not in j:
                    j[old] = True
                del self.hash_to_block[old]
                self.mutations += 1
            self.block_hash[b] = None
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
            h = req.block_hashes(bs)[k]
        else:
            prev = self.block_hash[owned[k - 1]] if k > 0 else b""
            h = hash_block(prev or b"", req.tokens_between(a, a + bs))
        self._publish(b, h)

    def _publish(self, b: int, h: bytes) -> None:
        """Make full block ``b`` findable by its prefix hash ``h`` (journaled for the router)."""
        self.block_hash[b] = h
        j = self.journal
        if j is not None and h not in j:
            j[h] = h in self.hash_to_block
        self.hash_to_block[h] = b
        self.mutations += 1

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
        bs = self.block_size
        self.block_fill[b] = bs
        a = self.request_base[rid] + k * bs - req.input_len
        prev = self.block_hash[owned[k - 1]] if k else b""
        if a >= 0:
            data = req.output_tokens[a:a + bs].tobytes()
        else:
            data = req.tokens_between(a + req.input_len, a + req.input_len + bs).tobytes()
        h = blake2b((prev or b"") + data, digest_size=16).digest()  # = hash_block, inlined
        self._publish(b, h)

    def last_fill(self, req) -> int:
        owned = self.request_blocks[req.id]
        return self.block_fill[owned[-1]]

    def sync_fill(self, req, end: int) -> None:
        """``req`` now holds sequence positions up to ``end``: set its last block's fill."""
        owned = self.request_blocks[req.id]
        self.block_fill[owned[-1]] = end - self.request_base[req.id] - (len(owned) - 1) * self.block_size

    def release(self, req) -> None:
        """Drop ``req``'s references, deepest block first, so shared prefixes are evicted last."""
        owned = self.request_blocks.pop(req.id, None)
        self.request_base.pop(req.id, None)
        if not owned:
            return
        ref = self.ref_count
        free = self.free
        for b in reversed(owned):
            ref[b] -= 1
            if ref[b] == 0:
                free[b] = None

    def check_conservation(self) -> bool:
        """INV-4: blocks referenced by someone plus free blocks equal the total."""
        in_use = sum(1 for c in self.ref_count if c > 0)
        return in_use + len(self.free) == self.total_blocks and all(
            self.ref_count[b] == 0 for b in self.free)
