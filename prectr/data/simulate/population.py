"""Users: Zipf activity, latent tastes shared within segments, and a relevance tolerance.

Tolerance ``t`` lies in [-1, 1]: a tolerant request (t > 0) clicks substitutes and complements
nearly as readily as exact matches; a strict one (t < 0) clicks almost only exact matches. The
tolerance of a request is the sum of three parts, clipped to [-1, 1]:

* the segment's: segment means are spread evenly over [-tolerance_spread, tolerance_spread];
* the user's own: normal around it with std ``tolerance_noise``;
* the query's (its intent on that day): a share ``tolerance_query_share`` of the total variance.
  Broad queries (few stated attributes) tolerate more than specific ones
  (``tolerance_breadth_weight`` of the query part), the rest is the query's own, and a share
  ``tolerance_drift`` of it is renewed each day.

The query part is what cross-user preference mining can find: what the crowd did under *this*
query on recent days tells about a user never seen before. Segments add a second, slower signal:
users of one segment search the same departments and like the same styles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prectr.data.simulate.config import WorldConfig


@dataclass
class Population:
    segment: np.ndarray  # (n_users,)
    activity: np.ndarray  # probability that a request comes from each user, sums to one
    tolerance: np.ndarray  # (n_users,) the user's part (segment + own), not clipped
    style_affinity: np.ndarray  # (n_users, n_styles)
    price_sensitivity: np.ndarray  # (n_users,)
    department_preference: np.ndarray  # (n_segments, n_departments), rows sum to one

    @property
    def size(self) -> int:
        return self.segment.size

    def taste(self, user: np.ndarray, style: np.ndarray, price_z: np.ndarray) -> np.ndarray:
        """How much a user likes an item apart from its relevance (:func:`taste`)."""
        return taste(self.style_affinity, self.price_sensitivity, user, style, price_z)


def taste(
    style_affinity: np.ndarray,
    price_sensitivity: np.ndarray,
    user: np.ndarray,
    style: np.ndarray,
    price_z: np.ndarray,
) -> np.ndarray:
    """How much each user likes an item apart from its relevance: their affinity to its style,
    less their price sensitivity times its standardised price."""
    return style_affinity[user, style] - price_sensitivity[user] * price_z


def build_population(
    config: WorldConfig, rng: np.random.Generator, n_departments: int, n_styles: int
) -> Population:
    s, n = config.n_segments, config.n_users
    tolerance_mean = rng.permutation(
        np.linspace(-config.tolerance_spread, config.tolerance_spread, s)
    )
    segment_style = rng.normal(0.0, 1.0, size=(s, n_styles))
    segment_price = rng.normal(0.5, 0.5, size=s)
    department_preference = rng.dirichlet(np.full(n_departments, 0.5), size=s)

    segment = rng.integers(s, size=n)
    tolerance = tolerance_mean[segment] + rng.normal(0, config.tolerance_noise, n)
    style_affinity = segment_style[segment] + rng.normal(
        0.0, config.personal_taste_noise, size=(n, n_styles)
    )
    price_sensitivity = segment_price[segment] + rng.normal(0.0, 0.2, size=n)
    rank = rng.permutation(n) + 1.0
    activity = rank**-config.activity_exponent
    return Population(
        segment, activity / activity.sum(), tolerance, style_affinity, price_sensitivity,
        department_preference,
    )  # fmt: skip


def query_tolerance(
    config: WorldConfig, rng: np.random.Generator, stated: np.ndarray, user_tolerance: np.ndarray
) -> np.ndarray:
    """The query part of tolerance, ``(n_queries, n_days)``: zero when the knob's share is 0.

    ``stated`` counts the attributes (and brand) each query states. Its scale makes the query
    part ``tolerance_query_share`` of the variance of the unclipped sum; each day keeps
    ``sqrt(1 - tolerance_drift)`` of the day before (an AR(1) process of constant variance).
    """
    share = config.tolerance_query_share
    out = np.zeros((stated.size, config.n_days), dtype=np.float32)
    if share == 0:
        return out
    scale = np.sqrt(share / (1.0 - share) * np.var(user_tolerance))
    breadth = -(stated - stated.mean()) / max(float(stated.std()), 1e-9)
    rho, drift = config.tolerance_breadth_weight, config.tolerance_drift
    own = rng.normal(0.0, 1.0, size=stated.size)
    for day in range(config.n_days):
        if day:
            own = np.sqrt(1.0 - drift) * own + np.sqrt(drift) * rng.normal(0.0, 1.0, stated.size)
        out[:, day] = scale * (np.sqrt(rho) * breadth + np.sqrt(1.0 - rho) * own)
    return out
