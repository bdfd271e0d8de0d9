"""Load JDsearch (Liu et al., SIGIR 2023) into a :class:`~prectr.data.schema.SearchLog`.

JDsearch ships two tab-separated text files, each optionally starting with its header line:

* the behaviour file (``release_data.txt``; ``user_behavior_data_sample.txt`` in the sample),
  one user per line: ``query, candidate_wid_list, candidate_label_list, history_qry_list,
  history_wid_list, history_type_list, history_time_list``;
* the product file (``product_data.txt``; ``product_meta_data_sample.txt``): ``wid, name,
  brand_id, brand_name, cate_id_1..4, cate_name_1..4, shop_id``.

List fields are ``_``-separated; text fields (queries, names) are anonymised term ids joined
by ``\\x18``, which this loader joins by spaces instead. Mapping and its choices:

* ``user_id`` is the user's line number in the behaviour file.
* The line's test search is one request: its candidates at positions 1..n in list order, with
  ``click`` 1 when the label is >= 1 (click, add-to-cart and purchase all imply a click).
* The history interactions, grouped by (query, time), are the user's earlier requests. They hold
  only the interacted items (all ``click`` 1, no unclicked exposures: JDsearch logs none), at
  positions 1..m in logged order. JDsearch logs no rank for them, so these positions are
  synthetic. An item met twice in one such request is one impression.
* Query-less history interactions (query ``-1``: not from a search) are kept, with query ``""``,
  because they still belong to the user's history; they are not search requests to rank.
* Times: ``history_time_list`` holds seconds since the previous behaviour (its first entry is 0
  and its last is the gap to the test search; seconds, since the sample's users then span about
  a year, with clicks seconds apart). JDsearch gives no dates, so every user's test
  search is placed at :data:`JDSEARCH_ANCHOR` (arbitrary) and the history at the logged gaps
  before it; the gap to the test search counts as at least 1 ms, so the history strictly
  precedes it. Across users the times are therefore only aligned on the test search.
* Items: every product of the product file, ``title`` = ``name``, ``brand`` = ``brand_name``
  (null when empty), ``category`` = the deepest non-empty ``cate_name_*`` (else
  :data:`UNKNOWN_CATEGORY`), ``price`` null. A product used by the behaviour file but missing
  from the product file (JDsearch says some are) gets ``title`` = its wid and ``category`` =
  :data:`UNKNOWN_CATEGORY`; the extra column ``has_metadata`` is false for those.
* ``relevance`` is null: JDsearch has no relevance grades.
* Extra columns: ``requests.from_history`` (true for requests rebuilt from the history lists)
  and ``impressions.interaction`` (``click``, ``follow``, ``cart``, ``purchase``: the strongest
  logged interaction with the item in the request; null for a candidate not interacted with).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pyarrow as pa

from prectr.data.schema import SchemaError, SearchLog
from prectr.words import count

BEHAVIOUR_FIELDS = (
    "query",
    "candidate_wid_list",
    "candidate_label_list",
    "history_qry_list",
    "history_wid_list",
    "history_type_list",
    "history_time_list",
)
PRODUCT_FIELDS = (
    "wid",
    "name",
    "brand_id",
    "brand_name",
    "cate_id_1",
    "cate_name_1",
    "cate_id_2",
    "cate_name_2",
    "cate_id_3",
    "cate_name_3",
    "cate_id_4",
    "cate_name_4",
    "shop_id",
)
CATEGORY_NAMES = ("cate_name_4", "cate_name_3", "cate_name_2", "cate_name_1")  # deepest first
JDSEARCH_ANCHOR = dt.datetime(2023, 1, 1)  # arbitrary time of every user's test search
UNKNOWN_CATEGORY = "unknown"
QUERYLESS = "-1"
TERM_SEPARATOR = "\x18"
LABELS = {0: None, 1: "click", 2: "cart", 3: "purchase"}  # candidate_label_list
HISTORY_TYPES = {"CLICK": "click", "FLW": "follow", "CART": "cart", "ORD": "purchase"}
STRENGTH = (None, "click", "follow", "cart", "purchase")  # weakest first
REQUESTS = pa.schema(
    [
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("query", pa.string()),
        ("timestamp", pa.timestamp("ms")),
        ("from_history", pa.bool_()),
    ]
)
IMPRESSIONS = pa.schema(
    [
        ("request_id", pa.int64()),
        ("item_id", pa.string()),
        ("position", pa.int32()),
        ("click", pa.int8()),
        ("interaction", pa.string()),
    ]
)
_ANCHOR_MS = int(JDSEARCH_ANCHOR.replace(tzinfo=dt.UTC).timestamp()) * 1000
T = TypeVar("T")


@dataclass
class _Request:
    """One request being rebuilt: its items in shown order, each with its interaction."""

    query: str
    time_ms: int
    from_history: bool
    interactions: dict[str, str | None] = field(default_factory=dict)

    def add(self, wid: str, interaction: str | None) -> None:
        """Add ``wid`` at the next position, or strengthen its interaction if already there."""
        known = self.interactions.get(wid)
        self.interactions[wid] = max(known, interaction, key=STRENGTH.index)


def load_jdsearch(behavior_path: str | Path, products_path: str | Path) -> SearchLog:
    """Map a JDsearch behaviour file and its product file into a search log.

    Raises :class:`ValueError` naming the file, line and field of malformed input, and
    :class:`~prectr.data.schema.SchemaError` if the result breaks the schema.
    """
    requests: dict[str, list] = {name: [] for name in REQUESTS.names}
    impressions: dict[str, list] = {name: [] for name in IMPRESSIONS.names}
    for line_no, line in _records(Path(behavior_path), BEHAVIOUR_FIELDS):
        for request in _user_requests(Path(behavior_path), line_no, line):
            request_id = len(requests["request_id"])
            requests["request_id"].append(request_id)
            requests["user_id"].append(line_no)
            requests["query"].append(request.query)
            requests["timestamp"].append(request.time_ms)
            requests["from_history"].append(request.from_history)
            for position, (wid, interaction) in enumerate(request.interactions.items(), 1):
                impressions["request_id"].append(request_id)
                impressions["item_id"].append(wid)
                impressions["position"].append(position)
                impressions["click"].append(int(interaction is not None))
                impressions["interaction"].append(interaction)
    shown = pa.table(impressions, schema=IMPRESSIONS)
    log = SearchLog(
        items=_items(Path(products_path), set(impressions["item_id"])),
        requests=pa.table(requests, schema=REQUESTS),
        impressions=shown.append_column(
            "relevance", pa.nulls(shown.num_rows, pa.int8())
        ).append_column("relevance_source", pa.nulls(shown.num_rows, pa.string())),
    )
    try:
        return log.check()
    except SchemaError as err:
        what = f"JDsearch log from {behavior_path} and {products_path}"
        raise SchemaError(err.problems, what=what) from None


def _records(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {field: value}) for each data line; a first line naming the fields is the
    header and skipped, and empty lines are skipped."""
    with path.open(encoding="utf-8", newline="\n") as lines:
        for line_no, line in enumerate(lines, 1):
            values = line.rstrip("\r\n").split("\t")
            if line_no == 1 and tuple(values) == fields:
                continue
            if values == [""]:
                continue
            if len(values) != len(fields):
                raise ValueError(
                    f"{path}, line {line_no}: {len(values)} tab-separated fields, "
                    f"expected {len(fields)} ({', '.join(fields)})"
                )
            yield line_no, dict(zip(fields, values, strict=True))


