"""Token-length samplers for ``input_distribution`` / ``output_distribution`` (spec §14.5).

Each sampler returns int64 arrays of lengths >= 1 and draws ``n`` values per call from the numpy
Generator it is given. Parameters are validated when the sampler is built, so a bad spec fails at
parse time with a ConfigError naming the offending ``...params.<name>`` field.
"""

from __future__ import annotations

import math

import numpy as np

from blis.errors import ConfigError

_MAX_LEN = 1 << 40
"""Cap before float -> int conversion so a runaway tail cannot overflow int64."""


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """Go's ``math.Round`` (half away from zero), unlike numpy's half-to-even."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _finalize(vals: np.ndarray, lo: int = 0, hi: int = 0) -> np.ndarray:
    """Round, clamp to the optional [lo, hi] (0 = unbounded) and floor at 1."""
    r = _round_half_away(vals)
    if lo > 0:
        r = np.maximum(r, lo)
    if hi > 0:
        r = np.minimum(r, hi)
    r = np.minimum(r, _MAX_LEN)
    return np.maximum(r.astype(np.int64), 1)


class LengthSampler:
    """Base class. ``required`` / ``optional`` list the parameter names the type accepts."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    def __init__(self, params: dict, field: str):
        self.field = field
        allowed = set(self.required) | set(self.optional)
        for name in params:
            if name not in allowed:
                raise ConfigError(f"{field}.params.{name}",
                                  f"unknown parameter; expected {', '.join(self.required + self.optional)}")
        for name in self.required:
            if name not in params:
                raise ConfigError(f"{field}.params.{name}", "required parameter missing")
        for name, val in params.items():
            if not _is_finite_number(val):
                raise ConfigError(f"{field}.params.{name}", f"must be a finite number, got {val!r}")
        self.params = {k: float(v) for k, v in params.items()}

    def _bad(self, name: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.field}.params.{name}", msg)

    def _bounds(self) -> tuple[int, int]:
        lo = int(self.params.get("min", 0))
        hi = int(self.params.get("max", 0))
        if lo < 0:
            raise self._bad("min", f"must be >= 0 (0 = unbounded), got {lo}")
        if hi < 0:
            raise self._bad("max", f"must be >= 0 (0 = unbounded), got {hi}")
        if lo > 0 and hi > 0 and lo > hi:
            raise self._bad("min", f"must be <= max ({hi}), got {lo}")
        return lo, hi

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError


def _is_finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class GaussianLength(LengthSampler):
    """``round(clamp(N(mean, std), min, max))``; no draw at all when min == max."""

    required = ("mean", "std_dev", "min", "max")

    def __init__(self, params, field):
        super().__init__(params, field)
        self.mean = self.params["mean"]
        self.std = self.params["std_dev"]
        self.lo = int(self.params["min"])
        self.hi = int(self.params["max"])
        if self.std < 0:
            raise self._bad("std_dev", f"must be >= 0, got {self.std:g}")
        if self.lo > self.hi:
            raise self._bad("min", f"must be <= max ({self.hi}), got {self.lo}")

    def sample(self, rng, n):
        if self.lo == self.hi:
            return np.full(n, max(self.lo, 1), dtype=np.int64)
        vals = np.clip(rng.standard_normal(n) * self.std + self.mean, self.lo, self.hi)
        return np.maximum(_round_half_away(vals).astype(np.int64), 1)


class ExponentialLength(LengthSampler):
    """``round(Exp · mean)`` clamped to the optional [min, max]."""

    required = ("mean",)
    optional = ("min", "max")

    def __init__(self, params, field):
        super().__init__(params, field)
        self.mean = self.params["mean"]
        if self.mean <= 0:
            raise self._bad("mean", f"must be > 0, got {self.mean:g}")
        self.lo, self.hi = self._bounds()

    def sample(self, rng, n):
        return _finalize(rng.standard_exponential(n) * self.mean, self.lo, self.hi)


class LognormalLength(LengthSampler):
    """``round(exp(mu + sigma·N))`` clamped; non-finite draws become min (or 1)."""

    required = ("mu", "sigma")
    optional = ("min", "max")

    def __init__(self, params, field):
        super().__init__(params, field)
        self.mu = self.params["mu"]
        self.sigma = self.params["sigma"]
        if self.sigma < 0:
            raise self._bad("sigma", f"must be >= 0, got {self.sigma:g}")
        self.lo, self.hi = self._bounds()

    def sample(self, rng, n):
        with np.errstate(over="ignore"):
            vals = np.exp(self.mu + self.sigma * rng.standard_normal(n))
        bad = ~np.isfinite(vals)
        if bad.any():
            vals[bad] = self.lo if self.lo > 0 else 1
        return _finalize(vals, self.lo, self.hi)


