"""Multi-fidelity promotion rule (pure) and study-file parsing of fidelity: and robust:."""

import math

import pytest
import search_fakes

from blis.errors import ConfigError
from search import fidelity, robust
from search.fidelity import crowding, promote, promotion_order
from search.progress import nondominated_ranks
from search.study_file import parse_study


def test_nondominated_ranks_peel_fronts():
    points = [[1, 4], [2, 2], [4, 1], [3, 3], [5, 5], [2, 2]]
    assert nondominated_ranks(points) == [0, 0, 0, 1, 2, 0]


def test_crowding_extremes_are_infinite_and_sparse_points_score_higher():
    points = [[0, 10], [1, 9], [2, 8], [9, 1], [10, 0]]
    d = crowding(points)
    assert d[0] == d[4] == math.inf
    # [9, 1] and [2, 8] border the big gap; [1, 9] sits between close neighbours
    assert d[3] == pytest.approx((10 - 2) / 10 + (8 - 0) / 10) and d[2] == pytest.approx(1.6)
    assert d[1] == pytest.approx((2 - 0) / 10 + (10 - 8) / 10) and d[1] < d[2]


def test_promotion_keeps_the_front_first_then_crowding():
    points = [[5, 5], [1, 9], [9, 1], [4, 4], [2, 6], [6, 6]]
    order = promotion_order(points, [0.0] * 6)
    # front {1, 2, 3, 4}: extremes 1 and 2 (inf crowding) first, then 4 and 3; then rank 1, 2
    assert order[:2] == [1, 2] and set(order[2:4]) == {3, 4} and order[4:] == [0, 5]
    assert promote(points, [0.0] * 6, 0.5) == order[:3]  # ceil(0.5 * 6) = 3
    assert promote(points, [0.0] * 6, 0.01) == [1]  # at least one
    assert promote([], [], 0.5) == []


def test_promotion_puts_infeasible_last_by_violation():
    points = [[1, 1], [2, 2], [0, 0], [3, 3]]
    assert promotion_order(points, [0, 0, 5.0, 1.0]) == [0, 1, 3, 2]
    assert promote(points, [0, 0, 5.0, 1.0], 0.75) == [0, 1, 3]


def test_promotion_ties_go_to_the_earlier_trial():
    # identical points tie on rank and crowding: the earlier index wins the last place
    points = [[3, 3], [1, 5], [3, 3], [5, 1]]
    order = promotion_order(points, [0.0] * 4)
    assert order[:2] == [1, 3] and order[2:] == [0, 2]
    assert promote(points, [0.0] * 4, 0.75) == [1, 3, 0]
    # one objective: plain sort, ties by index
    assert promote([[2], [1], [2], [0]], [0] * 4, 0.5) == [3, 1]


def test_fidelity_caps_the_requests_of_search_trials_only():
    spec = parse_study(search_fakes.study_dict(fidelity={"num_requests": [50, 200, 800]}))
    params = {"num_instances": 2, "hardware": "H100", "max_num_batched_tokens": 2048}
    assert fidelity.screening_objective(spec).options(params)["num_requests"] == 50
    assert fidelity.full_objective(spec).options(params)["num_requests"] == 800
    assert [spec.fidelity.share_at(i) for i in (0, 1)] == [0.25, 0.25]
    assert parse_study(search_fakes.study_dict(fidelity={"num_requests": [50, 200], "share": 0.5})).fidelity.share_at(0) == 0.5
    # fidelity changes what a trial means, robust: does not
    plain = parse_study(search_fakes.study_dict())
    assert spec.fingerprint() != plain.fingerprint()
    assert parse_study(search_fakes.study_dict(robust={"seeds": 5})).fingerprint() == plain.fingerprint()
    again = parse_study(spec.to_dict())
    assert again.fidelity == spec.fidelity


@pytest.mark.parametrize("key,value,field,message", [
    ("robust", {"seeds": 1}, "robust.seeds", "integer >= 2"),
    ("robust", {"seeds": [3, 3]}, "robust.seeds", "2 distinct"),
    ("robust", {"seeds": [1, "a"]}, "robust.seeds[1]", "integer"),
    ("robust", {"seeds": True}, "robust.seeds", "integer >= 2"),
    ("robust", {"k": 3}, "robust.k", "unknown key"),
    ("robust", {"candidates": 0}, "robust.candidates", "positive"),
    ("robust", "yes", "robust", "false, true or a mapping"),
    ("fidelity", {"num_requests": [200]}, "fidelity.num_requests", "at least 2"),
    ("fidelity", {"num_requests": [800, 200]}, "fidelity.num_requests", "strictly increasing"),
    ("fidelity", {"num_requests": [0, 200]}, "fidelity.num_requests", "positive"),
    ("fidelity", {"num_requests": [100, 200], "share": 1.5}, "fidelity.share", "(0, 1]"),
    ("fidelity", {"requests": [100, 200]}, "fidelity", "mapping"),
    ("fidelity", {"num_requests": [100, 200], "eta": 3}, "fidelity.eta", "unknown key"),
])
def test_bad_robust_and_fidelity_values_name_the_field(key, value, field, message):
    with pytest.raises(ConfigError) as e:
        parse_study(search_fakes.study_dict(**{key: value}))
    assert e.value.field == field and message in e.value.message


def test_fidelity_refuses_a_num_requests_parameter():
    raw = search_fakes.study_dict(fidelity={"num_requests": [100, 200]})
    raw["parameters"]["num_requests"] = {"type": "int", "low": 100, "high": 400}
    raw["baseline"]["num_requests"] = 100
    with pytest.raises(ConfigError, match="num_requests parameter"):
        parse_study(raw)


def test_bad_robust_value_is_one_error_line_exit_2(tmp_path, capsys):
    import yaml

    from search.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(search_fakes.study_dict(robust={"seeds": 0})))
    assert main(["search", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: robust.seeds: ")


def test_robust_plan_default_rule_and_fresh_seeds():
    plain = parse_study(search_fakes.study_dict())  # workload spec seed 7: the search's seed
    assert robust.plan(plain, 29) is None
    assert robust.plan(plain, 30) == ([1, 2, 3], 5)  # 30 // (2 * 3) candidates
    assert robust.plan(plain, 100) == ([1, 2, 3], 16)
    seeded = parse_study(search_fakes.study_dict(seeds=[1, 3], robust={"seeds": 3}))
    assert robust.plan(seeded, 4) == ([2, 4, 5], None)  # explicit: any budget, whole front, fresh seeds
    assert robust.plan(parse_study(search_fakes.study_dict(robust={"seeds": [9, 8], "candidates": 2})), 4) == ([9, 8], 2)
    assert robust.plan(parse_study(search_fakes.study_dict(robust=False)), 1000) is None
