import numpy as np
import pyarrow as pa
import pytest

from prectr.data.features import OOV, PAD, FeatureConfig, FeatureEncoder, Vocabulary
from prectr.data.matching import TOKEN, match_level, tokens, word_counts
from prectr.data.schema import read_log
from prectr.data.shards import time_split


@pytest.fixture(scope="module")
def fitted(tiny_world):
    log = read_log(tiny_world)
    split = time_split(log.requests)
    return log, split, FeatureEncoder().fit(log, split["train"])


def test_vocabulary_maps_unknown_to_oov_and_null_to_padding():
    vocab = Vocabulary.fit(pa.array(["a", "b", "a", None]))
    assert vocab.values.to_pylist() == ["a", "b"] and len(vocab) == 4
    assert vocab.lookup(pa.array(["a", "b", "zzz", None])).tolist() == [2, 3, OOV, PAD]


def test_a_fitted_vocabulary_is_held_as_arrow_arrays_and_saved_as_lists():
    fitted = Vocabulary.fit(pa.array(["b", "a", "b", None, "c"]), min_count=1)
    assert isinstance(fitted.values, pa.Array) and isinstance(fitted.counts, pa.Array)
    saved = fitted.saved()
    assert saved == {"values": ["b", "a", "c"], "counts": [2, 1, 1]}
    loaded = Vocabulary(**saved)
    values = pa.array(["c", "a", "zzz", None, "b"] * 1000)  # a vectorised lookup
    assert np.array_equal(loaded.lookup(values), fitted.lookup(values))


def test_a_vocabulary_held_as_an_arrow_array_looks_up_as_its_list_does():
    values = [f"q{i}" for i in range(5000)]
    queries = pa.array([f"q{i}" for i in range(0, 10_000, 3)] + [None])  # a vectorised lookup
    listed, arrow = Vocabulary(values), Vocabulary(pa.array(values))
    assert np.array_equal(arrow.lookup(queries), listed.lookup(queries))
    few = pa.array(["q4998", "q5001", None])  # a served request's few values: the dict
    assert arrow.lookup(few).tolist() == listed.lookup(few).tolist() == [5000, OOV, PAD]
    assert len(arrow) == len(listed)


def test_word_counts_fit_the_vocabulary_a_list_of_every_word_fits(fitted):
    log, _, _ = fitted
    texts = [pa.array(["Red  shoes", None, "red SHOES!", "x-1"]), log.requests["query"],
             log.items["title"]]  # fmt: skip
    words = [w for column in texts for t in column.to_pylist()
             for w in TOKEN.findall((t or "").lower())]  # fmt: skip
    for min_count in (1, 2, 5):
        every = Vocabulary.fit(pa.array(words, pa.string()), min_count)
        assert Vocabulary.counted(word_counts(*texts), min_count) == every
    assert word_counts(texts[0]) == {"red": 2, "shoes": 2, "x": 1, "1": 1}


def test_tokens_are_left_padded_truncated_and_looked_up():
    vocab = Vocabulary(["red", "sofa"])
    ids = tokens(["Red velvet SOFA", None, "a b c d e"], vocab, 3)
    assert ids[0].tolist() == [2, OOV, 3]
    assert ids[1].tolist() == [PAD, PAD, PAD]
    assert ids[2].tolist() == [OOV, OOV, OOV]


def test_vocabularies_are_fitted_on_training_requests_only(fitted):
    log, split, encoder = fitted
    train_users = set(log.requests["user_id"].take(pa.array(split["train"])).to_pylist())
    test_users = set(log.requests["user_id"].take(pa.array(split["test"])).to_pylist())
    unseen = test_users - train_users
    assert unseen, "the tiny world should have test users unseen in training"
    assert set(encoder.vocabs["user"].values.to_pylist()) == train_users
    encoded = encoder.encode(log)
    rows = [i for i, u in enumerate(log.requests["user_id"].to_pylist()) if u in unseen]
    assert (encoded.request["user_id"][rows] == OOV).all()


def test_encoding_never_reads_evaluation_columns(fitted):
    log, _, encoder = fitted
    a = encoder.encode(log)
    log.impressions = log.impressions.drop_columns(["true_relevance", "logging_score"])
    b = encoder.encode(log)
    assert a.impressions.equals(b.impressions)
    for level in ("item", "request"):
        for name, values in getattr(a, level).items():
            assert np.array_equal(values, getattr(b, level)[name]), name


