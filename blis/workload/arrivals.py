"""Inter-arrival-time samplers (spec §14.4).

Every sampler yields integer microsecond gaps >= 1 for a client whose rate is given in requests
per microsecond. Samplers are stateful streams over one numpy Generator: values are produced in
fixed-size batches and handed out in order, so the sequence a client sees does not depend on how
the generator partitions its ``next(n)`` calls (a client's first k arrivals are the same whatever
the request cap or horizon).
"""

from __future__ import annotations

import math

import numpy as np

from blis.errors import ConfigError

RATE_FLOOR = 1e-15
"""Client rates (req/µs) are floored here so a vanishing rate never divides by zero."""

MAX_IAT_US = 1 << 40
"""Gaps are capped (~12.7 days) so cumulative arrival times can never overflow int64."""

_BATCH = 1024


def _to_iat(samples: np.ndarray) -> np.ndarray:
    """Go's ``max(1, int(x))``: truncate toward zero, then floor at 1 µs."""
    capped = np.minimum(np.nan_to_num(samples, nan=1.0, posinf=MAX_IAT_US), MAX_IAT_US)
    return np.maximum(capped.astype(np.int64), 1)


def gamma_variates(rng: np.random.Generator, shape: float, n: int) -> np.ndarray:
    """``n`` unit-scale Gamma(shape) draws by Marsaglia–Tsang (vectorised rejection).

    For shape < 1 the boost rule applies: uniforms are drawn first, then
    ``Gamma(shape + 1) * u**(1/shape)``.
    """
    if n <= 0:
        return np.empty(0, dtype=np.float64)
    if shape < 1.0:
        u = rng.random(n)
        g = gamma_variates(rng, shape + 1.0, n)
        with np.errstate(divide="ignore", under="ignore"):
            return g * np.power(u, 1.0 / shape)
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = np.empty(n, dtype=np.float64)
    filled = 0
    while filled < n:
        m = (n - filled) + (n - filled) // 8 + 16
        x = rng.standard_normal(m)
        v = 1.0 + c * x
        ok = v > 0.0
        x = x[ok]
        v = v[ok] ** 3
        u = rng.random(x.shape[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            accept = (u < 1.0 - 0.0331 * x ** 4) | (
                np.log(u) < 0.5 * x * x + d * (1.0 - v + np.log(v)))
        vals = d * v[accept]
        take = min(vals.shape[0], n - filled)
        out[filled:filled + take] = vals[:take]
        filled += take
    return out


def weibull_shape_for_cv(cv: float) -> float:
    """Weibull shape k whose coefficient of variation is ``cv`` (bisection on [0.1, 100])."""

    def cv_of(k: float) -> float:
        ratio = math.exp(math.lgamma(1.0 + 2.0 / k) - 2.0 * math.lgamma(1.0 + 1.0 / k))
        return math.sqrt(max(ratio - 1.0, 0.0))

    lo, hi = 0.1, 100.0
    mid = (lo + hi) / 2.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        cur = cv_of(mid)
        if abs(cur - cv) < 0.001:
            break
        if cur > cv:
            lo = mid
        else:
            hi = mid
    return mid


class ArrivalSampler:
    """Base class: a buffered stream of IATs; subclasses implement ``_batch()``."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self._buf = np.empty(0, dtype=np.int64)
        self._pos = 0

    def _batch(self) -> np.ndarray:
        raise NotImplementedError

    def next(self, n: int) -> np.ndarray:
        """The next ``n`` gaps (int64 µs, each >= 1)."""
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            if self._pos >= self._buf.shape[0]:
                self._buf = self._batch()
                self._pos = 0
            take = min(n - filled, self._buf.shape[0] - self._pos)
            out[filled:filled + take] = self._buf[self._pos:self._pos + take]
            self._pos += take
            filled += take
        return out

    def next_one(self) -> int:
        return int(self.next(1)[0])


class ConstantArrival(ArrivalSampler):
    """Deterministic spacing ``max(1, int(1/rate))``; consumes no randomness."""

    def __init__(self, rng, rate: float, cv=None, shape=None, scale=None):
        super().__init__(rng)
        self.iat = int(_to_iat(np.array([1.0 / max(rate, RATE_FLOOR)]))[0])

    def _batch(self):
        return np.full(_BATCH, self.iat, dtype=np.int64)


class PoissonArrival(ArrivalSampler):
    """Exponential gaps with mean ``1/rate``."""

    def __init__(self, rng, rate: float, cv=None, shape=None, scale=None):
        super().__init__(rng)
        self.rate = max(rate, RATE_FLOOR)

    def _batch(self):
        return _to_iat(self.rng.standard_exponential(_BATCH) / self.rate)


class GammaArrival(ArrivalSampler):
    """Gamma gaps: explicit (shape, scale µs) if both given, else from ``cv`` at the client rate.

    A shape below 0.01 (cv > 10) falls back to Poisson, as in BLIS.
    """

    def __init__(self, rng, rate: float, cv=None, shape=None, scale=None):
        super().__init__(rng)
        rate = max(rate, RATE_FLOOR)
        self._fallback = None
        if shape is not None and scale is not None and shape > 0 and scale > 0:
            self.shape, self.scale = float(shape), float(scale)
        else:
            cv = 1.0 if cv is None or cv <= 0 else float(cv)
            self.shape = 1.0 / (cv * cv)
            self.scale = cv * cv / rate
            if self.shape < 0.01:
                self._fallback = PoissonArrival(rng, rate)

    def _batch(self):
        if self._fallback is not None:
            return self._fallback._batch()
        return _to_iat(gamma_variates(self.rng, self.shape, _BATCH) * self.scale)


class WeibullArrival(ArrivalSampler):
    """Weibull gaps: explicit (shape k, scale µs) if both given, else k fitted to ``cv``.

    The fitted scale keeps the mean gap at ``1/rate``: ``scale = (1/rate) / Γ(1 + 1/k)``.
    """

    def __init__(self, rng, rate: float, cv=None, shape=None, scale=None):
        super().__init__(rng)
        rate = max(rate, RATE_FLOOR)
        if shape is not None and scale is not None and shape > 0 and scale > 0:
            self.k, self.scale = float(shape), float(scale)
        else:
            cv = 1.0 if cv is None or cv <= 0 else float(cv)
            self.k = weibull_shape_for_cv(cv)
            self.scale = (1.0 / rate) / math.gamma(1.0 + 1.0 / self.k)

    def _batch(self):
        u = self.rng.random(_BATCH)
        u[u == 0.0] = np.nextafter(0.0, 1.0)
        return _to_iat(self.scale * np.power(-np.log(u), 1.0 / self.k))


ARRIVAL_SAMPLERS: dict[str, type[ArrivalSampler]] = {
    "constant": ConstantArrival,
    "gamma": GammaArrival,
    "poisson": PoissonArrival,
    "weibull": WeibullArrival,
}


def make_arrival_sampler(process: str, rate_per_us: float, rng: np.random.Generator, *,
                         cv: float | None = None, shape: float | None = None,
                         scale: float | None = None,
                         field: str = "arrival.process") -> ArrivalSampler:
    """Build the sampler for ``process`` at ``rate_per_us`` drawing from ``rng``."""
    cls = ARRIVAL_SAMPLERS.get(process)
    if cls is None:
        raise ConfigError(field, f"unknown arrival process {process!r}; valid: "
                          + ", ".join(sorted(ARRIVAL_SAMPLERS)))
    return cls(rng, rate_per_us, cv=cv, shape=shape, scale=scale)
