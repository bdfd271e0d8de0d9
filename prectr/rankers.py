"""Rankers that need no training: the reference points every learnt model is compared with.

* ``logging``: the production ranker that produced the log (its logged score);
* ``popularity``: each item's smoothed click-through rate on the training days, a calibrated
  probability; items never exposed in training get the global CTR;
* ``random``: a seeded uniform score, the floor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

POPULARITY_PRIOR_WEIGHT = 20.0  # pseudo-impressions of the global CTR added to every item


def logging_ranker(train: pa.Table, pool: pa.Table) -> tuple[np.ndarray, bool]:
    return pool["logging_score"].to_numpy(), False


def popularity_ranker(train: pa.Table, pool: pa.Table) -> tuple[np.ndarray, bool]:
    exposed = train.filter(train["click"].is_valid())
    item = exposed["item_id"].to_numpy()
    click = exposed["click"].to_numpy().astype(np.float64)
    prior = click.mean() if click.size else 0.0
    n = int(max(item.max(initial=0), pool["item_id"].to_numpy().max(initial=0))) + 1
    clicks = np.bincount(item, weights=click, minlength=n)
    shown = np.bincount(item, minlength=n)
    ctr = (clicks + POPULARITY_PRIOR_WEIGHT * prior) / (shown + POPULARITY_PRIOR_WEIGHT)
    return ctr[pool["item_id"].to_numpy()], True


def random_ranker(train: pa.Table, pool: pa.Table) -> tuple[np.ndarray, bool]:
    return np.random.default_rng(0).random(pool.num_rows), False


# name -> fit-and-score function: (training impressions, pool to score) -> (scores, is_probability)
RANKERS: dict[str, Callable[[pa.Table, pa.Table], tuple[np.ndarray, bool]]] = {
    "logging": logging_ranker,
    "popularity": popularity_ranker,
    "random": random_ranker,
}
