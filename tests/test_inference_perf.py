"""inference-perf workloads (§14.12), `blis convert inference-perf`, `blis calibrate`."""

import numpy as np
import pytest
import yaml

from blis.errors import ConfigError
from blis.workload import generate_requests, parse_workload_spec
from blis.workload.inference_perf import profile_to_spec_dict

PROFILE = {
    "api": {"streaming": True},
    "data": {"type": "shared_prefix", "shared_prefix": {
        "enable_multi_turn_chat": True, "num_unique_system_prompts": 3,
        "num_users_per_system_prompt": 2, "output_len": 20, "question_len": 30,
        "system_prompt_len": 10}},
    "load": {"type": "constant", "stages": [{"duration": 20, "rate": 5}, {"duration": 10, "rate": 10}]},
    "server": {"ignore_eos": True},
}


def _gen(source):
    spec = parse_workload_spec(source)
    return generate_requests(spec, spec.num_requests, 1 << 62)


def test_stage_counts_spacing_and_prefixes():
    reqs = _gen(PROFILE)
    t = np.array([r.arrival_time for r in reqs])
    stage0 = t < 20_000_000
    assert stage0.sum() == 100 and (~stage0).sum() == 100  # int(rate x duration) per stage
    assert set(np.diff(t[stage0])) == {200_000}             # constant load: evenly spaced
    assert set(np.diff(t[~stage0])) == {100_000}
    assert t[~stage0][0] == 20_000_000
    assert [r.id for r in reqs] == [f"request_{i}" for i in range(200)]
    # users cycle; users of one system prompt share its tokens, other prompts differ
    assert reqs[0].client_id == "stage-0-prompt-0-user-0" and reqs[7].client_id == "stage-0-prompt-0-user-1"
    heads = {r.prefix_group: tuple(r.input_tokens[:10]) for r in reqs}
    for r in reqs:
        assert r.input_len == 40 and r.output_len == 20 and r.prefix_length == 10
        assert tuple(r.input_tokens[:10]) == heads[r.prefix_group] and r.slo_class == "standard"
    assert len(set(heads.values())) == 3


def test_raw_profile_and_converted_spec_generate_the_same_requests(tmp_path):
    conv = tmp_path / "spec.yaml"
    conv.write_text(yaml.safe_dump(profile_to_spec_dict(PROFILE, seed=42)))
    prof = tmp_path / "profile.yaml"
    prof.write_text(yaml.safe_dump(PROFILE))
    a, b = _gen(str(prof)), _gen(str(conv))
    assert [(r.arrival_time, r.input_tokens.tolist(), r.output_len) for r in a] == \
           [(r.arrival_time, r.input_tokens.tolist(), r.output_len) for r in b]


def test_measured_length_distributions_per_stage():
    spec = profile_to_spec_dict(PROFILE)
    spec["inference_perf"]["stages"][0]["output_distribution"] = {
        "type": "empirical", "params": {"5": 0.5, "15": 0.5}}
    reqs = _gen(spec)
    outs = np.array([r.output_len for r in reqs[:100]])
    assert set(outs) == {5, 15} and 35 < (outs == 5).sum() < 65
    assert {r.output_len for r in reqs[100:]} == {20}


def test_poisson_load_fills_stage_exactly():
    spec = profile_to_spec_dict(dict(PROFILE, load={"type": "poisson", "stages": [{"duration": 20, "rate": 5}]}))
    t = np.array([r.arrival_time for r in _gen(spec)])
    assert len(t) == 100 and t[0] == 0 and t[-1] < 20_000_000 and len(set(np.diff(t))) > 50


@pytest.mark.parametrize("mutate,field", [
    (lambda s: s["inference_perf"].update(bogus=1), "inference_perf.bogus"),
    (lambda s: s["inference_perf"]["stages"][0].update(rate=0), "inference_perf.stages[0].rate"),
    (lambda s: s["inference_perf"]["shared_prefix"].pop("question_len"),
     "inference_perf.shared_prefix.question_len"),
    (lambda s: s["inference_perf"].update(load_type="burst"), "inference_perf.load_type"),
    (lambda s: s.update(clients=[{"id": "x"}]), "inference_perf"),
])
def test_bad_blocks_are_rejected(mutate, field):
    spec = profile_to_spec_dict(PROFILE)
    mutate(spec)
    with pytest.raises(ConfigError) as e:
        parse_workload_spec(spec)
    assert e.value.field == field