def test_saved_features_reload_to_the_same_encoding(fitted, tmp_path):
    log, _, encoder = fitted
    encoder.save(tmp_path)
    again = FeatureEncoder.load(tmp_path).encode(log)
    first = encoder.encode(log)
    assert again.impressions.equals(first.impressions)
    assert all(np.array_equal(first.request[k], again.request[k]) for k in first.request)


def test_user_history_holds_only_earlier_clicks(fitted):
    log, _, encoder = fitted
    encoded = encoder.encode(log)
    # the first request of the log has no earlier click
    assert (encoded.request["user_clicks"][0] == PAD).all()
    assert (encoded.request["user_clicks"] != PAD).any()


def test_include_selects_features_and_names_unknown_ones(fitted):
    log, split, _ = fitted
    encoder = FeatureEncoder(FeatureConfig(include=["item_id", "log_price"])).fit(
        log, split["train"]
    )
    assert [s.name for s in encoder.specs] == ["item_id", "log_price"]
    with pytest.raises(ValueError, match="unknown features: colour"):
        _ = FeatureEncoder(FeatureConfig(include=["colour"])).fit(log, split["train"]).specs


def test_match_level_steps_title_match_and_category_match():
    levels = match_level(np.array([0.0, 0.26, 1.0, 1.0]), np.array([0.0, 0.0, 0.0, 1.0]))
    assert levels.tolist() == [2, 3, 6, 11]  # ids from 2; 0 is padding
    assert match_level(np.array([0.5]), None).tolist() == [4]


def test_relevance_context_holds_the_crowd_strictly_before_each_request(fitted):
    """Brute force on a sample of requests: the crowd is the last exposed impressions, by any
    user, under the same query (normalised), from strictly earlier requests of the last
    ``crowd_days``, oldest first; with fewer than ``crowd_min_events`` of them, the same under
    the query's category; with fewer again, none."""
    log, split, _ = fitted
    config = FeatureConfig(relevance_context=True, crowd_length=5, crowd_days=2.0,
                           crowd_min_events=3)  # fmt: skip
    encoder = FeatureEncoder(config).fit(log, split["train"])
    encoded = encoder.encode(log)
    req, imp = log.requests, encoded.impressions
    time = req["timestamp"].cast(pa.int64()).to_numpy()
    query = np.array([" ".join(q.lower().split()) for q in req["query"].to_pylist()], dtype=object)
    category = np.array(req["query_category"].to_pylist(), dtype=object)
    row, item = imp["request_row"].to_numpy(), imp["item_row"].to_numpy()
    exposed = imp["position"].is_valid().to_numpy(zero_copy_only=False)
    click = imp["click"].fill_null(0).to_numpy()
    level = imp["match_level"].to_numpy()
    item_id = encoded.item["item_id"]
    order = np.lexsort((np.arange(row.size), time[row]))  # events by time, stable
    t = time[row[order]]
    sources = {"query": 0, "category": 0, "none": 0}
    for r in np.random.default_rng(0).choice(req.num_rows, 60, replace=False):
        window = exposed[order] & (t < time[r]) & (t >= time[r] - 2 * 86_400_000)
        events = order[window & (query[row[order]] == query[r])][-5:]
        source = "query"
        if events.size < 3:
            events = order[window & (category[row[order]] == category[r])][-5:]
            source = "category"
        if events.size < 3:
            events, source = events[:0], "none"
        sources[source] += 1
        got = encoded.request["crowd_items"][r]
        assert (got[: 5 - events.size] == PAD).all()
        assert got[5 - events.size :].tolist() == item_id[item[events]].tolist()
        assert (
            encoded.request["crowd_clicks"][r][5 - events.size :].tolist()
            == (click[events] + 2).tolist()
        )
        assert encoded.request["crowd_match"][r][5 - events.size :].tolist() == (
            level[events].tolist()
        )
    assert min(sources.values()) > 0, sources  # the sample reaches every level of the back-off
    clicked = encoded.request["user_clicks"] != PAD
    assert ((encoded.request["user_click_queries"] != PAD) == clicked).all()
    assert ((encoded.request["user_click_match"] != PAD) == clicked).all()


def test_small_and_large_lookups_agree():
    vocab = Vocabulary.fit(pa.array([str(i % 50) for i in range(500)]))
    values = pa.array([str(i) for i in range(5000)] + [None])
    large = vocab.lookup(values)
    small = np.concatenate([vocab.lookup(values.slice(i, 100)) for i in range(0, 5001, 100)])
    assert np.array_equal(large, small) and large[-1] == PAD and large[60] == OOV
