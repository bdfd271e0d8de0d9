"""A human-graded query-title set as a user brings one (no simulator, no behaviour): written the
way `prectr load esci` writes ESCI, one request per query id, every request at one instant,
nothing shown or clicked, every candidate graded by a human."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pyarrow as pa

from prectr.data.schema import SearchLog

INSTANT = datetime(2022, 1, 1)


def graded_log(out: Path, judgments: list[tuple[str, str, int]]) -> Path:
    """Write ``(query, title, grade)`` judgments as a log in ``out``: one request per distinct
    query text in order of appearance, one item per judgment (two judgments of one title are
    two items with that title, as two products may be)."""
    queries = list(dict.fromkeys(q for q, _, _ in judgments))
    n = len(judgments)
    log = SearchLog(
        items=pa.table({
            "item_id": [f"i{k}" for k in range(n)], "title": [t for _, t, _ in judgments],
            "category": ["unknown"] * n, "brand": pa.nulls(n, pa.string()),
            "price": pa.nulls(n, pa.float64()),
        }),
        requests=pa.table({
            "request_id": [f"q{k}" for k in range(len(queries))],
            "user_id": ["anonymous"] * len(queries),
            "query": queries, "timestamp": pa.array([INSTANT] * len(queries), pa.timestamp("ms")),
        }),
        impressions=pa.table({
            "request_id": [f"q{queries.index(q)}" for q, _, _ in judgments],
            "item_id": [f"i{k}" for k in range(n)],
            "position": pa.nulls(n, pa.int32()), "click": pa.nulls(n, pa.int8()),
            "relevance": pa.array([g for _, _, g in judgments], pa.int8()),
            "relevance_source": ["human"] * n,
        }),
    )  # fmt: skip
    return log.write(out)


def shop_judgments(n_queries: int = 60) -> list[tuple[str, str, int]]:
    """Judgments where the grade follows the words a title shares with its query: per query an
    exact title (3), one sharing one word (2 or 1) and an unrelated one (0)."""
    colours = ("red", "blue", "green", "black", "white", "grey")
    things = ("kettle", "lamp", "chair", "tent", "watch", "boot", "desk", "mug", "sofa", "bag")
    out = []
    for k in range(n_queries):
        colour, thing = colours[k % len(colours)], things[(k // len(colours)) % len(things)]
        other = things[(k // len(colours) + 3) % len(things)]
        query = f"{colour} {thing} {k}"
        out += [(query, f"{colour} {thing} model {k}", 3),
                (query, f"{thing} for home {k % 4}", 2 if k % 2 else 1),
                (query, f"{colours[(k + 2) % len(colours)]} {other} {k + 1000}", 0)]  # fmt: skip
    return out
