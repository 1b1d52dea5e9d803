"""Workload subsystem: spec parsing/validation, samplers and request generation (spec §14).

Statistical checks draw 20,000 values from fixed seeds; tolerances (stated per test) are about
three standard errors, so they are deterministic here and would rarely fail for another seed.
"""

import math

import numpy as np
import pytest
import yaml

from blis.errors import ConfigError
from blis.rng import make_generator
from blis.workload import (
    ARRIVAL_SAMPLERS,
    LENGTH_SAMPLERS,
    client_rates,
    expand_cohorts,
    generate_requests,
    make_arrival_sampler,
    make_length_sampler,
    parse_workload_spec,
    preset_spec,
    spec_to_dict,
    synthesize_distribution_spec,
)
from blis.workload.arrivals import gamma_variates, weibull_shape_for_cv

UNBOUNDED = (1 << 63) - 1
N_DRAWS = 20_000


def const(v):
    return {"type": "constant", "params": {"value": v}}


def gauss(mean, std, lo, hi):
    return {"type": "gaussian", "params": {"mean": mean, "std_dev": std, "min": lo, "max": hi}}


def client(cid="c0", frac=1.0, process="poisson", **extra):
    c = {"id": cid, "rate_fraction": frac, "arrival": {"process": process},
         "input_distribution": gauss(100, 30, 10, 200), "output_distribution": gauss(50, 10, 5, 100)}
    c.update(extra)
    return c


def spec_dict(*clients, **top):
    d = {"version": "2", "seed": 42, "aggregate_rate": 10.0, "clients": list(clients) or [client()]}
    d.update(top)
    return d


def gen(d, max_requests=200, horizon=UNBOUNDED, **kw):
    return generate_requests(parse_workload_spec(d), max_requests, horizon, **kw)


def expect_error(data, field, fragment=""):
    with pytest.raises(ConfigError) as ei:
        parse_workload_spec(data)
    assert ei.value.field == field, str(ei.value)
    assert fragment in ei.value.message, str(ei.value)
    return ei.value


# ---------------------------------------------------------------------------------------------
# Arrival samplers
# ---------------------------------------------------------------------------------------------

MEAN_IAT = 10_000.0  # µs; large enough that int truncation bias (~0.5 µs) is negligible


def iat_stats(process, cv=None, seed=1, **kw):
    s = make_arrival_sampler(process, 1.0 / MEAN_IAT, make_generator(seed), cv=cv, **kw)
    x = s.next(N_DRAWS).astype(float)
    assert x.min() >= 1 and x.dtype == float
    return x.mean(), x.std() / x.mean()


@pytest.mark.parametrize("process,cv", [
    ("poisson", 1.0), ("gamma", 0.5), ("gamma", 1.0), ("gamma", 2.0), ("gamma", 3.0),
    ("weibull", 0.5), ("weibull", 1.0), ("weibull", 2.0),
])
def test_arrival_mean_and_cv(process, cv):
    """Mean IAT within 4 % of 1/rate and CV within 8 % of target (20k draws)."""
    mean, got_cv = iat_stats(process, None if process == "poisson" else cv)
    assert mean == pytest.approx(MEAN_IAT, rel=0.04)
    assert got_cv == pytest.approx(cv, rel=0.08)


def test_gamma_explicit_shape_scale_ignores_rate():
    s = make_arrival_sampler("gamma", 1.0, make_generator(3), shape=4.0, scale=2500.0)
    x = s.next(N_DRAWS)
    assert x.mean() == pytest.approx(10_000, rel=0.02)
    assert x.std() / x.mean() == pytest.approx(0.5, rel=0.05)


def test_gamma_tiny_shape_falls_back_to_poisson():
    mean, cv = iat_stats("gamma", cv=20.0)  # shape 1/400 < 0.01
    assert mean == pytest.approx(MEAN_IAT, rel=0.04)
    assert cv == pytest.approx(1.0, rel=0.05)


def test_gamma_variates_shape_below_one():
    """The u**(1/shape) boost rule keeps mean = shape and variance = shape (within 4 % / 8 %)."""
    g = gamma_variates(make_generator(5), 0.3, N_DRAWS)
    assert g.mean() == pytest.approx(0.3, rel=0.04)
    assert g.var() == pytest.approx(0.3, rel=0.08)


def test_weibull_shape_bisection():
    assert weibull_shape_for_cv(1.0) == pytest.approx(1.0, abs=0.01)
    for cv in (0.2, 0.5, 2.0, 5.0):
        k = weibull_shape_for_cv(cv)
        got = math.sqrt(math.gamma(1 + 2 / k) / math.gamma(1 + 1 / k) ** 2 - 1)
        assert got == pytest.approx(cv, abs=0.002)


def test_constant_arrivals_draw_nothing_and_are_exact():
    rng = make_generator(9)
    before = rng.bit_generator.state
    s = make_arrival_sampler("constant", 4 / 1e6, rng)
    assert s.next(5).tolist() == [250_000] * 5
    assert rng.bit_generator.state == before


