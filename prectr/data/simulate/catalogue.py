"""The catalogue (items with text titles) and the query pool (query strings with their intent).

True relevance follows ESCI's meaning and is read off attributes that the text carries:

* 3 exact: the item is of the query's category and matches every attribute the query states
  (colour, material, style, brand);
* 2 substitute: the query's category, but some stated attribute differs; or another category
  of the same kind (the same head noun: a dining chair for "office chair");
* 1 complement: another category of the query's department;
* 0 irrelevant: another department.

Titles show each attribute with probability ``title_attribute_rate`` and use synonyms, and
generated queries use synonyms and misspellings, so a model must read relevance from text; ids
alone cannot suffice, since items launched during the log reach the test days unseen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prectr.data.simulate.config import WorldConfig
from prectr.data.simulate.vocabulary import (
    ATTRIBUTE_KINDS,
    LEXICON,
    Category,
    categories,
    parse_attributes,
)

SYLLABLES = (
    "nor vik al der wood ma ren sol lux ka bel tor an vi ro sen mi lo ha ven dal ri co ve "
    "ash by ford ton well stone brook mere field gate haven"
).split()
BRANDS_PER_DEPARTMENT = 12
HEAD_FLATTENING = 10.0  # Zipf-Mandelbrot offset: no single query takes a large share of traffic
# Requests a new query gets on the day it first appears (most new queries are rare: docs/world.md)
NEW_QUERY_REQUESTS = 1.5
MATERIAL_PRICE = {"wood": 0.3, "marble": 0.6, "leather": 0.5, "brass": 0.4, "plastic": -0.5}


@dataclass
class Catalogue:
    """Items as parallel arrays (codes index the lexicon lists below), plus their titles."""

    categories: tuple[Category, ...]
    departments: tuple[str, ...]
    brands: tuple[str, ...]
    category: np.ndarray
    kind: np.ndarray
    department: np.ndarray
    brand: np.ndarray
    attributes: np.ndarray  # (n_items, 3): colour, material, style codes
    price: np.ndarray
    popularity: np.ndarray  # log-popularity, standard normal
    price_z: np.ndarray  # log-price standardised within the category
    launch_day: np.ndarray  # first day the item can be retrieved
    end_day: np.ndarray  # first day it no longer can (sold or withdrawn); n_days: never
    titles: list[str]

    @property
    def size(self) -> int:
        return self.category.size


@dataclass
class QueryPool:
    """Distinct query strings with their intent (-1 in ``attributes``/``brand``: not stated)."""

    text: list[str]
    category: np.ndarray
    kind: np.ndarray
    department: np.ndarray
    attributes: np.ndarray  # (n_queries, 3)
    brand: np.ndarray
    weight: np.ndarray  # popularity, sums to one
    is_real: np.ndarray
    birth_day: np.ndarray  # the day a query is first issued (0: it exists from the start)

    @property
    def stated(self) -> np.ndarray:
        """How many attributes (and brand) each query states: few means a broad query."""
        return (self.attributes >= 0).sum(1) + (self.brand >= 0)


def new_queries_per_day(config: WorldConfig) -> int:
    """Distinct queries first issued on each day after the first."""
    per_day = config.new_query_share * config.n_requests / config.n_days
    return int(np.ceil(per_day / NEW_QUERY_REQUESTS)) if per_day > 0 else 0


def attribute_values(kind: str) -> list[str]:
    return list(LEXICON[kind])


def _brand_names(rng: np.random.Generator, n: int) -> list[str]:
    names: dict[str, None] = {}
    while len(names) < n:
        names["".join(rng.choice(SYLLABLES, size=2)).capitalize()] = None
    return list(names)


def _category_palettes(rng: np.random.Generator, cats: tuple[Category, ...]) -> list[list[list]]:
    """For each category and attribute kind, the values its items come in (with the real
    queries' stated values always among them, so a real query can have exact matches)."""
    sizes = {"color": 6, "material": 4, "style": 5}
    palettes = []
    for cat in cats:
        stated = [parse_attributes(q) for q in cat.queries]
        per_kind = []
        for kind in ATTRIBUTE_KINDS:
            values = attribute_values(kind)
            chosen = set(rng.choice(len(values), size=sizes[kind], replace=False).tolist())
            chosen |= {values.index(s[kind]) for s in stated if kind in s}
            per_kind.append(sorted(chosen))
        palettes.append(per_kind)
    return palettes


def _misspell(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    op = int(rng.integers(3))
    if op == 0:
        return word[:i] + word[i + 1 :]
    if op == 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i] + word[i:]


def _surface(kind: str, value: str, rng: np.random.Generator, synonym_rate: float) -> str:
    variants = LEXICON[kind][value]
    if variants and rng.random() < synonym_rate:
        return str(variants[rng.integers(len(variants))])
    return value


def _noun(cat: Category, rng: np.random.Generator, synonym_rate: float) -> str:
    forms = cat.noun_forms()
    usual = cat.nouns[int(rng.integers(len(cat.nouns)))]
    if len(forms) > 1 and rng.random() < synonym_rate:
        return forms[int(rng.integers(len(forms)))]
    return usual


def build_catalogue(config: WorldConfig, rng: np.random.Generator) -> tuple[Catalogue, QueryPool]:
    cats = categories()
    departments = tuple(sorted({c.department for c in cats}))
    cat_dept = np.array([departments.index(c.department) for c in cats])
    kinds = sorted({c.kind for c in cats})
    cat_kind = np.array([kinds.index(c.kind) for c in cats])
    brand_names = _brand_names(rng, BRANDS_PER_DEPARTMENT * len(departments))
    palettes = _category_palettes(rng, cats)
    queries = _build_queries(config, rng, cats, cat_dept, cat_kind, palettes, brand_names)

    # Items per category follow demand (query popularity) blended with a uniform share.
    demand = np.bincount(queries.category, weights=queries.weight, minlength=len(cats))
    share = 0.5 * demand + 0.5 / len(cats)
    n_items = max(config.n_items, 5 * len(cats))
    counts = np.maximum(5, np.floor(share * n_items).astype(int))
    category = np.repeat(np.arange(len(cats)), counts)[:n_items]
    category = np.concatenate([category, rng.integers(len(cats), size=n_items - category.size)])
    category = np.sort(category)
    n = category.size

    bounds = np.searchsorted(category, np.arange(len(cats) + 1))
    attributes = np.empty((n, 3), dtype=np.int64)
    for c in range(len(cats)):
        rows = slice(bounds[c], bounds[c + 1])
        for k in range(3):
            palette = np.array(palettes[c][k])
            weights = rng.dirichlet(np.ones(palette.size))
            attributes[rows, k] = palette[
                rng.choice(palette.size, size=bounds[c + 1] - bounds[c], p=weights)
            ]
    department = cat_dept[category]
    brand = department * BRANDS_PER_DEPARTMENT + _zipf_choice(rng, BRANDS_PER_DEPARTMENT, n, 0.8)

    base_price = rng.normal(4.0, 1.0, size=len(cats))
    materials = attribute_values("material")
    material_shift = np.array([MATERIAL_PRICE.get(m, 0.0) for m in materials])
    brand_tier = rng.normal(0.0, 0.3, size=len(brand_names))
    log_price = (
        base_price[category]
        + material_shift[attributes[:, 1]]
        + brand_tier[brand]
        + rng.normal(0.0, 0.4, size=n)
    )
    price = np.round(np.exp(log_price), 2)
    mean = np.bincount(category, weights=log_price) / np.bincount(category)
    sq = np.bincount(category, weights=log_price**2) / np.bincount(category)
    std = np.sqrt(np.maximum(sq - mean**2, 1e-6))
    price_z = (log_price - mean[category]) / std[category]

    popularity = rng.normal(0.0, 1.0, size=n)
    launch_day = np.where(
        rng.random(n) < config.new_item_share, rng.integers(1, config.n_days, size=n), 0
    )
    end_day = np.full(n, config.n_days)
    if config.item_lifetime_days > 0:
        lifetime = np.ceil(rng.exponential(config.item_lifetime_days, size=n)).astype(np.int64)
        end_day = np.minimum(launch_day + np.maximum(lifetime, 1), config.n_days)
    titles = _titles(config, rng, cats, category, brand, attributes, brand_names)
    catalogue = Catalogue(
        cats, departments, tuple(brand_names), category, cat_kind[category],
        department, brand,
        attributes, price, popularity, price_z, launch_day, end_day, titles,
    )  # fmt: skip
    return catalogue, queries


def _zipf_choice(rng: np.random.Generator, n: int, size: int, exponent: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** exponent
    return rng.choice(n, size=size, p=p / p.sum())


def _titles(config, rng, cats, category, brand, attributes, brand_names) -> list[str]:
    values = [attribute_values(k) for k in ATTRIBUTE_KINDS]
    shown = rng.random(attributes.shape) < config.title_attribute_rate
    template = rng.integers(3, size=category.size)
    codes = rng.integers(100, 10_000, size=category.size)
    letters = rng.integers(0, 26, size=category.size)
    titles = []
    for i in range(category.size):
        color, material, style = (
            _surface(kind, values[k][attributes[i, k]], rng, config.synonym_rate)
            if shown[i, k]
            else ""
            for k, kind in enumerate(ATTRIBUTE_KINDS)
        )
        noun = _noun(cats[category[i]], rng, config.synonym_rate)
        b = brand_names[brand[i]]
        model = f"{chr(65 + letters[i])}-{codes[i]}"
        if template[i] == 0:
            words = [b, style, color, material, noun, model]
        elif template[i] == 1:
            words = [b, noun, "-", color, material + ("," if style else ""), style]
        else:
            words = [style, material, noun, "in " + color if color else "", "by", b]
        titles.append(" ".join(w for w in words if w))
    return titles


def _build_queries(config, rng, cats, cat_dept, cat_kind, palettes, brand_names) -> QueryPool:
    values = [attribute_values(k) for k in ATTRIBUTE_KINDS]
    texts: dict[str, tuple[int, list[int], int, bool]] = {}
    real = [(q, c) for c, cat in enumerate(cats) for q in cat.queries]
    order = rng.permutation(len(real))[: config.n_queries]
    for i in order:
        text, c = " ".join(real[i][0].split()), real[i][1]
        stated = parse_attributes(text)
        attrs = [values[k].index(stated[kind]) if kind in stated else -1
                 for k, kind in enumerate(ATTRIBUTE_KINDS)]  # fmt: skip
        texts.setdefault(text.lower(), (c, attrs, -1, True))
    # Generated variants: a head noun with some stated attributes (and sometimes a brand).
    templates = ((), (0,), (1,), (2,), (0, 1), (2, 0), (0, 2, 1))
    n_new = new_queries_per_day(config) * (config.n_days - 1)
    target = config.n_queries + n_new
    attempts = 0
    while len(texts) < target and attempts < 20 * target:
        attempts += 1
        c = int(rng.integers(len(cats)))
        cat = cats[c]
        chosen = templates[int(rng.integers(len(templates)))]
        attrs = [-1, -1, -1]
        words = []
        for k in chosen:
            palette = palettes[c][k]
            attrs[k] = int(palette[rng.integers(len(palette))])
            words.append(
                _surface(ATTRIBUTE_KINDS[k], values[k][attrs[k]], rng, config.synonym_rate)
            )
        brand = -1
        if rng.random() < 0.15:
            brand = int(cat_dept[c]) * BRANDS_PER_DEPARTMENT + int(rng.integers(3))
            words.insert(0, brand_names[brand].lower())
        words.append(_noun(cat, rng, config.synonym_rate))
        words = [_misspell(w, rng) if rng.random() < config.typo_rate else w for w in words]
        texts.setdefault(" ".join(words), (c, attrs, brand, False))
    text = list(texts)
    category = np.array([texts[t][0] for t in text])
    attributes = np.array([texts[t][1] for t in text]).reshape(-1, 3)
    brand = np.array([texts[t][2] for t in text])
    is_real = np.array([texts[t][3] for t in text])
    # The last generated queries are new ones, first issued on days 1..n_days-1 in turn.
    n_new = min(n_new, int((~is_real).sum()))
    birth_day = np.zeros(len(text), dtype=np.int64)
    if n_new:
        birth_day[len(text) - n_new :] = 1 + np.arange(n_new) % (config.n_days - 1)
    # Short, clean queries tend to be the head of the popularity curve; new ones join its tail.
    specificity = (attributes >= 0).sum(1) + (brand >= 0) + rng.random(len(text)) * 2.0
    specificity += 10.0 * (birth_day > 0)
    rank = np.empty(len(text), dtype=np.int64)
    rank[np.argsort(specificity, kind="stable")] = np.arange(len(text))
    weight = 1.0 / (rank + HEAD_FLATTENING) ** config.query_zipf
    return QueryPool(
        text, category, cat_kind[category], cat_dept[category], attributes, brand,
        weight / weight.sum(), is_real, birth_day,
    )  # fmt: skip


def true_grade(
    catalogue: Catalogue, queries: QueryPool, query: np.ndarray, item: np.ndarray
) -> np.ndarray:
    """ESCI grade (0-3) of each (query, item) pair; arrays broadcast against each other."""
    same_category = queries.category[query] == catalogue.category[item]
    same_kind = queries.kind[query] == catalogue.kind[item]
    same_department = queries.department[query] == catalogue.department[item]
    match = np.ones(np.broadcast_shapes(np.shape(query), np.shape(item)), dtype=bool)
    for k in range(3):
        wanted = queries.attributes[query, k]
        match &= (wanted < 0) | (wanted == catalogue.attributes[item, k])
    wanted = queries.brand[query]
    match &= (wanted < 0) | (wanted == catalogue.brand[item])
    grade = np.where(
        same_category & match, 3, np.where(same_kind, 2, np.where(same_department, 1, 0))
    )
    return grade.astype(np.int8)
