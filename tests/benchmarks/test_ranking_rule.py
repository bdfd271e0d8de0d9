"""benchmarks/ranking_rule.py: a run replayed under each ranking rule its scores allow."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ranking_rule

from prectr.evaluation.statistics import EvaluationRows
from prectr.models.baselines.two_model import EPS


def fake_run(root: Path, model: str, calibration: dict, config: str = "") -> Path:
    """A run directory with what ranking_rule reads of it: its model and its calibrator."""
    run = root / model
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(f"model: {model}\n{config}")
    (run / "checkpoints" / "best.calibration.json").write_text(json.dumps(calibration))
    return run


def served_product(click: np.ndarray, utility: np.ndarray, a: float, b: float) -> np.ndarray:
    product = click * utility
    return 1.0 / (1.0 + np.exp(-(a * np.log(product / (1.0 - product)) + b)))


def test_a_products_click_part_is_recovered_through_its_platt_calibration(tmp_path):
    rng = np.random.default_rng(0)
    click, utility = rng.uniform(0.01, 0.6, 50), rng.uniform(0.05, 1.0, 50)
    run = fake_run(tmp_path, "two_model", {"kind": "platt", "a": 0.8, "b": -0.3})
    served = served_product(click, utility, 0.8, -0.3)
    recovered, unrecovered = ranking_rule.click_part(run, served, utility)
    np.testing.assert_allclose(recovered, click, rtol=1e-6)
    assert unrecovered == 0
    grades = {f"grade_{g}": np.full(50, 0.25) for g in range(4)}  # E[grade] / 3 = 0.5
    served = served_product(click, np.full(50, 0.5), 0.8, -0.3)
    ranked, _ = ranking_rule.rules(run, {"score": served, **grades}, np.full(50, 3))
    np.testing.assert_allclose(ranked["click"], click, rtol=1e-6)
    np.testing.assert_allclose(ranked["utility"], click * 0.5, rtol=1e-6)
    np.testing.assert_allclose(ranked["true_utility"], click, rtol=1e-6)
    np.testing.assert_allclose(ranked["within_true_grade"], 9 + click, rtol=1e-6)


def test_a_product_at_its_floor_keeps_no_click_part_and_is_ranked_last(tmp_path):
    run = fake_run(tmp_path, "two_model", {"kind": "none"})
    # P(click) * utility as the model clamps it: the second row's product sits at the floor
    product = np.array([0.3 * 0.5, EPS, 0.2 * 0.01])
    utility = np.array([0.5, 1e-7, 0.01])
    click, unrecovered = ranking_rule.click_part(run, product, utility)
    np.testing.assert_allclose(click, [0.3, -1.0, 0.2], rtol=1e-6)
    assert unrecovered == 1
    with pytest.raises(ValueError, match="exceeds 1"):  # scores from another calibration
        ranking_rule.click_part(run, np.array([0.4]), np.array([0.1]))


def test_a_click_model_ranks_by_its_own_probability_and_isotonic_is_refused(tmp_path):
    score = np.array([0.1, 0.3, 0.2])
    run = fake_run(tmp_path, "prectr_v2", {"kind": "platt", "a": 2.0, "b": 1.0},
                   "features:\n  relevance_context: true\n")  # fmt: skip
    own = 1.0 / (1.0 + np.exp(-(np.log(score / (1.0 - score)) - 1.0) / 2.0))  # before Platt
    grades = {"grade_0": np.array([1.0, 0.0, 0.0]), "grade_1": np.zeros(3),
              "grade_2": np.zeros(3), "grade_3": np.array([0.0, 1.0, 1.0])}  # fmt: skip
    ranked, unrecovered = ranking_rule.rules(run, {"score": score, **grades},
                                             np.array([0, 3, -1]),
                                             {"other": np.array([1.0, 0.5, 0.0])})  # fmt: skip
    assert unrecovered == 0
    np.testing.assert_allclose(ranked["click"], own, rtol=1e-6)
    np.testing.assert_allclose(ranked["utility"], own * [0.0, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(ranked["utility of other"], own * [1.0, 0.5, 0.0], rtol=1e-6)
    assert "true_utility" not in ranked  # a candidate's grade is unknown
    isotonic = fake_run(tmp_path / "iso", "two_model", {"kind": "isotonic", "x": [0, 1],
                                                        "y": [0.1, 0.2]})  # fmt: skip
    with pytest.raises(ValueError, match="isotonic calibration cannot be inverted"):
        ranking_rule.click_part(isotonic, score, np.ones(3))


def test_the_relevance_weights_span_the_rules_from_click_to_utility_and_beyond(tmp_path):
    run = fake_run(tmp_path, "two_model", {"kind": "none"})
    click, utility = np.array([0.4, 0.3, 0.2]), np.array([0.25, 0.5, 1.0])
    # E[grade] / 3 = utility
    grades = {"grade_0": 1 - utility, "grade_1": np.zeros(3), "grade_2": np.zeros(3),
              "grade_3": utility}  # fmt: skip
    scores = {"score": click * utility, **grades}
    ranked, _ = ranking_rule.rules(run, scores, np.full(3, -1), weights=(0.0, 0.5, 1.0, 2.0))
    np.testing.assert_allclose(ranked["utility^0"], ranked["click"], rtol=1e-6)
    np.testing.assert_allclose(ranked["utility^1"], ranked["utility"], rtol=1e-6)
    np.testing.assert_allclose(ranked["utility^0.5"], click * np.sqrt(utility), rtol=1e-6)
    # the order moves from the click part's to the relevance's as the weight grows
    assert np.argsort(-ranked["utility^0"]).tolist() == [0, 1, 2]
    assert np.argsort(-ranked["utility^2"]).tolist() == [2, 1, 0]


def test_given_click_weighs_each_grade_by_its_share_of_the_fused_click(tmp_path):
    run = fake_run(
        tmp_path, "prectr_v2", {"kind": "none"}, "features:\n  relevance_context: true\n"
    )
    click = np.array([0.2, 0.2])
    # both rows expect grade 1.5; the first one's clicks come from its top grade
    grades = {"grade_0": np.array([0.5, 0.5]), "grade_1": np.zeros(2), "grade_2": np.zeros(2),
              "grade_3": np.array([0.5, 0.5])}  # fmt: skip
    at_grade = {f"click_at_grade_{g}": np.full(2, 0.5) for g in (1, 2)}
    at_grade |= {"click_at_grade_0": np.array([0.1, 0.3]), "click_at_grade_3": np.array([0.3, 0.1])}
    scores = {"score": click, **grades, **at_grade}
    ranked, _ = ranking_rule.rules(run, scores, np.full(2, -1), weights=(0.0, 1.0, 8.0))
    np.testing.assert_allclose(ranked["given_click^0"], click, rtol=1e-6)
    # P(grade 3 | click) = 0.15 / 0.2 and 0.05 / 0.2
    np.testing.assert_allclose(ranked["given_click^1"], click * [0.75, 0.25], rtol=1e-6)
    np.testing.assert_allclose(ranked["utility^1"], click * 0.5, rtol=1e-6)  # blind to it
    assert {"modal_head^0", "modal_head^1", "prior_heads^8"} <= set(ranked)
    assert ranked["given_click^8"][0] > ranked["given_click^8"][1]
    true = np.array([3, 0])
    within, _ = ranking_rule.rules(run, scores, true)
    np.testing.assert_allclose(within["within_true_grade:own_head"], [9.3, 0.3])
    np.testing.assert_allclose(within["within_true_grade:fused"], [9.2, 0.2])
    dnn = fake_run(tmp_path / "dnn", "dnn", {"kind": "none"})
    without_heads, _ = ranking_rule.rules(dnn, {"score": click}, np.full(2, -1), weights=(1.0,))
    assert not any(rule.startswith("given_click") for rule in without_heads)


def test_heads_mixed_otherwise_are_shifted_as_the_served_score_is():
    heads = np.array([[0.1, 0.2, 0.3, 0.6], [0.1, 0.2, 0.3, 0.6]])
    grades = np.array([[0.1, 0.0, 0.0, 0.9], [0.6, 0.0, 0.0, 0.4]])
    fused = (heads * grades).sum(1)
    modal = ranking_rule.modal_mix(grades)
    np.testing.assert_allclose(ranking_rule.mixed_click(fused, heads, fused, modal), [0.6, 0.1])
    shifted = 1 / (1 + np.exp(-(np.log(fused / (1 - fused)) + 1.0)))  # an incentive of +1
    want = 1 / (1 + np.exp(-(np.log(np.array([0.6, 0.1]) / [0.4, 0.9]) + 1.0)))
    np.testing.assert_allclose(ranking_rule.mixed_click(shifted, heads, fused, modal), want)
    # the mean grade distribution over every row: one mix for every row, blind to its own
    prior = ranking_rule.mixed_click(fused, heads, fused, grades.mean(0))
    np.testing.assert_allclose(prior, [0.35 * 0.1 + 0.65 * 0.6] * 2)


def test_the_rules_read_each_mix_of_the_heads(tmp_path):
    run = fake_run(
        tmp_path, "prectr_v2", {"kind": "none"}, "features:\n  relevance_context: true\n"
    )
    heads = np.array([[0.1, 0.2, 0.3, 0.6], [0.1, 0.2, 0.3, 0.6]])
    grades = np.array([[0.1, 0.0, 0.0, 0.9], [0.6, 0.0, 0.0, 0.4]])
    fused = (heads * grades).sum(1)
    scores = {"score": fused} | {f"grade_{g}": grades[:, g] for g in range(4)}
    scores |= {f"click_at_grade_{g}": heads[:, g] for g in range(4)}
    ranked, _ = ranking_rule.rules(run, scores, np.array([3, 0]), weights=(1.0,))
    own = np.array([0.9, 0.4])  # E[grade] / 3
    np.testing.assert_allclose(ranked["modal_head^1"], [0.6 * 0.9, 0.1 * 0.4])
    np.testing.assert_allclose(ranked["prior_heads^1"], 0.425 * own)
    np.testing.assert_allclose(ranked["within_true_grade:prior_heads"], [9.425, 0.425])
    np.testing.assert_allclose(ranked["within_true_grade:own_head"], [9.6, 0.1])
    np.testing.assert_allclose(ranked["fused^1"], fused * own)
    # an incentive in the served score moves every rule read from it, not the fused one
    logit = np.log(fused / (1 - fused)) + np.array([1.0, -1.0])
    moved, _ = ranking_rule.rules(
        run, scores | {"score": 1 / (1 + np.exp(-logit))}, np.array([3, 0]), weights=(1.0,)
    )
    np.testing.assert_allclose(moved["fused^1"], fused * own)
    assert not np.allclose(moved["utility^1"], ranked["utility^1"])


def test_the_unexposed_share_counts_the_top_ten_of_each_request():
    # request 0: 12 candidates, the two best-scored never shown; request 1: 3, all shown
    request = np.r_[np.zeros(12, int), np.ones(3, int)]
    exposed = np.r_[np.zeros(2, bool), np.ones(10, bool), np.ones(3, bool)]
    score = np.r_[np.arange(12, 0, -1), [3, 2, 1]].astype(float)
    n = request.size
    rows = EvaluationRows(np.array([7, 9]), request, np.arange(n), np.zeros(n, int),
                          np.zeros(n, int), exposed, None)  # fmt: skip
    share = ranking_rule.unexposed_share(rows, score)
    assert share(np.ones((1, 2)))[0] == pytest.approx((2 / 10 + 0) / 2)
    shown = np.r_[np.ones(10, bool), np.zeros(2, bool), np.ones(3, bool)]  # the top ten shown
    rows = EvaluationRows(rows.request_ids, request, rows.item_id, rows.user, rows.click, shown,
                          None)  # fmt: skip
    assert ranking_rule.unexposed_share(rows, score)(np.ones((1, 2)))[0] == 0.0


def test_a_runs_served_score_replays_to_what_evaluate_reported(
    tiny_world, tiny_run, tmp_path, monkeypatch
):
    from prectr.evaluation.run import evaluate_run

    run = Path(shutil.copytree(tiny_run, tmp_path / "dnn"))
    result = evaluate_run(run, tiny_world, n_resamples=10)
    twin = Path(shutil.copytree(run, tmp_path / "twin"))  # the same scores under another name
    out = tmp_path / "rules.json"
    monkeypatch.setattr(sys, "argv", ["ranking_rule.py", "--world", str(tiny_world),
                                      "--resamples", "20", "--relevance-weights", "0.5",
                                      "--out", str(out), str(run),
                                      str(twin)])  # fmt: skip
    ranking_rule.main()
    results = {(e["run"], e["rule"]): e for e in json.loads(out.read_text())["results"]}
    # a DNN has no grades: neither utility nor its powers
    rules = {"served", "click", "true_utility", "within_true_grade"}
    assert set(results) == {(name, rule) for name in ("dnn", "twin") for rule in rules}
    served = results["dnn", "served"]["value"]
    assert served["expected_clicks"] == pytest.approx(result["online"]["expected_clicks"])
    assert results["dnn", "click"]["minus dnn served"]["expected_clicks"]["diff"] == 0.0
    assert results["dnn", "true_utility"]["value"]["irrelevant@10"] <= served["irrelevant@10"]
    assert results["dnn", "within_true_grade"]["value"]["ndcg@10"] == pytest.approx(1.0)
    same_rule = results["twin", "within_true_grade"]["minus dnn within_true_grade"]
    assert same_rule["expected_clicks"]["diff"] == 0.0
    assert set(results["twin", "click"]) == {"run", "rule", "value", "minus dnn served",
                                             "minus dnn click", "minus twin served"}  # fmt: skip


def test_shown_only_reorders_the_shown_candidates_and_keeps_them_on_top(tiny_world, tiny_run):
    from prectr.data.schema import read_log
    from prectr.evaluation.context import EvaluationContext
    from prectr.evaluation.truth import LOG_COLUMNS, open_truth

    log = read_log(tiny_world, columns=LOG_COLUMNS, validate_log=False)
    context = EvaluationContext.build(open_truth(log, tiny_world), 1, 1, "test")
    rows = context.rows
    score = np.random.default_rng(0).random(rows.request.size)
    top = ranking_rule.statistics(context, score, shown_only=True)
    assert top["unexposed@10"](np.ones((1, rows.n_requests)))[0] == 0.0
    reranked = ranking_rule.statistics(context, score)["unexposed@10"]
    assert reranked(np.ones((1, rows.n_requests)))[0] > 0.5  # most of a 50-candidate pool
