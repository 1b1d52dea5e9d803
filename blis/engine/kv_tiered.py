"""GPU KV cache backed by a CPU tier of prefix blocks (spec §5.8, ``--kv-cpu-blocks > 0``).

After every step the full, hashed blocks held by running requests are mirrored into an LRU map
of ``kv_cpu_blocks`` block hashes (new ones inserted, present ones touched; overflow evicts the
least recently mirrored). When a request is about to be admitted, its input's hash chain is
walked past the blocks already on the GPU: blocks found on the CPU are reloaded into free GPU
blocks (hash registered, reference count 0) until a block is on neither tier. Each reload costs
``base_latency + ceil(block_size / bandwidth)`` µs, added to the current step's time.

Deliberate choice: the reload happens at the prefix lookup that precedes admission, so the
request then claims the reloaded blocks instead of recomputing them. The reference reloads
inside the allocation, after the cached prefix was measured, so the request recomputes the
blocks it just paid to reload and only later requests benefit.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from blis.engine.kv_cache import KVCache


class TieredKVCache(KVCache):
    """A ``KVCache`` plus the CPU tier; the instance mirrors and collects latency each step."""

    def __init__(self, total_blocks: int, block_size: int, cpu_blocks: int,
                 bandwidth_tokens_per_us: float, base_latency_us: int):
        super().__init__(total_blocks, block_size)
        self.cpu_capacity = int(cpu_blocks)
        self.cpu: OrderedDict[bytes, None] = OrderedDict()
        self.reload_cost = int(base_latency_us) + math.ceil(block_size / bandwidth_tokens_per_us)
        self.pending_latency = 0
        self.mirrored = 0        # blocks inserted into the CPU tier
        self.cpu_evictions = 0
        self.reloads = 0
        self.reload_latency = 0  # total µs added to steps

    def get_cached_blocks(self, req) -> list[int]:
        self._reload(req)
        return super().get_cached_blocks(req)

    def _reload(self, req) -> None:
        cpu = self.cpu
        if not cpu:
            return
        h2b = self.hash_to_block
        hashes = req.block_hashes(self.block_size)
        keep = {h2b[h] for h in hashes if h in h2b}   # never evict this request's own prefix
        for h in hashes:
            if h in h2b:
                continue
            if h not in cpu:
                break
            b = next((f for f in self.free if f not in keep), None)
            if b is None:
                break
            self.free.remove(b)
            old = self.block_hash[b]
            if old is not None and h2b.get(old) == b:
                self.note_hash_change(old)
                del h2b[old]
            self.block_hash[b] = h
            self.block_fill[b] = self.block_size
            self.note_hash_change(h)
            h2b[h] = b
            self.free.push(b)
            keep.add(b)
            cpu.move_to_end(h)
            self.reloads += 1
            self.pending_latency += self.reload_cost

    def take_transfer_latency(self) -> int:
        """Reload time accumulated since the last step (µs), reset to zero."""
        lat = self.pending_latency
        self.pending_latency = 0
        self.reload_latency += lat
        return lat

    def mirror_to_cpu(self, running) -> None:
        """Insert (MRU) or touch every full, hashed block the running requests hold."""
        cpu = self.cpu
        cap = self.cpu_capacity
        touch = cpu.move_to_end
        evict = cpu.popitem
        get_hash = self.block_hash.__getitem__
        blocks = self.request_blocks
        for r in running:
            owned = blocks.get(r.id)
            if not owned:
                continue
            for h in map(get_hash, owned):
                if h is None:
                    continue
                try:
                    touch(h)
                except KeyError:
                    cpu[h] = None
                    self.mirrored += 1
                    if len(cpu) > cap:
                        evict(last=False)
                        self.cpu_evictions += 1

    def thrashing_rate(self) -> float:
        """CPU evictions per mirrored block: how often the tier drops what it just took."""
        return self.cpu_evictions / self.mirrored if self.mirrored else 0.0
