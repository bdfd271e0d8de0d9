"""The features a config declares: each one's kind (one id, a number, an id sequence), the
table it lives in (item, request or impression), its vocabulary and its role in a feature group
(:mod:`prectr.data.groups`), and :class:`FeatureConfig`, the ``features`` section of an
experiment config that chooses them. :class:`prectr.data.features.FeatureEncoder` computes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from prectr.data import groups as g
from prectr.data.groups import Role, find
from prectr.section import Section


@dataclass(frozen=True)
class Categorical:
    """One id per row, looked up in ``vocab``; ``level`` is "item" or "request"; ``role`` is
    what the feature is to the modules (:mod:`prectr.data.groups`)."""

    name: str
    vocab: str
    level: str
    role: Role


@dataclass(frozen=True)
class Numeric:
    name: str
    level: str  # "item", "request" or "impression"
    role: Role


@dataclass(frozen=True)
class Sequence:
    """A fixed-length, left-padded id sequence (newest or last token at the end)."""

    name: str
    vocab: str
    level: str
    length: int
    role: Role


class FeatureConfig(Section):
    """Which histories feed the features and how long each sequence is."""

    query_tokens: int = Field(8, ge=1)
    """Words of a query kept (the first ones)."""
    title_tokens: int = Field(24, ge=1)
    """Words of a title kept (the first ones)."""
    user_clicks: int = Field(20, ge=1)
    """The user's latest clicked items (and their categories) kept as history."""
    min_count: int = Field(1, ge=1)
    """Training occurrences an id (user, query, item, category, brand) needs for its own
    embedding row; rarer ids share the unknown row."""
    token_min_count: int = Field(2, ge=1)
    """Training occurrences a word needs for its own embedding row."""
    include: list[str] = Field(default_factory=list)
    """Only these features (by name); empty: every feature declared."""
    relevance_context: bool = False
    """PRECTR's relevance context: each impression's match level, the query and match level
    of each clicked item, and the cross-user crowd (what all users were shown and clicked
    under the same query in the last crowd_days days, backed off to the query's category when
    the query has fewer than crowd_min_events such impressions); off for the baselines."""
    crowd_length: int = Field(50, ge=1)
    """The crowd's latest entries kept per request."""
    crowd_days: float | None = Field(7.0, gt=0)
    """Days of the crowd's window before each request (None: every earlier day)."""
    crowd_min_events: int = Field(10, ge=0)
    """Impressions under a query below which its crowd backs off to the query's category."""
    student: str | None = None
    """A distilled student's directory: its tokenizer gives the query and title pieces."""
    query_pieces: int | None = Field(None, ge=1)
    """Pieces of a query kept with a student's tokenizer (None: the student's own limit)."""
    title_pieces: int | None = Field(None, ge=1)
    """Pieces of a title kept with a student's tokenizer (None: the student's own limit)."""
    text_cache: str | None = None
    """A frozen encoder's embedding cache (prectr.text.cache): each text's row in it."""


def feature_specs(config: FeatureConfig, has_query_category: bool) -> list:
    """The declared features, in the order models see them, each with its group and role."""
    specs: list = [
        Categorical("user_id", "user", "request", g.USER),
        Categorical("query", "query", "request", g.QUERY),
        Categorical("item_id", "item", "item", g.ITEM),
        Categorical("category", "category", "item", g.ITEM_CATEGORY),
        Categorical("brand", "brand", "item", g.ITEM_BRAND),
        Categorical("price_bucket", "price_bucket", "item", g.ITEM_PRICE_BUCKET),
        Numeric("log_price", "item", g.ITEM_PRICE),
        Numeric("user_activity", "request", g.USER_ACTIVITY),
        Numeric("title_match", "impression", g.TITLE_MATCH),
        Sequence("query_tokens", "token", "request", config.query_tokens, g.QUERY_WORDS),
        Sequence("title_tokens", "token", "item", config.title_tokens, g.TITLE_WORDS),
        Sequence("user_clicks", "item", "request", config.user_clicks, g.CLICKED_ITEMS),
        Sequence("user_click_categories", "category", "request", config.user_clicks,
                 g.CLICKED_CATEGORIES),
    ]  # fmt: skip
    if has_query_category:
        specs.insert(2, Categorical("query_category", "category", "request", g.QUERY_CATEGORY))
        specs.insert(9, Numeric("category_match", "impression", g.CATEGORY_MATCH))
    for setting, switched in _switched_features(config).items():
        if getattr(config, setting):
            specs += switched
    if config.include:
        unknown = sorted(set(config.include) - {s.name for s in specs})
        if unknown:
            raise ValueError(f"features.include names unknown features: {', '.join(unknown)}")
        specs = [s for s in specs if s.name in config.include]
    return specs


def _switched_features(config: FeatureConfig) -> dict[str, list]:
    """The features each switch of ``config`` adds when it is set, by the switch's name."""
    clicks, crowd = config.user_clicks, config.crowd_length
    return {
        "relevance_context": [
            Categorical("match_level", "match_level", "impression", g.MATCH_LEVEL),
            Sequence("user_click_queries", "query", "request", clicks, g.CLICKED_QUERIES),
            Sequence("user_click_match", "match_level", "request", clicks, g.CLICKED_MATCH),
            Sequence("crowd_items", "item", "request", crowd, g.CROWD_ITEMS),
            Sequence("crowd_categories", "category", "request", crowd, g.CROWD_CATEGORIES),
            Sequence("crowd_match", "match_level", "request", crowd, g.CROWD_MATCH),
            Sequence("crowd_clicks", "click", "request", crowd, g.CROWD_CLICKS),
        ],
        "student": [
            Sequence("query_pieces", "piece", "request", config.query_pieces, g.QUERY_PIECES),
            Sequence("title_pieces", "piece", "item", config.title_pieces, g.TITLE_PIECES),
        ],
        "text_cache": [
            Sequence("query_text", "text", "request", 1, g.QUERY_EMBEDDING),
            Sequence("title_text", "text", "item", 1, g.TITLE_EMBEDDING),
        ],
    }


def undeclared(config: FeatureConfig, role: Role) -> str:
    """Why ``config`` declares no feature with ``role`` (a role it lacks): the feature's name
    and the switch that would declare it, or else that ``features.include`` leaves it out."""
    for setting, switched in _switched_features(config).items():
        spec = find(switched, role)
        if spec is not None and not getattr(config, setting):
            return f"{spec.name}; set features.{setting}"
    every = feature_specs(config.updated(include=[]), has_query_category=True)
    return f"{find(every, role).name}; features.include leaves it out"
