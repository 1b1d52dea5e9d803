"""Runs without per-request output: lazily drawn tokens and dropped payloads change nothing."""

import numpy as np
import pytest

from blis.options import build_config
from blis.workload import generate_requests

MODEL = "qwen/qwen2.5-7b-instruct"


def _workload(seed: int):
    rng = np.random.default_rng(seed)
    opts = {"model": MODEL, "seed": int(rng.integers(1, 1000)), "rate": 50,
            "num_requests": int(rng.integers(1, 5000)),
            "prompt_tokens": int(rng.integers(1, 400)), "output_tokens": int(rng.integers(1, 300)),
            "prefix_tokens": int(rng.choice([0, 0, 37, 300]))}
    return build_config(opts)


@pytest.mark.parametrize("seed", range(6))
def test_lazy_tokens_equal_eager_tokens(seed):
    cfg = _workload(seed)
    args = (cfg.workload, cfg.max_requests, cfg.horizon, cfg.timeout_override_us)
    eager = generate_requests(*args)
    lazy = generate_requests(*args, lazy_tokens=True)
    assert len(lazy) == len(eager)
    rng = np.random.default_rng(seed)
    skipped = set(rng.choice(len(lazy), size=len(lazy) // 5).tolist())
    for i, (a, b) in enumerate(zip(eager, lazy)):
        assert (b.input_len, b.output_len, b.arrival_time) == (a.input_len, a.output_len,
                                                               a.arrival_time)
        if i in skipped:  # finished without ever touching its tokens
            b.drop_payload()
            continue
        assert np.array_equal(a.input_tokens, b.input_tokens)
        assert np.array_equal(a.output_tokens, b.output_tokens)
        assert b.block_hashes(16) == a.block_hashes(16)


def test_lazy_stream_holds_only_chunks_still_needed():
    cfg = _workload(3)
    reqs = generate_requests(cfg.workload, 5000, cfg.horizon, lazy_tokens=True)
    stream = reqs[0]._token_source[0]
    for r in reqs[:3 * stream.CHUNK]:
        r.input_tokens
        r.drop_payload()
    assert len(stream.live) == 0  # every drawn chunk was fully served
    reqs[3500].output_tokens  # later chunks are drawn on demand, earlier ones not kept
    assert sorted(stream.live) == [3500 // stream.CHUNK]
