"""The ESCI and JDsearch loaders map their real file formats into a valid search log (the graded
pairs loader: tests/data/test_pairs_loader.py)."""

from __future__ import annotations

import datetime as dt
import json
from importlib.resources import files
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prectr.data.loaders import LOADERS, load_esci, load_jdsearch
from prectr.data.loaders.esci import ESCI_TIMESTAMP
from prectr.data.loaders.jdsearch import JDSEARCH_ANCHOR
from prectr.data.schema import SchemaError, read_log

JD_SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "jdsearch_sample"
X = "\x18"  # JDsearch's term separator

# --- ESCI -----------------------------------------------------------------------------------

EXAMPLES = [  # example_id, query, query_id, product_id, product_locale, esci_label, split
    (0, "red mug", 1, "B001", "us", "E", "train"),
    (1, "red mug", 1, "B002", "us", "S", "train"),
    (2, "red mug", 1, "B003", "us", "C", "train"),
    (3, "tea pot", 2, "B003", "us", "I", "test"),
    (4, "tea pot", 2, "B004", "us", "E", "test"),
    (5, "taza roja", 3, "B001", "es", "E", "train"),
    (6, "taza roja", 3, "B005", "es", "I", "train"),
]
PRODUCTS = [  # product_id, product_title, product_brand, product_locale
    ("B001", "Red Mug", "Acme", "us"),
    ("B002", "Crimson Cup", None, "us"),
    ("B003", None, "Tea Co", "us"),
    ("B004", "Tea Pot", "Tea Co", "us"),
    ("B005", "Teapot Stand", None, "us"),
    ("B001", "Taza roja", "Acme", "es"),
    ("B005", "Tetera", None, "es"),
]


def write_esci(folder: Path, examples=EXAMPLES, products=PRODUCTS) -> tuple[Path, Path]:
    """The two ESCI parquet files, in the real dataset's column layout and types."""
    ex = list(zip(*examples, strict=True))
    pr = list(zip(*products, strict=True))
    n, m = len(examples), len(products)
    examples_path = folder / "shopping_queries_dataset_examples.parquet"
    products_path = folder / "shopping_queries_dataset_products.parquet"
    pq.write_table(
        pa.table(
            {
                "example_id": pa.array(ex[0], pa.int64()),
                "query": pa.array(ex[1], pa.string()),
                "query_id": pa.array(ex[2], pa.int64()),
                "product_id": pa.array(ex[3], pa.string()),
                "product_locale": pa.array(ex[4], pa.string()),
                "esci_label": pa.array(ex[5], pa.string()),
                "small_version": pa.array([1] * n, pa.int64()),
                "large_version": pa.array([1] * n, pa.int64()),
                "split": pa.array(ex[6], pa.string()),
            }
        ),
        examples_path,
    )
    pq.write_table(
        pa.table(
            {
                "product_id": pa.array(pr[0], pa.string()),
                "product_title": pa.array(pr[1], pa.string()),
                "product_description": pa.nulls(m, pa.string()),
                "product_bullet_point": pa.nulls(m, pa.string()),
                "product_brand": pa.array(pr[2], pa.string()),
                "product_color": pa.nulls(m, pa.string()),
                "product_locale": pa.array(pr[3], pa.string()),
            }
        ),
        products_path,
    )
    return examples_path, products_path


def impression_rows(log) -> list[tuple]:
    return [
        (r["request_id"], r["item_id"], r["relevance"], r["example_id"])
        for r in log.impressions.to_pylist()
    ]


def test_esci_maps_each_example_to_a_graded_unexposed_candidate(tmp_path):
    log = load_esci(*write_esci(tmp_path))
    assert log.validate() == []
    assert impression_rows(log) == [
        (1, "B001", 3, 0),
        (1, "B002", 2, 1),
        (1, "B003", 1, 2),
        (2, "B003", 0, 3),
        (2, "B004", 3, 4),
    ]
    imp = log.impressions
    assert imp["position"].null_count == imp["click"].null_count == imp.num_rows
    assert set(imp["relevance_source"].to_pylist()) == {"human"}
    assert imp["split"].to_pylist() == ["train"] * 3 + ["test"] * 2


