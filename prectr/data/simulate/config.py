"""The simulated world's knobs, their presets, and how they are loaded and overridden."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

CLICK_MODELS = ("pbm", "dcm", "cascade")
LABEL_SCOPES = ("logged", "exposed", "broad")


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
    valid_days: int = knob(1, "days after the training days that form the validation split")
    test_days: int = knob(1, "last days of the log that form the test split")
    start_date: str = knob("2026-01-05", "date of the first day (UTC)")
    # users
    n_segments: int = knob(8, "shared taste segments users are drawn from")
    activity_exponent: float = knob(1.1, "Zipf exponent of user activity (higher: more cold start)")
    personal_taste_noise: float = knob(0.5, "std of a user's own taste around the segment's")
    tolerance_spread: float = knob(0.7, "spread of segment mean tolerance, in [-1, 1]")
    tolerance_noise: float = knob(0.3, "std of a user's tolerance around the segment mean")
    tolerance_query_share: float = knob(
        0.0, "share of the variance of tolerance that belongs to the query (its intent)"
    )
    tolerance_breadth_weight: float = knob(
        0.5, "share of the query component explained by breadth (few stated attributes)"
    )
    tolerance_drift: float = knob(
        0.0, "share of the query component's variance renewed each day (intent drift)"
    )
    # catalogue and queries
    query_zipf: float = knob(1.0, "Zipf exponent of query popularity")
    query_popularity_drift: float = knob(
        0.0, "std of a query's daily change in log-popularity (a random walk over days)"
    )
    new_query_share: float = knob(
        0.0, "share of each day's requests whose query is issued for the first time that day"
    )
    new_item_share: float = knob(0.1, "share of items launched during the log (new items)")
    item_lifetime_days: float = knob(
        0.0, "mean days a listing stays available (sold or withdrawn); 0: it never leaves"
    )
    title_attribute_rate: float = knob(0.9, "probability that an item attribute shows in its title")
    synonym_rate: float = knob(0.3, "probability of using a synonym instead of the usual word")
    typo_rate: float = knob(0.04, "probability of a misspelt word in a generated query")
    query_classifier_accuracy: float = knob(
        0.9, "share of requests whose logged query_category is the query's true category"
    )
    # the cascade: retrieval (broad set) -> pre-ranker (pool) -> logging ranker (exposed top K)
    retrieval_size: int = knob(
        50, "candidates retrieved per request (the broad set); = pool_size: no pre-ranker"
    )
    pool_size: int = knob(50, "candidates the pre-ranker keeps per request (the logged pool)")
    exposed_k: int = knob(10, "top-K of the pool that the logging ranker exposes")
    pool_same_category: float = knob(0.4, "share of retrieval drawn from the query's category")
    pool_same_kind: float = knob(0.2, "share drawn from the query's kind (same head noun)")
    pool_same_department: float = knob(0.2, "share drawn from the query's department")
    prerank_relevance_weight: float = knob(1.0, "pre-ranker: weight of the true grade")
    prerank_noise: float = knob(1.0, "pre-ranker: std of its score noise (a cheap, noisy model)")
    broad_sample: int = knob(
        500, "broad-set candidates kept per sampled evaluation request (truth/broad)"
    )
    broad_requests: int = knob(
        1_000, "requests per validation or test day whose broad-set sample is kept"
    )
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
    label_scope: str = knob(
        "logged",
        "where graded pairs come from: logged (any pool candidate), exposed, or broad "
        "(the broad set: graded unlogged pairs join the log as unexposed candidates)",
        choices=LABEL_SCOPES,
    )
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
            "tolerance_query_share",
            "tolerance_breadth_weight",
            "tolerance_drift",
            "new_query_share",
        ):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} = {getattr(self, name)} must lie in [0, 1]")
        if self.pool_same_category + self.pool_same_kind + self.pool_same_department > 1:
            problems.append("pool_same_category + pool_same_kind + pool_same_department > 1")
        if self.click_model not in CLICK_MODELS:
            problems.append(f"click_model = {self.click_model!r}, expected one of {CLICK_MODELS}")
        if not 1 <= self.exposed_k <= self.pool_size:
            problems.append("exposed_k must lie in [1, pool_size]")
        if self.tolerance_query_share >= 1:
            problems.append("tolerance_query_share must be < 1 (users keep a personal part)")
        if self.label_scope not in LABEL_SCOPES:
            problems.append(f"label_scope = {self.label_scope!r}, expected one of {LABEL_SCOPES}")
        if self.retrieval_size < self.pool_size:
            problems.append("retrieval_size must be >= pool_size")
        if min(self.valid_days, self.test_days) < 1:
            problems.append("valid_days and test_days must be >= 1")
        if self.n_days < self.valid_days + self.test_days + 1:
            problems.append("n_days must exceed valid_days + test_days (training days needed)")
        for name in (
            "n_items",
            "n_users",
            "n_requests",
            "n_queries",
            "n_segments",
            "chunk_requests",
            "broad_sample",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if problems:
            raise ValueError("invalid world config: " + "; ".join(problems))

    def replace(self, **changes: Any) -> WorldConfig:
        return dataclasses.replace(self, **changes)


# The phenomena PRECTR-V2's claims rest on, at the strengths docs/world.md sources: query-level
# tolerance with drift, query and supply turnover, a long tail with unseen queries, a cascade
# from a broad retrieved set, several test days. `stationary` keeps the earlier world (no query
# component, no drift, no cascade) at `bench` size as the negative control.
PHENOMENA: dict[str, Any] = dict(
    test_days=3,
    tolerance_query_share=0.5,
    tolerance_breadth_weight=0.5,
    tolerance_drift=0.1,
    query_popularity_drift=0.3,
    new_query_share=0.15,
    item_lifetime_days=7.0,
    new_item_share=0.65,
    prerank_noise=1.5,
    retrieval_size=1_000,
    pool_size=100,
    pool_same_category=0.1,
    pool_same_kind=0.05,
    pool_same_department=0.15,
)
BENCH_SIZE = dict(n_items=60_000, n_users=15_000, n_requests=100_000, n_queries=6_000)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        PHENOMENA, n_items=6_000, n_users=300, n_requests=3_000, n_queries=400,
        chunk_requests=500, retrieval_size=300, pool_size=50, broad_sample=200,
        broad_requests=50,
    ),
    "small": dict(PHENOMENA, n_items=20_000, n_users=4_000, n_requests=20_000, n_queries=2_500),
    "bench": dict(PHENOMENA, **BENCH_SIZE),
    "large": dict(
        PHENOMENA, n_items=200_000, n_users=60_000, n_requests=250_000, n_queries=15_000,
        chunk_requests=5_000,
    ),
    # `large`'s marketplace (catalogue, queries) with 4x its traffic (users, requests): a log
    # 4x larger, for what must not grow with the log (prepare's memory)
    "large4x": dict(
        PHENOMENA, n_items=200_000, n_users=240_000, n_requests=1_000_000, n_queries=15_000,
        chunk_requests=5_000,
    ),
    "stationary": dict(BENCH_SIZE, test_days=3),
}  # fmt: skip


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