def test_sampler_stream_is_partition_independent():
    for process in ARRIVAL_SAMPLERS:
        a = make_arrival_sampler(process, 1e-3, make_generator(11), cv=2.0 if process != "poisson" else None)
        b = make_arrival_sampler(process, 1e-3, make_generator(11), cv=2.0 if process != "poisson" else None)
        pieces = np.concatenate([a.next(3), a.next(1500), [a.next_one()], a.next(10)])
        assert np.array_equal(pieces, b.next(1514))


def test_iat_floor_is_one_microsecond():
    s = make_arrival_sampler("poisson", 10.0, make_generator(2))  # mean 0.1 µs
    assert s.next(1000).min() == 1


def test_unknown_process_in_factory():
    with pytest.raises(ConfigError) as ei:
        make_arrival_sampler("uniform", 1e-3, make_generator(0), field="x.arrival.process")
    assert ei.value.field == "x.arrival.process"


# ---------------------------------------------------------------------------------------------
# Length samplers
# ---------------------------------------------------------------------------------------------

def lengths(dist, seed=1, n=N_DRAWS):
    return make_length_sampler(dist["type"], dist["params"], "d").sample(make_generator(seed), n)


def test_gaussian_clamped_and_centred():
    x = lengths(gauss(512, 256, 2, 7000))
    assert x.min() >= 2 and x.max() <= 7000
    assert x.mean() == pytest.approx(512, rel=0.02)  # clamping at 2 shifts the mean up ~0.2 %
    y = lengths(gauss(100, 80, 90, 120))
    assert y.min() == 90 and y.max() == 120


def test_gaussian_min_equals_max_draws_nothing():
    rng = make_generator(4)
    before = rng.bit_generator.state
    s = make_length_sampler("gaussian", {"mean": 10, "std_dev": 5, "min": 7, "max": 7}, "d")
    assert s.sample(rng, 4).tolist() == [7] * 4
    assert rng.bit_generator.state == before


def test_gaussian_rounds_half_away_from_zero():
    s = make_length_sampler("gaussian", {"mean": 2.5, "std_dev": 0, "min": 1, "max": 9}, "d")
    assert s.sample(make_generator(0), 3).tolist() == [3, 3, 3]


def test_other_length_types():
    e = lengths({"type": "exponential", "params": {"mean": 300}})
    assert e.mean() == pytest.approx(300, rel=0.03) and e.min() >= 1
    e2 = lengths({"type": "exponential", "params": {"mean": 300, "min": 50, "max": 400}})
    assert e2.min() == 50 and e2.max() == 400
    ln = lengths({"type": "lognormal", "params": {"mu": 6.0, "sigma": 0.5}})
    assert np.median(ln) == pytest.approx(math.exp(6.0), rel=0.03)
    ln_big = lengths({"type": "lognormal", "params": {"mu": 800, "sigma": 1, "min": 3}}, n=10)
    assert ln_big.tolist() == [3] * 10  # exp overflow -> min
    pl = lengths({"type": "pareto_lognormal",
                  "params": {"alpha": 2.5, "xm": 100, "mu": 4, "sigma": 0.3, "mix_weight": 0.4}})
    assert pl.min() >= 1 and np.mean(pl >= 100) == pytest.approx(0.4, abs=0.02)
    assert lengths(const(0), n=3).tolist() == [1, 1, 1]
    assert lengths(const(37.9), n=2).tolist() == [37, 37]
    emp = lengths({"type": "empirical", "params": {"100": 1, "10": 3}})
    assert set(emp.tolist()) == {10, 100}
    assert np.mean(emp == 10) == pytest.approx(0.75, abs=0.015)
    assert lengths({"type": "empirical", "params": {"64": 2}}, n=2).tolist() == [64, 64]


@pytest.mark.parametrize("dist,field", [
    ({"type": "gaussian", "params": {"mean": 1, "std_dev": -1, "min": 1, "max": 2}}, "d.params.std_dev"),
    ({"type": "gaussian", "params": {"mean": 1, "std_dev": 1, "min": 5, "max": 2}}, "d.params.min"),
    ({"type": "gaussian", "params": {"mean": 1, "std_dev": 1, "min": 1}}, "d.params.max"),
    ({"type": "gaussian", "params": {"mean": 1, "stddev": 1, "min": 1, "max": 2}}, "d.params.stddev"),
    ({"type": "exponential", "params": {"mean": 0}}, "d.params.mean"),
    ({"type": "lognormal", "params": {"mu": 1, "sigma": -2}}, "d.params.sigma"),
    ({"type": "pareto_lognormal", "params": {"alpha": 1, "xm": 1, "mu": 1, "sigma": 1,
                                              "mix_weight": 1.5}}, "d.params.mix_weight"),
    ({"type": "constant", "params": {}}, "d.params.value"),
    ({"type": "empirical", "params": {"abc": 1}}, "d.params.abc"),
    ({"type": "empirical", "params": {}}, "d.params"),
    ({"type": "zipf", "params": {}}, "d.type"),
    ({"type": "", "params": {}}, "d.type"),
])
def test_length_param_validation(dist, field):
    with pytest.raises(ConfigError) as ei:
        make_length_sampler(dist["type"], dist["params"], "d")
    assert ei.value.field == field


def test_length_registry_names():
    assert set(LENGTH_SAMPLERS) == {"gaussian", "exponential", "lognormal", "pareto_lognormal",
                                    "constant", "empirical"}
    assert set(ARRIVAL_SAMPLERS) == {"constant", "poisson", "gamma", "weibull"}


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------

