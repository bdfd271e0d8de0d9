"""The real vocabulary a simulated world is built from.

Categories and their query strings come from real search logs shipped in
``prectr/data/resources``: the 480 WANDS (Wayfair) queries with their product class, and the
ESCI (Amazon) queries whose head noun names a product type listed in :data:`ESCI_TYPES`. Each
category gets head nouns (from its class name, with synonyms) and a department; categories of one
department complement each other (ESCI's "C": a sofa for a query about cushions).

Attributes (colour, material, style) are a hand-written lexicon of the words these queries use,
each canonical value with its synonyms and the abbreviations seen in the real queries ("blk").
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

ATTRIBUTE_KINDS = ("color", "material", "style")

LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "color": {
        "black": ("blk", "ebony"),
        "white": ("wht", "ivory"),
        "grey": ("gray", "charcoal"),
        "blue": ("navy",),
        "red": ("burgundy",),
        "green": ("sage", "olive"),
        "brown": ("espresso", "walnut finish"),
        "beige": ("tan", "cream"),
        "gold": ("golden",),
        "silver": ("chrome",),
        "pink": ("blush",),
        "yellow": ("mustard",),
        "turquoise": ("teal", "aqua"),
        "orange": ("rust",),
        "purple": ("lavender",),
        "clear": ("transparent",),
    },
    "material": {
        "wood": ("wooden", "solid wood"),
        "metal": ("iron", "steel"),
        "glass": ("tempered glass",),
        "leather": ("faux leather",),
        "velvet": ("velour",),
        "linen": ("flax",),
        "cotton": ("organic cotton",),
        "marble": ("faux marble",),
        "rattan": ("wicker",),
        "acrylic": ("lucite",),
        "ceramic": ("porcelain",),
        "brass": ("bronze",),
        "plastic": ("resin",),
        "stone": ("concrete",),
    },
    "style": {
        "modern": ("contemporary",),
        "rustic": ("farmhouse",),
        "industrial": ("loft",),
        "mid century": ("mid-century", "midcentury"),
        "traditional": ("classic",),
        "boho": ("bohemian",),
        "coastal": ("nautical",),
        "glam": ("glamorous",),
        "scandinavian": ("nordic",),
        "minimalist": ("minimal",),
    },
}

NOUN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "sofa": ("couch", "settee"),
    "sectional": ("l shaped couch",),
    "area rug": ("carpet", "rug"),
    "rug": ("carpet",),
    "dresser": ("chest of drawers",),
    "nightstand": ("bedside table",),
    "ottoman": ("pouf",),
    "recliner": ("reclining chair",),
    "accent chair": ("armchair",),
    "bar stool": ("counter stool",),
    "table lamp": ("desk lamp",),
    "pendant light": ("hanging light",),
    "chandelier": ("ceiling light",),
    "curtain": ("drape",),
    "bookcase": ("bookshelf",),
    "desk": ("writing table",),
    "office chair": ("desk chair",),
    "trash can": ("garbage can",),
    "planter": ("flower pot",),
    "vanity": ("bathroom cabinet",),
    "headboard": ("bed head",),
    "wall art": ("canvas print",),
    "shoe": ("sneaker",),
    "pant": ("trouser",),
}

# Departments of WANDS product classes: the first rule whose pattern matches the class wins.
DEPARTMENT_RULES: tuple[tuple[str, str], ...] = (
    ("pets", r"\b(dog|cat|pet|bird)\b"),
    ("kids", r"\b(kids|crib|ride-on|playhouses?|swing set)\b"),
    ("bath", r"\b(bath|shower|tub|tubs|vanity bases|vanities|toilet|towel|sauna|bathroom)"),
    (
        "outdoor",
        r"\b(outdoor|patio|garden|fencing|pergolas|awnings|deck|planters|landscape|lawn|"
        r"mailboxes|fountains|log|uniters|weather)\b",
    ),
    (
        "kitchen & dining",
        r"\b(kitchen|dining|cookware|cooking|bread|canisters|food|plates|serving|flatware|"
        r"glassware|bars?|strainers|crock|espresso|refrigerators|range|sideboards|"
        r"picnic)\b",
    ),
    (
        "bedroom",
        r"\b(beds?|bedding|headboards|daybeds|mattress|mattresses|sheets|nightstands|"
        r"dressers|armoires|jewelry|makeup)\b",
    ),
    ("lighting", r"\b(light|lighting|lights|lamps?|chandeliers|pendant|sconces|fans|shades)\b"),
    (
        "office",
        r"\b(office|desks|chairmats|computer|lecterns|memo|projector|folding)\b",
    ),
    (
        "storage",
        r"\b(storage|organizer|shelving|boxes|hampers|laundry|shoe|coat|trash|carts|pantry)\b",
    ),
    (
        "hardware & appliances",
        r"\b(knobs|pulls|doors?|levers|hardware|molding|tile|plates|smoke|dryers|washing)\b",
    ),
    ("fitness", r"\b(weights|bike|sport)\b"),
    (
        "decor",
        r"\b(wall|pillows|rugs?|mats|curtains?|decorative|candle|vases|faux|picture|wreaths|"
        r"christmas|wallpaper|clocks|mirrors|trays|licensed)\b",
    ),
)
DEFAULT_DEPARTMENT = "living room"

# ESCI queries are kept when a word of theirs names one of these product types.
ESCI_TYPES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # keyword: (category, department, head nouns)
    "pants": ("Pants", "apparel", ("pant", "trouser")),
    "leggings": ("Pants", "apparel", ("legging",)),
    "dress": ("Dresses", "apparel", ("dress",)),
    "skirts": ("Dresses", "apparel", ("skirt",)),
    "shoes": ("Shoes", "apparel", ("shoe",)),
    "heels": ("Shoes", "apparel", ("heel",)),
    "sandals": ("Shoes", "apparel", ("sandal",)),
    "flops": ("Shoes", "apparel", ("flip flop",)),
    "clogs": ("Shoes", "apparel", ("clog",)),
    "slippers": ("Slippers", "apparel", ("slipper",)),
    "hoodie": ("Tops", "apparel", ("hoodie", "sweatshirt")),
    "tshirt": ("Tops", "apparel", ("tshirt", "tee")),
    "shirt": ("Tops", "apparel", ("shirt",)),
    "sweaters": ("Tops", "apparel", ("sweater",)),
    "socks": ("Socks", "apparel", ("sock",)),
    "belts": ("Belts", "apparel", ("belt",)),
    "belt": ("Belts", "apparel", ("belt",)),
    "bra": ("Swim & Underwear", "apparel", ("bra",)),
    "bikini": ("Swim & Underwear", "apparel", ("bikini", "swimsuit")),
    "tankini": ("Swim & Underwear", "apparel", ("tankini", "swimsuit")),
    "drill": ("Power Tools", "tools", ("drill",)),
    "bandsaw": ("Power Tools", "tools", ("bandsaw", "saw")),
    "screwdriver": ("Hand Tools", "tools", ("screwdriver",)),
    "tool": ("Hand Tools", "tools", ("tool",)),
    "tools": ("Hand Tools", "tools", ("tool",)),
    "earbuds": ("Headphones", "electronics", ("earbud", "earphone")),
    "airpods": ("Headphones", "electronics", ("earbud", "airpod")),
    "microphone": ("Audio", "electronics", ("microphone", "mic")),
    "thermostat": ("Smart Home", "electronics", ("thermostat",)),
    "shampoo": ("Hair Care", "beauty", ("shampoo",)),
    "wigs": ("Hair Care", "beauty", ("wig",)),
    "wash": ("Skin Care", "beauty", ("face wash", "cleanser")),
    "cream": ("Skin Care", "beauty", ("cream", "lotion")),
    "makeup": ("Makeup", "beauty", ("makeup",)),
    "nail": ("Makeup", "beauty", ("nail kit",)),
    "game": ("Games", "toys & games", ("game", "board game")),
    "lego": ("Building Toys", "toys & games", ("lego set", "building set")),
    "cars": ("Toy Vehicles", "toys & games", ("rc car",)),
    "treats": ("Pet Food", "pets", ("treat",)),
    "bones": ("Pet Food", "pets", ("chew bone",)),
    "collar": ("Dog and Cat Bowls, Feeders & Accessories", "pets", ("collar",)),
    "bowl": ("Dog and Cat Bowls, Feeders & Accessories", "pets", ("bowl",)),
    "pillows": ("Accent Pillows", "decor", ("pillow",)),
    "fan": ("Ceiling Fans", "lighting", ("ceiling fan",)),
    "tray": ("Decorative Trays", "decor", ("tray",)),
    "glasses": ("Glassware & Barware", "kitchen & dining", ("wine glass",)),
    "basket": ("Picnic Baskets & Coolers", "kitchen & dining", ("picnic basket",)),
    "towels": ("Dining Linens", "kitchen & dining", ("kitchen towel",)),
    "mattress": ("Foam and Latex Mattresses", "bedroom", ("mattress",)),
}

_PLURAL_RULES = ((r"ies$", "y"), (r"(ch|sh|x|ss)es$", r"\1"), (r"([^s])s$", r"\1"))


def singular(word: str) -> str:
    for pattern, repl in _PLURAL_RULES:
        if re.search(pattern, word):
            return re.sub(pattern, repl, word)
    return word


def class_nouns(name: str) -> tuple[str, ...]:
    """Head nouns of a product class: "Coffee & Cocktail Tables" -> coffee table, cocktail table."""
    parts = [p.strip() for p in re.split(r"\s*(?:&|,|/|\band\b)\s*", name.lower()) if p.strip()]
    last = parts[-1].split()
    nouns = []
    for part in parts:
        words = part.split()
        if len(words) == 1 and len(last) > 1 and part != parts[-1] and not part.endswith("s"):
            words = [*words, last[-1]]
        nouns.append(" ".join([*words[:-1], singular(words[-1])]))
    return tuple(dict.fromkeys(nouns))


def department_of(category: str) -> str:
    lowered = category.lower()
    for department, pattern in DEPARTMENT_RULES:
        if re.search(pattern, lowered):
            return department
    return DEFAULT_DEPARTMENT


@dataclass(frozen=True)
class Category:
    name: str
    department: str
    nouns: tuple[str, ...]
    queries: tuple[str, ...]  # real query strings of this category

    @property
    def kind(self) -> str:
        """The product kind: the last word of the main head noun ("coffee table" -> "table").
        Categories of one kind substitute for each other (a dining chair for an office chair)."""
        return self.nouns[0].split()[-1]

    def noun_forms(self) -> tuple[str, ...]:
        """Every surface form of the category's head nouns, the usual word first."""
        forms = [n for noun in self.nouns for n in (noun, *NOUN_SYNONYMS.get(noun, ()))]
        return tuple(dict.fromkeys(forms))


