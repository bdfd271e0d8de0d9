import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prectr.data.schema import SearchLog, read_log
from prectr.serve.ranker import Candidate, IdError, Ranker, SearchRequest, typed
from prectr.serve.store import HistoryStore
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def ranker(prectr_run, tiny_world) -> Ranker:
    return Ranker(prectr_run, history=tiny_world, cache_size=50)


@pytest.fixture(scope="module")
def log(tiny_world):
    return read_log(tiny_world)


def request_of(log, request_id) -> SearchRequest:
    req = log.requests.filter(pc.equal(log.requests["request_id"], request_id)).to_pylist()[0]
    imp = log.impressions.filter(pc.equal(log.impressions["request_id"], request_id))
    items = log.items.filter(pc.is_in(log.items["item_id"], imp["item_id"]))
    by_id = {r["item_id"]: r for r in items.to_pylist()}
    candidates = [Candidate(**{k: by_id[i][k] for k in ("item_id", "title", "category",
                                                         "brand", "price")})
                  for i in imp["item_id"].to_pylist()]  # fmt: skip
    return SearchRequest(req["user_id"], req["query"], candidates, req["query_category"],
                         req["timestamp"])  # fmt: skip


def test_online_scores_equal_the_offline_evaluation(ranker, prectr_run, log):
    assert ranker.model.calibrator.kind == "isotonic"  # served and evaluated through it
    offline = pq.read_table(prectr_run / "scores.parquet")
    requests = np.unique(offline["request_id"].to_numpy())[:25]
    for request_id in requests:
        request = request_of(log, int(request_id))
        rows = offline.filter(pc.equal(offline["request_id"], request_id))
        expected = dict(zip(rows["item_id"].to_pylist(), rows["score"].to_pylist(), strict=True))
        got = ranker.score(request)
        want = [expected[c.item_id] for c in request.candidates]
        np.testing.assert_allclose(got["score"], want, atol=1e-6, rtol=0)
        grades = np.stack([rows[f"grade_{g}"].to_numpy() for g in range(4)], 1)
        assert got["grades"].shape == grades.shape
    # the evaluation also wrote each grade's click head, P(click | grade, x)
    heads = np.stack([offline[f"click_at_grade_{g}"].to_numpy() for g in range(4)], 1)
    assert heads.shape == (offline.num_rows, 4) and ((heads > 0) & (heads < 1)).all()


def test_ranking_is_sorted_and_explained(ranker, log):
    request = request_of(log, int(log.requests["request_id"][-1].as_py()))
    ranked = ranker.rank(request)
    assert [r.item_id for r in ranked] != [] and len(ranked) == len(request.candidates)
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(abs(sum(r.grades) - 1) < 1e-5 and r.incentive is not None for r in ranked)


def test_a_model_without_grades_ranks_with_scores_alone(tiny_run, tiny_world, log):
    dnn = Ranker(tiny_run, history=tiny_world)
    request = request_of(log, int(log.requests["request_id"][-1].as_py()))
    ranked = dnn.rank(request)
    assert [r.item_id for r in ranked] != [] and len(ranked) == len(request.candidates)
    assert [r.score for r in ranked] == sorted(dnn.score(request)["score"].tolist(), reverse=True)
    assert all(r.grades is None and r.incentive is None for r in ranked)


def test_unknown_ids_use_the_out_of_vocabulary_path_and_empty_ranks_nothing(ranker):
    new = SearchRequest(10**9, "velvet sofa", [Candidate(10**9 + 1, "a brand new thing", "sofa")])
    ranked = ranker.rank(new)
    assert len(ranked) == 1 and 0 < ranked[0].score < 1
    assert ranker.rank(SearchRequest(1, "sofa", [])) == []
    with pytest.raises(ValueError, match="item_id"):
        ranker.rank(SearchRequest(1, "sofa", [Candidate("not-a-number", "t", "sofa")]))


def test_item_cache_is_bounded_and_hit_when_warm(ranker, log):
    request = request_of(log, int(log.requests["request_id"][0].as_py()))
    ranker.rank(request)
    hits = ranker.cache.hits
    ranker.rank(request)
    assert ranker.cache.hits == hits + len(request.candidates)
    assert len(ranker.cache) <= 50
    renamed = [Candidate(c.item_id, c.title + " v2", c.category, c.brand, c.price)
               for c in request.candidates]  # fmt: skip
    misses = ranker.cache.misses
    ranker.rank(SearchRequest(request.user_id, request.query, renamed))
    assert ranker.cache.misses == misses + len(renamed)  # a changed title is a new entry