def test_same_seed_identical_different_seed_differs():
    d = spec_dict(client("a", 2, prefix_group="g"), client("b", 1, process="gamma"))
    r1, r2 = gen(d), gen(d)
    assert [x.arrival_time for x in r1] == [x.arrival_time for x in r2]
    for x, y in zip(r1, r2):
        assert np.array_equal(x.input_tokens, y.input_tokens)
        assert np.array_equal(x.output_tokens, y.output_tokens)
    r3 = gen({**d, "seed": 43})
    assert [x.arrival_time for x in r1] != [x.arrival_time for x in r3]
    assert not np.array_equal(r1[0].input_tokens, r3[0].input_tokens)


def test_token_ids_in_range():
    r = gen(spec_dict(), max_requests=50)
    toks = np.concatenate([np.concatenate((x.input_tokens, x.output_tokens)) for x in r])
    assert toks.dtype == np.int32 and toks.min() >= 0 and toks.max() < 128000
    assert len(np.unique(toks)) > 0.9 * min(len(toks), 128000) * (1 - len(toks) / 256000)


@pytest.mark.parametrize("rate", [1, 2, 4, 8, 0.5, 3, 100])
def test_constant_arrivals_first_at_one_iat(rate):
    spec = synthesize_distribution_spec(rate, 20, 42)
    r = generate_requests(spec, 20, UNBOUNDED)
    iat = int(1e6 / rate)
    assert [x.arrival_time for x in r] == [iat * (i + 1) for i in range(20)]


def test_constant_iat_uses_blis_float_order():
    """Where float rounding bites, BLIS's int(1 / (rate/1e6)) wins: 99,999 µs at 10 req/s."""
    r = generate_requests(synthesize_distribution_spec(10, 3, 42), 3, UNBOUNDED)
    assert [x.arrival_time for x in r] == [99_999, 199_998, 299_997]


def test_request_fields_from_distribution_mode():
    r = generate_requests(synthesize_distribution_spec(1, 5, 42), 5, UNBOUNDED)
    for x in r:
        assert x.max_output_len == x.output_len
        assert x.deadline == x.arrival_time + 300_000_000  # blis run default --timeout 300
        assert x.client_id == "distribution" and x.slo_class == "" and x.prefix_length == 0
        assert 2 <= x.input_len <= 7000 and 2 <= x.output_len <= 7000


def test_prefix_groups_shared_within_group_only():
    d = spec_dict(client("a", 1, prefix_group="sys", prefix_length=64),
                  client("b", 1, prefix_group="sys"),
                  client("c", 1, prefix_group="other"),
                  client("d", 1))
    r = gen(d, max_requests=400)
    sys_req = [x for x in r if x.prefix_group == "sys"]
    other = [x for x in r if x.prefix_group == "other"]
    plain = [x for x in r if not x.prefix_group]
    assert {x.client_id for x in sys_req} == {"a", "b"}
    first = sys_req[0].input_tokens[:64]
    for x in sys_req:
        assert x.prefix_length == 64  # first client of the group fixes the length
        assert np.array_equal(x.input_tokens[:64], first)
    assert all(x.prefix_length == 50 for x in other)  # default length
    assert all(np.array_equal(x.input_tokens[:50], other[0].input_tokens[:50]) for x in other)
    assert not np.array_equal(other[0].input_tokens[:50], first[:50])
    assert all(x.prefix_length == 0 for x in plain)
    # the suffix stays distinct per request
    assert not np.array_equal(sys_req[0].input_tokens[64:74], sys_req[1].input_tokens[64:74])


def test_rate_fractions_normalised():
    d = spec_dict(client("a", 3, process="constant"), client("b", 1, process="constant"),
                  aggregate_rate=8)
    s = parse_workload_spec(d)
    assert client_rates(s.clients, s.aggregate_rate) == pytest.approx([6.0, 2.0])
    d10 = spec_dict(client("a", 30, process="constant"), client("b", 10, process="constant"),
                    aggregate_rate=8)
    r, r10 = gen(d, 100), gen(d10, 100)
    assert [(x.client_id, x.arrival_time) for x in r] == [(x.client_id, x.arrival_time) for x in r10]
    a_times = [x.arrival_time for x in r if x.client_id == "a"]
    b_times = [x.arrival_time for x in r if x.client_id == "b"]
    assert a_times[:3] == [166_666, 333_332, 499_998]
    assert b_times[:2] == [500_000, 1_000_000]


def test_aggregate_rate_achieved_for_poisson_mix():
    d = spec_dict(client("a", 1), client("b", 3, process="gamma"), aggregate_rate=50)
    r = gen(d, max_requests=0, horizon=200_000_000)
    assert len(r) / 200 == pytest.approx(50, rel=0.05)
    share = sum(x.client_id == "b" for x in r) / len(r)
    assert share == pytest.approx(0.75, abs=0.03)


