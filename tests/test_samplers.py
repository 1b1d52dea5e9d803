"""Samplers (search/samplers.py): every registered name builds and searches, grid enumerates a
conditional space exactly once and ends the study, auto's choice, bad options, refusals."""

import logging
import os
from pathlib import Path

import optuna
import pytest
import search_fakes
import yaml
from optuna.trial import TrialState

from blis.cli import main
from blis.errors import ConfigError
from search.driver import run_search
from search.progress import is_extra
from search.samplers import SAMPLERS, Enumeration, Space, make_sampler, resolve_auto
from search.space import configurations, space_size, suggest
from search.study_file import parse_study

TESTS = Path(__file__).resolve().parent
POLICY = "policy_config.admission.policy"
SMALL = {  # 6 x 3 x 2 = 36 configurations, none conditional
    "num_instances": {"type": "int", "low": 1, "high": 6},
    "hardware": {"type": "categorical", "choices": ["H100", "A100-80", "L40S"]},
    "tp": {"type": "categorical", "choices": [1, 2]},
}
CONDITIONAL = {  # (gaie-legacy: 1 + tier-shed: 4 thresholds + probabilistic: 2 x 2) x 2 instances = 18
    POLICY: {"type": "categorical", "choices": ["gaie-legacy", "tier-shed", "probabilistic"]},
    "policy_config.admission.tier_shed_threshold": {"type": "int", "low": 0, "high": 3, "when": {POLICY: "tier-shed"}},
    "policy_config.admission.probabilistic.sheddable.a": {"type": "categorical", "choices": [1, 300], "when": {POLICY: "probabilistic"}},
    "policy_config.admission.probabilistic.sheddable.b": {"type": "float", "low": 1, "high": 5, "step": 4, "when": {POLICY: "probabilistic"}},
    "num_instances": {"type": "int", "low": 1, "high": 2},
}
_TORCH = True
try:
    import torch  # noqa: F401
except ImportError:
    _TORCH = False


def spec_of(parameters=SMALL, sampler="auto", **kw):
    return parse_study(search_fakes.study_dict(parameters=parameters, sampler=sampler, baseline=kw.pop("baseline", None), **kw))


def ask_tell(spec, n: int, seed: int = 1, budget: int | None = None) -> list[dict]:
    """``n`` trials in-process on the fake simulator, as the driver does (no Ray)."""
    study = optuna.create_study(directions=spec.directions, sampler=make_sampler(spec, seed, budget or n))
    objective = spec.objective(search_fakes.simulate)
    proposed = []
    for _ in range(n):
        trial = study.ask()
        params = suggest(trial, spec.parameters)
        proposed.append(params)
        study.tell(trial, objective.evaluate(params).values)
    return proposed


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n != "gp" or _TORCH])
def test_every_sampler_builds_and_runs_trials(name):
    spec = spec_of(sampler=name)
    proposed = ask_tell(spec, 12)
    assert len(proposed) == 12
    for params in proposed:
        assert {p.name for p in spec.parameters} == set(params)
        assert all(p.contains(params[p.name]) for p in spec.parameters)
    assert len({tuple(sorted(p.items())) for p in proposed}) > 1


def test_samplers_are_seeded():
    spec = spec_of(sampler="tpe")
    assert ask_tell(spec, 8, seed=4) == ask_tell(spec, 8, seed=4)
    assert ask_tell(spec, 8, seed=4) != ask_tell(spec, 8, seed=5)


def test_tpe_is_multivariate_grouped_on_conditional_spaces_and_lies_for_parallel_workers():
    spec = spec_of(CONDITIONAL, sampler="tpe")
    serial, parallel = make_sampler(spec, 1, 20, workers=1), make_sampler(spec, 1, 20, workers=3)
    assert isinstance(serial, optuna.samplers.TPESampler)
    assert serial._multivariate and serial._group and not serial._constant_liar
    assert parallel._constant_liar
    assert not make_sampler(spec_of(sampler="tpe"), 1, 20)._group  # nothing to group


def test_configurations_enumerate_the_space_size_exactly():
    spec = spec_of(CONDITIONAL, sampler="tpe")
    configs = list(configurations(spec.parameters))
    assert len(configs) == space_size(spec.parameters) == 18
    assert len({tuple(sorted(c.items())) for c in configs}) == 18
    for c in configs:  # only active parameters, each within its range
        assert all(p.contains(c[p.name]) for p in spec.parameters if p.active(c))
        assert set(c) == {p.name for p in spec.parameters if p.active(c)}


def test_auto_enumerates_a_finite_space_the_budget_covers():
    space = Space(spec_of(CONDITIONAL).parameters)
    assert resolve_auto(space, 18) == resolve_auto(space, 100) == "grid"
    assert resolve_auto(space, 17) == "tpe"
    continuous = Space(spec_of({"rate": {"type": "float", "low": 1, "high": 5}}).parameters)
    assert resolve_auto(continuous, 10_000) == "tpe"
    assert isinstance(make_sampler(spec_of(CONDITIONAL), 1, budget=30), Enumeration)
    assert isinstance(make_sampler(spec_of(CONDITIONAL), 1, budget=10), optuna.samplers.TPESampler)