def _resource(*parts: str):
    return resources.files("prectr.data.resources").joinpath(*parts)


@cache
def wands_queries() -> tuple[tuple[str, str], ...]:
    """(query, product class) for the WANDS queries that name a class."""
    with _resource("wands", "query.csv").open(encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t")
        return tuple(
            (r["query"].strip(), r["query_class"].strip()) for r in rows if r["query_class"]
        )


@cache
def esci_queries() -> tuple[str, ...]:
    data = json.loads(_resource("esci", "esci_us_queryset.json").read_text(encoding="utf-8"))
    return tuple(q["queryText"].strip().strip('\u201d"') for q in data["querySetQueries"])


@cache
def esci_grade_shares() -> dict[int, float]:
    """Share of each grade (0-3) among the real judged ESCI (query, product) pairs."""
    data = json.loads(_resource("esci", "esci_us_judgments.json").read_text(encoding="utf-8"))
    grade = {"100.000": 3, "10.000": 2, "1.000": 1, "0.000": 0}
    counts = [0, 0, 0, 0]
    for entry in data["judgmentRatings"]:
        for rating in entry["ratings"]:
            counts[grade[rating["rating"]]] += 1
    total = sum(counts)
    return {g: c / total for g, c in enumerate(counts)}


def esci_type(query: str) -> tuple[str, str, tuple[str, ...]] | None:
    """The product type of an ESCI query: its last known head noun, ignoring negated words."""
    wanted = re.split(r"\b(?:without|not)\b", query.lower())[0]
    found = [w for w in re.findall(r"[a-z0-9]+", wanted) if w in ESCI_TYPES]
    return ESCI_TYPES[found[-1]] if found else None


@cache
def categories() -> tuple[Category, ...]:
    """All categories with their department, head nouns and real queries, in a stable order."""
    queries: dict[str, list[str]] = {}
    meta: dict[str, tuple[str, tuple[str, ...]]] = {}
    for query, cls in wands_queries():
        queries.setdefault(cls, []).append(query)
        meta.setdefault(cls, (department_of(cls), class_nouns(cls)))
    for query in esci_queries():
        found = esci_type(query)
        if found is None:
            continue
        cls, department, nouns = found
        queries.setdefault(cls, []).append(query)
        known = meta.get(cls, (department, ()))[1]
        meta[cls] = (department, tuple(dict.fromkeys((*known, *nouns))))
    return tuple(
        Category(cls, meta[cls][0], meta[cls][1], tuple(queries[cls])) for cls in sorted(queries)
    )


@cache
def attribute_forms() -> dict[str, tuple[str, str]]:
    """Every surface form of an attribute value -> (kind, canonical value)."""
    forms = {}
    for kind, values in LEXICON.items():
        for canonical, variants in values.items():
            for form in (canonical, *variants):
                forms[form] = (kind, canonical)
    return forms


def parse_attributes(text: str) -> dict[str, str]:
    """The attribute constraints a query states: longest surface forms first, one per kind."""
    words = re.findall(r"[a-z0-9\-]+", text.lower())
    forms = attribute_forms()
    found: dict[str, str] = {}
    i = 0
    while i < len(words):
        for n in (3, 2, 1):
            phrase = " ".join(words[i : i + n])
            if len(words[i : i + n]) == n and phrase in forms:
                kind, value = forms[phrase]
                found.setdefault(kind, value)
                i += n
                break
        else:
            i += 1
    return found
