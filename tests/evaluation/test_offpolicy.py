"""Off-policy IPS and DR: unbiased on supported slots (every click outcome of a small case
enumerated), a hand-computed DR, the bootstrap statistic equal to the estimator on a resampled
log, and the estimates against the tiny world's replay."""

import itertools
from functools import partial

import numpy as np
import pyarrow as pa
import pytest

from prectr.data.simulate import World, load_config, simulate
from prectr.evaluation.offpolicy import (
    PRIOR_EXAMINATIONS,
    AttractionPrior,
    offpolicy_clicks,
    offpolicy_statistics,
)
from prectr.evaluation.propensity import Propensities, harvest_propensities
from prectr.metrics.paired import resample_weights

EXAMINATION = np.array([0.8, 0.4])  # absolute examination of positions 1, 2
RELATIVE = Propensities(EXAMINATION / EXAMINATION[0], np.zeros((2, 2), np.int64), np.empty((0, 2)))
PRIOR = AttractionPrior(np.array([0.1, 0.2, 0.3, 0.4]), 0.15)
REQUESTS = pa.table({"request_id": [1, 2], "query": ["lamp", "lamp"]})
# Two requests of one query over items 10, 11, 12: request 1 showed 10 then 11, request 2
# showed 12 then 10; the third candidate of each was not shown. Attraction per (request, item).
POOL = {1: (10, 11, 12), 2: (12, 10, 11)}
ATTRACTION = {(1, 10): 0.5, (1, 11): 0.3, (1, 12): 0.9, (2, 12): 0.6, (2, 10): 0.2, (2, 11): 0.7}


def impressions(clicks: dict[tuple[int, int], int], grade: dict | None = None) -> pa.Table:
    rows = [(r, item, pos) for r, items in POOL.items() for pos, item in enumerate(items, 1)]
    shown = [pos <= 2 for _, _, pos in rows]
    return pa.table(
        {
            "request_id": [r for r, _, _ in rows],
            "item_id": [item for _, item, _ in rows],
            "position": pa.array(
                [p if s else None for (_, _, p), s in zip(rows, shown, strict=True)], pa.int32()
            ),
            "click": pa.array(
                [clicks[(r, i)] if s else None for (r, i, _), s in zip(rows, shown, strict=True)],
                pa.int8(),
            ),
            "relevance": pa.array([(grade or {}).get((r, i)) for r, i, _ in rows], pa.int8()),
        }
    )


def scores(order: dict[int, tuple[int, ...]]) -> pa.Table:
    """Scores that rank each request's items in ``order``."""
    rows = [(r, item, -rank) for r, items in order.items() for rank, item in enumerate(items)]
    return pa.table(
        {k: [row[i] for row in rows] for i, k in enumerate(("request_id", "item_id", "score"))}
    )


def clicks_in_expectation(order: dict[int, tuple[int, ...]], name: str) -> float:
    """The estimate averaged over every click outcome of the four shown rows, each weighted by
    its probability under the position-based model."""
    shown = [(r, item, pos) for r, items in POOL.items() for pos, item in enumerate(items[:2], 1)]
    expected = 0.0
    for outcome in itertools.product((0, 1), repeat=len(shown)):
        probability = 1.0
        for (r, item, pos), c in zip(shown, outcome, strict=True):
            p = EXAMINATION[pos - 1] * ATTRACTION[(r, item)]
            probability *= p if c else 1.0 - p
        clicks = {(r, item): c for (r, item, _), c in zip(shown, outcome, strict=True)}
        found = offpolicy_statistics(impressions(clicks), REQUESTS, scores(order), RELATIVE, PRIOR)
        expected += probability * found.statistics[name](np.ones((1, 2)))[0]
    return expected


def true_clicks(order: dict[int, tuple[int, ...]], supported_only: bool = False) -> float:
    total = 0.0
    for r, items in order.items():
        for pos, item in enumerate(items[:2], 1):
            if supported_only and item not in POOL[r][:2]:
                continue
            total += EXAMINATION[pos - 1] * ATTRACTION[(r, item)]
    return total / len(order)


