"""KV cache edge cases against the spec's rules (§5.2–5.6) and INV-4."""

import numpy as np
import pytest

from blis.engine.kv_cache import KVCache
from blis.request import Request


def req(rid, tokens, out=3):
    return Request(rid, np.asarray(tokens), np.arange(out) + 7, arrival_time=0)


def test_prefill_allocates_ceil_blocks_and_registers_full_block_hashes():
    kv = KVCache(10, 4)
    r = req("a", range(10))
    assert kv.allocate(r, 0, 10)
    assert kv.used_blocks == 3  # ceil(10/4)
    assert len(kv.hash_to_block) == 2  # only the two full blocks are hashed
    assert kv.cache_misses == 3 and kv.cache_hits == 0
    assert kv.check_conservation()


def test_chunked_prefill_fills_partial_block_before_popping_new_ones():
    kv = KVCache(10, 4)
    r = req("a", range(10))
    assert kv.allocate(r, 0, 6)  # blocks: [4 tokens][2 tokens]
    assert kv.used_blocks == 2
    assert kv.allocate(r, 6, 10)  # 2 fill the partial block, 2 go to a new block
    assert kv.used_blocks == 3
    assert len(kv.hash_to_block) == 2


def test_allocation_refused_without_partial_state():
    kv = KVCache(3, 4)
    r = req("a", range(20))
    before = (kv.used_blocks, dict(kv.hash_to_block), kv.cache_misses)
    assert not kv.allocate(r, 0, 20)  # needs 5 blocks, only 3 exist
    assert (kv.used_blocks, dict(kv.hash_to_block), kv.cache_misses) == before
    assert "a" not in kv.request_blocks


def test_prefix_hit_after_release_and_lru_reuse_order():
    kv = KVCache(4, 4)
    a = req("a", range(8))
    assert kv.allocate(a, 0, 8)
    kv.release(a)
    assert kv.free_block_count == 4
    b = req("b", list(range(8)) + [99, 98, 97, 96])
    cached = kv.get_cached_blocks(b)
    assert len(cached) == 2  # both of a's blocks still carry their hashes on the free list
    assert kv.allocate(b, 8, 12, cached)
    assert kv.cache_hits == 2
    assert kv.used_blocks == 3
    assert kv.check_conservation()


def test_release_is_reverse_order_so_deepest_block_is_evicted_first():
    kv = KVCache(4, 2)
    a = req("a", range(4))
    assert kv.allocate(a, 0, 4)
    first, second = kv.request_blocks["a"]
    kv.release(a)
    free_order = list(kv.free)
    # never-used blocks first (head), then a's blocks deepest-first
    assert free_order[-2:] == [second, first]


def test_shared_prefix_refcount_and_lazy_hash_deletion():
    kv = KVCache(3, 2)
    a = req("a", [1, 2, 3, 4])
    b = req("b", [1, 2, 3, 4, 5, 6])
    assert kv.allocate(a, 0, 4)
    cached = kv.get_cached_blocks(b)
    assert len(cached) == 2
    assert kv.allocate(b, 4, 6, cached)
    shared = kv.request_blocks["a"][0]
    assert kv.ref_count[shared] == 2
    kv.release(a)
    assert kv.ref_count[shared] == 1 and kv.used_blocks == 3
    kv.release(b)
    assert kv.used_blocks == 0
    # reusing every block drops the stale hashes lazily
    c = req("c", [9, 9, 8, 8, 7, 7])
    assert kv.allocate(c, 0, 6)
    assert set(kv.hash_to_block.values()) == set(kv.request_blocks["c"])
    assert kv.check_conservation()


def test_zero_token_allocation_claims_nothing():
    kv = KVCache(4, 2)
    a = req("a", [1, 2, 3, 4])
    assert kv.allocate(a, 0, 4)
    kv.release(a)
    b = req("b", [1, 2, 3, 4])
    cached = kv.get_cached_blocks(b)
    assert len(cached) == 2
    assert kv.allocate(b, 4, 4, cached)  # fully cached: n = 0
    assert "b" not in kv.request_blocks and kv.cache_hits == 0


def test_decode_needs_a_free_block_only_when_last_block_is_full():
    kv = KVCache(2, 2)
    r = req("a", [1, 2, 3], out=4)
    assert kv.allocate(r, 0, 3)
    r.progress_index = 3
    assert kv.allocate(r, 3, 4)  # fills the partial block, no new block
    assert kv.used_blocks == 2
    r.progress_index = 4
    assert not kv.allocate(r, 4, 5)  # last block full, no free blocks
    # the decode-filled block became hashable (prefix cacheable)
    assert len(kv.hash_to_block) == 2


@pytest.mark.parametrize("seed", range(5))
def test_random_operation_sequences_conserve_blocks(seed):
    rng = np.random.default_rng(seed)
    kv = KVCache(40, 4)
    live = {}
    for step in range(400):
        if live and rng.random() < 0.3:
            rid = list(live)[rng.integers(len(live))]
            kv.release(live.pop(rid))
        else:
            n = int(rng.integers(1, 30))
            toks = rng.integers(0, 3, size=n)  # tiny vocabulary => many prefix hits
            r = req(f"r{step}", toks)
            cached = kv.get_cached_blocks(r)
            if kv.allocate(r, len(cached) * 4, n, cached):
                if n > len(cached) * 4:
                    live[r.id] = r
        assert kv.check_conservation()
        assert kv.used_blocks == sum(1 for c in kv.ref_count if c > 0)
