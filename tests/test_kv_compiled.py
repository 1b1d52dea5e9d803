"""Differential tests: the compiled KV cache (``kv_cache.py`` built with ``kv_cache.pxd``) against
the interpreted source (``BLIS_PURE_PYTHON=1``, see ``blis/engine/__init__.py``).

Whole simulations run in two subprocesses, one per build, over the same random configurations
(prefix sharing, KV pressure and preemption, roofline, chunked prefill, P/D, the CPU tier); stdout,
``to_dict()``, per-request rows and state and the final KV state of every instance must be
identical. A random operation sequence also drives both classes side by side in this process.
Where ``.ci/run`` sets ``BLIS_REQUIRE_COMPILED=1`` a missing compiled module is a failure, not a skip.
"""

import os
import pickle
import subprocess
import sys
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import numpy as np
import pytest
from conftest import MODEL
from test_fast_path import HAND_PICKED, KINDS, pd_options, random_options, small_options

import blis.engine.kv_cache as kv_module
from blis.request import Request

COMPILED = not kv_module.__file__.endswith(".py")
REQUIRED = os.environ.get("BLIS_REQUIRE_COMPILED") == "1"
needs_compiled = pytest.mark.skipif(not COMPILED and not REQUIRED, reason="kv_cache is not compiled here")


def _configs() -> list[dict]:
    out = [random_options(s) for s in range(24)] + [pd_options(s) for s in range(6)]
    out += [small_options(s, kind) for kind in KINDS for s in range(8)]
    out += [HAND_PICKED["sessions"], HAND_PICKED["sessions_tight_kv"]]
    for s in range(4):  # the CPU tier subclasses the cache and reloads into its free list
        out.append({"model": MODEL, "seed": s + 1, "num_instances": 2, "rate": 30, "num_requests": 50,
                    "prefix_tokens": 1024, "prompt_tokens": 256, "output_tokens": 128,
                    "total_kv_blocks": 200 + 60 * s, "kv_cpu_blocks": (50, 400, 4000, 4000)[s],
                    "routing_policy": "round-robin"})
    return out


CHILD = """
import pickle, sys
sys.path.insert(0, sys.argv[1])
from test_fast_path import _observable
from test_kv_compiled import _configs
import blis.engine.kv_cache as kv
from blis.config.options import build_config
from blis.simulation import run_simulation
rows = []
for opts in _configs():
    res = run_simulation(build_config(opts))
    obs = _observable(res)
    obs["kv_more"] = [(list(i.kv.ref_count), list(i.kv.block_fill), dict(i.kv.request_blocks),
                       i.kv.used_blocks, i.kv.check_conservation(), getattr(i.kv, "reloads", None))
                      for i in res.sim.instances]
    rows.append(obs)
pickle.dump((kv.__file__, rows), sys.stdout.buffer)
"""


def _simulate_all(pure: bool):
    env = {k: v for k, v in os.environ.items() if k not in ("BLIS_PURE_PYTHON", "BLIS_REFERENCE_STEPS")}
    if pure:
        env["BLIS_PURE_PYTHON"] = "1"
    tests = str(Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", CHILD, tests], env=env, capture_output=True, check=True).stdout
    return pickle.loads(out)


def test_compiled_module_is_built_where_required():
    if REQUIRED:
        assert COMPILED, f"kv_cache was not compiled: {kv_module.__file__}"
    assert kv_module.KVCache.__module__ == "blis.engine.kv_cache"


@needs_compiled
def test_compiled_kv_cache_matches_interpreted_on_random_simulations():
    compiled_file, compiled = _simulate_all(pure=False)
    pure_file, pure = _simulate_all(pure=True)
    assert not compiled_file.endswith(".py") and pure_file.endswith(".py")  # really two builds
    configs = _configs()
    assert len(compiled) == len(pure) == len(configs)
    for i, (a, b) in enumerate(zip(compiled, pure)):
        for key in b:
            assert a[key] == b[key], f"config {i} ({configs[i]}): {key}"
    assert sum(sum(h for h, _m, *_ in r["kv"]) for r in pure) > 0  # prefix hits happened
    assert sum(i[-1] or 0 for r in pure for i in r["kv_more"]) > 0  # the CPU tier reloaded blocks
    assert sum(sum(h for h, _m, *_ in r["kv"]) for r in compiled) > 0


def _pure_module():
    spec = spec_from_file_location("blis_kv_cache_source", kv_module.__file__.rsplit("/", 1)[0] + "/kv_cache.py")
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _state(kv) -> tuple:
    kv.materialize_all()
    return (list(kv.free), list(kv.ref_count), list(kv.block_fill), list(kv.block_hash),
            dict(kv.hash_to_block), {k: list(v) for k, v in kv.request_blocks.items()},
            dict(kv.request_base), kv.cache_hits, kv.cache_misses, len(kv.free), kv.used_blocks)


def _request(rng, i: int, shared: np.ndarray) -> Request:
    n_in = int(rng.integers(1, 60))
    tokens = np.concatenate([shared[:int(rng.integers(0, len(shared)))],
                             rng.integers(0, 50, n_in).astype(np.int32)])
    out = rng.integers(0, 50, int(rng.integers(1, 40))).astype(np.int32)
    return Request(f"r{i}", tokens.astype(np.int32), out, arrival_time=i)


@needs_compiled
@pytest.mark.parametrize("seed", range(6))
def test_compiled_and_interpreted_caches_agree_op_by_op(seed):
    """Random admit / decode / release / preempt sequences on both classes, state compared after
    every operation (free-list order included)."""
    pure_mod = _pure_module()
    rng = np.random.default_rng(seed)
    blocks, bs = int(rng.integers(6, 40)), int(rng.choice([1, 2, 4, 7]))
    lazy = bool(seed % 2)
    caches = [kv_module.KVCache(blocks, bs, lazy), pure_mod.KVCache(blocks, bs, lazy)]
    shared = rng.integers(0, 50, 40).astype(np.int32)
    live = [[], []]
    for i in range(250):
        op = rng.random()
        if op < 0.4 or not live[0]:  # admit a request with its cached prefix
            req = [_request(np.random.default_rng((seed, i)), i, shared) for _ in caches]
            got = []
            for kv, r, lst in zip(caches, req, live):
                cached = kv.get_cached_blocks(r)
                ok = kv.allocate(r, len(cached) * bs, r.input_len, cached)
                if ok:
                    r.progress_index = r.input_len
                    lst.append(r)
                got.append((cached, ok))
            assert got[0] == got[1]
        else:
            k = int(rng.integers(0, len(live[0])))
            if op < 0.85:  # one decode token, as a reference step or as the lazy path does
                got = []
                for kv, lst in zip(caches, live):
                    r = lst[k]
                    p = r.progress_index
                    ok = p < r.input_len + r.output_len - 1
                    if ok and op < 0.6:
                        ok = kv.allocate(r, p, p + 1, None)
                    elif ok:
                        fill = kv.last_fill(r)
                        if fill == bs:
                            ok = len(kv.free) > 0
                            if ok:
                                kv.decode_pop(r)
                        elif fill == bs - 1:
                            kv.decode_fill(r)
                        else:
                            kv.sync_fill(r, p + 1)
                    if ok:
                        r.progress_index = p + 1
                    got.append(ok)
                assert got[0] == got[1]
            else:  # finish or preempt
                for kv, lst in zip(caches, live):
                    kv.release(lst.pop(k))
        assert _state(caches[0]) == _state(caches[1]), i
        assert caches[0].check_conservation() and caches[1].check_conservation()
