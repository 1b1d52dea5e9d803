"""Objectives: metric registry, cost model, constraints, parameter paths, evaluation."""

import math

import pytest
import search_fakes

from blis.errors import ConfigError
from objectives.constraints import parse_constraint
from objectives.cost import cost_per_hour, deployment_of
from objectives.metrics import METRICS, Sample, parse_metric
from objectives.objective import Objective
from objectives.paths import PD_REST, apply_params, check_target
from objectives.pricing import GPU_PRICES_PER_HOUR, price_table

PRICES = price_table()


def sample(options=None, **result_overrides):
    options = {"model": "qwen/qwen2.5-7b-instruct", "hardware": "H100", "workload_spec": search_fakes.WORKLOAD, **(options or {})}
    result = search_fakes.simulate(options)
    result.update(result_overrides)
    return Sample(result, options, PRICES)


def test_registry_names_and_directions():
    for name in ("ttft_p90_ms", "itl_p99_ms", "e2e_mean_ms", "slo_attainment", "goodput_rps", "throughput_tps", "gpu_cost_per_hour", "backlog"):
        assert name in METRICS
    assert METRICS["ttft_p90_ms"].direction == "minimize"
    assert METRICS["throughput_tps"].direction == "maximize"
    assert METRICS["slo_attainment"].direction == "maximize"


def test_per_tier_metric_reads_per_class():
    s = sample({"num_instances": 4})
    ref = parse_metric("ttft_p90_ms@critical", "m")
    assert ref.name == "ttft_p90_ms@critical"
    assert ref.value(s) == s.result["per_class"]["critical"]["ttft_p90_ms"]
    assert parse_metric("ttft_p90_ms", "m").value(s) == s.result["cluster"]["ttft_p90_ms"]


def test_latency_of_a_scope_with_no_completion_is_infinite():
    s = sample({"num_instances": 4})
    s.result["per_class"]["sheddable"]["completed"] = 0
    assert parse_metric("ttft_p90_ms@sheddable", "m").value(s) == math.inf
    s.result["cluster"]["completed_requests"] = 0
    assert parse_metric("e2e_p99_ms", "m").value(s) == math.inf


def test_missing_tier_in_result_is_a_metric_error():
    with pytest.raises(ValueError, match="batch"):
        parse_metric("ttft_p90_ms@batch", "m").value(sample())


@pytest.mark.parametrize(
    "name, message",
    [("ttft_p42_ms", "unknown metric"), ("backlog@critical", "no per-tier form"), ("ttft_p90_ms@gold", "unknown SLO tier"), ("", "non-empty")],
)
def test_parse_metric_errors_name_the_field(name, message):
    with pytest.raises(ConfigError, match=message) as e:
        parse_metric(name, "objectives[0].metric")
    assert e.value.field == "objectives[0].metric"


def test_rates_backlog_and_throughput():
    s = sample({"rate": 1}, rejected_requests=30, num_requests=300)
    assert parse_metric("rejection_rate", "m").value(s) == pytest.approx(0.1)
    c = s.result["cluster"]
    c.update(still_queued=2, still_running=3, timed_out_requests=4)
    assert parse_metric("backlog", "m").value(s) == 9
    assert parse_metric("throughput_tps", "m").value(s) == c["tokens_per_sec"]
    pc = s.result["per_class"]["sheddable"]
    assert parse_metric("rejection_rate@sheddable", "m").value(s) == pytest.approx(pc["rejected"] / pc["injected"])


def test_cost_is_instances_times_tp_times_price():
    s = sample({"num_instances": 3, "tp": 2, "hardware": "A100-80"})
    assert parse_metric("gpu_cost_per_hour", "m").value(s) == pytest.approx(3 * 2 * GPU_PRICES_PER_HOUR["A100-80"])
    assert parse_metric("num_gpus", "m").value(s) == 6
    tps = s.result["cluster"]["tokens_per_sec"]
    expected = 6 * GPU_PRICES_PER_HOUR["A100-80"] / (tps * 3600) * 1e6
    assert parse_metric("cost_per_million_tokens", "m").value(s) == pytest.approx(expected)