def test_ips_is_unbiased_on_a_reordering_of_the_shown_items():
    order = {1: (11, 10, 12), 2: (10, 12, 11)}  # each request's two shown items, swapped
    assert clicks_in_expectation(order, "ips") == pytest.approx(true_clicks(order), abs=1e-12)
    assert clicks_in_expectation(order, "dr") == pytest.approx(true_clicks(order), abs=1e-12)


def test_ips_counts_only_the_supported_slots():
    order = {1: (12, 10, 11), 2: (11, 12, 10)}  # each promotes its unshown item to the top
    expected = clicks_in_expectation(order, "ips")
    assert expected == pytest.approx(true_clicks(order, supported_only=True), abs=1e-12)
    assert expected < true_clicks(order)


def test_dr_by_hand():
    # request 1 promotes 12 (unshown there, shown at 1 in request 2: pooled); request 2
    # promotes 11 (unshown there, shown at 2 in request 1: pooled, graded 3 in request 2)
    order = {1: (12, 10, 11), 2: (11, 12, 10)}
    clicks = {(1, 10): 1, (1, 11): 0, (2, 12): 1, (2, 10): 0}
    log = impressions(clicks, grade={(2, 11): 3})
    found = offpolicy_statistics(log, REQUESTS, scores(order), RELATIVE, PRIOR)
    theta = RELATIVE.examination
    ips = (1 * theta[1] / theta[0] + 1 * theta[1] / theta[0]) / 2  # 10 moves 1->2, 12 moves 1->2
    alpha = PRIOR_EXAMINATIONS
    pooled_12 = theta[0] * (clicks[(2, 12)] + alpha * PRIOR.ungraded) / (theta[0] + alpha)
    pooled_11 = theta[0] * (clicks[(1, 11)] + alpha * PRIOR.by_grade[3]) / (theta[1] + alpha)
    ones = np.ones((1, 2))
    assert found.statistics["ips"](ones)[0] == pytest.approx(ips)
    assert found.statistics["dr"](ones)[0] == pytest.approx(ips + (pooled_12 + pooled_11) / 2)
    assert found.statistics["logged"](ones)[0] == pytest.approx(1.0)
    assert found.coverage["supported"] == pytest.approx(2 * theta[1] / (2 * theta.sum()))
    assert found.coverage["pooled"] == pytest.approx(2 * theta[0] / (2 * theta.sum()))