def _small_opts():
    return {"model": "meta-llama/Llama-2-7b-hf", "hardware": "H100", "tp": 1,
            "total_kv_blocks": 4000, "max_num_seqs": 64,
            "workload_spec": profile_to_spec_dict(
                dict(PROFILE, load={"type": "constant", "stages": [{"duration": 20, "rate": 8}]}))}


def test_calibrate_recovers_known_coefficients():
    from blis.calibration.fit import calibrate, default_coeffs, simulate_stages, stage_simulator

    true = default_coeffs()
    true["alpha"][0] *= 1.3
    true["beta"][9] *= 0.8
    opts = _small_opts()
    measured = simulate_stages(dict(opts, alpha_coeffs=true["alpha"], beta_coeffs=true["beta"]))
    sim_fn = stage_simulator(opts)
    params = (("alpha", 0), ("beta", 9))
    fit = calibrate([(sim_fn, measured)], params=params,
                    metrics=("ttft_mean", "itl_tok", "e2e_mean"))
    assert fit.rms_before > 0.05 and fit.rms_after < fit.rms_before
    for vec, i in params:
        assert fit.coeffs[vec][i] == pytest.approx(true[vec][i], rel=0.01)


def test_fixed_jacobian_fit_agrees_with_plain_fit():
    """The chord method (one Jacobian at the start, used by the leave-one-out benchmark) lands
    on the coefficients the plain finite-difference fit finds."""
    from blis.calibration.fit import calibrate, default_coeffs, jacobian, simulate_stages, stage_simulator

    true = default_coeffs()
    true["alpha"][0] *= 0.7
    true["beta"][6] *= 1.5
    opts = _small_opts()
    target = (stage_simulator(opts), simulate_stages(dict(opts, alpha_coeffs=true["alpha"],
                                                          beta_coeffs=true["beta"])))
    params = (("alpha", 0), ("beta", 6))
    plain = calibrate([target], params=params)
    chord = calibrate([target], params=params, jac=jacobian(target, params=params),
                      ridge=1e-4, robust=True)
    for vec, i in params:
        assert chord.coeffs[vec][i] == pytest.approx(plain.coeffs[vec][i], rel=0.01)
        assert chord.coeffs[vec][i] == pytest.approx(true[vec][i], rel=0.01)
    assert chord.rms_after < 0.01 < chord.rms_before


def test_linearised_fit_solves_the_linear_model_and_resists_an_outlier():
    from blis.calibration.fit import linearised_fit

    rng = np.random.default_rng(3)
    jac = rng.normal(size=(30, 3))
    z_true = np.array([1.4, 0.7, 1.1])
    r0 = jac @ (1.0 - z_true)  # the model r0 + jac (z - 1) vanishes at z_true
    assert linearised_fit(r0, jac) == pytest.approx(z_true, rel=1e-6)
    bad = r0.copy()
    bad[0] += 6.0  # one stage the simulator overloads
    assert np.abs(linearised_fit(bad, jac, robust=True) - z_true).max() < \
        0.5 * np.abs(linearised_fit(bad, jac) - z_true).max()
    # the ridge pulls towards the start (1) in proportion to its weight
    shrunk = linearised_fit(r0, jac, ridge=3.0)
    assert np.all(np.abs(shrunk - 1) < np.abs(z_true - 1))


def test_coefficients_file_is_accepted_by_run_options(tmp_path):
    from blis.calibration.fit import default_coeffs
    from blis.config.options import build_config
    from blis.latency.coefficients import write_coeffs

    c = default_coeffs()
    c["alpha"][0] = 1234.0
    path = tmp_path / "coeffs.yaml"
    write_coeffs(str(path), c)
    cfg = build_config(dict(_small_opts(), coefficients=str(path)))
    assert cfg.deployment.alpha_coeffs[0] == 1234.0
    assert list(cfg.deployment.beta_coeffs) == c["beta"]
    path.write_text("alpha_coeffs: [1, 2, 3]\n")
    with pytest.raises(ConfigError) as e:
        build_config(dict(_small_opts(), coefficients=str(path)))
    assert e.value.field == "coefficients"


