"""Block KV cache with chained-hash prefix caching and an LRU free list (spec §5).

Blocks released by a request keep their hash on the free list, so a later request (or the same
request after preemption) can claim them again until they are popped for reuse. Allocation is
check-then-act: a refused allocation leaves no partial state (INV-4).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from blis.request import hash_block


class KVCache:
    """Per-instance cache of ``total_blocks`` blocks of ``block_size`` tokens."""

    def __init__(self, total_blocks: int, block_size: int):
        self.total_blocks = int(total_blocks)
        self.block_size = int(block_size)
        self.ref_count = [0] * self.total_blocks
        self.block_hash: list[bytes | None] = [None] * self.total_blocks
        self.block_tokens: list[list[int]] = [[] for _ in range(self.total_blocks)]
        self.hash_to_block: dict[bytes, int] = {}
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(self.total_blocks))
        self.request_blocks: dict[str, list[int]] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self.mutations = 0  # bumped whenever hash_to_block changes; lets routers skip re-copies

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
                used = len(self.block_tokens[owned[-1]])
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
            new_tokens = req.input_tokens[start:end].tolist()
            prefill = True
        else:
            if not free:
                if owned is None or len(self.block_tokens[owned[-1]]) >= bs:
                    return False
            new_tokens = [int(req.output_tokens[start - req.input_len])]
            prefill = False
        self._commit(req, owned, new_tokens, cached, prefill)
        return True

    def _commit(self, req, owned, new_tokens, cached, prefill):
        bs = self.block_size
        ref = self.ref_count
        tokens = self.block_tokens
        free = self.free
        if owned is None:
            owned = []
            self.request_blocks[req.id] = owned
            if cached:
                for b in cached:
                    if ref[b] == 0:
                        del free[b]
                    ref[b] += 1
                    self.cache_hits += 1
                    owned.append(b)
        pos = 0
        n = len(new_tokens)
        if owned:
            last = owned[-1]
            room = bs - len(tokens[last])
            if room > 0:
                take = min(room, n)
                tokens[last].extend(new_tokens[:take])
                pos = take
                if len(tokens[last]) == bs:
                    self._register(owned, len(owned) - 1)
        while pos < n:
            b, _ = free.popitem(last=False)
            old = self.block_hash[b]
            if old is not None:
                if self.hash_to_block.get(old) == b:
                    del self.hash_to_block[old]
                    self.mutations += 1
                self.block_hash[b] = None
            chunk = new_tokens[pos:pos + bs]
            tokens[b] = chunk
            pos += len(chunk)
            ref[b] = 1
            self.cache_misses += 1
            owned.append(b)
            if prefill and len(chunk) == bs:
                self._register(owned, len(owned) - 1)

    def _register(self, owned: list[int], k: int) -> None:
        """Hash the now-full block ``owned[k]``, chained from the request's previous block."""
        b = owned[k]
        prev = self.block_hash[owned[k - 1]] if k > 0 else b""
        h = hash_block(prev or b"", np.asarray(self.block_tokens[b], dtype=np.int32))
        self.block_hash[b] = h
        self.hash_to_block[h] = b
        self.mutations += 1

    def release(self, req) -> None:
        """Drop ``req``'s references, deepest block first, so shared prefixes are evicted last."""
        owned = self.request_blocks.pop(req.id, None)
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
