"""The band over lambda: its grid and parsing, the band holds every grid point's CI, one point is
the point estimate, and on a small dcm world a range holding the world's lambda covers the
replay of a reordering of the shown items."""

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from prectr.data.simulate import World, load_config, simulate
from prectr.evaluation.band import (
    BAND_POINTS,
    BANDED,
    OffPolicyBand,
    after_click_grid,
    after_click_points,
    fit_grid,
    offpolicy_band,
    parse_after_click,
)
from prectr.evaluation.offpolicy import Estimate, offpolicy_clicks
from tests.evaluation.test_offpolicy import split_world


def test_grid_and_parsing():
    assert parse_after_click("0.6") == 0.6
    assert parse_after_click("1") == 1.0
    grid = parse_after_click("0.4:1")
    assert len(grid) == BAND_POINTS == 7
    assert grid == (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert parse_after_click("0.5:0.8:4") == (0.5, 0.6, 0.7, 0.8)
    assert parse_after_click("0.6:0.6") == (0.6,)
    assert after_click_grid(0.6, 0.6, 5) == (0.6,)
    assert after_click_points(0.6) == (0.6,) and after_click_points([0.5, 1]) == (0.5, 1.0)
    assert after_click_points(np.float32(0.5)) == (0.5,)  # a numpy number is one value
    assert after_click_points(np.int64(1)) == (1.0,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.8:0.4", "low end is above the high end"),
        ("0:1", r"after_click = 0\.0: expected a value in \(0, 1\]"),
        ("0.5:1.2", r"after_click = 1\.2"),
        ("1.5", r"after_click = 1\.5"),
        ("nan", "after_click = nan"),
        ("abc", "could not convert"),
        ("a:b", "expected LAMBDA, LO:HI or LO:HI:N"),
        ("0.4:1:x", "N a count"),
        ("0.4:1:1", "needs at least 2 points"),
        ("0.4:0.6:0.8:1", "expected LAMBDA, LO:HI or LO:HI:N"),
        ("", "could not convert"),
    ],
)
def test_bad_after_click_names_the_option(text, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_after_click(text)
    assert str(err.value).startswith(f"--after-click {text}: ")


def test_an_empty_grid_is_refused():
    with pytest.raises(ValueError, match="after_click: an empty grid"):
        after_click_points([])


@pytest.fixture(scope="module")
def tiny_band(tiny_world):
    """The tiny world's test pools, their reversed shown top 10, and fits at three lambdas."""
    train, requests, pool = split_world(World(tiny_world))
    position = pool["position"].fill_null(0).to_numpy()
    score = np.where(position > 0, 100.0 + position, pool["logging_score"].to_numpy())
    scores = pa.table({"request_id": pool["request_id"], "item_id": pool["item_id"],
                       "score": score})  # fmt: skip
    fits = fit_grid(train, requests, (1.0, 0.6, 0.8), n_refits=5)
    return pool, requests, scores, fits


def test_the_band_holds_every_grid_points_ci(tiny_band):
    pool, requests, scores, fits = tiny_band
    band = offpolicy_band(pool, requests, scores, fits, n_resamples=100)
    assert band.after_click == (0.6, 0.8, 1.0)  # sorted
    for name in BANDED:
        b = band.band(name)
        cis = [getattr(e, name) for e in band.estimates]
        assert all(b.lo <= ci.lo and ci.hi <= b.hi for ci in cis), name
        assert b.lo == min(ci.lo for ci in cis) and b.hi == max(ci.hi for ci in cis)
        assert b.lo == getattr(band.estimates[band.after_click.index(b.after_click_lo)], name).lo
        assert b.hi == getattr(band.estimates[band.after_click.index(b.after_click_hi)], name).hi
    # the lambdas move the estimate of a reordering: a band, not one CI repeated
    assert len({e.ips.value for e in band.estimates}) == 3
    assert band.estimates[0].logged == band.estimates[-1].logged  # the log's clicks stay
    found = band.to_dict()
    assert found["after_click"] == [0.6, 0.8, 1.0] and len(found["grid"]) == 3
    assert set(found["band"]) == set(BANDED)
    assert found["band"]["ips"]["monotone"] == band.monotone("ips")
    sub = band.at([1.0, 0.6])
    assert sub.after_click == (0.6, 1.0) and sub.estimates[1] is band.estimates[2]
    assert band.at([0.8, 0.8]).after_click == (0.8,)  # a point named twice is taken once
    with pytest.raises(ValueError, match=r"after_click \[0\.7\]: not in the grid"):
        band.at([0.7])


def test_a_grid_holds_each_lambda_once(tiny_band):
    pool, requests, scores, fits = tiny_band
    with pytest.raises(ValueError, match=r"grid \[0\.6, 0\.6, 0\.8\]: not strictly ascending"):
        offpolicy_band(pool, requests, scores, [fits[1], fits[1], fits[2]], n_resamples=100)


def test_monotone_on_constructed_cis(tiny_band):
    """Monotone: each CI end moves one way (the two ends may move opposite ways, a step may be
    flat); an end that turns at an inner grid point is not."""
    pool, requests, scores, fits = tiny_band
    found = offpolicy_band(pool, requests, scores, fits, n_resamples=100)

    def band_of(cis: list[tuple[float, float]]) -> OffPolicyBand:
        estimates = tuple(replace(found.estimates[0], ips=Estimate((lo + hi) / 2, lo, hi))
                          for lo, hi in cis)  # fmt: skip
        return OffPolicyBand(found.after_click, estimates, found.propensities)

    assert band_of([(0.5, 1.0), (0.6, 0.9), (0.7, 0.8)]).monotone("ips")  # ends opposite ways
    assert band_of([(0.5, 0.9), (0.5, 0.9), (0.4, 1.0)]).monotone("ips")  # a flat step
    assert not band_of([(0.5, 0.9), (0.4, 0.9), (0.6, 1.0)]).monotone("ips")  # lower end turns
    assert not band_of([(0.5, 0.9), (0.6, 1.1), (0.7, 1.0)]).monotone("ips")  # upper end turns


def test_a_band_of_one_point_is_the_point_estimate(tiny_band):
    pool, requests, scores, fits = tiny_band
    propensities, prior = fits[1]  # lambda 0.6
    band = offpolicy_band(pool, requests, scores, [fits[1]], n_resamples=100, seed=3)
    point = offpolicy_clicks(pool, requests, scores, propensities, prior, 100, seed=3)
    assert band.after_click == (0.6,) and band.estimates[0] == point
    for name in BANDED:
        b, estimate = band.band(name), getattr(point, name)
        assert (b.lo, b.hi) == (estimate.lo, estimate.hi)
        assert b.after_click_lo == b.after_click_hi == 0.6
    with pytest.raises(ValueError, match="at least one fit"):
        offpolicy_band(pool, requests, scores, [])


@pytest.mark.slow
def test_the_band_covers_the_replay_on_a_tiny_dcm_world(tmp_path):
    """On a world whose users stop after a click (dcm, lambda 0.6), the band over [0.5, 0.8]
    covers the replay of reorderings of the shown top 5, and is at least as wide as the CI at
    the world's own lambda; the position-based estimate alone (lambda 1) misses the replay of
    the reordering by grade."""
    config = load_config("tiny", overrides={"click_model": "dcm", "n_requests": 20_000,
                                            "exposed_k": 5})  # fmt: skip
    simulate(config, tmp_path / "world")
    world = World(tmp_path / "world")
    train, requests, pool = split_world(world)
    top = float(world.click_model.examination(1)[0])
    grid = after_click_grid(0.5, 0.8, 4)
    assert config.dcm_lambda in grid
    fits = fit_grid(train, requests, (*grid, 1.0), top, k=5, n_refits=20)
    position = pool["position"].fill_null(0).to_numpy()
    logging = pool["logging_score"].to_numpy()
    grade = pool["true_relevance"].to_numpy()
    rankings = {
        "reversed": np.where(position > 0, 100.0 + position, logging),
        "by grade": np.where(position > 0, 100.0 + grade - position / 10, logging),
    }
    for name, score in rankings.items():
        table = pa.table(
            {"request_id": pool["request_id"], "item_id": pool["item_id"], "score": score}
        )
        found = offpolicy_band(pool, requests, table, fits, n_resamples=200)
        band = found.at(grid).band("ips")
        replay = world.replay(table).expected_clicks
        assert band.covers(replay), name
        known = found.at([config.dcm_lambda]).estimates[0].ips
        assert band.hi - band.lo >= known.hi - known.lo
        if name == "by grade":
            assert not found.at([1.0]).estimates[0].ips.covers(replay)