def test_a_store_extended_with_newer_parts_equals_one_built_at_once(ranker, log):
    half = log.requests.num_rows // 2
    older, newer = log.requests.slice(0, half), log.requests.slice(half)

    def part(requests):
        impressions = log.impressions.filter(
            pc.is_in(log.impressions["request_id"], requests["request_id"])
        )
        return SearchLog(log.items, requests, impressions)

    store = HistoryStore(ranker.encoder, part(older))
    store.extend(part(newer))
    assert store.items.num_rows == log.items.num_rows  # known items are not repeated
    probe = log.requests.slice(log.requests.num_rows - 30)
    got, want = store.features(probe), ranker.store.features(probe)
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.slow
def test_the_onnx_engine_scores_like_eager_pytorch(ranker, prectr_run, tiny_world, log):
    onnx = Ranker(prectr_run, history=tiny_world, engine="onnx")
    assert (prectr_run / "export" / "best.onnx").is_file()
    for request_id in log.requests["request_id"].to_pylist()[-3:]:
        request = request_of(log, request_id)
        eager, exported = ranker.score(request), onnx.score(request)
        assert eager.keys() == exported.keys()
        for k in eager:
            np.testing.assert_allclose(exported[k], eager[k], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="engine 'tvm'"):
        Ranker(prectr_run, history=tiny_world, engine="tvm")


@pytest.mark.slow
def test_an_onnx_export_built_from_other_code_or_weights_is_exported_again(prectr_run, tiny_world):
    import onnx

    from prectr.serve.export import FINGERPRINT, exported_fingerprint, fingerprint

    path = prectr_run / "export" / "best.onnx"
    Ranker(prectr_run, history=tiny_world, engine="onnx")
    current = fingerprint(prectr_run / "checkpoints" / "best.pt")
    assert exported_fingerprint(path) == current
    stale = onnx.load(str(path))
    onnx.helper.set_model_props(stale, {FINGERPRINT: "another model"})
    onnx.save(stale, str(path))
    Ranker(prectr_run, history=tiny_world, engine="onnx")
    assert exported_fingerprint(path) == current
    calibration = prectr_run / "checkpoints" / "best.calibration.json"
    fitted = calibration.read_text()
    try:  # a refitted calibrator makes the export stale too
        calibration.write_text(fitted.replace('"kind": "isotonic"', '"kind": "none"', 1))
        assert fingerprint(prectr_run / "checkpoints" / "best.pt") != current
    finally:
        calibration.write_text(fitted)


def test_the_history_store_is_rebuilt_when_the_log_changes_on_disk(prectr_run, tiny_world,
                                                                    tmp_path):  # fmt: skip
    import shutil

    import pyarrow.parquet as pq

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    ranker = Ranker(prectr_run, history=world)
    assert not ranker.refresh_history()  # nothing changed
    requests = pq.read_table(world / "requests.parquet")
    kept = requests.slice(0, requests.num_rows // 2)
    shutil.rmtree(world / "impressions")
    (world / "impressions").mkdir()
    impressions = pq.read_table(tiny_world / "impressions")
    pq.write_table(impressions.filter(pc.is_in(impressions["request_id"], kept["request_id"])),
                   world / "impressions" / "part-00000.parquet")  # fmt: skip
    pq.write_table(kept, world / "requests.parquet")
    old = ranker.store
    assert ranker.refresh_history() and ranker.store is not old
    assert ranker.store.requests.num_rows == kept.num_rows
    (world / "requests.parquet").write_bytes(b"not parquet")  # a broken log keeps the old store
    with pytest.raises(Exception, match="requests"):
        ranker.refresh_history()
    assert ranker.store.requests.num_rows == kept.num_rows


@pytest.mark.parametrize(
    ("values", "arrow_type", "want"),
    [
        ([12, 7], pa.int64(), [12, 7]),
        (["12", 7], pa.int64(), [12, 7]),  # compared as text
        (["a", "b"], pa.string(), ["a", "b"]),
        ([5, "b"], pa.string(), ["5", "b"]),
        ([1, True], pa.int64(), 1),  # a bool is no id, though Python's bool is an int
        ([1, 2**70], pa.int64(), 1),  # beyond int64
        (["x-1"], pa.int64(), 0),
    ],
)  # fmt: skip
def test_ids_take_the_log_s_type_or_are_refused_by_position(values, arrow_type, want):
    if isinstance(want, list):
        assert typed(values, arrow_type, lambda i: ("ids", i)).to_pylist() == want
    else:
        with pytest.raises(IdError) as refused:
            typed(values, arrow_type, lambda i: ("ids", i))
        assert refused.value.loc == ("ids", want)


@pytest.mark.slow
def test_the_other_query_control_is_refused_for_serving(tiny_world, tmp_path) -> None:
    """``crowd_from: other`` reads another request's crowd from its batch; a served request is
    alone in its batch, so the ranker refuses the run rather than score it without a crowd."""
    from prectr.train.trainer import Trainer

    config = tiny_config(tiny_world)
    config.model, config.name = "prectr_v2", "tiny_control"
    config.model_params = {"hidden": [16], "crowd_from": "other"}
    config.features.relevance_context = True
    Trainer(config, tmp_path / "run").fit()
    with pytest.raises(ValueError, match="crowd_from 'other' is a control"):
        Ranker(tmp_path / "run")