def test_convert_and_calibrate_commands(tmp_path, capsys):
    from blis.cli import main

    prof = tmp_path / "profile.yaml"
    prof.write_text(yaml.safe_dump(PROFILE))
    assert main(["convert", "inference-perf", str(prof)]) == 0
    spec = yaml.safe_load(capsys.readouterr().out)
    assert spec["inference_perf"]["stages"][1] == {"duration": 10, "rate": 10}
    assert len(_gen(spec)) == 200
    assert main(["calibrate", "--output", str(tmp_path / "c.yaml")]) == 2
    assert capsys.readouterr().err.strip() == ("error: experiment: give at least one "
                                                "--experiment DIR, or --trace-header and --trace-data")


def _sim_trace(tmp_path, coeffs, name="t"):
    """A TraceV2 trace of a small run with ``coeffs``, as `blis run --trace-output` writes it,
    marked ``mode: real`` (what a load generator would have recorded)."""
    from blis.config.options import build_config
    from blis.simulation import run_simulation
    from blis.workload.tracev2 import trace_header_for_run, trace_rows_from_requests, write_trace

    opts = dict(_small_opts(), alpha_coeffs=coeffs["alpha"], beta_coeffs=coeffs["beta"])
    res = run_simulation(build_config(opts), keep_requests=True)
    return write_trace(tmp_path / name, trace_header_for_run(res, "real"),
                       trace_rows_from_requests(res.sim.arrived))


def test_calibrate_from_trace_recovers_known_coefficients(tmp_path):
    from blis.calibration.fit import calibrate, default_coeffs, trace_target

    true = default_coeffs()
    true["alpha"][0] *= 1.3
    true["beta"][9] *= 0.8
    header, data = _sim_trace(tmp_path, true)
    opts = {"hardware": "H100", "total_kv_blocks": 4000}  # model, TP, max-num-seqs: the header
    sim_fn, measured = trace_target(header, data, opts, windows=4)
    assert sum(w["count"] for w in measured) == 160
    assert sim_fn(true) == measured  # same coefficients: the replay reproduces the trace exactly
    params = (("alpha", 0), ("beta", 9))
    fit = calibrate([(sim_fn, measured)], params=params)
    assert fit.rms_before > 0.05 and fit.rms_after < 1e-3
    for vec, i in params:
        assert fit.coeffs[vec][i] == pytest.approx(true[vec][i], rel=0.01)


def test_trace_samples_use_send_and_chunk_times():
    from blis.calibration.fit import trace_samples, trace_windows

    row = {"status": "ok", "send_time_us": 1_000_000, "arrival_time_us": 5,
           "first_chunk_time_us": 1_250_000, "last_chunk_time_us": 2_250_000, "output_tokens": 101}
    s = trace_samples([dict(row, request_id=1), dict(row, request_id=2, status="timeout"),
                       dict(row, request_id=3, first_chunk_time_us=0),
                       dict(row, request_id=4, send_time_us=0, arrival_time_us=250_000)])
    assert s == {1: (1_000_000, 250.0, 1250.0, 10.0), 4: (250_000, 1000.0, 2000.0, 10.0)}
    w = trace_windows(s, [4, 1, 9], 2)  # id 9 has no completed row: window 1 averages id 1 only
    assert w[0]["ttft_mean"] == 1000.0 and w[1] == {"ttft_mean": 250.0, "e2e_mean": 1250.0,
                                                    "itl_tok": 10.0, "count": 1}


def test_calibrate_trace_command_errors(tmp_path, capsys):
    from blis.calibration.fit import default_coeffs
    from blis.cli import main

    header, data = _sim_trace(tmp_path, default_coeffs())
    cases = [
        (["--trace-header", header], "error: trace-data: is required with --trace-header"),
        (["--trace-header", header, "--trace-data", data, "--experiment", "x"],
         "error: experiment: give either --experiment DIRs or a trace, not both"),
        (["--experiment", "x", "--tp", "2"], "error: tp: applies to trace calibration only; an "
                                             "experiment's settings come from its exp-config.yaml"),
        (["--trace-header", header, "--trace-data", data, "--latency-model", "roofline"],
         "error: latency-model: calibrate fits trained-physics coefficients only"),
        (["--trace-header", header, "--trace-data", data, "--hardware", "H100", "--rate", "3"],
         "error: rate: blis replay takes its requests from the trace; workload flags do not apply"),
    ]
    for args, err in cases:
        assert main(["calibrate", "--output", str(tmp_path / "c.yaml")] + args) == 2
        assert capsys.readouterr().err.strip() == err