def test_horizon_truncation_and_prefix_stability():
    d = spec_dict(client("a", 1), client("b", 1, process="weibull", arrival={"process": "weibull", "cv": 2}))
    short = gen(d, max_requests=0, horizon=5_000_000)
    long = gen(d, max_requests=0, horizon=20_000_000)
    assert short and all(x.arrival_time < 5_000_000 for x in short)
    assert long[-1].arrival_time < 20_000_000
    assert len(long) > len(short)
    for x, y in zip(short, long):  # extending the horizon only appends requests
        assert x.id == y.id and x.arrival_time == y.arrival_time
        assert np.array_equal(x.input_tokens, y.input_tokens)
        assert np.array_equal(x.output_tokens, y.output_tokens)


def test_max_requests_truncation_and_ids():
    d = spec_dict(client("a", 1), client("b", 2, process="gamma", arrival={"process": "gamma", "cv": 3}))
    r = gen(d, max_requests=150)
    assert len(r) == 150
    assert [x.id for x in r] == [f"request_{i}" for i in range(150)]
    times = [x.arrival_time for x in r]
    assert times == sorted(times)
    bigger = gen(d, max_requests=300)
    for x, y in zip(r, bigger):
        assert x.id == y.id and x.arrival_time == y.arrival_time and x.client_id == y.client_id
        assert np.array_equal(x.input_tokens, y.input_tokens)


def test_ties_keep_client_order():
    d = spec_dict(client("a", 1, process="constant"), client("b", 1, process="constant"))
    r = gen(d, max_requests=10)
    assert [x.client_id for x in r] == ["a", "b"] * 5
    assert r[0].arrival_time == r[1].arrival_time


def test_requires_num_requests_or_horizon():
    with pytest.raises(ConfigError) as ei:
        gen(spec_dict(), max_requests=0, horizon=UNBOUNDED)
    assert ei.value.field == "num_requests"


def test_deadlines():
    d = spec_dict(client("none"), client("zero", timeout=0), client("t", timeout=2_000_000))
    r = gen(d, 60)
    for x in r:
        want = {"none": 0, "zero": 0, "t": x.arrival_time + 2_000_000}[x.client_id]
        assert x.deadline == want
    for x in gen(d, 60, timeout_override_us=7):
        assert x.deadline == x.arrival_time + 7
    assert all(x.deadline == 0 for x in gen(d, 60, timeout_override_us=0))


def test_lifecycle_windows_filter_arrivals():
    w = {"windows": [{"start_us": 1_000_000, "end_us": 2_000_000},
                     {"start_us": 5_000_000, "end_us": 6_000_000}]}
    r = gen(spec_dict(client("a", lifecycle=w), aggregate_rate=100), max_requests=0, horizon=UNBOUNDED)
    assert r and all(1e6 <= x.arrival_time < 2e6 or 5e6 <= x.arrival_time < 6e6 for x in r)
    assert len(r) == pytest.approx(200, rel=0.2)


def test_metadata_copied():
    c = client("m", slo_class="critical", tenant_id="t1", model="llama", adapter="lora-a",
               streaming=True, slo_target_us=5000)
    x = gen(spec_dict(c), 5)[0]
    assert (x.slo_class, x.tenant_id, x.model, x.adapter, x.streaming, x.slo_target_us) == \
        ("critical", "t1", "llama", "lora-a", True, 5000)


def test_multimodal_lengths():
    mm = {"text_distribution": const(10), "image_distribution": const(100),
          "image_count_distribution": const(2), "audio_distribution": const(7)}
    x = gen(spec_dict(client("mm", multimodal=mm)), 5)[0]
    assert (x.text_tokens, x.image_tokens, x.audio_tokens, x.video_tokens) == (10, 200, 0, 0)
    assert x.input_len == 210


def test_open_loop_multi_turn_sessions():
    mt = {"max_rounds": 3, "think_time_us": 500_000, "context_growth": "accumulate"}
    c = client("chat", input_distribution=const(20), output_distribution=const(8),
               reasoning={"multi_turn": mt}, closed_loop=False, prefix_group="p", prefix_length=5)
    r = gen(spec_dict(c, aggregate_rate=1), max_requests=0, horizon=30_000_000)
    sessions = {}
    for x in r:
        sessions.setdefault(x.session_id, []).append(x)
        assert x.deadline == x.arrival_time + 300_000_000  # session default
        assert x.session_id.startswith("sess_") and x.think_time_us == 500_000
    full = [v for v in sessions.values() if len(v) == 3]
    assert full
    a, b, c3 = sorted(full[0], key=lambda q: q.round_index)
    assert [a.round_index, b.round_index, c3.round_index] == [0, 1, 2]
    assert b.arrival_time - a.arrival_time == 500_000 + 8
    assert (a.input_len, b.input_len, c3.input_len) == (25, 25 + 8 + 20, 25 + 2 * 28)
    assert np.array_equal(b.input_tokens[:25], a.input_tokens)
    assert np.array_equal(b.input_tokens[25:33], a.output_tokens)
    assert np.array_equal(c3.input_tokens[:b.input_len], b.input_tokens)
    assert all(x.arrival_time < 30_000_000 for x in r)


def test_single_session_and_no_accumulate():
    mt = {"max_rounds": 4, "think_time_us": 100, "single_session": True}
    c = client("s", input_distribution=const(10), output_distribution=const(3),
               reasoning={"multi_turn": mt}, closed_loop=False, timeout=0)
    r = gen(spec_dict(c), max_requests=0, horizon=UNBOUNDED)
    assert len(r) == 4 and len({x.session_id for x in r}) == 1
    assert all(x.input_len == 10 and x.deadline == 0 for x in r)
    assert [x.arrival_time - r[0].arrival_time for x in r] == [0, 103, 206, 309]


