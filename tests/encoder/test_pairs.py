import numpy as np
import pytest

from prectr.data.grades import parse_grade_map
from prectr.encoder.evaluate import NothingToScore, held_out_sample
from prectr.encoder.pairs import PairsConfig, hash_share, read_pairs, validation_queries
from tests.encoder.graded_log import graded_log, shop_judgments


def texts(pairs, table) -> set[tuple[str, str]]:
    q, t = table["query"].to_numpy(), table["title"].to_numpy()
    return {(pairs.queries[a], pairs.titles[b]) for a, b in zip(q, t, strict=True)}


def test_a_graded_set_at_one_instant_holds_out_a_hashed_share_of_its_queries(tmp_path) -> None:
    log = graded_log(tmp_path / "log", shop_judgments(60))
    with pytest.raises(ValueError, match=r"spans 1 day.*--held-out query"):
        read_pairs(log)  # the default split is by day
    pairs = read_pairs(log, PairsConfig("query:0.3"))
    held_queries = {pairs.queries[i] for i in pairs.held_out["query"].to_numpy()}
    train_queries = {pairs.queries[i] for i in pairs.train["query"].to_numpy()}
    assert not held_queries & train_queries and len(held_queries | train_queries) == 60
    assert 0.15 < len(held_queries) / 60 < 0.45
    again = read_pairs(log, PairsConfig("query:0.3"))  # deterministic, and nested in a larger share
    assert texts(again, again.held_out) == texts(pairs, pairs.held_out)
    larger = read_pairs(log, PairsConfig("query:0.6"))
    assert texts(pairs, pairs.held_out) < texts(larger, larger.held_out)
    # no simulator: the held-out rows are scored against the human grades
    assert pairs.truth == "relevance" and pairs.counts["held_out_unscored"] == 0
    sample = held_out_sample(pairs)
    assert set(sample.grade) == {0, 1, 2, 3} and sample.truth == "relevance"


def test_duplicate_pairs_get_the_mean_grade_rounded_halves_down_and_are_counted(tmp_path) -> None:
    judgments = [("red kettle", "red kettle 1l", 1), ("red kettle", "red kettle 1l", 2),
                 ("red kettle", "steel kettle", 1), ("red kettle", "steel kettle", 2),
                 ("red kettle", "steel kettle", 3), ("red kettle", "blue lamp", 0),
                 ("red kettle", "blue lamp", 0)]  # fmt: skip
    held = [("old chair", "oak chair", 3), ("old chair", "oak chair", 0), ("old chair", "mug", 0)]
    log = graded_log(tmp_path / "log", judgments)
    pairs = read_pairs(log, PairsConfig(str(graded_log(tmp_path / "held", held))))
    labelled = pairs.labelled
    grades = {(pairs.queries[q], pairs.titles[t]): g for q, t, g in zip(
        labelled["query"].to_numpy(), labelled["title"].to_numpy(), labelled["grade"].to_pylist(),
        strict=True)}  # fmt: skip
    assert grades == {("red kettle", "red kettle 1l"): 1, ("red kettle", "steel kettle"): 2,
                      ("red kettle", "blue lamp"): 0}  # fmt: skip
    titles = [pairs.titles[t] for t in labelled["title"].to_numpy()]
    rows = dict(zip(titles, labelled["rows"].to_pylist(), strict=True))
    assert rows == {"red kettle 1l": 2, "steel kettle": 3, "blue lamp": 2}  # graded rows merged
    assert pairs.counts["conflicting_train"] == 2
    # every held-out row of a pair is scored against its merged grade: (3 + 0) / 2 -> 1
    assert pairs.counts["conflicting_held_out"] == 1
    assert sorted(held_out_sample(pairs).grade.tolist()) == [0, 1, 1]


def test_a_merged_grade_is_one_the_log_uses(tmp_path) -> None:
    """On a 3-level scale mapped onto 0, 2 and 3, a pair graded 0 and 3 merges to 2, the
    nearer of the grades the scale has to the mean 1.5 (0 is 1.5 away), never to 1."""
    train = [("lamp", "lamp", 2), ("lamp", "lamp", 0), ("lamp", "shade", 1), ("lamp", "tent", 0)]
    held = [("tent", "tent", 2), ("tent", "tent", 0), ("tent", "lamp", 1)]
    config = PairsConfig(str(graded_log(tmp_path / "held", held)), parse_grade_map("0:0,1:2,2:3"))
    pairs = read_pairs(graded_log(tmp_path / "log", train), config)
    assert sorted(pairs.labelled["grade"].to_pylist()) == [0, 2, 2]
    assert sorted(held_out_sample(pairs).grade.tolist()) == [2, 2, 2]


