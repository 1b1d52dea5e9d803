"""Samplers: the ``sampler:`` key of a study file, one registry keyed by its YAML name.

Each entry is a small strategy: the options it accepts, a check of the space it is given (run
once, when the study file is loaded, so a bad choice is one ``error: sampler...`` line before
any trial runs) and a builder of the Optuna sampler for a run, which also knows the budget and
the number of parallel workers.

Why some samplers refuse conditional spaces: Optuna's NSGA-II and GP samplers model only the
parameters every trial has (the intersection search space) and draw the others at random.
With ``when:`` parameters that leaves the unconditional ones alone (``policy`` in the admission
study), and NSGA-II's default mutation probability (1 / modelled parameters = 1) then discards
even that crossover: its proposals are bit-identical to random search. TPE with
``group=True`` models each conditional sub-space separately, so it is the sampler for them.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from typing import Callable

import optuna

from blis.errors import ConfigError
from search.space import Parameter, configurations, space_size

DEFAULT = "auto"
DEFAULT_POPULATION = 10
#: largest space ``grid`` enumerates (the configurations are held in memory, shuffled)
MAX_GRID = 100_000


@dataclass(frozen=True)
class Space:
    """What a sampler needs to know about a study's space."""

    parameters: list[Parameter]

    @property
    def conditional(self) -> list[str]:
        return [p.name for p in self.parameters if p.when]

    @property
    def size(self) -> int | None:
        return space_size(self.parameters)


@dataclass(frozen=True)
class Run:
    """Per-run facts a builder may use (the CLI's ``--trials`` and ``--workers``).

    Constraints need no wiring: Optuna 5's samplers read the violations the driver stores on
    each trial (see ``search.driver._store_constraints``)."""

    seed: int
    budget: int
    workers: int = 1


@dataclass(frozen=True)
class SamplerKind:
    name: str
    build: Callable[[Space, dict, Run], optuna.samplers.BaseSampler]
    options: dict = field(default_factory=dict)  # option name -> type
    check: Callable[[Space, dict], None] = lambda space, options: None
    defaults: dict = field(default_factory=dict)


def _refuse_conditional(kind: str, why: str):
    def check(space: Space, options: dict) -> None:
        n = len(space.conditional)
        if n:
            raise ConfigError("sampler.type", f"{kind} does not suit this space: {n} of its {len(space.parameters)} "
                              f"parameters are conditional (when:), {why}; use tpe or auto")
    return check


class Enumeration(optuna.samplers.BaseSampler):
    """Every configuration of a finite space once, in a seeded random order, conditions respected.

    Optuna's GridSampler enumerates the product of all parameters, inactive ones included, so
    a conditional space repeats each configuration many times; this walks the true set (the
    one ``space_size`` counts). A configuration already in the study (enqueued baseline,
    resumed run, in-flight trial) is skipped; once all are taken it returns an evaluated one,
    which the driver answers as a free duplicate, and the driver's exhaustion check ends the study.
    """

    def __init__(self, parameters: list[Parameter], seed: int):
        self._order = list(configurations(parameters))
        random.Random(seed).shuffle(self._order)
        self._next = 0
        self._taken: set[tuple] = set()
        self._scanned = 0  # trials already folded into _taken (trial numbers only grow)
        self._current: dict[int, dict] = {}
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    @staticmethod
    def _key(params: dict) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in params.items()))

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def before_trial(self, study, trial) -> None:
        trials = study.get_trials(deepcopy=False)
        for t in trials[self._scanned:]:
            params = t.params or t.system_attrs.get("fixed_params")
            if params:
                self._taken.add(self._key(params))
        self._scanned = len(trials)
        if "fixed_params" in trial.system_attrs:
            return
        while self._next < len(self._order) and self._key(self._order[self._next]) in self._taken:
            self._next += 1
        if self._next < len(self._order):
            config = self._order[self._next]
            self._current[trial.number] = config
            self._taken.add(self._key(config))
            self._next += 1

    def sample_independent(self, study, trial, param_name, param_distribution):
        config = self._current.get(trial.number)
        if config is None or param_name not in config:
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)
        return config[param_name]

    def after_trial(self, study, trial, state, values) -> None:
        self._current.pop(trial.number, None)


def _check_grid(space: Space, options: dict) -> None:
    size = space.size
    if size is None or size > MAX_GRID:
        continuous = [p.name for p in space.parameters if p.kind == "float" and p.step is None]
        why = (f"{', '.join(continuous)} {'is' if len(continuous) == 1 else 'are'} continuous (give a step)"
               if continuous else f"it holds more than {MAX_GRID} configurations")
        raise ConfigError("sampler.type", f"grid needs a finite space of at most {MAX_GRID} configurations; {why}")