class ParetoLognormalLength(LengthSampler):
    """Mixture: with probability ``mix_weight`` Pareto(alpha, xm), else lognormal(mu, sigma)."""

    required = ("alpha", "xm", "mu", "sigma", "mix_weight")

    def __init__(self, params, field):
        super().__init__(params, field)
        p = self.params
        if p["alpha"] <= 0:
            raise self._bad("alpha", f"must be > 0, got {p['alpha']:g}")
        if p["xm"] <= 0:
            raise self._bad("xm", f"must be > 0, got {p['xm']:g}")
        if p["sigma"] < 0:
            raise self._bad("sigma", f"must be >= 0, got {p['sigma']:g}")
        if not 0.0 <= p["mix_weight"] <= 1.0:
            raise self._bad("mix_weight", f"must be in [0, 1], got {p['mix_weight']:g}")

    def sample(self, rng, n):
        p = self.params
        pareto = rng.random(n) < p["mix_weight"]
        vals = np.empty(n, dtype=np.float64)
        k = int(pareto.sum())
        with np.errstate(divide="ignore", over="ignore"):
            vals[pareto] = p["xm"] / np.power(rng.random(k), 1.0 / p["alpha"])
            vals[~pareto] = np.exp(p["mu"] + p["sigma"] * rng.standard_normal(n - k))
        vals[~np.isfinite(vals)] = _MAX_LEN
        return _finalize(vals)


class ConstantLength(LengthSampler):
    """Always ``max(1, int(value))``; consumes no randomness."""

    required = ("value",)

    def __init__(self, params, field):
        super().__init__(params, field)
        self.value = max(1, int(self.params["value"]))

    def sample(self, rng, n):
        return np.full(n, self.value, dtype=np.int64)


class EmpiricalLength(LengthSampler):
    """Inverse-CDF sampling from an inline PDF ``{"<tokens>": probability}``.

    Probabilities are normalised and keys sorted numerically; a single bin needs no draw.
    """

    def __init__(self, params, field):
        self.field = field
        if not params:
            raise ConfigError(f"{field}.params", "empirical distribution needs at least one "
                                                 "'<tokens>: probability' bin")
        pdf: dict[int, float] = {}
        for key, prob in params.items():
            try:
                tokens = int(str(key).strip())
            except ValueError:
                raise ConfigError(f"{field}.params.{key}", "empirical bin key must be an integer "
                                                           "token count") from None
            if not _is_finite_number(prob) or prob < 0:
                raise ConfigError(f"{field}.params.{key}",
                                  f"probability must be a finite number >= 0, got {prob!r}")
            pdf[tokens] = pdf.get(tokens, 0.0) + float(prob)
        keys = [k for k in sorted(pdf) if pdf[k] > 0]
        total = sum(pdf[k] for k in keys)
        if total <= 0:
            raise ConfigError(f"{field}.params", "empirical probabilities must sum to > 0")
        self.params = {str(k): float(v) for k, v in params.items()}
        self.values = np.maximum(np.array(keys, dtype=np.int64), 1)
        self.cdf = np.cumsum(np.array([pdf[k] for k in keys]) / total)
        self.cdf[-1] = 1.0

    def sample(self, rng, n):
        if self.values.shape[0] == 1:
            return np.full(n, int(self.values[0]), dtype=np.int64)
        idx = np.searchsorted(self.cdf, rng.random(n), side="left")
        return self.values[np.minimum(idx, self.values.shape[0] - 1)]


LENGTH_SAMPLERS: dict[str, type[LengthSampler]] = {
    "constant": ConstantLength,
    "empirical": EmpiricalLength,
    "exponential": ExponentialLength,
    "gaussian": GaussianLength,
    "lognormal": LognormalLength,
    "pareto_lognormal": ParetoLognormalLength,
}


def make_length_sampler(dist_type: str, params: dict | None, field: str,
                        file: str = "") -> LengthSampler:
    """Build and validate the sampler for one distribution block located at ``field``."""
    cls = LENGTH_SAMPLERS.get(dist_type)
    if cls is None:
        if not dist_type:
            raise ConfigError(f"{field}.type", "required; valid: " + ", ".join(sorted(LENGTH_SAMPLERS)))
        raise ConfigError(f"{field}.type", f"unknown distribution type {dist_type!r}; valid: "
                          + ", ".join(sorted(LENGTH_SAMPLERS)))
    if file:
        raise ConfigError(f"{field}.file", "file-based distributions are not supported; "
                                           "give the PDF inline under params")
    return cls(dict(params or {}), field)