def random_log(n_requests: int, seed: int):
    """Requests of 5 queries over 8 items, 6 candidates each, 3 shown with random clicks."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_requests):
        items = rng.choice(8, 6, replace=False)
        for pos, item in enumerate(items, 1):
            shown = pos <= 3
            grade = int(rng.integers(4)) if rng.random() < 0.3 else None
            rows.append(
                (
                    r,
                    int(item),
                    pos if shown else None,
                    int(rng.random() < 0.4) if shown else None,
                    grade,
                    rng.random(),
                )
            )
    columns = list(zip(*rows, strict=True))
    log = pa.table(
        {
            "request_id": pa.array(columns[0], pa.int64()),
            "item_id": pa.array(columns[1], pa.int64()),
            "position": pa.array(columns[2], pa.int32()),
            "click": pa.array(columns[3], pa.int8()),
            "relevance": pa.array(columns[4], pa.int8()),
        }
    )
    requests = pa.table(
        {"request_id": np.arange(n_requests), "query": [f"q{r % 5}" for r in range(n_requests)]}
    )
    score = pa.table(
        {"request_id": log["request_id"], "item_id": log["item_id"], "score": columns[5]}
    )
    return log, requests, score


def resampled_by(index: pa.Table, table: pa.Table) -> pa.Table:
    """``table`` with each request repeated as ``index`` says (request_id -> copy ids)."""
    joined = table.join(index, "request_id", join_type="inner")
    at = joined.column_names.index("request_id")
    return joined.set_column(at, "request_id", joined["copy"]).drop_columns("copy")


def test_statistics_under_weights_are_the_estimates_of_the_resampled_log():
    log, requests, score = random_log(30, seed=2)
    propensities = Propensities(
        np.array([1.0, 0.6, 0.3]), np.zeros((3, 3), np.int64), np.empty((0, 3))
    )
    found = offpolicy_statistics(log, requests, score, propensities, PRIOR)
    weights = next(resample_weights(30, 4, seed=5))
    for w in weights:
        copies = np.repeat(np.arange(30), w.astype(np.int64))
        new_id = np.arange(copies.size)
        index = pa.table({"request_id": copies, "copy": new_id})
        resampled = partial(resampled_by, index)

        again = offpolicy_statistics(
            resampled(log), resampled(requests), resampled(score), propensities, PRIOR
        )
        for name in ("ips", "dr", "logged"):
            assert found.statistics[name](w[None])[0] == pytest.approx(
                again.statistics[name](np.ones((1, copies.size)))[0], rel=1e-12
            )


def test_ips_under_other_propensities_is_the_shifted_estimate():
    log, requests, score = random_log(30, seed=3)
    fitted, other = np.array([1.0, 0.6, 0.3]), np.array([1.0, 0.5, 0.35])
    none = np.empty((0, 3))
    pairs = np.zeros((3, 3), np.int64)
    found = offpolicy_statistics(
        log, requests, score, Propensities(fitted, pairs, other[None]), PRIOR
    )
    again = offpolicy_statistics(log, requests, score, Propensities(other, pairs, none), PRIOR)
    weights = next(resample_weights(30, 3, seed=1))
    shift = found.ips_shift(weights, np.zeros(3, np.int64))
    np.testing.assert_allclose(
        found.statistics["ips"](weights) + shift, again.statistics["ips"](weights), rtol=1e-12
    )
    # the CI of offpolicy_clicks widens with the propensities' resamples, the value stays
    refits = np.array([fitted, other, [1.0, 0.7, 0.25]])
    fixed = offpolicy_clicks(log, requests, score, Propensities(fitted, pairs, none), PRIOR, 200)
    noisy = offpolicy_clicks(log, requests, score, Propensities(fitted, pairs, refits), PRIOR, 200)
    assert noisy.ips.value == fixed.ips.value and noisy.logged == fixed.logged
    assert noisy.ips.hi - noisy.ips.lo > fixed.ips.hi - fixed.ips.lo


def split_world(world: World) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The training days' impressions, every request, and the test days' pools."""
    reference = world.requests(days=world.split["train"])
    test = world.requests(days=world.split["test"])
    return (
        world.impressions(reference["request_id"].combine_chunks()),
        world.requests(),
        world.impressions(test["request_id"].combine_chunks()),
    )


def test_against_the_tiny_world_replay(tiny_world):
    world = World(tiny_world)
    train, requests, pool = split_world(world)
    propensities = harvest_propensities(train, requests)
    prior = AttractionPrior.fit(train, propensities)
    position = pool["position"].fill_null(0).to_numpy()
    logging = pool["logging_score"].to_numpy()
    grade = pool["true_relevance"].to_numpy()
    rankings = {
        "logging": logging,
        "shown reversed": np.where(position > 0, 100.0 + position, logging),
        "pool by grade": grade + 0.5 * np.random.default_rng(0).random(grade.size),
    }
    for name, score in rankings.items():
        table = pa.table(
            {"request_id": pool["request_id"], "item_id": pool["item_id"], "score": score}
        )
        replay = world.replay(table).expected_clicks
        found = offpolicy_clicks(pool, requests, table, propensities, prior, n_resamples=200)
        if name == "pool by grade":  # most top-10 slots hold items the log never showed there
            assert found.coverage["supported"] < 0.6
            assert found.ips.hi < replay  # IPS: the supported slots' clicks, a lower bound
            assert sum(found.coverage.values()) == pytest.approx(1.0)
        else:
            assert found.coverage["supported"] == pytest.approx(1.0)
            assert found.ips.covers(replay) and found.dr.value == pytest.approx(found.ips.value)
            assert found.logged.covers(replay) or name != "logging"