def test_cost_defaults_come_from_defaults_yaml_and_prices_are_overridable():
    dep = deployment_of({"model": "meta-llama/llama-3.3-70b-instruct", "num_instances": 2})
    assert dep == {"hardware": "H100", "tp": 4, "dp": 1, "num_instances": 2}
    assert cost_per_hour(dep, price_table({"H100": 2.0})) == pytest.approx(16.0)
    ref = parse_metric("gpu_cost_per_hour", "m")
    assert ref.static_value({"model": "qwen/qwen2.5-7b-instruct", "hardware": "L40S"}, PRICES) == GPU_PRICES_PER_HOUR["L40S"]


def test_unpriced_gpu_and_bad_price_are_config_errors():
    with pytest.raises(ConfigError) as e:
        cost_per_hour({"hardware": "B200", "tp": 1, "num_instances": 1}, PRICES)
    assert e.value.field == "pricing"
    with pytest.raises(ConfigError) as e:
        price_table({"H100": -1})
    assert e.value.field == "pricing.H100"


def test_constraint_violation_is_scaled_and_zero_when_met():
    c = parse_constraint({"metric": "ttft_p90_ms@critical", "max": 200}, "constraints[0]")
    assert c.name == "ttft_p90_ms@critical<=200"
    assert c.violation(150) == 0 and c.satisfied(200)
    assert c.violation(300) == pytest.approx(0.5)
    assert 0 < c.violation(math.inf) < math.inf
    low = parse_constraint({"metric": "throughput_tps", "min": 1000}, "c")
    assert low.violation(500) == pytest.approx(0.5) and low.violation(2000) == 0


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"metric": "backlog"}, "constraints[0]"),
        ({"metric": "backlog", "max": "x"}, "constraints[0].max"),
        ({"metric": "backlog", "below": 1}, "constraints[0].below"),
        ({"metric": "nope", "max": 1}, "constraints[0].metric"),
        ({"metric": "backlog", "min": 2, "max": 1}, "constraints[0]"),
    ],
)
def test_constraint_parse_errors(raw, field):
    with pytest.raises(ConfigError) as e:
        parse_constraint(raw, "constraints[0]")
    assert e.value.field == field


def test_apply_params_writes_every_path_kind_without_touching_base():
    base = {
        "routing_scorers": "precise-prefix-cache:2,queue-depth:1",
        "slo_ttft": "critical=100ms",
        "policy_config": {"routing": {"scorers": [{"name": "queue-depth", "weight": 1}]}},
        "workload_spec": search_fakes.WORKLOAD,
    }
    out = apply_params(
        base,
        {
            "num_instances": 4,
            "routing_scorers.queue-depth": 3.0,
            "routing_scorers.precise-prefix-cache": 0,
            "routing_scorers.kv-utilization": 0.5,
            "slo_ttft.standard": 500.0,
            "policy_config.admission.probabilistic.sheddable.a": 300.0,
            "policy_config.routing.scorers.queue-depth": 2.0,
            "policy_config.routing.scorers.load-balance": 1.0,
            "workload_spec.aggregate_rate": 99,
            "workload_spec.clients.sheddable.rate_fraction": 2.5,
        },
    )
    assert out["num_instances"] == 4
    assert out["routing_scorers"] == "queue-depth:3,kv-utilization:0.5"
    assert out["slo_ttft"] == "critical=100ms,standard=500ms"
    assert out["policy_config"]["admission"]["probabilistic"]["sheddable"] == {"a": 300.0}
    assert out["policy_config"]["routing"]["scorers"] == [{"name": "queue-depth", "weight": 2.0}, {"name": "load-balance", "weight": 1.0}]
    assert out["workload_spec"]["aggregate_rate"] == 99
    assert [c["rate_fraction"] for c in out["workload_spec"]["clients"]] == [1, 1, 2.5]
    assert base["workload_spec"]["aggregate_rate"] == 30 and base["routing_scorers"].startswith("precise")


@pytest.mark.parametrize(
    "path, message",
    [
        ("num_gpus", "not a field of options"),
        ("policy_config.admission.bogus", "not a field of policy_config.admission"),
        ("policy_config.admission.probabilistic.gold.a", "unknown SLO tier"),
        ("routing_scorers.magic", "unknown routing scorer"),
        ("workload_spec.clients.nobody.rate_fraction", "no client with id"),
        ("tp.x", "takes no sub-field"),
    ],
)
def test_check_target_rejects_unknown_paths(path, message):
    with pytest.raises(ConfigError, match=message) as e:
        check_target(path, {"workload_spec": search_fakes.WORKLOAD}, f"parameters.{path}")
    assert e.value.field == f"parameters.{path}"