def _text(terms: str) -> str:
    return terms.replace(TERM_SEPARATOR, " ")


def _list(value: str) -> list[str]:
    return value.split("_") if value else []


def _user_requests(path: Path, line_no: int, line: dict[str, str]) -> list[_Request]:
    """The user's history requests in time order, then the test search."""
    where = f"{path}, line {line_no}"
    lists = {name: _list(line[name]) for name in BEHAVIOUR_FIELDS[1:]}
    for name in ("candidate_wid_list", "history_wid_list"):
        if "" in lists[name]:
            raise ValueError(f"{where}, {name} entry {lists[name].index('') + 1}: empty wid")
    candidates, labels = lists["candidate_wid_list"], lists["candidate_label_list"]
    if len(candidates) != len(labels):
        raise ValueError(
            f"{where}: candidate_wid_list has {count(len(candidates), 'entry', 'entries')} "
            f"but candidate_label_list has {len(labels)}"
        )
    queries, wids, types = (lists[f"history_{k}_list"] for k in ("qry", "wid", "type"))
    gaps = lists["history_time_list"]
    for name, values in (("history_wid_list", wids), ("history_type_list", types)):
        if len(values) != len(queries):
            raise ValueError(
                f"{where}: history_qry_list has {count(len(queries), 'entry', 'entries')} but "
                f"{name} has {len(values)}"
            )
    if len(gaps) != len(queries) + 1:
        raise ValueError(
            f"{where}: history_time_list has {count(len(gaps), 'entry', 'entries')}, expected "
            "one more than the "
            f"{len(queries)} of history_qry_list (its last is the gap to the test search)"
        )
    seconds = [_entry(where, "history_time_list", i, g, _gap) for i, g in enumerate(gaps)]
    time_ms = _ANCHOR_MS - max(seconds[-1] * 1000, 1)
    event_ms = [0] * len(queries)
    for i in reversed(range(len(queries))):
        event_ms[i] = time_ms
        time_ms -= seconds[i] * 1000
    history: dict[tuple[str, int], _Request] = {}
    for i, (query, wid, kind) in enumerate(zip(queries, wids, types, strict=True)):
        interaction = _entry(where, "history_type_list", i, kind, HISTORY_TYPES.__getitem__)
        text = "" if query == QUERYLESS else _text(query)
        request = history.setdefault((text, event_ms[i]), _Request(text, event_ms[i], True))
        request.add(wid, interaction)
    test = _Request(_text(line["query"]), _ANCHOR_MS, False)
    for i, (wid, label) in enumerate(zip(candidates, labels, strict=True)):
        if wid in test.interactions:
            raise ValueError(f"{where}: candidate_wid_list repeats wid {wid} (entry {i + 1})")
        test.add(wid, _entry(where, "candidate_label_list", i, label, _label))
    return [*sorted(history.values(), key=lambda r: r.time_ms), test]


