"""Feature groups: what each declared feature *is*, so that modules never name a column.

Every feature spec (:func:`prectr.data.features.feature_specs`) carries a :class:`Role`: the
group it belongs to and its role in the group. The groups:

``user``
    who searches: the user's id and activity (the number of earlier requests).
``query``
    what was asked: the query's id, its words and the engine's query category.
``item``
    the candidate: its id, category, brand, price and title words.
``match``
    how the query and the candidate match (one value per impression): the share of query words
    in the title, whether the categories agree and, with PRECTR's relevance context, the two
    combined into a match level.
``user_history``
    the items the user clicked before the request, entry by entry: the item, its category and,
    with the relevance context, the query it was clicked under and the match level it had.
``crowd_history``
    what all users were shown under the same query before the request (PRECTR-V2's cross-user
    history): the item, its category, its match level and whether it was clicked.
``text``
    a text encoder's own inputs: the distilled student's query and title pieces, or a frozen
    encoder's cached query and title embeddings.

A module asks for roles, never for names (:func:`require`), and a model declares what its
modules read (:meth:`prectr.models.registry.RankingModel.feature_roles`), so that a config whose
features lack one is refused when it loads, naming the module and the role (the features
validator of :class:`prectr.config.ExperimentConfig`, through
:func:`prectr.models.registry.feature_roles`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

GROUPS = ("user", "query", "item", "match", "user_history", "crowd_history", "text")


@dataclass(frozen=True)
class Role:
    """A feature's group (one of :data:`GROUPS`) and its role in the group."""

    group: str
    role: str

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"feature group {self.group!r}: expected one of {GROUPS}")

    def __str__(self) -> str:
        return f"{self.group}.{self.role}"


USER = Role("user", "identity")
USER_ACTIVITY = Role("user", "activity")
QUERY = Role("query", "identity")
QUERY_CATEGORY = Role("query", "category")
QUERY_WORDS = Role("query", "words")
ITEM = Role("item", "identity")
ITEM_CATEGORY = Role("item", "category")
ITEM_BRAND = Role("item", "brand")
ITEM_PRICE_BUCKET = Role("item", "price_bucket")
ITEM_PRICE = Role("item", "price")
TITLE_WORDS = Role("item", "words")
TITLE_MATCH = Role("match", "title")
CATEGORY_MATCH = Role("match", "category")
MATCH_LEVEL = Role("match", "level")
CLICKED_ITEMS = Role("user_history", "item")
CLICKED_CATEGORIES = Role("user_history", "category")
CLICKED_QUERIES = Role("user_history", "query")
CLICKED_MATCH = Role("user_history", "match")
CROWD_ITEMS = Role("crowd_history", "item")
CROWD_CATEGORIES = Role("crowd_history", "category")
CROWD_MATCH = Role("crowd_history", "match")
CROWD_CLICKS = Role("crowd_history", "click")
QUERY_PIECES = Role("text", "query_pieces")
TITLE_PIECES = Role("text", "title_pieces")
QUERY_EMBEDDING = Role("text", "query_embedding")
TITLE_EMBEDDING = Role("text", "title_embedding")


class MissingFeatures(ValueError):
    """Features a module reads are not among the declared ones."""


def find(specs: Iterable, role: Role):
    """The spec of ``specs`` with ``role``, or None."""
    return next((s for s in specs if s.role == role), None)


def in_group(specs: Iterable, group: str) -> list:
    """The specs of ``specs`` in ``group``, in their order."""
    return [s for s in specs if s.role.group == group]


def require(specs: list, roles: Iterable[Role], reader: str) -> list:
    """The specs with ``roles``, in that order; a role no spec has is refused, naming
    ``reader`` (the module that reads them) and every missing role."""
    roles = list(roles)
    found = [find(specs, r) for r in roles]
    missing = [str(r) for r, s in zip(roles, found, strict=True) if s is None]
    if missing:
        raise MissingFeatures(f"{reader} reads features the encoded features lack: "
                              f"{', '.join(missing)}")  # fmt: skip
    return found
