"""Partitioned, seeded random streams: one independent numpy Generator per subsystem.

Streams are derived as ``master_seed XOR FNV-1a-64(name)`` (spec §1.2) so adding draws in one
subsystem never perturbs another. numpy's PCG64 is used instead of Go's math/rand, so runs are
deterministic and statistically equivalent to BLIS, not bit-identical to it.
"""

import numpy as np

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv1a64(name: str) -> int:
    """FNV-1a 64-bit hash of ``name`` as a signed int64 (matching Go's int64 conversion)."""
    h = _FNV_OFFSET
    for b in name.encode():
        h ^= b
        h = (h * _FNV_PRIME) & _MASK64
    return h - (1 << 64) if h >= (1 << 63) else h


def derive_seed(master_seed: int, name: str) -> int:
    """Seed of subsystem ``name``; ``"workload"`` uses the master seed itself (legacy rule)."""
    if name == "workload":
        return int(master_seed)
    return int(master_seed) ^ fnv1a64(name)


def make_generator(seed: int) -> np.random.Generator:
    """A numpy Generator from any Python int (negative seeds are mapped into uint64 space)."""
    return np.random.Generator(np.random.PCG64(int(seed) & _MASK64))


class PartitionedRNG:
    """Caches one Generator per subsystem name."""

    def __init__(self, master_seed: int):
        self.master_seed = int(master_seed)
        self._streams: dict[str, np.random.Generator] = {}

    def for_subsystem(self, name: str) -> np.random.Generator:
        g = self._streams.get(name)
        if g is None:
            g = make_generator(derive_seed(self.master_seed, name))
            self._streams[name] = g
        return g