def test_esci_makes_one_anonymous_request_per_query(tmp_path):
    log = load_esci(*write_esci(tmp_path))
    assert log.requests.to_pylist() == [
        {"request_id": 1, "user_id": "anonymous", "query": "red mug", "timestamp": ESCI_TIMESTAMP},
        {"request_id": 2, "user_id": "anonymous", "query": "tea pot", "timestamp": ESCI_TIMESTAMP},
    ]


def test_esci_items_are_the_judged_products_of_the_locale(tmp_path):
    log = load_esci(*write_esci(tmp_path))
    rows = [(r["item_id"], r["title"], r["category"], r["brand"]) for r in log.items.to_pylist()]
    assert rows == [
        ("B001", "Red Mug", "unknown", "Acme"),
        ("B002", "Crimson Cup", "unknown", None),
        ("B003", "B003", "unknown", "Tea Co"),  # a missing title becomes the product id
        ("B004", "Tea Pot", "unknown", "Tea Co"),
    ]  # B005 is judged only in "es"
    assert log.items["price"].null_count == 4
    assert log.items.column_names[:5] == ["item_id", "title", "category", "brand", "price"]


def test_esci_filters_by_locale_and_split(tmp_path):
    paths = write_esci(tmp_path)
    spanish = load_esci(*paths, locale="es")
    assert impression_rows(spanish) == [(3, "B001", 3, 5), (3, "B005", 0, 6)]
    assert spanish.items["title"].to_pylist() == ["Taza roja", "Tetera"]
    test = load_esci(*paths, split="test")
    assert impression_rows(test) == [(2, "B003", 0, 3), (2, "B004", 3, 4)]
    assert test.requests["request_id"].to_pylist() == [2]
    assert test.items["item_id"].to_pylist() == ["B003", "B004"]


def test_esci_log_writes_and_reads_back(tmp_path):
    log = load_esci(*write_esci(tmp_path))
    back = read_log(log.write(tmp_path / "log"))
    for name in ("items", "requests", "impressions"):
        assert back.table(name).equals(log.table(name)), name


def test_esci_refuses_an_unknown_locale_or_split(tmp_path):
    paths = write_esci(tmp_path)
    with pytest.raises(ValueError, match=r"product_locale 'jp' \(present: \['es', 'us'\]\)"):
        load_esci(*paths, locale="jp")
    with pytest.raises(ValueError, match=r"split 'dev' \(present: \['test', 'train'\]\)"):
        load_esci(*paths, split="dev")


def test_esci_names_the_file_row_and_column_of_a_bad_label(tmp_path):
    examples = [*EXAMPLES]
    examples[2] = (2, "red mug", 1, "B003", "us", "X", "train")
    examples_path, products_path = write_esci(tmp_path, examples=examples)
    with pytest.raises(ValueError) as raised:
        load_esci(examples_path, products_path)
    assert str(raised.value) == (
        f"{examples_path}, column 'esci_label', row 2: 'X' is not one of E, S, C, I"
    )


def test_esci_names_the_file_rows_and_column_of_null_ids(tmp_path):
    examples = [*EXAMPLES]
    examples[4] = (4, "tea pot", 2, None, "us", "E", "test")
    examples_path, products_path = write_esci(tmp_path, examples=examples)
    with pytest.raises(ValueError, match=f"^{examples_path}, column 'product_id', row 4: null$"):
        load_esci(examples_path, products_path)


def test_esci_names_a_missing_column(tmp_path):
    examples_path, products_path = write_esci(tmp_path)
    table = pq.read_table(examples_path).drop_columns(["esci_label"])
    pq.write_table(table, examples_path)
    with pytest.raises(ValueError, match=f"{examples_path}: missing column.s. esci_label"):
        load_esci(examples_path, products_path)


def test_esci_refuses_two_texts_for_one_query_id(tmp_path):
    examples = [*EXAMPLES]
    examples[1] = (1, "red mugs", 1, "B002", "us", "S", "train")
    examples_path, products_path = write_esci(tmp_path, examples=examples)
    with pytest.raises(ValueError, match=r"column 'query', rows 0, 1, 2: query_id 1 has several"):
        load_esci(examples_path, products_path)


def test_esci_example_without_its_product_fails_validation_naming_the_files(tmp_path):
    examples_path, products_path = write_esci(tmp_path, products=PRODUCTS[1:])
    with pytest.raises(SchemaError) as raised:
        load_esci(examples_path, products_path)
    message = str(raised.value)
    assert f"ESCI log from {examples_path} and {products_path}" in message
    assert "impressions, column 'item_id', row 0: names an unknown item_id" in message


