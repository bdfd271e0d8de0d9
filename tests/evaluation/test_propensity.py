"""Intervention harvesting (AllPairs): exact on expected clicks, close on sampled ones, and a
clear refusal where the log holds no intervention for a position."""

import numpy as np
import pyarrow as pa
import pytest

from prectr.data.simulate import World
from prectr.evaluation.logged import sum_above
from prectr.evaluation.propensity import adjusted_clicks, all_pairs, harvest_propensities

TRUE = np.array([0.8, 0.6, 0.45, 0.3, 0.2])


def pbm_rows(n_pairs: int, shows: int, seed: int):
    """Each (query, item) pair shown ``shows`` times at random positions; its attraction drawn
    uniformly; the click probability is examination x attraction."""
    rng = np.random.default_rng(seed)
    pair = np.repeat(np.arange(n_pairs), shows)
    position = rng.integers(1, TRUE.size + 1, pair.size)
    attraction = rng.uniform(0.1, 0.9, n_pairs)[pair]
    return pair, position, TRUE[position - 1] * attraction, rng


def test_expected_clicks_give_the_examination_ratios_exactly():
    pair, position, expected, _ = pbm_rows(400, 4, seed=0)
    found = all_pairs(pair, position, expected, TRUE.size)
    np.testing.assert_allclose(found.examination, TRUE / TRUE[0], atol=1e-4)
    assert found.examination[0] == 1.0
    assert (found.pairs == found.pairs.T).all() and (np.diag(found.pairs) == 0).all()


def test_weights_count_rows():
    pair, position, expected, rng = pbm_rows(300, 3, seed=4)
    click = (rng.random(pair.size) < expected).astype(np.float64)
    twice = np.r_[np.arange(pair.size), np.arange(0, pair.size, 2)]  # every other row twice
    weight = np.where(np.arange(pair.size) % 2 == 0, 2.0, 1.0)
    np.testing.assert_allclose(
        all_pairs(pair, position, click, TRUE.size, weight).examination,
        all_pairs(pair[twice], position[twice], click[twice], TRUE.size).examination,
        rtol=1e-6,
    )


def test_sampled_clicks_come_close():
    pair, position, expected, rng = pbm_rows(20_000, 3, seed=1)
    click = (rng.random(pair.size) < expected).astype(np.float64)
    found = all_pairs(pair, position, click, TRUE.size)
    np.testing.assert_allclose(found.examination, TRUE / TRUE[0], atol=0.03)


def test_a_position_without_interventions_is_refused():
    # pairs 0-9 move between positions 1 and 2; pair 10 is only ever shown at position 3
    pair = np.r_[np.repeat(np.arange(10), 2), 10, 10]
    position = np.r_[np.tile([1, 2], 10), 3, 3]
    with pytest.raises(ValueError, match="positions 3 share no"):
        all_pairs(pair, position, np.ones(pair.size), 3)
    with pytest.raises(ValueError, match="at least two positions"):
        all_pairs(pair, position, np.ones(pair.size), 1)


def test_harvested_from_a_tiny_world_log(tiny_world):
    world = World(tiny_world)
    requests = world.requests(days=world.split["train"])
    impressions = world.impressions(requests["request_id"].combine_chunks())
    found = harvest_propensities(impressions, requests, n_resamples=20)
    truth = world.click_model.examination(10)
    assert found.resamples.shape == (20, 10) and (found.resamples[:, 0] == 1.0).all()
    spread = found.resamples.std(axis=0)
    assert (spread[1:] > 0).all() and (
        np.abs(found.examination - truth / truth[0]) < 4 * spread + 0.02
    ).all()
    assert found.k == 10 and found.pairs[~np.eye(10, dtype=bool)].min() > 0
    np.testing.assert_allclose(found.examination, truth / truth[0], atol=0.1)


def test_missing_columns_and_requests_are_named():
    impressions = pa.table({"request_id": [1], "item_id": [2], "position": [1]})
    requests = pa.table({"request_id": [1], "query": ["q"]})
    with pytest.raises(ValueError, match="impressions: missing column"):
        harvest_propensities(impressions, requests)
    impressions = impressions.append_column("click", pa.array([0], pa.int8()))
    with pytest.raises(ValueError, match="1 rows have a request_id missing from requests"):
        harvest_propensities(impressions, requests.slice(0, 0))


def test_adjusted_clicks_undo_the_stopping_after_each_click_above():
    # request 0 shows 3 rows (clicks at positions 1 and 3, row order shuffled), request 1 two
    # rows and one unshown candidate (position 0)
    request = np.array([0, 0, 0, 1, 1, 1])
    position = np.array([3, 1, 2, 2, 0, 1])
    click = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(sum_above(request, position, click), [1, 0, 1, 1, 2, 0])
    np.testing.assert_allclose(
        adjusted_clicks(request, position, click, 0.5), [2.0, 1.0, 0.0, 2.0, 0.0, 1.0]
    )
    np.testing.assert_array_equal(adjusted_clicks(request, position, click, 1.0), click)