def test_bad_scores_are_named():
    log = impressions({(1, 10): 0, (1, 11): 0, (2, 12): 0, (2, 10): 0})
    partial = scores({1: (10, 11, 12), 2: (12, 10)})
    with pytest.raises(ValueError, match="1 of the 6 logged candidates have no score"):
        offpolicy_statistics(log, REQUESTS, partial, RELATIVE, PRIOR)
    with pytest.raises(ValueError, match="scores: missing column"):
        offpolicy_statistics(log, REQUESTS, partial.drop_columns("score"), RELATIVE, PRIOR)
    with pytest.raises(ValueError, match="missing column"):
        offpolicy_statistics(log.drop_columns("click"), REQUESTS, partial, RELATIVE, PRIOR)


def test_prior_by_hand():
    log = pa.table(
        {
            "position": pa.array([1, 2, 1, None, None, None], pa.int32()),
            "click": pa.array([1, 1, 0, None, None, None], pa.int8()),
            "relevance": pa.array([3, 3, 0, 0, 3, None], pa.int8()),
        }
    )
    prior = AttractionPrior.fit(log, RELATIVE)
    overall = 2 / (1 + 0.5 + 1)
    alpha = PRIOR_EXAMINATIONS
    assert prior.by_grade[3] == pytest.approx((2 + alpha * overall) / (1.5 + alpha))
    assert prior.by_grade[0] == pytest.approx((0 + alpha * overall) / (1 + alpha))
    assert prior.by_grade[1] == pytest.approx(overall)
    assert prior.ungraded == pytest.approx((prior.by_grade[0] + prior.by_grade[3]) / 2)
    np.testing.assert_allclose(
        prior.predict(np.array([3, -1])), [prior.by_grade[3], prior.ungraded]
    )


# The dependent click model: after a click at position j the user goes on with probability
# lambda times what they would without it. One request shows A, B, C at positions 1-3 (D is
# in its pool, unshown, graded 2); the new rankings reorder and promote.
DCM_EXAMINATION = np.array([0.9, 0.6, 0.4])  # examination of positions 1-3 with no click above
DCM_ATTRACTION = {"A": 0.7, "B": 0.5, "C": 0.6, "D": 0.45}
DCM_ITEMS = {"A": 1, "B": 2, "C": 3, "D": 4}
LAMBDA = 0.5


def dcm_probability(clicks: tuple[int, ...], attraction: list[float]) -> float:
    """P(click vector) over the ranked ``attraction`` under the DCM: sum over the last examined
    position ``L`` (0: none) of examining 1..L with these clicks and going no further."""
    e, n = DCM_EXAMINATION, len(attraction)
    total = 1.0 - e[0] if not any(clicks) else 0.0
    reach = e[0]  # P(examine position j + 1 with the clicks above as given)
    for j, (a, c) in enumerate(zip(attraction, clicks, strict=True)):
        here = reach * (a if c else 1.0 - a)
        go_on = e[j + 1] / e[j] * (LAMBDA if c else 1.0) if j + 1 < n else 0.0
        if not any(clicks[j + 1 :]):
            total += here * (1.0 - go_on)
        reach = here * go_on
    return total


def dcm_clicks(ranked: list[str]) -> float:
    """Expected clicks on the top 3 of ``ranked`` under the DCM (closed form)."""
    total, reach = 0.0, DCM_EXAMINATION[0]
    for j, item in enumerate(ranked[:3]):
        a = DCM_ATTRACTION[item]
        total += reach * a
        if j + 1 < 3:
            reach *= DCM_EXAMINATION[j + 1] / DCM_EXAMINATION[j] * (1.0 - a + a * LAMBDA)
    return total


def dcm_log(clicks: tuple[int, ...]) -> pa.Table:
    return pa.table(
        {
            "request_id": [1, 1, 1, 1],
            "item_id": [DCM_ITEMS[i] for i in "ABCD"],
            "position": pa.array([1, 2, 3, None], pa.int32()),
            "click": pa.array([*clicks, None], pa.int8()),
            "relevance": pa.array([None, None, None, 2], pa.int8()),
        }
    )


