"""The simulated world's knobs, their presets, and how they are loaded and overridden."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

CLICK_MODELS = ("pbm", "dcm", "cascade")


def knob(default: Any, doc: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={"doc": doc, **kwargs})


@dataclass(frozen=True)
class WorldConfig:
    """Every knob of the simulated marketplace. Each has a command-line flag of the same name."""

    # size
    n_items: int = knob(20_000, "catalogue size (items)")
    n_users: int = knob(5_000, "number of users")
    n_requests: int = knob(20_000, "number of search requests")
    n_queries: int = knob(3_000, "distinct query strings (real queries plus generated variants)")
    n_days: int = knob(14, "days of requests; the last days form the validation and test split")
    start_date: str = knob("2026-01-05", "date of the first day (UTC)")
    # users
    n_segments: int = knob(8, "shared taste segments users are drawn from")
    activity_exponent: float = knob(1.1, "Zipf exponent of user activity (higher: more cold start)")
    personal_taste_noise: float = knob(0.5, "std of a user's own taste around the segment's")
    tolerance_spread: float = knob(0.7, "spread of segment mean tolerance, in [-1, 1]")
    tolerance_noise: float = knob(0.3, "std of a user's tolerance around the segment mean")
    # catalogue and queries
    query_zipf: float = knob(1.0, "Zipf exponent of query popularity")
    new_item_share: float = knob(0.1, "share of items launched during the log (new items)")
    title_attribute_rate: float = knob(0.9, "probability that an item attribute shows in its title")
    synonym_rate: float = knob(0.3, "probability of using a synonym instead of the usual word")
    typo_rate: float = knob(0.04, "probability of a misspelt word in a generated query")
    query_classifier_accuracy: float = knob(
        0.9, "share of requests whose logged query_category is the query's true category"
    )
    # retrieval and logging ranker
    pool_size: int = knob(50, "candidates per request (coarse-ranking pool)")
    exposed_k: int = knob(10, "top-K of the pool that the logging ranker exposes")
    pool_same_category: float = knob(0.4, "share of the pool drawn from the query's category")
    pool_same_kind: float = knob(0.2, "share drawn from the query's kind (same head noun)")
    pool_same_department: float = knob(0.2, "share drawn from the query's department")
    ranker_relevance_weight: float = knob(1.0, "logging ranker: weight of the true grade")
    ranker_popularity_weight: float = knob(0.4, "logging ranker: weight of item popularity")
    ranker_noise: float = knob(
        2.0,
        "logging ranker: std of its score noise (2.0 moves the exposed grade mix towards ESCI's)",
    )
    # clicks
    click_model: str = knob("pbm", "click model", choices=CLICK_MODELS)
    eta: float = knob(1.0, "severity of position bias (examination ** eta)")
    dcm_lambda: float = knob(0.6, "dcm: probability of going on after a click")
    tolerance_strength: float = knob(1.5, "how much tolerance moves attraction of non-exact items")
    taste_weight: float = knob(0.8, "weight of user-item taste in the attraction logit")
    popularity_weight: float = knob(0.4, "weight of item popularity in the attraction logit")
    # labels and output
    label_share: float = knob(0.1, "share of (query, item) pairs with a human relevance label")
    chunk_requests: int = knob(20_000, "requests generated and written per chunk")
    seed: int = knob(0, "random seed: same seed and knobs, same bytes")

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "float") and value < 0:
                problems.append(f"{f.name} = {value} must be >= 0")
        for name in (
            "new_item_share",
            "title_attribute_rate",
            "synonym_rate",
            "typo_rate",
            "query_classifier_accuracy",
            "label_share",
            "pool_same_category",
            "pool_same_kind",
            "pool_same_department",
            "dcm_lambda",
        ):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} = {getattr(self, name)} must lie in [0, 1]")
        if self.pool_same_category + self.pool_same_kind + self.pool_same_department > 1:
            problems.append("pool_same_category + pool_same_kind + pool_same_department > 1")
        if self.click_model not in CLICK_MODELS:
            problems.append(f"click_model = {self.click_model!r}, expected one of {CLICK_MODELS}")
        if not 1 <= self.exposed_k <= self.pool_size:
            problems.append("exposed_k must lie in [1, pool_size]")
        if self.n_days < 3:
            problems.append("n_days must be >= 3 (train, validation and test days)")
        for name in (
            "n_items",
            "n_users",
            "n_requests",
            "n_queries",
            "n_segments",
            "chunk_requests",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if problems:
            raise ValueError("invalid world config: " + "; ".join(problems))

    def replace(self, **changes: Any) -> WorldConfig:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_items=2_000, n_users=300, n_requests=1_500, n_queries=400, chunk_requests=500),
    "small": dict(n_items=20_000, n_users=4_000, n_requests=20_000, n_queries=2_500),
    "bench": dict(n_items=60_000, n_users=15_000, n_requests=100_000, n_queries=6_000),
    "large": dict(n_items=200_000, n_users=60_000, n_requests=250_000, n_queries=15_000),
}


def load_config(
    preset: str = "small", path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> WorldConfig:
    """A preset, then a YAML file of knobs, then explicit overrides; unknown knobs are refused."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    values: dict[str, Any] = dict(PRESETS[preset])
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of knob: value")
        values.update(_checked(loaded, str(path)))
    values.update(_checked(overrides or {}, "overrides"))
    return WorldConfig(**values)


def _checked(values: dict[str, Any], where: str) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(WorldConfig)}
    out = {}
    for key, value in values.items():
        if key not in types:
            raise ValueError(f"{where}: unknown knob {key!r}")
        expected = {"int": int, "float": (int, float), "str": str}[types[key]]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise ValueError(f"{where}: knob {key!r} expects {types[key]}, got {value!r}")
        out[key] = float(value) if types[key] == "float" else value
    return out
