"""The paired bootstrap over requests: exact at weight 1, exact on repeated requests, paired."""

from collections.abc import Iterator

import numpy as np
import pytest

from prectr.metrics import auc, calibration, gauc, logloss
from prectr.metrics.paired import (
    auc_statistic,
    bootstrap,
    date_interval,
    gauc_statistic,
    interval,
    mean_statistic,
    paired_bootstrap,
    ratio_statistic,
    resample_weights,
    seed_interval,
)

N_REQUESTS = 300


def clicks(seed: int = 0, rows_per_request: int = 10):
    """Exposed rows of N_REQUESTS requests over 60 users: click, a score with some signal
    (rounded so that ties occur), the user and the request."""
    rng = np.random.default_rng(seed)
    request = np.repeat(np.arange(N_REQUESTS), rows_per_request)
    user = request % 60
    click = (rng.random(request.size) < 0.2).astype(np.int64)
    score = np.round(0.3 * click + rng.random(request.size), 2)
    return click, score, user, request


def test_resamples_are_multinomial_counts_and_repeatable():
    blocks = list(resample_weights(7, 120, seed=3))
    weights = np.concatenate(blocks)
    assert weights.shape == (120, 7) and len(blocks) == 3
    assert (weights.sum(axis=1) == 7).all() and (weights >= 0).all()
    assert np.array_equal(weights, np.concatenate(list(resample_weights(7, 120, seed=3))))
    assert not np.array_equal(weights, np.concatenate(list(resample_weights(7, 120, seed=4))))


def test_every_weight_one_gives_the_exact_metrics():
    click, score, user, request = clicks()
    ones = np.ones((1, N_REQUESTS))
    probability = score / score.max()
    assert auc_statistic(click, score, request)(ones)[0] == pytest.approx(auc(click, score), 1e-12)
    assert gauc_statistic(click, score, user, request)(ones)[0] == pytest.approx(
        gauc(click, score, user), 1e-12
    )
    assert gauc_statistic(click, score, request, request)(ones)[0] == pytest.approx(
        gauc(click, score, request), 1e-12
    )
    loss = -np.log(np.where(click == 1, probability, 1 - probability).clip(1e-7))
    assert mean_statistic(loss, request)(ones)[0] == pytest.approx(logloss(click, probability))
    assert ratio_statistic(probability, click, request)(ones)[0] == pytest.approx(
        calibration(click, probability)
    )


def test_resample_weights_equal_the_metric_of_the_repeated_requests():
    click, score, user, request = clicks(1)
    weights = next(resample_weights(N_REQUESTS, 4, seed=5))
    for w in weights:
        repeated = np.repeat(np.arange(click.size), w[request].astype(np.int64))
        exact_auc = auc(click[repeated], score[repeated])
        exact_gauc = gauc(click[repeated], score[repeated], user[repeated])
        assert auc_statistic(click, score, request)(w[None])[0] == pytest.approx(exact_auc, 1e-12)
        assert gauc_statistic(click, score, user, request)(w[None])[0] == pytest.approx(
            exact_gauc, 1e-12
        )


def test_identical_scores_differ_by_exactly_zero():
    click, score, user, request = clicks()
    a = {"auc": auc_statistic(click, score, request),
         "gauc_user": gauc_statistic(click, score, user, request)}  # fmt: skip
    b = {"auc": auc_statistic(click, score.copy(), request),
         "gauc_user": gauc_statistic(click, score.copy(), user, request)}  # fmt: skip
    for difference in paired_bootstrap(a, b, N_REQUESTS, 200).values():
        assert (difference.draws == 0).all()
        s = difference.summary()
        assert s["diff"] == 0 and s["lo"] == 0 and s["hi"] == 0 and s["spans_zero"] is True


def test_a_clearly_better_model_has_a_ci_above_zero():
    click, _, _, request = clicks()
    rng = np.random.default_rng(2)
    weak = 0.2 * click + rng.random(click.size)
    strong = 1.0 * click + rng.random(click.size)
    result = paired_bootstrap(
        {"auc": auc_statistic(click, weak, request)},
        {"auc": auc_statistic(click, strong, request)},
        N_REQUESTS,
        500,
    )["auc"].summary()
    assert result["lo"] > 0 and result["spans_zero"] is False
    assert result["lo"] < result["mean"] < result["hi"]
    assert result["diff"] == pytest.approx(auc(click, strong) - auc(click, weak), 1e-12)