@pytest.mark.parametrize("ranked", ["CAB", "BCA", "DCA", "ADB", "ABC"])
def test_dcm_estimate_is_unbiased_given_lambda(ranked):
    """Over every click outcome of the logged A, B, C, IPS equals the new ranking's DCM clicks
    where the new top 3 is a reordering, and DR does wherever the direct method's attraction
    of the promoted unshown D is right."""
    propensities = Propensities(
        DCM_EXAMINATION / DCM_EXAMINATION[0],
        np.zeros((3, 3), np.int64),
        np.empty((0, 3)),
        LAMBDA,
        DCM_EXAMINATION[0],
    )
    # attraction in clicks per unit of relative examination: P(click | examined) times e_1
    prior = AttractionPrior(np.full(4, DCM_ATTRACTION["D"] * DCM_EXAMINATION[0]), 0.0)
    order = [*ranked, *(i for i in "ABCD" if i not in ranked)]
    score = pa.table({"request_id": [1] * 4, "item_id": [DCM_ITEMS[i] for i in order],
                      "score": [4.0, 3.0, 2.0, 1.0]})  # fmt: skip
    requests = pa.table({"request_id": [1], "query": ["lamp"]})
    expected = {"ips": 0.0, "dr": 0.0}
    attraction = [DCM_ATTRACTION[i] for i in "ABC"]
    outcomes = list(itertools.product((0, 1), repeat=3))
    assert sum(dcm_probability(c, attraction) for c in outcomes) == pytest.approx(1.0)
    for clicks in outcomes:
        found = offpolicy_statistics(dcm_log(clicks), requests, score, propensities, prior)
        for name in expected:
            value = found.statistics[name](np.ones((1, 1)))[0]
            expected[name] += dcm_probability(clicks, attraction) * value
    truth = dcm_clicks(order)
    assert expected["dr"] == pytest.approx(truth, abs=1e-12)
    if "D" not in ranked:
        assert expected["ips"] == pytest.approx(truth, abs=1e-12)
    position_based = Propensities(
        propensities.examination, propensities.pairs, propensities.resamples
    )
    if ranked != "ABC":  # the position-based estimate is biased where the order changes
        biased = 0.0
        for clicks in outcomes:
            found = offpolicy_statistics(dcm_log(clicks), requests, score, position_based, prior)
            biased += (
                dcm_probability(clicks, attraction) * found.statistics["dr"](np.ones((1, 1)))[0]
            )
        assert abs(biased - truth) > 1e-3


def test_after_click_is_checked():
    log, requests, _ = random_log(5, seed=0)
    with pytest.raises(ValueError, match=r"after_click = 0\.0"):
        harvest_propensities(log, requests, k=3, n_resamples=0, after_click=0.0)


@pytest.mark.slow
def test_dependent_clicks_on_a_tiny_dcm_world(tmp_path):
    """On a world whose users stop after a click (dcm, lambda 0.6), harvesting adjusted clicks
    with the world's lambda recovers its examination curve, where the position-based harvest
    does not, and the estimates of reorderings of the shown top 5 cover the replay."""
    config = load_config("tiny", overrides={"click_model": "dcm", "n_requests": 20_000,
                                            "exposed_k": 5})  # fmt: skip
    simulate(config, tmp_path / "world")
    world = World(tmp_path / "world")
    train, requests, pool = split_world(world)
    exam = world.click_model.examination(5)
    truth = exam / exam[0]
    position_based = harvest_propensities(train, requests, k=5)
    assert np.abs(position_based.examination - truth).max() > 0.15
    propensities = harvest_propensities(
        train, requests, k=5, after_click=config.dcm_lambda, top_examination=float(exam[0])
    )
    np.testing.assert_allclose(propensities.examination, truth, atol=0.06)
    prior = AttractionPrior.fit(train, propensities)
    position = pool["position"].fill_null(0).to_numpy()
    logging = pool["logging_score"].to_numpy()
    grade = pool["true_relevance"].to_numpy()
    for score in (logging, np.where(position > 0, 100.0 + position, logging),
                  np.where(position > 0, 100.0 + grade - position / 10, logging)):  # fmt: skip
        table = pa.table(
            {"request_id": pool["request_id"], "item_id": pool["item_id"], "score": score}
        )
        found = offpolicy_clicks(pool, requests, table, propensities, prior, n_resamples=200)
        assert found.coverage["supported"] == pytest.approx(1.0)
        assert found.ips.covers(world.replay(table).expected_clicks)
