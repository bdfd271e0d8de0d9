"""The simulated world's knobs, their presets, and how they are loaded and overridden.

Knobs are checked as the experiment config's sections are (:mod:`prectr.section`): through a
pydantic model built from :class:`WorldConfig`'s fields, each knob's bounds and choices
declared beside it, an unknown knob named with the closest known one, and every problem of a
config reported at once, each under its knob.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from prectr.section import ConfigError, Section

CLICK_MODELS = ("pbm", "dcm", "cascade")
LABEL_SCOPES = ("logged", "exposed", "broad")


def knob(default: Any, doc: str, **kwargs: Any) -> Any:
    """A knob with its description and its checks: ``choices``, or bounds ``ge`` (numbers
    default to ``ge=0``), ``le`` and ``lt`` as pydantic's ``Field`` takes them."""
    return field(default=default, metadata={"doc": doc, **kwargs})


def share(default: float, doc: str) -> Any:
    """A knob that is a share or a probability, in [0, 1]."""
    return knob(default, doc, le=1)


@dataclass(frozen=True)
class WorldConfig:
    """Every knob of the simulated marketplace. Each has a command-line flag of the same name."""

    # size
    n_items: int = knob(20_000, "catalogue size (items)", ge=1)
    n_users: int = knob(5_000, "number of users", ge=1)
    n_requests: int = knob(20_000, "number of search requests", ge=1)
    n_queries: int = knob(
        3_000, "distinct query strings (real queries plus generated variants)", ge=1
    )
    n_days: int = knob(14, "days of requests; the last days form the validation and test split")
    valid_days: int = knob(1, "days after the training days that form the validation split", ge=1)
    test_days: int = knob(1, "last days of the log that form the test split", ge=1)
    start_date: str = knob("2026-01-05", "date of the first day (UTC)")
    # users
    n_segments: int = knob(8, "shared taste segments users are drawn from", ge=1)
    activity_exponent: float = knob(1.1, "Zipf exponent of user activity (higher: more cold start)")
    personal_taste_noise: float = knob(0.5, "std of a user's own taste around the segment's")
    tolerance_spread: float = knob(0.7, "spread of segment mean tolerance, in [-1, 1]")
    tolerance_noise: float = knob(0.3, "std of a user's tolerance around the segment mean")
    tolerance_query_share: float = knob(
        0.0, "share of the variance of tolerance that belongs to the query (its intent)", lt=1
    )
    tolerance_breadth_weight: float = share(
        0.5, "share of the query component explained by breadth (few stated attributes)"
    )
    tolerance_drift: float = share(
        0.0, "share of the query component's variance renewed each day (intent drift)"
    )
    # catalogue and queries
    query_zipf: float = knob(1.0, "Zipf exponent of query popularity")
    query_popularity_drift: float = knob(
        0.0, "std of a query's daily change in log-popularity (a random walk over days)"
    )
    new_query_share: float = share(
        0.0, "share of each day's requests whose query is issued for the first time that day"
    )
    new_item_share: float = share(0.1, "share of items launched during the log (new items)")
    item_lifetime_days: float = knob(
        0.0, "mean days a listing stays available (sold or withdrawn); 0: it never leaves"
    )
    title_attribute_rate: float = share(
        0.9, "probability that an item attribute shows in its title"
    )
    synonym_rate: float = share(0.3, "probability of using a synonym instead of the usual word")
    typo_rate: float = share(0.04, "probability of a misspelt word in a generated query")
    query_classifier_accuracy: float = share(
        0.9, "share of requests whose logged query_category is the query's true category"
    )
    # the cascade: retrieval (broad set) -> pre-ranker (pool) -> logging ranker (exposed top K)
    retrieval_size: int = knob(
        50, "candidates retrieved per request (the broad set); = pool_size: no pre-ranker"
    )
    pool_size: int = knob(50, "candidates the pre-ranker keeps per request (the logged pool)")
    exposed_k: int = knob(10, "top-K of the pool that the logging ranker exposes", ge=1)
    pool_same_category: float = share(0.4, "share of retrieval drawn from the query's category")
    pool_same_kind: float = share(0.2, "share drawn from the query's kind (same head noun)")
    pool_same_department: float = share(0.2, "share drawn from the query's department")
    prerank_relevance_weight: float = knob(1.0, "pre-ranker: weight of the true grade")
    prerank_noise: float = knob(1.0, "pre-ranker: std of its score noise (a cheap, noisy model)")
    broad_sample: int = knob(
        500, "broad-set candidates kept per sampled evaluation request (truth/broad)", ge=1
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
    dcm_lambda: float = share(0.6, "dcm: probability of going on after a click")
    tolerance_strength: float = knob(1.5, "how much tolerance moves attraction of non-exact items")
    taste_weight: float = knob(0.8, "weight of user-item taste in the attraction logit")
    popularity_weight: float = knob(0.4, "weight of item popularity in the attraction logit")
    # labels and output
    label_share: float = share(0.1, "share of (query, item) pairs with a human relevance label")
    label_scope: str = knob(
        "logged",
        "where graded pairs come from: logged (any pool candidate), exposed, or broad "
        "(the broad set: graded unlogged pairs join the log as unexposed candidates)",
        choices=LABEL_SCOPES,
    )
    chunk_requests: int = knob(20_000, "requests generated and written per chunk", ge=1)
    seed: int = knob(0, "random seed: same seed and knobs, same bytes")

    def __post_init__(self) -> None:
        check_knobs(dataclasses.asdict(self), "world config")

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
    """A preset, then a YAML file of knobs, then explicit overrides; every problem of the
    result (an unknown knob, a value of the wrong type or out of its bounds, knobs that
    contradict each other) is refused at once, naming the knob and where the knobs came
    from."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    values: dict[str, Any] = dict(PRESETS[preset])
    sources = [f"preset {preset}"]
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of knob: value")
        values.update(loaded)
        sources.append(str(path))
    if overrides:
        values.update(overrides)
        sources.append("overrides")
    return WorldConfig(**check_knobs(values, " + ".join(sources)))


def check_knobs(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` checked as world knobs (``where`` names their source in the error), with
    every knob left out at its default and integers given for real-valued knobs made floats;
    a :class:`ConfigError` lists every problem."""
    try:
        return _knobs_model().model_validate(values).model_dump()
    except ValidationError as err:
        raise ConfigError(where, err) from None


# The checks that tie a knob to earlier ones: (the earlier knobs, whether the knob's value is
# wrong given theirs, the message). Each is reported under the later knob, and only when the
# earlier ones passed their own checks (pydantic validates fields in order, into info.data).
_TIES: dict[str, tuple[tuple[str, ...], Callable[..., bool], str]] = {
    "pool_size": (
        ("retrieval_size",), lambda pool, retrieved: pool > retrieved,
        "must be <= retrieval_size ({retrieval_size})",
    ),
    "exposed_k": (
        ("pool_size",), lambda k, pool: k > pool, "must lie in [1, pool_size ({pool_size})]",
    ),
    "pool_same_department": (
        ("pool_same_category", "pool_same_kind"), lambda d, c, k: c + k + d > 1,
        "pool_same_category + pool_same_kind + pool_same_department must not exceed 1",
    ),
    "test_days": (
        ("n_days", "valid_days"), lambda test, days, valid: days < valid + test + 1,
        "n_days ({n_days}) must exceed valid_days + test_days (training days needed)",
    ),
}  # fmt: skip


class _Knobs(Section):
    """The world's knobs as a config section (the fields come from :class:`WorldConfig`)."""

    @field_validator(*_TIES, check_fields=False)
    @classmethod
    def _tied_to_earlier_knobs(cls, value: Any, info: ValidationInfo) -> Any:
        earlier, wrong, message = _TIES[str(info.field_name)]
        values = [info.data.get(name) for name in earlier]
        if None not in values and wrong(value, *values):
            raise PydanticCustomError(
                "knob_conflict", message, dict(zip(earlier, values, strict=True))
            )
        return value


@functools.cache
def _knobs_model() -> type[Section]:
    """:class:`WorldConfig`'s knobs as a config section: each knob's type (its ``choices`` a
    Literal), default, description and bounds."""
    hints = typing.get_type_hints(WorldConfig)
    knobs: dict[str, Any] = {}
    for f in fields(WorldConfig):
        meta = dict(f.metadata)
        kind = Literal[meta.pop("choices")] if "choices" in meta else hints[f.name]
        doc = meta.pop("doc")
        if kind in (int, float):
            meta.setdefault("ge", 0)
        knobs[f.name] = (kind, Field(f.default, description=doc, **meta))
    return pydantic.create_model("world_knobs", __base__=_Knobs, **knobs)