#: TPE's random start-up: 5 rather than Optuna's 10, which on capacity_planning took the
#: hypervolume share at 24 trials from 0.990 to 0.997 (benchmarks/search_quality.py, 5 seeds)
TPE_STARTUP = 5


def _tpe(space: Space, options: dict, run: Run) -> optuna.samplers.BaseSampler:
    opts = {"multivariate": True, "n_startup_trials": TPE_STARTUP, **options}
    return optuna.samplers.TPESampler(seed=run.seed, group=bool(space.conditional) and opts["multivariate"],
                                      constant_liar=run.workers > 1, **opts)


def _nsgaii(space: Space, options: dict, run: Run) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=run.seed, **options)


def _check_nsgaii(space: Space, options: dict) -> None:
    _refuse_conditional("nsgaii", "and NSGA-II recombines only parameters every trial has, so its "
                        "proposals here would be random search")(space, options)
    if options.get("population_size", DEFAULT_POPULATION) < 2:
        raise ConfigError("sampler.population_size", "must be >= 2")
    for key in ("mutation_prob", "crossover_prob", "swapping_prob"):
        if key in options and not 0 <= options[key] <= 1:
            raise ConfigError(f"sampler.{key}", f"must be within [0, 1], got {options[key]!r}")


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _check_gp(space: Space, options: dict) -> None:
    if not _has_torch():
        raise ConfigError("sampler.type", "gp needs PyTorch (Optuna's GPSampler is built on it), which blis does not "
                          "install (a wheel of over 500 MB); pip install torch, or use tpe or auto")
    _refuse_conditional("gp", "and the Gaussian process models only parameters every trial has")(space, options)
    _positive_int("n_startup_trials")(space, options)


def _gp(space: Space, options: dict, run: Run) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=run.seed, deterministic_objective=True, **options)


def resolve_auto(space: Space, budget: int) -> str:
    """What ``auto`` runs: enumeration when the budget covers the space, else TPE (best on four
    shipped studies, within 0.001 of random on the fifth: benchmarks/search_quality.py)."""
    size = space.size
    return "grid" if size is not None and size <= min(budget, MAX_GRID) else "tpe"


def _auto(space: Space, options: dict, run: Run) -> optuna.samplers.BaseSampler:
    return SAMPLERS[resolve_auto(space, run.budget)].build(space, {}, run)


def _positive_int(*names: str):
    def check(space: Space, options: dict) -> None:
        for key in names:
            if key in options and options[key] < 1:
                raise ConfigError(f"sampler.{key}", f"must be >= 1, got {options[key]!r}")
    return check


SAMPLERS: dict[str, SamplerKind] = {
    k.name: k for k in (
        SamplerKind("auto", _auto),
        SamplerKind("random", lambda space, options, run: optuna.samplers.RandomSampler(seed=run.seed)),
        SamplerKind("grid", lambda space, options, run: Enumeration(space.parameters, run.seed), check=_check_grid),
        SamplerKind("tpe", _tpe, {"n_startup_trials": int, "n_ei_candidates": int, "multivariate": bool},
                    check=_positive_int("n_startup_trials", "n_ei_candidates")),
        SamplerKind("nsgaii", _nsgaii,
                    {"population_size": int, "mutation_prob": float, "crossover_prob": float, "swapping_prob": float},
                    check=_check_nsgaii, defaults={"population_size": DEFAULT_POPULATION}),
        SamplerKind("gp", _gp, {"n_startup_trials": int}, check=_check_gp),
    )
}


def parse_sampler(raw: object, space: Space) -> tuple[str, dict]:
    """Validate a study file's ``sampler:`` (a name or ``{type: name, <options>}``) against its space."""
    if raw is None:
        raw = DEFAULT
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise ConfigError("sampler", f"must be one of {', '.join(SAMPLERS)} or a mapping {{type: ..., <options>}}")
    kind = SAMPLERS.get(raw.get("type"))
    if kind is None:
        raise ConfigError("sampler.type", f"must be one of {', '.join(SAMPLERS)}, got {raw.get('type')!r}")
    options = {}
    for key, value in raw.items():
        if key == "type":
            continue
        expected = kind.options.get(key)
        if expected is None:
            known = ", ".join(kind.options) or "none"
            raise ConfigError(f"sampler.{key}", f"unknown {kind.name} option (known: {known})")
        ok = isinstance(value, bool) if expected is bool else isinstance(value, (int, float) if expected is float else int)
        if not ok or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(f"sampler.{key}", f"must be {expected.__name__}, got {value!r}")
        options[key] = value
    options = {**kind.defaults, **options}
    kind.check(space, options)
    return kind.name, options


def make_sampler(spec, seed: int, budget: int, workers: int = 1) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for one run of ``spec`` (a ``StudySpec``)."""
    space = Space(spec.parameters)
    run = Run(seed=seed, budget=budget, workers=workers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[spec.sampler].build(space, spec.sampler_options, run)