def _entry(where: str, name: str, index: int, value: str, parse: Callable[[str], T]) -> T:
    """``parse(value)``, or a ValueError naming the line, field and entry."""
    try:
        return parse(value)
    except (KeyError, ValueError):
        raise ValueError(f"{where}, {name} entry {index + 1}: unexpected value {value!r}") from None


def _gap(value: str) -> int:
    seconds = int(value)
    if seconds < 0:
        raise ValueError(value)
    return seconds


def _label(value: str) -> str | None:
    grade = float(value)
    if not grade.is_integer():
        raise ValueError(value)
    return LABELS[int(grade)]


def _items(path: Path, used: set[str]) -> pa.Table:
    """The product file's products, then placeholders for used wids it lacks."""
    columns: dict[str, list] = {k: [] for k in ("item_id", "title", "category", "brand")}
    first_line: dict[str, int] = {}
    for line_no, product in _records(path, PRODUCT_FIELDS):
        wid = product["wid"]
        if wid in first_line:
            raise ValueError(f"{path}, line {line_no}: wid {wid} repeats line {first_line[wid]}")
        first_line[wid] = line_no
        category = next((product[c] for c in CATEGORY_NAMES if product[c]), None)
        columns["item_id"].append(wid)
        columns["title"].append(_text(product["name"]))
        columns["category"].append(UNKNOWN_CATEGORY if category is None else _text(category))
        columns["brand"].append(_text(product["brand_name"]) or None)
    missing = sorted(used - first_line.keys())
    columns["item_id"] += missing
    columns["title"] += missing
    columns["category"] += [UNKNOWN_CATEGORY] * len(missing)
    columns["brand"] += [None] * len(missing)
    columns["has_metadata"] = [True] * len(first_line) + [False] * len(missing)
    table = pa.table(columns)
    return table.add_column(4, "price", pa.nulls(table.num_rows, pa.float64()))
