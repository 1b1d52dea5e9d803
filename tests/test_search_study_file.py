"""Study-file validation: every error names its field before any trial runs."""

import copy
from pathlib import Path

import pytest
import search_fakes
import yaml

from blis.errors import ConfigError
from objectives.paths import apply_params
from search.cli import main
from search.study_file import load_study, parse_study, probe_space

REPO = Path(__file__).resolve().parents[1]


def build_config():
    return pytest.importorskip("blis.config.options").build_config


def study(**changes):
    d = copy.deepcopy(search_fakes.study_dict())
    for key, value in changes.items():
        if value is None:
            d.pop(key, None)
        else:
            d[key] = value
    return d


def error_of(raw) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse_study(raw)
    return e.value


def test_valid_study_parses_and_round_trips():
    spec = parse_study(study())
    assert spec.metric_names == ["ttft_p90_ms@critical", "gpu_cost_per_hour"]
    assert spec.directions == ["minimize", "minimize"]
    assert spec.sampler == "nsgaii" and spec.sampler_options == {"population_size": 6}
    again = parse_study(spec.to_dict())
    assert again.fingerprint() == spec.fingerprint()
    assert parse_study(study(seed=99)).fingerprint() == spec.fingerprint()
    assert parse_study(study(seeds=[1, 2])).fingerprint() != spec.fingerprint()


def test_sampler_defaults_to_auto():
    spec = parse_study(study(objectives=[{"metric": "throughput_tps"}], sampler=None))
    assert spec.sampler == "auto" and spec.directions == ["maximize"]


def with_param(name, spec):
    d = study(baseline=None)
    d["parameters"] = {**d["parameters"], name: spec}
    return d


@pytest.mark.parametrize(
    "raw, field, message",
    [
        (study(searchspace={}), "searchspace", "unknown top-level key"),
        (study(base={"model": "x", "num_gpus": 2}), "base.num_gpus", "unknown blis run option"),
        (with_param("policy_config.admission.bogus", {"type": "float", "low": 0, "high": 1}), "parameters.policy_config.admission.bogus", "unknown parameter target"),
        (with_param("max_num_seqs", {"type": "int", "low": 64, "high": 8}), "parameters.max_num_seqs", "inverted range"),
        (with_param("tp", {"type": "categorical", "choices": []}), "parameters.tp.choices", "non-empty"),
        (with_param("max_num_seqs", {"type": "int", "low": 8, "high": 64, "step": 5}), "parameters.max_num_seqs", "not a multiple of step"),
        (with_param("rate", {"type": "float", "low": 0, "high": 5, "log": True}), "parameters.rate.low", "> 0 with log"),
        (with_param("rate", {"type": "float", "low": 1, "high": 5, "choices": [1]}), "parameters.rate.choices", "unknown key"),
        (with_param("rate", {"type": "number", "low": 1, "high": 5}), "parameters.rate.type", "must be one of"),
        (with_param("rate", {"type": "int", "low": 1.5, "high": 5}), "parameters.rate.low", "integer"),
        (with_param("rate", {"type": "float", "low": 1, "high": 5, "when": {"hardware": "TPU"}}), "parameters.rate.when.hardware", "not among its choices"),
        (with_param("rate", {"type": "float", "low": 1, "high": 5, "when": {"tp": 1}}), "parameters.rate.when.tp", "declared earlier"),
        (study(parameters={}), "parameters", "non-empty"),
        (study(objectives=[{"metric": "ttft_p42_ms"}]), "objectives[0].metric", "unknown metric"),
        (study(objectives=[{"metric": "ttft_p90_ms", "direction": "down"}]), "objectives[0].direction", "minimize or maximize"),
        (study(objectives=[{"metric": "ttft_p90_ms"}, {"metric": "ttft_p90_ms"}]), "objectives[1].metric", "already an objective"),
        (study(objectives=[]), "objectives", "non-empty"),
        (study(objectives=[{"metric": "ttft_p90_ms@batch"}]), "objectives[0].metric", "not in the workload"),
        (study(objectives=[{"metric": "slo_attainment"}]), "objectives[0].metric", "needs SLO targets"),
        (study(constraints=[{"metric": "backlog", "max": "none"}]), "constraints[0].max", "finite number"),
        (study(constraints=[{"metric": "gpu_cost_per_hour", "max": 1.0}]), "constraints[0]", "infeasible space"),
        (study(sampler={"type": "cmaes"}), "sampler.type", "must be one of"),
        (study(sampler={"type": "nsgaii", "generations": 3}), "sampler.generations", "unknown nsgaii option"),
        (study(seeds=[1, 1]), "seeds", "duplicate"),
        (study(baseline={"num_instances": 99, "hardware": "H100", "max_num_batched_tokens": 512}), "baseline.num_instances", "outside"),
        (study(baseline={"num_instances": 2}), "baseline.hardware", "missing"),
        (study(pricing={"H100": "cheap"}), "pricing.H100", "finite number"),
        (study(trials=0), "trials", "positive integer"),
        (study(name="a/b"), "name", "without '/'"),
    ],
)
def test_validation_errors_name_the_field(raw, field, message):
    e = error_of(raw)
    assert e.field == field, str(e)
    assert message in e.message


