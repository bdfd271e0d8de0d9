"""A search log made from scratch, as a user of the library would bring their own: no simulator,
only the schema (README, "Your own logs").

A small shop: items in categories whose titles carry the category's word, queries that name a
category, requests over 14 days, a pool of candidates per request of which the top few by a
noisy logging ranker are shown, clicks that favour items of the query's category, and human
grades on a sample of the candidates.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from prectr.data.schema import SearchLog

CATEGORIES = ("shoes", "lamps", "chairs", "kettles", "tents", "watches")
MODIFIERS = ("red", "small", "wooden", "steel", "cheap", "vintage")
POOL = 12
SHOWN = 6
#: Click probability at the top position by grade (0 irrelevant, 2 same category, 3 also the
#: query's modifier), falling with the position.
CLICK_RATE = (0.01, 0.01, 0.25, 0.45)


def own_log(
    out: Path,
    requests: int = 3000,
    days: int = 14,
    seed: int = 0,
    query_category: bool = True,
) -> Path:
    """Write the log into ``out`` (validated by :meth:`SearchLog.write`) and return it."""
    rng = np.random.default_rng(seed)
    n_items = 240
    category = rng.integers(len(CATEGORIES), size=n_items)
    modifier = rng.integers(len(MODIFIERS), size=n_items)
    titles = [
        f"{MODIFIERS[m]} {CATEGORIES[c]} model {i}"
        for i, (c, m) in enumerate(zip(category, modifier, strict=True))
    ]
    items = pa.table(
        {
            "item_id": np.arange(n_items, dtype=np.int64) + 1000,
            "title": titles,
            "category": [CATEGORIES[c] for c in category],
            "brand": [f"brand{b}" for b in rng.integers(12, size=n_items)],
            "price": np.round(rng.lognormal(3.0, 0.6, n_items), 2),
        }
    )
    query_cat = rng.integers(len(CATEGORIES), size=requests)
    query_mod = rng.integers(len(MODIFIERS), size=requests)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    seconds = np.sort(rng.integers(days * 86_400, size=requests))
    request_table = {
        "request_id": [f"r{i:05d}" for i in range(requests)],
        "user_id": [f"u{u}" for u in rng.integers(150, size=requests)],
        "query": [
            f"{MODIFIERS[m]} {CATEGORIES[c]}" for c, m in zip(query_cat, query_mod, strict=True)
        ],
        "timestamp": pa.array(
            [start + timedelta(seconds=int(s)) for s in seconds], pa.timestamp("ms", tz="UTC")
        ),
    }
    if query_category:
        request_table["query_category"] = [CATEGORIES[c] for c in query_cat]
    rows: dict[str, list] = {k: [] for k in ("request_id", "item_id", "position", "click",
                                             "relevance", "relevance_source")}  # fmt: skip
    for r in range(requests):
        same = np.flatnonzero(category == query_cat[r])
        pool = np.unique(np.r_[rng.choice(same, POOL // 2, replace=False),
                               rng.choice(n_items, POOL // 2, replace=False)])  # fmt: skip
        grade = np.where(category[pool] == query_cat[r], 2, 0)
        grade = grade + ((grade == 2) & (modifier[pool] == query_mod[r]))
        order = np.argsort(-(grade + rng.normal(0.0, 1.5, pool.size)), kind="stable")
        position = np.empty(pool.size, dtype=object)
        position[order[:SHOWN]] = np.arange(1, SHOWN + 1)
        graded = rng.random() < 0.2
        for j, item in enumerate(pool):
            shown = position[j] is not None
            p_click = CLICK_RATE[grade[j]] / (1.0 + 0.3 * ((position[j] or 1) - 1))
            rows["request_id"].append(request_table["request_id"][r])
            rows["item_id"].append(int(item) + 1000)
            rows["position"].append(position[j])
            rows["click"].append(int(rng.random() < p_click) if shown else None)
            rows["relevance"].append(int(grade[j]) if graded else None)
            rows["relevance_source"].append("human" if graded else None)
    impressions = pa.table(
        {
            "request_id": rows["request_id"],
            "item_id": pa.array(rows["item_id"], pa.int64()),
            "position": pa.array(rows["position"], pa.int32()),
            "click": pa.array(rows["click"], pa.int8()),
            "relevance": pa.array(rows["relevance"], pa.int8()),
            "relevance_source": rows["relevance_source"],
        }
    )
    return SearchLog(items, pa.table(request_table), impressions).write(out)