def test_a_pure_noise_difference_covers_zero():
    click, _, _, request = clicks()
    rng = np.random.default_rng(3)
    signal = 0.5 * click
    a, b = signal + rng.random(click.size), signal + rng.random(click.size)
    result = paired_bootstrap(
        {"auc": auc_statistic(click, a, request)},
        {"auc": auc_statistic(click, b, request)},
        N_REQUESTS,
        500,
    )["auc"].summary()
    assert result["lo"] < 0 < result["hi"] and result["spans_zero"] is True


def test_per_request_means_bootstrap_like_the_mean_of_resampled_requests():
    rng = np.random.default_rng(4)
    values = rng.random(N_REQUESTS)
    drawn = bootstrap({"mean": mean_statistic(values, np.arange(N_REQUESTS))}, N_REQUESTS, 300)
    weights = np.concatenate(list(resample_weights(N_REQUESTS, 300)))
    assert drawn["mean"].value == pytest.approx(values.mean())
    assert np.allclose(drawn["mean"].draws, weights @ values / N_REQUESTS)


def test_undefined_resamples_and_metrics():
    # one request holds every click: resamples without it have no AUC
    click = np.r_[np.ones(5), np.zeros(45)].astype(np.int64)
    request = np.repeat(np.arange(10), 5)
    drawn = bootstrap({"auc": auc_statistic(click, np.arange(50.0), request)}, 10, 100)["auc"]
    assert np.isnan(drawn.draws).any()
    assert interval(np.r_[np.full(60, np.nan), np.zeros(40)]) == pytest.approx(
        (np.nan, np.nan), nan_ok=True
    )
    # no click at all: the AUC is undefined and the summary says None
    flat = {"auc": auc_statistic(np.zeros(50, np.int64), np.arange(50.0), request)}
    summary = paired_bootstrap(flat, flat, 10, 20)["auc"].summary()
    assert set(summary.values()) == {None}