def test_reason_ratio_metadata():
    c = client("r", reasoning={"reason_ratio_distribution": const(250)})
    assert all(x.reason_ratio == 1.0 for x in gen(spec_dict(c), 5))
    c = client("r", reasoning={"reason_ratio_distribution": const(40)})
    assert all(x.reason_ratio == pytest.approx(0.4) for x in gen(spec_dict(c), 5))


def test_closed_loop_and_concurrency_are_rejected_at_generation():
    mt = {"max_rounds": 2, "think_time_us": 10}
    s = parse_workload_spec(spec_dict(client("x", reasoning={"multi_turn": mt})))
    with pytest.raises(ConfigError) as ei:
        generate_requests(s, 10, UNBOUNDED)
    assert ei.value.field == "clients[0].reasoning.multi_turn"
    assert "closed_loop: false" in ei.value.message
    conc = {"id": "u", "concurrency": 4, "think_time_us": 1000,
            "input_distribution": const(5), "output_distribution": const(5)}
    s = parse_workload_spec({"version": "2", "seed": 1, "clients": [conc]})
    with pytest.raises(ConfigError) as ei:
        generate_requests(s, 10, UNBOUNDED)
    assert ei.value.field == "clients[0].concurrency"


def test_cohort_expansion():
    d = {"version": "2", "seed": 3, "aggregate_rate": 20, "cohorts": [{
        "id": "pop", "population": 4, "rate_fraction": 2, "arrival": {"process": "poisson"},
        "input_distribution": const(10), "output_distribution": const(4),
        "prefix_group": "g", "prefix_sharing": "per_member",
        "diurnal": {"peak_hour": 12, "peak_to_trough_ratio": 3},
        "drain": {"start_time_us": 1000, "ramp_duration_us": 100}}]}
    s = parse_workload_spec(d)
    members = [c for _, c in expand_cohorts(s)]
    assert [c.id for c in members] == ["pop-0", "pop-1", "pop-2", "pop-3"]
    assert all(c.rate_fraction == 0.5 for c in members)
    assert [c.prefix_group for c in members] == ["g-0", "g-1", "g-2", "g-3"]
    w = members[0].windows
    assert len(w) == 24 + 1 + 10
    peak, trough = w[12], w[0]
    assert peak.end_us - peak.start_us == 3_600_000_000
    assert trough.end_us - trough.start_us == int(3_600_000_000 / 3)
    assert (w[24].start_us, w[24].end_us) == (0, 1000)
    assert [(x.start_us, x.end_us) for x in w[25:27]] == [(1000, 1010), (1010, 1019)]
    r = generate_requests(s, 50, UNBOUNDED)
    assert len(r) == 50 and {x.client_id for x in r} <= {c.id for c in members}