def test_pairs_in_training_and_held_out_requests_are_dropped_from_training_and_counted(
    tmp_path,
) -> None:
    train = [("red kettle", "red kettle 1l", 3), ("red kettle", "blue lamp", 0),
             ("green tent", "green tent 2p", 3)]  # fmt: skip
    held = [("red kettle", "red kettle 1l", 2), ("green tent", "red kettle 1l", 0)]
    log = graded_log(tmp_path / "log", train)
    pairs = read_pairs(log, PairsConfig(str(graded_log(tmp_path / "held", held))))
    assert texts(pairs, pairs.train) == {
        ("red kettle", "blue lamp"),
        ("green tent", "green tent 2p"),
    }
    assert texts(pairs, pairs.labelled) == texts(pairs, pairs.train)
    assert pairs.counts["overlap_dropped"] == 1
    assert texts(pairs, pairs.held_out) == {(q, t) for q, t, _ in held}


def test_another_grade_scale_maps_onto_0_to_3(tmp_path) -> None:
    judgments = [("lamp", "lamp", 2), ("lamp", "lamp shade", 1), ("lamp", "tent", 0)] * 20
    log = graded_log(tmp_path / "log", [(q + str(k // 3), t, g)
                                        for k, (q, t, g) in enumerate(judgments)])  # fmt: skip
    config = PairsConfig("query:0.5", parse_grade_map("0:0,1:2,2:3"))
    pairs = read_pairs(log, config)
    merged = np.r_[pairs.labelled["grade"].to_numpy(), held_out_sample(pairs).grade]
    assert sorted(set(merged.tolist())) == [0, 2, 3]
    with pytest.raises(ValueError, match=r"row 1: relevance 1 is not in the grade map"):
        read_pairs(log, PairsConfig("query:0.5", {0: 0, 2: 3}))
    assert config.settings() == {"held_out": "query:0.5", "grade_map": "0:0,1:2,2:3"}


@pytest.mark.parametrize("spec", ["query:0", "query:1.5", "query:x", "no/such/log"])
def test_a_bad_held_out_split_is_refused(tmp_path, spec) -> None:
    log = graded_log(tmp_path / "log", shop_judgments(3))
    with pytest.raises(ValueError, match="held-out split"):
        read_pairs(log, PairsConfig(spec))


def test_held_out_rows_without_a_human_grade_say_why_nothing_is_scored(tmp_path) -> None:
    import pyarrow as pa

    from prectr.data.schema import read_log

    path = graded_log(tmp_path / "log", shop_judgments(30))
    log = read_log(path)
    n = log.impressions.num_rows
    log.impressions = log.impressions.set_column(4, "relevance", pa.nulls(n, pa.int8())).set_column(
        5, "relevance_source", pa.nulls(n, pa.string()))  # fmt: skip
    log.write(tmp_path / "ungraded")
    pairs = read_pairs(tmp_path / "ungraded", PairsConfig("query"))
    assert pairs.counts["held_out_unscored"] == pairs.held_out.num_rows > 0
    with pytest.raises(NothingToScore, match="has a human grade"):
        held_out_sample(pairs)


def test_a_held_out_log_without_true_relevance_is_scored_on_its_human_grades(
    tiny_world, tmp_path
) -> None:
    held = graded_log(tmp_path / "held", shop_judgments(10))
    pairs = read_pairs(tiny_world, PairsConfig(str(held)))  # the whole world trains
    assert pairs.truth == "relevance" and pairs.counts["held_out_unscored"] == 0
    assert held_out_sample(pairs).grade.size == pairs.held_out.num_rows == 30
    assert pairs.labelled.num_rows > 1000


def test_validation_queries_are_whole_queries_at_the_top_of_the_hash_range() -> None:
    queries = [f"query {i % 300}" for i in range(1200)]
    ten, fifteen = validation_queries(queries, 0.1), validation_queries(queries, 0.15)
    assert 0.05 < ten.mean() < fifteen.mean() < 0.25
    assert not (ten & ~fifteen).any()  # a larger share holds every query of a smaller one
    sides = {}
    for query, side in zip(queries, ten, strict=True):
        sides.setdefault(query, set()).add(bool(side))
    assert all(len(s) == 1 for s in sides.values())  # a query's pairs all on one side
    assert ten.tolist() == [hash_share(q) >= 0.9 for q in queries]