def test_esci_grade_mix_of_the_real_judgments(tmp_path):
    """The 6,678 real ESCI judgments (100/10/1/0 ratings) keep their E/S/C/I counts."""
    resource = files("prectr.data.resources") / "esci" / "esci_us_judgments.json"
    judged = json.loads(resource.read_text(encoding="utf-8"))["judgmentRatings"]
    letter = {100.0: "E", 10.0: "S", 1.0: "C", 0.0: "I"}
    examples = [
        (0, q["query"], query_id, r["docId"], "us", letter[float(r["rating"])], "train")
        for query_id, q in enumerate(judged)
        for r in q["ratings"]
    ]
    examples = [(i, *row[1:]) for i, row in enumerate(examples)]
    asins = sorted({row[3] for row in examples})
    log = load_esci(*write_esci(tmp_path, examples, [(a, a, None, "us") for a in asins]))
    assert (log.requests.num_rows, log.impressions.num_rows, log.items.num_rows) == (
        150,
        6678,
        6597,
    )
    grades = log.impressions["relevance"].value_counts().to_pylist()
    assert {g["values"]: g["counts"] for g in grades} == {3: 3389, 2: 1898, 1: 305, 0: 1086}


# --- JDsearch -------------------------------------------------------------------------------

BEHAVIOUR_HEADER = (
    "query\tcandidate_wid_list\tcandidate_label_list\thistory_qry_list\thistory_wid_list"
    "\thistory_type_list\thistory_time_list"
)
PRODUCT_HEADER = (
    "wid\tname\tbrand_id\tbrand_name\tcate_id_1\tcate_name_1\tcate_id_2\tcate_name_2"
    "\tcate_id_3\tcate_name_3\tcate_id_4\tcate_name_4\tshop_id"
)
USER_A = "\t".join(  # line 2: four history requests, then the test search
    [
        f"11{X}12",
        "101_102_103_104",
        "0.0_1.0_3.0_2.0",
        f"21_21_21_-1_22{X}23",
        "201_201_202_203_101",
        "CLICK_ORD_CART_FLW_CLICK",
        "0_0_0_30_60_0",  # seconds since the previous behaviour; the last gap is 0
    ]
)
USER_B = "\t".join(["31", "301_302", "0.0_0.0", "", "", "", "0"])  # line 3: no history
PRODUCTS_TXT = [
    f"101\t1{X}2\t7\t\t1\t5\t2\t6\t3\t7{X}8\t4\t\t9",  # deepest non-empty category: "7 8"
    f"102\t3\t8\t9{X}9\t1\t5\t2\t\t3\t\t4\t\t9",  # only cate_name_1
    "201\t4\t8\t9\t1\t\t2\t\t3\t\t4\t\t9",  # no category at all
]


def write_jd(folder: Path, users=(USER_A, USER_B), header: bool = True) -> tuple[Path, Path]:
    behaviour = folder / "user_behavior_data.txt"
    products = folder / "product_meta_data.txt"
    behaviour.write_text("\n".join([BEHAVIOUR_HEADER] * header + list(users)) + "\n")
    products.write_text("\n".join([PRODUCT_HEADER] * header + PRODUCTS_TXT) + "\n")
    return behaviour, products


def ms_before_anchor(ms: int) -> dt.datetime:
    return JDSEARCH_ANCHOR - dt.timedelta(milliseconds=ms)


@pytest.mark.parametrize("header", [True, False])
def test_jdsearch_rebuilds_history_requests_then_the_test_search(tmp_path, header):
    log = load_jdsearch(*write_jd(tmp_path, header=header))
    assert log.validate() == []
    line_a, line_b = (2, 3) if header else (1, 2)
    assert log.requests.to_pylist() == [
        {
            "request_id": 0,
            "user_id": line_a,
            "query": "21",
            "timestamp": ms_before_anchor(90_001),
            "from_history": True,
        },
        {
            "request_id": 1,
            "user_id": line_a,
            "query": "",  # query-less interaction
            "timestamp": ms_before_anchor(60_001),
            "from_history": True,
        },
        {
            "request_id": 2,
            "user_id": line_a,
            "query": "22 23",
            "timestamp": ms_before_anchor(1),  # a 0 s gap still precedes the test search
            "from_history": True,
        },
        {
            "request_id": 3,
            "user_id": line_a,
            "query": "11 12",
            "timestamp": JDSEARCH_ANCHOR,
            "from_history": False,
        },
        {
            "request_id": 4,
            "user_id": line_b,
            "query": "31",
            "timestamp": JDSEARCH_ANCHOR,
            "from_history": False,
        },
    ]