def test_unpriced_hardware_choice_with_a_cost_objective():
    d = with_param("hardware", {"type": "categorical", "choices": ["H100", "B200"]})
    assert error_of(d).field == "pricing"
    d["pricing"] = {"B200": 6.0}
    parse_study(d)


def pd_study(prefill=None, **changes):
    """The fake study with the instance count replaced by a prefill/decode split."""
    d = study(baseline=None, **changes)
    d["parameters"] = {k: v for k, v in d["parameters"].items() if k != "num_instances"}
    if prefill is not None:
        d["parameters"]["prefill_instances"] = prefill
    return d


def test_pd_split_fixes_the_budget_and_derives_the_decode_pool():
    spec = parse_study(pd_study({"type": "int", "low": 1, "high": 5}, pd_split={"total_instances": 6}))
    assert spec.base["num_instances"] == 6
    params = {p.name: p.extremes()[0] for p in spec.parameters}
    opts = spec.objective().options({**params, "prefill_instances": 2})
    assert (opts["prefill_instances"], opts["decode_instances"]) == (2, 4)
    again = parse_study(spec.to_dict())  # the stored form re-parses to the same trials
    assert again.objective().options({**params, "prefill_instances": 2}) == opts


@pytest.mark.parametrize("prefill, split, message", [
    ({"type": "int", "low": 1, "high": 3}, {"total_instances": 1}, "integer >= 2"),
    ({"type": "int", "low": 1, "high": 3}, {"total": 8}, "{total_instances: N}"),
    (None, {"total_instances": 8}, "needs a prefill_instances parameter"),
])
def test_pd_split_errors(prefill, split, message):
    with pytest.raises(ConfigError, match=message):
        parse_study(pd_study(prefill, pd_split=split))
    with pytest.raises(ConfigError, match="sets num_instances"):
        parse_study(study(pd_split={"total_instances": 8}))


def test_pd_split_prefill_range_must_leave_a_decode_pool():
    d = pd_study({"type": "int", "low": 1, "high": 8}, pd_split={"total_instances": 8})
    assert error_of(d).field == "parameters.prefill_instances"


def test_prefill_decode_options_are_ordinary_targets():
    spec = parse_study(with_param("decode_instances", {"type": "int", "low": 1, "high": 4}))
    p = next(p for p in spec.parameters if p.name == "decode_instances")
    assert (p.kind, p.low, p.high) == ("int", 1, 4)
    assert apply_params(spec.base, {"decode_instances": 3})["decode_instances"] == 3
    d = study()
    d["base"] = {**d["base"], "prefill_tp": 2}
    assert parse_study(d).base["prefill_tp"] == 2
    d["base"] = {**d["base"], "prefill_tpp": 2}
    assert error_of(d).field == "base.prefill_tpp"


def test_policy_and_workload_files_are_read_relative_to_the_study(tmp_path):
    (tmp_path / "wl.yaml").write_text(yaml.safe_dump(search_fakes.WORKLOAD))
    d = study(base={"model": "qwen/qwen2.5-7b-instruct", "workload_spec": "wl.yaml"})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    spec = load_study(tmp_path / "s.yaml")
    assert spec.base["workload_spec"]["aggregate_rate"] == 30
    d["base"]["workload_spec"] = "missing.yaml"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match="file not found") as e:
        load_study(tmp_path / "s.yaml")
    assert e.value.field == "base.workload_spec"


def test_probe_blames_a_value_the_simulator_rejects():
    probe = build_config()
    d = with_param("admission_policy", {"type": "categorical", "choices": ["gaie-legacy", "no-such-policy"]})
    spec = parse_study(d)
    with pytest.raises(ConfigError, match="no-such-policy") as e:
        probe_space(spec, probe)
    assert e.value.field == "parameters.admission_policy"


def test_probe_reports_an_infeasible_base():
    probe = build_config()
    spec = parse_study(study(base={"model": "qwen/qwen2.5-7b-instruct", "workload_spec": search_fakes.WORKLOAD, "timeout": 0}))
    with pytest.raises(ConfigError, match="infeasible space") as e:
        probe_space(spec, probe)
    assert e.value.field == "base.timeout"


@pytest.mark.parametrize("name", ["admission_discovery", "capacity_planning", "routing_weights"])
def test_shipped_studies_load_and_pass_the_simulator_probe(name):
    spec = load_study(REPO / "studies" / f"{name}.yaml", probe=build_config())
    assert spec.name == name and spec.parameters and spec.objectives


def test_cli_prints_one_error_line_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_param("max_num_seqs", {"type": "int", "low": 64, "high": 8})))
    assert main(["search", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: parameters.max_num_seqs: inverted range: low 64 > high 8"]
    assert not (tmp_path / "out").exists()


def test_shipped_pd_split_study_loads_and_probes():
    spec = load_study(REPO / "studies" / "pd_split.yaml", probe=build_config())
    assert spec.base["num_instances"] == 8
    opts = spec.objective().options({"prefill_instances": 3, "prefill_tp": 2, "decode_tp": 1})
    assert opts["decode_instances"] == 5


def test_cli_report_of_a_directory_without_a_search(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: out_dir: ")
