"""Users: Zipf activity, latent tastes shared within segments, and a personal relevance tolerance.

Segments are the structure cross-user preference mining exploits: users of one segment search
the same departments, like the same styles and tolerate non-exact items alike, so what other
users did under a query tells about a new user who issues it.

Tolerance ``t`` lies in [-1, 1]: a tolerant user (t > 0) clicks substitutes and complements
nearly as readily as exact matches; a strict user (t < 0) clicks almost only exact matches.
Segment means are spread evenly over [-tolerance_spread, tolerance_spread], so both kinds exist
in every world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prectr.data.simulate.config import WorldConfig


@dataclass
class Population:
    segment: np.ndarray  # (n_users,)
    activity: np.ndarray  # probability that a request comes from each user, sums to one
    tolerance: np.ndarray  # (n_users,) in [-1, 1]
    style_affinity: np.ndarray  # (n_users, n_styles)
    price_sensitivity: np.ndarray  # (n_users,)
    department_preference: np.ndarray  # (n_segments, n_departments), rows sum to one

    @property
    def size(self) -> int:
        return self.segment.size

    def taste(self, user: np.ndarray, style: np.ndarray, price_z: np.ndarray) -> np.ndarray:
        """How much a user likes an item apart from its relevance: style, and price."""
        return self.style_affinity[user, style] - self.price_sensitivity[user] * price_z


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
    tolerance = np.clip(tolerance_mean[segment] + rng.normal(0, config.tolerance_noise, n), -1, 1)
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