def test_jdsearch_impressions_positions_clicks_and_interactions(tmp_path):
    log = load_jdsearch(*write_jd(tmp_path))
    rows = [
        (r["request_id"], r["item_id"], r["position"], r["click"], r["interaction"])
        for r in log.impressions.to_pylist()
    ]
    assert rows == [
        (0, "201", 1, 1, "purchase"),  # clicked then ordered in one request: one impression
        (0, "202", 2, 1, "cart"),
        (1, "203", 1, 1, "follow"),
        (2, "101", 1, 1, "click"),
        (3, "101", 1, 0, None),
        (3, "102", 2, 1, "click"),
        (3, "103", 3, 1, "purchase"),
        (3, "104", 4, 1, "cart"),
        (4, "301", 1, 0, None),
        (4, "302", 2, 0, None),
    ]
    assert log.impressions["relevance"].null_count == len(rows)
    assert log.impressions["relevance_source"].null_count == len(rows)


def test_jdsearch_items_with_and_without_metadata(tmp_path):
    log = load_jdsearch(*write_jd(tmp_path))
    rows = [
        (r["item_id"], r["title"], r["category"], r["brand"], r["price"], r["has_metadata"])
        for r in log.items.to_pylist()
    ]
    assert rows == [
        ("101", "1 2", "7 8", None, None, True),
        ("102", "3", "5", "9 9", None, True),
        ("201", "4", "unknown", "9", None, True),
        ("103", "103", "unknown", None, None, False),
        ("104", "104", "unknown", None, None, False),
        ("202", "202", "unknown", None, None, False),
        ("203", "203", "unknown", None, None, False),
        ("301", "301", "unknown", None, None, False),
        ("302", "302", "unknown", None, None, False),
    ]


@pytest.mark.parametrize(
    ("user_b", "message"),
    [
        (
            "\t".join(["31", "301_302", "0.0", "", "", "", "0"]),
            "line 3: candidate_wid_list has 2 entries but candidate_label_list has 1",
        ),
        ("31\t301_302\t0.0_0.0", "line 3: 3 tab-separated fields, expected 7 (query, "),
        (
            "\t".join(["31", "301_302", "0.0_0.5", "", "", "", "0"]),
            "line 3, candidate_label_list entry 2: unexpected value '0.5'",
        ),
        (
            "\t".join(["31", "301", "0.0", "41", "401", "CLICK", "0"]),
            "line 3: history_time_list has 1 entry, expected one more than the 1",
        ),
        (
            "\t".join(["31", "301", "0.0", "41_42", "401", "CLICK_CLICK", "0_1_2"]),
            "line 3: history_qry_list has 2 entries but history_wid_list has 1",
        ),
        (
            "\t".join(["31", "301", "0.0", "41", "401", "VIEW", "0_1"]),
            "line 3, history_type_list entry 1: unexpected value 'VIEW'",
        ),
        (
            "\t".join(["31", "301", "0.0", "41", "401", "CLICK", "0_-5"]),
            "line 3, history_time_list entry 2: unexpected value '-5'",
        ),
        (
            "\t".join(["31", "301_301", "0.0_1.0", "", "", "", "0"]),
            "line 3: candidate_wid_list repeats wid 301 (entry 2)",
        ),
        (
            "\t".join(["31", "301", "0.0", "41_42", "401_", "CLICK_CLICK", "0_1_2"]),
            "line 3, history_wid_list entry 2: empty wid",
        ),
    ],
)
def test_jdsearch_malformed_line_names_file_line_and_fields(tmp_path, user_b, message):
    behaviour, products = write_jd(tmp_path, users=(USER_A, user_b))
    with pytest.raises(ValueError) as raised:
        load_jdsearch(behaviour, products)
    assert str(raised.value).startswith(f"{behaviour}, {message}")


def test_jdsearch_repeated_product_names_both_lines(tmp_path):
    behaviour, products = write_jd(tmp_path)
    products.write_text(products.read_text() + PRODUCTS_TXT[0] + "\n")
    with pytest.raises(ValueError, match=f"^{products}, line 5: wid 101 repeats line 2$"):
        load_jdsearch(behaviour, products)