def test_prefill_decode_and_autoscaler_targets():
    check_target("prefill_instances", {}, "parameters.prefill_instances")
    check_target("policy_config.autoscaler.analyzer.scale_up_threshold", {}, "p")
    base = {"policy_config": {"node_pools": [{"name": "h100", "max_nodes": 4}]}}
    check_target("policy_config.node_pools.h100.max_nodes", base, "p")
    with pytest.raises(ConfigError, match="no node pool named 'a100'"):
        check_target("policy_config.node_pools.a100.max_nodes", base, "p")
    opts = apply_params(base, {"policy_config.node_pools.h100.max_nodes": 8,
                               "policy_config.autoscaler.interval_us": 10})
    assert opts["policy_config"]["node_pools"] == [{"name": "h100", "max_nodes": 8}]
    assert opts["policy_config"]["autoscaler"] == {"interval_us": 10}
    rest = apply_params({"num_instances": 8, "decode_instances": PD_REST}, {"prefill_instances": 3})
    assert rest["decode_instances"] == 5


def test_cost_of_prefill_decode_pools_uses_each_pool_tp_and_gpu():
    dep = deployment_of({"model": "qwen/qwen2.5-7b-instruct", "hardware": "H100", "num_instances": 6,
                         "prefill_instances": 2, "decode_instances": 3, "decode_tp": 2,
                         "prefill_hardware": "L40S"})
    # 2 L40S x tp1 prefill + 3 H100 x tp2 decode + 1 H100 x tp1 without a role
    want = 2 * PRICES["L40S"] + 6 * PRICES["H100"] + 1 * PRICES["H100"]
    assert cost_per_hour(dep, PRICES) == pytest.approx(want)


def test_objective_evaluate_averages_seeds_and_records_spread():
    refs = [(parse_metric("ttft_p90_ms@critical", "m"), "minimize"), (parse_metric("gpu_cost_per_hour", "m"), "minimize")]
    obj = Objective(
        base={"model": "qwen/qwen2.5-7b-instruct", "workload_spec": search_fakes.WORKLOAD},
        objectives=refs,
        constraints=[parse_constraint({"metric": "backlog", "max": 0}, "c")],
        seeds=[1, 2, 3],
        prices=PRICES,
        simulate=search_fakes.simulate,
    )
    ev = obj.evaluate({"num_instances": 4, "hardware": "H100"})
    per_seed = [refs[0][0].value(sample({"num_instances": 4, "seed": s})) for s in (1, 2, 3)]
    assert ev.values[0] == pytest.approx(sum(per_seed) / 3)
    assert ev.values[1] == pytest.approx(16.0)
    assert ev.constraints == {"backlog<=0": 0.0}
    assert ev.spread["ttft_p90_ms@critical"]["min"] == pytest.approx(min(per_seed))
    assert ev.spread["ttft_p90_ms@critical"]["std"] > 0
    assert "throughput_tps" in ev.metrics and "rejection_rate@sheddable" in ev.metrics


def test_every_metric_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert [name for name in METRICS if f"`{name}`" not in doc] == []


def test_study_seeds_reach_a_workload_spec():
    """Each of a study's seeds: regenerates the workload of a workload_spec (not only routing)."""
    from blis.api import simulate

    spec = {"version": "2", "seed": 5, "aggregate_rate": 50, "num_requests": 30, "clients": [
        {"id": "c", "rate_fraction": 1, "arrival": {"process": "poisson"},
         "input_distribution": {"type": "gaussian", "params": {"mean": 300, "std_dev": 100, "min": 10, "max": 800}},
         "output_distribution": {"type": "gaussian", "params": {"mean": 60, "std_dev": 30, "min": 5, "max": 200}}}]}
    base = {"model": "qwen/qwen2.5-7b-instruct", "workload_spec": spec}
    runs = [simulate(dict(base, seed=s))["cluster"]["e2e_mean_ms"] for s in (1, 2)]
    assert runs[0] != runs[1]
    assert simulate(base)["cluster"] == simulate(dict(base, seed=5))["cluster"]