def test_grid_in_process_proposes_each_configuration_once():
    spec = spec_of(CONDITIONAL, sampler="grid")
    proposed = ask_tell(spec, 18)
    assert sorted(map(repr, proposed)) == sorted(map(repr, configurations(spec.parameters)))
    assert proposed != list(configurations(spec.parameters))  # a seeded shuffle, not declaration order


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    path = os.pathsep.join([str(TESTS.parent), str(TESTS)])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def test_grid_search_evaluates_every_configuration_once_then_ends(ray_cluster, tmp_path, capsys):
    baseline = {POLICY: "tier-shed", "policy_config.admission.tier_shed_threshold": 2, "num_instances": 1}
    spec = spec_of(CONDITIONAL, sampler="grid", baseline=baseline)
    study = run_search(spec, trials=100, workers=2, out_dir=tmp_path, simulate=search_fakes.simulate, progress=False, report=False)
    trials = [t for t in study.get_trials() if not is_extra(t)]  # robust re-evaluations come after
    assert all(t.state == TrialState.COMPLETE for t in trials)  # no duplicate was even proposed
    assert sorted(repr(dict(sorted(t.params.items()))) for t in trials) == \
        sorted(repr(dict(sorted(c.items()))) for c in configurations(spec.parameters))
    assert [t.params for t in trials if t.user_attrs.get("baseline")] == [baseline]
    assert "search: search space exhausted: all 18 configurations evaluated" in capsys.readouterr().err.splitlines()


def test_reference_points_are_evaluated_first(ray_cluster, tmp_path):
    big = {"num_instances": 6, "hardware": "H100", "tp": 2}
    spec = spec_of(sampler="random", references={"big": big, "small": {"num_instances": 1, "hardware": "L40S", "tp": 1}})
    study = run_search(spec, trials=4, workers=1, out_dir=tmp_path, simulate=search_fakes.simulate, progress=False, report=False)
    trials = study.get_trials()
    assert [(t.user_attrs.get("reference"), t.state) for t in trials[:2]] == [("big", TrialState.COMPLETE), ("small", TrialState.COMPLETE)]
    assert trials[0].params == big
    again = run_search(spec, trials=5, workers=1, out_dir=tmp_path, simulate=search_fakes.simulate, progress=False, report=False)
    assert sum(bool(t.user_attrs.get("reference")) for t in again.get_trials()) == 2  # not enqueued twice


@pytest.mark.parametrize("sampler, field, message", [
    ("bogus", "sampler.type", "must be one of auto, random, grid, tpe, nsgaii, gp"),
    ({"type": "grid", "population_size": 3}, "sampler.population_size", "unknown grid option (known: none)"),
    ({"type": "tpe", "n_startup_trials": 0}, "sampler.n_startup_trials", "must be >= 1"),
    ({"type": "tpe", "multivariate": 1}, "sampler.multivariate", "must be bool"),
    ({"type": "nsgaii", "mutation_prob": 1.5}, "sampler.mutation_prob", "within [0, 1]"),
    ({"type": "nsgaii", "population_size": 1}, "sampler.population_size", "must be >= 2"),
    (["tpe"], "sampler", "must be one of"),
])
def test_bad_sampler_options(sampler, field, message):
    with pytest.raises(ConfigError) as e:
        spec_of(sampler=sampler)
    assert e.value.field == field and message in e.value.message


def test_grid_refuses_a_continuous_space():
    with pytest.raises(ConfigError) as e:
        spec_of({**SMALL, "rate": {"type": "float", "low": 1, "high": 5}}, sampler="grid")
    assert e.value.field == "sampler.type" and "rate is continuous (give a step)" in e.value.message


def test_nsgaii_is_refused_on_conditional_spaces():
    """Optuna's NSGA-II draws conditional parameters at random; on the admission study that made
    every proposal identical to RandomSampler's, so the study file is rejected instead."""
    with pytest.raises(ConfigError) as e:
        spec_of(CONDITIONAL, sampler="nsgaii")
    assert e.value.field == "sampler.type"
    assert "3 of its 5 parameters are conditional" in e.value.message and "random search" in e.value.message
    assert spec_of(SMALL, sampler="nsgaii").sampler_options == {"population_size": 10}


@pytest.mark.skipif(_TORCH, reason="PyTorch is installed: gp is available")
def test_gp_without_torch_names_the_missing_dependency():
    with pytest.raises(ConfigError) as e:
        spec_of(sampler="gp")
    assert e.value.field == "sampler.type" and "PyTorch" in e.value.message


def test_cli_prints_one_sampler_error_line_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(search_fakes.study_dict(parameters=SMALL, baseline=None, sampler={"type": "tpe", "gamma": 2})))
    assert main(["search", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: sampler.gamma: unknown tpe option (known: n_startup_trials, n_ei_candidates, multivariate)"]


def test_a_reference_point_outside_the_space_is_refused():
    with pytest.raises(ConfigError) as e:
        spec_of(references={"huge": {"num_instances": 60, "hardware": "H100", "tp": 1}})
    assert e.value.field == "references.huge.num_instances" and "outside" in e.value.message