needs_sample = pytest.mark.skipif(
    not JD_SAMPLE.is_dir(), reason=f"JDsearch sample not found at {JD_SAMPLE} (shared data)"
)


@needs_sample
def test_jdsearch_real_sample():
    behaviour = JD_SAMPLE / "user_behavior_data_sample.txt"
    log = load_jdsearch(behaviour, JD_SAMPLE / "product_meta_data_sample.txt")
    assert log.validate() == []
    requests, imp = log.requests, log.impressions
    assert sorted(set(requests["user_id"].to_pylist())) == [2, 3, 4]  # 3 users after the header
    tests = requests.filter(pa.compute.invert(requests["from_history"]))
    assert tests["user_id"].to_pylist() == [2, 3, 4]
    assert set(tests["timestamp"].to_pylist()) == {JDSEARCH_ANCHOR}
    by_request = imp.group_by("request_id").aggregate([("position", "max"), ("click", "sum")])
    counts = {r["request_id"]: r for r in by_request.to_pylist()}
    test_ids = tests["request_id"].to_pylist()
    assert [counts[r]["position_max"] for r in test_ids] == [90, 89, 83]  # candidates shown
    assert [counts[r]["click_sum"] for r in test_ids] == [1, 2, 2]  # labels >= 1
    history = imp.filter(
        pa.compute.invert(pa.compute.is_in(imp["request_id"], tests["request_id"]))
    )
    assert set(history["click"].to_pylist()) == {1}
    raw = [line.split("\t") for line in behaviour.read_text(encoding="utf-8").splitlines()[1:]]
    assert set(history["item_id"].to_pylist()) == {w for f in raw for w in f[4].split("_")}
    assert history.num_rows <= sum(len(f[4].split("_")) for f in raw) == 230
    for user in (2, 3, 4):  # each user's requests in time order, the test search last
        times = requests.filter(pa.compute.equal(requests["user_id"], user))["timestamp"]
        times = times.to_pylist()
        assert times == sorted(times) and times[-1] == JDSEARCH_ANCHOR > times[-2]
    last_user = requests.filter(pa.compute.equal(requests["user_id"], 4)).to_pylist()
    assert [r["timestamp"] for r in last_user] == [  # history_time_list "0_27_49660" in seconds
        JDSEARCH_ANCHOR - dt.timedelta(seconds=49660 + 27),
        JDSEARCH_ANCHOR - dt.timedelta(seconds=49660),
        JDSEARCH_ANCHOR,
    ]
    assert log.items["has_metadata"].to_pylist().count(True) == 409
    assert set(imp["item_id"].to_pylist()) <= set(log.items["item_id"].to_pylist())


# --- registry -------------------------------------------------------------------------------


def test_registry_names_each_loader_with_its_sources(tmp_path):
    assert sorted(LOADERS) == ["esci", "jdsearch", "pairs"]
    for loader in LOADERS.values():
        assert loader.description and "\n" not in loader.description
    assert [len(LOADERS[name].sources) for name in ("esci", "jdsearch", "pairs")] == [2, 2, 1]
    log = LOADERS["jdsearch"](*write_jd(tmp_path))
    assert log.requests.num_rows == 5
    with pytest.raises(ValueError, match="expected 2 source paths"):
        LOADERS["esci"](tmp_path / "examples.parquet")


def test_esci_at_one_instant_trains_and_scores_the_encoder_on_its_own_test_split(tmp_path):
    from prectr.encoder.evaluate import held_out_sample
    from prectr.encoder.pairs import PairsConfig, read_pairs

    paths = write_esci(tmp_path)
    train = load_esci(*paths, split="train").write(tmp_path / "train")
    test = load_esci(*paths, split="test").write(tmp_path / "test")
    with pytest.raises(ValueError, match="a time split needs more than 2"):
        read_pairs(train)
    pairs = read_pairs(train, PairsConfig(str(test)))
    sample = held_out_sample(pairs)
    queries, titles = sample.texts(pairs)
    assert sample.truth == "relevance" and set(queries) == {"tea pot"}
    rows = {(titles[i], int(g)) for i, g in zip(sample.inverse, sample.grade, strict=True)}
    assert rows == {("B003", 0), ("Tea Pot", 3)}
    assert pairs.labelled["grade"].to_pylist() == [3, 2, 1]  # red mug: E, S, C
