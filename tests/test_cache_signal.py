"""The router's delayed prefix-cache view (``--cache-signal-delay``) read through the KV journal
equals a copy of the hash map taken at the refresh, whatever the cache did since."""

import numpy as np
import pytest

from blis.engine.kv_cache import KVCache
from blis.engine.kv_tiered import TieredKVCache
from blis.request import Request


def _journal_view(kv, h) -> bool:
    j = kv.journal
    return j[h] if h in j else h in kv.hash_to_block


@pytest.mark.parametrize("tiered", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_journal_view_equals_copy_taken_at_refresh(seed, tiered):
    rng = np.random.default_rng(seed)
    # a small GPU tier behind a larger CPU one: hashes leave the GPU and are reloaded
    kv = TieredKVCache(12, 4, 60, 1.0, 1) if tiered else KVCache(30, 4)
    live: dict[str, Request] = {}
    seen: set = set()
    snap = None
    for step in range(600):
        u = rng.random()
        if u < 0.05:  # refresh
            snap = dict(kv.hash_to_block)
            kv.journal = {}
        elif u < 0.3 and live:
            kv.release(live.pop(list(live)[rng.integers(len(live))]))
        elif u < 0.5 and live:  # decode tokens of a running request
            r = live[list(live)[rng.integers(len(live))]]
            if r.progress_index < r.input_len + r.output_len - 1:
                p = r.progress_index
                if kv.allocate(r, p, p + 1):
                    r.progress_index += 1
        else:
            n = int(rng.integers(1, 20))
            toks = rng.integers(0, 2, size=n)  # tiny vocabulary: shared prefixes, equal hashes
            r = Request(f"r{step}", toks, rng.integers(0, 2, size=12), arrival_time=0)
            cached = kv.get_cached_blocks(r)
            if kv.allocate(r, len(cached) * 4, n, cached):
                r.progress_index = n
                live[r.id] = r
            if tiered:
                kv.mirror_to_cpu(list(live.values()))
        seen.update(kv.hash_to_block)
        if snap is not None:
            seen.update(snap)
            for h in seen:
                assert _journal_view(kv, h) == (h in snap)
    assert not tiered or kv.reloads > 0