def _seed_experiments(
    replicates: int, seeds: int, seed_sd: float, request_sd: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Simulated B - A of ``replicates`` experiments, true difference 0: each trains ``seeds``
    models (a seed effect each) and evaluates them on one test set (one request-sampling error
    shared by the seeds); each experiment's bootstrap draws of the seeds' mean spread by the
    request error's sd around the observed mean."""
    rng = np.random.default_rng(11)
    for _ in range(replicates):
        per_seed = rng.normal(0, seed_sd, seeds) + rng.normal(0, request_sd)
        yield per_seed, rng.normal(per_seed.mean(), request_sd, 400)


@pytest.mark.parametrize("seed_sd", [0.0015, 0.0003])
def test_the_seed_aware_interval_covers_the_truth_where_the_request_ci_does_not(seed_sd):
    covered, request_covered, replicates = 0, 0, 1000
    for per_seed, draws in _seed_experiments(replicates, 3, seed_sd, 0.0004):
        lo, hi, df = seed_interval(per_seed, draws)
        covered += lo <= 0 <= hi
        request_lo, request_hi = interval(draws)
        request_covered += request_lo <= 0 <= request_hi
        assert df >= 2
    # Welch-Satterthwaite is a little liberal at three seeds when the seeds dominate (about
    # 92% by simulation), exact when they do not
    assert 0.90 <= covered / replicates <= 0.98
    if seed_sd > 0.001:  # seeds spread more than the requests: the request CI undercovers
        assert request_covered / replicates < 0.65


def test_without_request_noise_the_seed_aware_interval_is_the_t_interval_over_seeds():
    # mean 0.03, s = 0.01, n = 3: 0.03 +- t(0.975, 2) * 0.01 / sqrt(3) = 0.03 +- 0.024841
    lo, hi, df = seed_interval([0.02, 0.03, 0.04], np.full(200, 0.03))
    assert (lo, hi, df) == pytest.approx((0.03 - 0.024841, 0.03 + 0.024841, 2.0), abs=1e-6)
    # request noise as large as the seeds' raises its degrees of freedom (to about 32 here)
    draws = np.random.default_rng(0).normal(0.03, 0.01, 2000)
    assert seed_interval([0.02, 0.03, 0.04], draws)[2] == pytest.approx(32, rel=0.1)


def test_the_seed_aware_interval_needs_two_seeds_and_defined_draws():
    draws = np.full(100, 0.001)
    assert np.isnan(seed_interval([0.001], draws)).all()
    draws[:60] = np.nan
    assert np.isnan(seed_interval([0.001, 0.002], draws)).all()
    assert np.isnan(seed_interval([0.001, 0.002], np.array([0.001]))).all()
    assert np.isnan(seed_interval([0.001, np.inf], np.full(100, 0.001))).all()
    lo, hi, df = seed_interval([0.001, 0.001], np.full(100, 0.001))
    assert lo == pytest.approx(0.001) and hi == pytest.approx(0.001) and df == np.inf


def _date_layouts(replicates: int, seed_sd: float, date_sd: float, noise_sd: float):
    """Differences of 3 seeds on 3 dates with true mean 0: each seed's and each date's random
    effect, shared across the other, plus a cell's own noise."""
    rng = np.random.default_rng(7)
    for _ in range(replicates):
        yield (rng.normal(0, seed_sd, (3, 1)) + rng.normal(0, date_sd, (1, 3))
               + rng.normal(0, noise_sd, (3, 3)))  # fmt: skip


@pytest.mark.parametrize("date_sd", [0.0, 0.0017])
def test_the_date_aware_interval_covers_the_truth_where_the_seed_aware_one_does_not(date_sd):
    covered, seeds_covered, replicates = 0, 0, 2000
    for cells in _date_layouts(replicates, 0.001, date_sd, 0.0007):
        centre, lo, hi, df = date_interval(cells)
        # the variance is at least the largest mean square's share, so df >= 0.8 at 3 x 3
        assert centre == pytest.approx(cells.mean()) and df >= 0.8
        covered += lo <= 0 <= hi
        # the seeds' interval, reading each seed's mean over the dates as its difference
        seed_lo, seed_hi, _ = seed_interval(cells.mean(1), np.full(10, cells.mean()))
        seeds_covered += seed_lo <= 0 <= seed_hi
    # a component estimated below zero counts as zero, so it errs wide (97-99% by simulation)
    assert 0.94 <= covered / replicates <= 1.0
    if date_sd:  # the dates move the effect as much as in world seed 0: the seeds' undercovers
        assert seeds_covered / replicates < 0.85


def test_the_date_aware_interval_by_hand():
    # the seeds agree, the dates are 1, 2, 3: the t interval over the dates' means,
    # 2 +- t(0.975, 2) * 1 / sqrt(3) = 2 +- 2.484138
    centre, lo, hi, df = date_interval(np.array([[1.0, 2.0, 3.0]] * 3))
    assert (centre, lo, hi, df) == pytest.approx((2.0, 2 - 2.484138, 2 + 2.484138, 2.0), abs=1e-6)
    # one seed, or one date: the t interval over the other
    assert date_interval(np.array([[1.0, 2.0, 3.0]]))[1:] == pytest.approx(
        (2 - 2.484138, 2 + 2.484138, 2.0), abs=1e-6
    )
    assert date_interval(np.array([[1.0], [2.0], [3.0]]))[3] == pytest.approx(2.0)
    # seeds and dates both spread: their mean squares (1.0 each, the residual's 0) over S D = 4,
    # df by Welch-Satterthwaite: 0.5^2 / (2 * 0.25^2 / 1) = 2
    centre, lo, hi, df = date_interval(np.array([[0.0, 1.0], [1.0, 2.0]]))
    assert centre == 1.0 and df == pytest.approx(2.0)
    assert hi - centre == pytest.approx(4.302653 * np.sqrt(0.5), abs=1e-5)
    # with a residual: MS_S 6.25, MS_D 2.25, MS_E 0.25, both components kept, so the variance
    # is (6.25 + 2.25 - 0.25) / 4 and df 8.25^2 / (6.25^2 + 2.25^2 + 0.25^2) = 1.54031
    assert date_interval(np.array([[0.0, 1.0], [2.0, 4.0]])) == pytest.approx(
        (1.75, -6.58107, 10.08107, 1.54031), abs=1e-5
    )


def test_the_date_aware_interval_needs_two_defined_cells():
    assert np.isnan(date_interval(np.array([[0.001]]))).all()
    assert np.isnan(date_interval(np.array([[0.001, np.inf], [0.0, 0.0]]))).all()
    assert np.isnan(date_interval(np.array([0.001, 0.002]))).all()  # not (seeds, dates)
    centre, lo, hi, df = date_interval(np.full((3, 3), 0.001))
    assert lo == hi == centre == pytest.approx(0.001) and df == np.inf