def test_time_varying_windows():
    base = client("a", input_distribution=const(10), output_distribution=const(5))
    base["lifecycle"] = {"windows": [
        {"start_us": 0, "end_us": 10_000_000, "trace_rate": 1},
        {"start_us": 10_000_000, "end_us": 20_000_000, "trace_rate": 3,
         "input_distribution": const(99)}]}
    other = client("b", process="constant", input_distribution=const(10),
                   output_distribution=const(5), lifecycle={"windows": [{"start_us": 0, "end_us": 20_000_000}]})
    nowin = client("c")
    r = gen(spec_dict(base, other, nowin, aggregate_rate=100), max_requests=0, horizon=30_000_000)
    count = {}
    for x in r:
        key = (x.client_id, x.arrival_time // 10_000_000)
        count[key] = count.get(key, 0) + 1
        assert x.deadline == 0 and x.prefix_length == 0
        assert x.input_len == (99 if key == ("a", 1) else 10)
    # rate 100 split by co-active trace rates (c has no windows: it generates nothing on this path
    # but, being always-on, still counts 1); N = ceil(rate·D) and the last one lands on the window
    # end, so it is dropped. a: 100·1/3 over 10 s, then 100·3/5; b: 100·1/3 over 20 s.
    assert count == {("a", 0): 333, ("a", 1): 599, ("b", 0): 333, ("b", 1): 333}


def test_absolute_rate_mode():
    c = client("a", lifecycle={"windows": [{"start_us": 0, "end_us": 2_000_000, "trace_rate": 7}]})
    r = gen(spec_dict(c, aggregate_rate=0), max_requests=0, horizon=UNBOUNDED)
    assert len(r) == 13


def test_generation_of_100k_requests_follows_the_distribution():
    """Speed is measured in benchmarks/bench.py (workload c), not here."""
    spec = synthesize_distribution_spec(1000, 100_000, 42)
    r = generate_requests(spec, 100_000, UNBOUNDED)
    assert len(r) == 100_000
    assert np.mean([x.input_len for x in r]) == pytest.approx(512, rel=0.02)


# ---------------------------------------------------------------------------------------------
# Strict parsing
# ---------------------------------------------------------------------------------------------

def test_parse_from_file_and_round_trip(tmp_path):
    d = spec_dict(
        client("a", 3, slo_class="critical", tenant_id="t", arrival={"process": "gamma", "cv": 2.5},
               prefix_group="g", prefix_length=30, streaming=True, timeout=0, slo_target_us=9,
               network={"rtt_ms": 2.5}, lifecycle={"windows": [{"start_us": 0, "end_us": 100}]},
               multimodal={"text_distribution": const(3)}),
        client("b", 1, slo_class="batch", closed_loop=False,
               reasoning={"reason_ratio_distribution": const(4),
                          "multi_turn": {"max_rounds": 2, "think_time_us": 5,
                                         "context_growth": "accumulate", "single_session": True}}),
        cohorts=[{"id": "co", "population": 2, "slo_class": "standard", "rate_fraction": 1,
                  "arrival": {"process": "weibull", "cv": 0.7}, "input_distribution": const(3),
                  "output_distribution": const(3), "spike": {"start_time_us": 5, "duration_us": 9}}],
        goodput_slo_targets={"critical": {"ttft_ms": 100, "e2e_ms": 900}},
        num_requests=77, horizon=123456, category="language")
    p = tmp_path / "w.yaml"
    p.write_text(yaml.safe_dump(d))
    s = parse_workload_spec(str(p))
    assert s == parse_workload_spec(d) == parse_workload_spec(spec_to_dict(s))
    assert s.clients[0].timeout == 0 and s.clients[1].timeout is None
    assert s.clients[1].closed_loop is False and s.clients[0].closed_loop is None
    assert s.goodput_slo_targets == {"critical": {"ttft_ms": 100.0, "e2e_ms": 900.0}}
    assert s.num_requests == 77 and s.horizon == 123456
    assert parse_workload_spec(s) is s


def test_yaml_floats_with_exponent(tmp_path):
    p = tmp_path / "w.yaml"
    p.write_text(yaml.safe_dump(spec_dict()).replace("aggregate_rate: 10.0", "aggregate_rate: 1e3"))
    assert parse_workload_spec(str(p)).aggregate_rate == 1000.0


def test_unknown_keys_name_the_path():
    expect_error(spec_dict(bogus=1), "bogus", "unknown key")
    c = client()
    c["arrival"] = {"proces": "poisson"}
    expect_error(spec_dict(c), "clients[0].arrival.proces", "unknown key")
    c = client()
    c["input_distribution"]["parms"] = {}
    expect_error(spec_dict(c), "clients[0].input_distribution.parms", "unknown key")
    c = client(lifecycle={"windows": [{"start_us": 0, "end_us": 5, "rate": 1}]})
    expect_error(spec_dict(c), "clients[0].lifecycle.windows[0].rate", "unknown key")
    c = client(reasoning={"multi_turn": {"max_rounds": 2, "think": 1}})
    expect_error(spec_dict(client(), c), "clients[1].reasoning.multi_turn.think", "unknown key")


def test_invalid_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("clients: [\n  - id: a\n")
    err = expect_error(str(p), "workload-spec", "invalid YAML: ")
    assert "\n" not in err.message
    p.write_text("seed: 1\nseed: 2\n")
    expect_error(str(p), "workload-spec", "duplicate key")
    p.write_text("")
    expect_error(str(p), "workload-spec", "empty")
    p.write_text("- 1\n- 2\n")
    expect_error(str(p), "workload-spec", "expected a mapping")
    expect_error(str(tmp_path / "missing.yaml"), "workload-spec", "cannot read")


def test_rate_errors():
    expect_error(spec_dict(aggregate_rate=-5), "aggregate_rate", "finite")
    expect_error(spec_dict(aggregate_rate=float("inf")), "aggregate_rate", "finite")
    expect_error(spec_dict(client(frac=0)), "clients[0].rate_fraction", "> 0")
    expect_error(spec_dict(client(frac=-1)), "clients[0].rate_fraction", "> 0")
    expect_error(spec_dict(client(frac="x")), "clients[0].rate_fraction", "expected a number")
    expect_error(spec_dict(aggregate_rate=0), "clients[0].lifecycle", "absolute-rate")


@pytest.mark.parametrize("arrival,field,frag", [
    ({"process": "gamma", "cv": 0}, "clients[0].arrival.cv", "> 0"),
    ({"process": "gamma", "cv": -1}, "clients[0].arrival.cv", "> 0"),
    ({"process": "gamma", "cv": float("nan")}, "clients[0].arrival.cv", "finite"),
    ({"process": "weibull", "cv": 20}, "clients[0].arrival.cv", "[0.01, 10.4]"),
    ({"process": "weibull", "cv": 0.001}, "clients[0].arrival.cv", "[0.01, 10.4]"),
    ({"process": "gamma", "shape": -2, "scale": 3}, "clients[0].arrival.shape", "> 0"),
    ({"process": "uniform"}, "clients[0].arrival.process", "unknown arrival process"),
    ({"process": ""}, "clients[0].arrival.process", "required"),
])
def test_arrival_errors(arrival, field, frag):
    expect_error(spec_dict(client(arrival=arrival)), field, frag)


def test_missing_arrival_is_an_error():
    c = client()
    del c["arrival"]
    expect_error(spec_dict(c), "clients[0].arrival.process", "required")


def test_distribution_errors():
    c = client(input_distribution={"type": "zipf", "params": {}})
    expect_error(spec_dict(c), "clients[0].input_distribution.type", "unknown distribution type")
    c = client(output_distribution={"type": "gaussian", "params": {"mean": 1, "std_dev": -1,
                                                                   "min": 1, "max": 2}})
    expect_error(spec_dict(c), "clients[0].output_distribution.params.std_dev", ">= 0")
    c = client(input_distribution={"type": "constant", "params": {"value": float("inf")}})
    expect_error(spec_dict(c), "clients[0].input_distribution.params.value", "finite")
    c = client()
    del c["output_distribution"]
    expect_error(spec_dict(c), "clients[0].output_distribution", "required")
    c = client(input_distribution={"type": "empirical", "file": "x.json"})
    expect_error(spec_dict(c), "clients[0].input_distribution.file", "not supported")


def test_slo_class_rules():
    err = expect_error(spec_dict(client("a", slo_class="critical"), client("b")),
                       "clients[1].slo_class", "mixed slo_class")
    assert "clients[0]" in err.message
    expect_error(spec_dict(client(slo_class="gold")), "clients[0].slo_class", "unknown slo_class")
    v1 = spec_dict(client("a", slo_class="realtime"), client("b", slo_class="interactive"),
                   version="1")
    s = parse_workload_spec(v1)
    assert s.version == "2" and [c.slo_class for c in s.clients] == ["critical", "standard"]
    assert parse_workload_spec({**v1, "version": ""}).version == "2"
    expect_error(spec_dict(version="3"), "version", "unsupported")


def test_other_validation_rules():
    expect_error(spec_dict(category="video"), "category", "unknown category")
    expect_error(spec_dict(clients=[]), "clients", "at least one")
    expect_error(spec_dict(num_requests=-1), "num_requests", ">= 0")
    expect_error(spec_dict(client(prefix_length=-1)), "clients[0].prefix_length", ">= 0")
    expect_error(spec_dict(client(timeout=-1)), "clients[0].timeout", ">= 0")
    expect_error(spec_dict(client(streaming="yes")), "clients[0].streaming", "true or false")
    expect_error(spec_dict(client(reasoning={"multi_turn": {"max_rounds": 0}})),
                 "clients[0].reasoning.multi_turn.max_rounds", ">= 1")
    expect_error(spec_dict(client(reasoning={"multi_turn": {"max_rounds": 2, "context_growth": "x"}})),
                 "clients[0].reasoning.multi_turn.context_growth", "accumulate")
    expect_error(spec_dict(client(lifecycle={"windows": [{"start_us": 5, "end_us": 5}]})),
                 "clients[0].lifecycle.windows[0].end_us", "> start_us")
    expect_error(spec_dict(client(lifecycle={"windows": [{"start_us": -1, "end_us": 5}]})),
                 "clients[0].lifecycle.windows[0].start_us", ">= 0")
    expect_error(spec_dict(client(lifecycle={"windows": []})), "clients[0].lifecycle.windows", "at least one")
    expect_error(spec_dict(client(seed=1)), "clients[0].seed", "unknown key")
    expect_error(spec_dict(seed=1.5), "seed", "integer")
    expect_error(spec_dict(goodput_slo_targets={"gold": {"ttft_ms": 1}}), "goodput_slo_targets.gold")
    expect_error(spec_dict(goodput_slo_targets={"critical": {"ttft": 1}}),
                 "goodput_slo_targets.critical.ttft", "unknown key")


def test_concurrency_rules():
    conc = {"id": "u", "concurrency": 2, "input_distribution": const(5), "output_distribution": const(5)}
    expect_error({"version": "2", "clients": [{**conc, "rate_fraction": 1}]},
                 "clients[0].rate_fraction", "mutually exclusive")
    expect_error({"version": "2", "clients": [{**conc, "concurrency": -1}]},
                 "clients[0].concurrency", ">= 0")
    mt = client("m", reasoning={"multi_turn": {"max_rounds": 2}})
    expect_error({"version": "2", "aggregate_rate": 1, "clients": [conc, mt]},
                 "clients[1].reasoning.multi_turn", "cannot be mixed")


def test_cohort_validation():
    co = {"id": "c", "population": 0, "rate_fraction": 1, "arrival": {"process": "poisson"},
          "input_distribution": const(1), "output_distribution": const(1)}
    d = {"version": "2", "aggregate_rate": 1, "cohorts": [co]}
    expect_error(d, "cohorts[0].population", "[1, 100000]")
    co["population"] = 100_001
    expect_error(d, "cohorts[0].population", "[1, 100000]")
    co["population"] = 2
    co["diurnal"] = {"peak_hour": 24}
    expect_error(d, "cohorts[0].diurnal.peak_hour", "[0, 23]")
    co["diurnal"] = {"peak_hour": 3, "peak_to_trough_ratio": 0.5}
    expect_error(d, "cohorts[0].diurnal.peak_to_trough_ratio", ">= 1")
    del co["diurnal"]
    co["spike"] = {"start_time_us": 0, "duration_us": 0}
    expect_error(d, "cohorts[0].spike.duration_us", "> 0")
    del co["spike"]
    co["prefix_sharing"] = "each"
    expect_error(d, "cohorts[0].prefix_sharing", "per_member")


# ---------------------------------------------------------------------------------------------
# Synthesized specs and presets
# ---------------------------------------------------------------------------------------------

def test_synthesized_spec_shape():
    s = synthesize_distribution_spec(3.5, 100, 7, prefix_tokens=64)
    assert (s.version, s.category, s.aggregate_rate, s.num_requests, s.seed) == ("2", "language", 3.5, 100, 7)
    (c,) = s.clients
    assert c.id == "distribution" and c.arrival.process == "constant" and c.rate_fraction == 1.0
    assert c.input_distribution.type == "gaussian"
    assert c.input_distribution.params == {"mean": 512.0, "std_dev": 256.0, "min": 2.0, "max": 7000.0}
    assert (c.prefix_group, c.prefix_length, c.slo_class) == ("shared", 64, "")
    assert parse_workload_spec(spec_to_dict(s)) == s


@pytest.mark.parametrize("kwargs,field", [
    ({"rate": 0}, "rate"), ({"rate": -1}, "rate"), ({"rate": float("nan")}, "rate"),
    ({"rate": float("inf")}, "rate"),
    ({"prompt_tokens_min": 0}, "prompt-tokens-min"),
    ({"output_tokens_max": 0}, "output-tokens-max"),
    ({"prompt_tokens_stdev": -1}, "prompt-tokens-stdev"),
    ({"prompt_tokens_min": 600, "prompt_tokens_max": 500}, "prompt-tokens-min"),
    ({"prompt_tokens": 8000}, "prompt-tokens"),
    ({"output_tokens_stdev": 8000}, "output-tokens-stdev"),
    ({"prompt_tokens_min": 300, "prompt_tokens_stdev": 100}, "prompt-tokens-stdev"),
    ({"prefix_tokens": -1}, "prefix-tokens"),
])
def test_synthesized_spec_validation(kwargs, field):
    args = {"rate": 1.0, "num_requests": 10, "seed": 1}
    args.update(kwargs)
    with pytest.raises(ConfigError) as ei:
        synthesize_distribution_spec(**args)
    assert ei.value.field == field


def test_stdev_zero_is_allowed_below_min():
    s = synthesize_distribution_spec(1, 5, 1, prompt_tokens=100, prompt_tokens_stdev=0,
                                     prompt_tokens_min=50, prompt_tokens_max=200)
    assert all(x.input_len == 100 for x in generate_requests(s, 5, UNBOUNDED))


@pytest.mark.parametrize("name,prompt,output,prefix", [
    ("chatbot", (256, 100, 2, 800), (256, 100, 1, 1024), 0),
    ("contentgen", (1024, 150, 10, 2048), (1024, 200, 10, 2048), 0),
    ("summarization", (4096, 500, 100, 8192), (512, 150, 10, 2048), 0),
    ("multidoc", (10240, 1200, 500, 20480), (1536, 300, 50, 4096), 0),
])
def test_presets(name, prompt, output, prefix):
    s = preset_spec(name, 2.0, 50, 9)
    c = s.clients[0]
    keys = ("mean", "std_dev", "min", "max")
    assert tuple(c.input_distribution.params[k] for k in keys) == prompt
    assert tuple(c.output_distribution.params[k] for k in keys) == output
    assert c.prefix_length == prefix and c.arrival.process == "constant"
    assert (s.aggregate_rate, s.num_requests, s.seed) == (2.0, 50, 9)
    r = generate_requests(s, 50, UNBOUNDED)
    assert len(r) == 50 and all(prompt[2] <= x.input_len <= prompt[3] for x in r)


def test_distribution_preset_and_unknown_preset():
    assert preset_spec("distribution", 1, 10, 1) == synthesize_distribution_spec(1, 10, 1)
    with pytest.raises(ConfigError) as ei:
        preset_spec("x", 1, 10, 1)
    assert ei.value.field == "workload"
    assert ei.value.message == ("unknown preset 'x'; choose chatbot, contentgen, summarization, "
                                "multidoc or distribution")


def _run_stdout(capsys, spec_path, *extra) -> str:
    from blis.cli import main

    assert main(["run", "--model", "qwen/qwen2.5-7b-instruct", "--workload-spec", str(spec_path), *extra]) == 0
    return capsys.readouterr().out


def test_explicit_seed_reseeds_a_workload_spec_and_spec_seed_is_the_default(tmp_path, capsys):
    """--seed overrides the spec's seed: (issue 9); without --seed the spec's seed: is used."""
    spec = spec_dict(client(input_distribution=gauss(300, 100, 10, 800), output_distribution=gauss(60, 30, 5, 200)),
                     seed=5, aggregate_rate=100, num_requests=40)
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(spec))
    one, two = _run_stdout(capsys, path, "--seed", "1"), _run_stdout(capsys, path, "--seed", "2")
    assert one != two
    assert _run_stdout(capsys, path, "--seed", "1") == one
    assert _run_stdout(capsys, path) == _run_stdout(capsys, path, "--seed", "5")
    assert _run_stdout(capsys, path) != one


def test_bundled_presets_cache_equals_a_fresh_parse():
    from blis.workload.spec import bundled_presets, load_presets

    assert bundled_presets() == load_presets() and bundled_presets() is bundled_presets()
