"""The simulated world: deterministic, valid, and carrying each phenomenon PRECTR-V2 is for.

Every phenomenon is recomputed here from the written tables (and ``truth/``), not read from the
world's own summary.
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prectr.data.history import earlier_requests
from prectr.data.schema import read_log
from prectr.data.simulate import World, generate, load_config, simulate


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


def _log(root: Path):
    log = read_log(root)
    imp = log.impressions.join(
        log.requests.select(["request_id", "user_id", "query"]), "request_id"
    )
    return log, imp.sort_by([("request_id", "ascending"), ("item_id", "ascending")])


def test_same_seed_same_bytes_other_seed_other_bytes(tiny_world, tmp_path):
    again = tmp_path / "again"
    simulate(load_config("tiny"), again)
    assert _digest(again) == _digest(tiny_world)
    other = tmp_path / "other"
    simulate(load_config("tiny", overrides={"seed": 1}), other)
    differing = [k for k, v in _digest(other).items() if _digest(tiny_world)[k] != v]
    assert len(differing) == len(_digest(other))


def test_world_is_a_valid_log_with_a_consistent_summary(tiny_world):
    log, imp = _log(tiny_world)
    summary = json.loads((tiny_world / "world.json").read_text())["summary"]
    exposed = imp.filter(imp["position"].is_valid())
    assert summary["impressions"] == imp.num_rows
    assert summary["exposed"] == exposed.num_rows
    assert summary["clicks"] == pc.sum(exposed["click"]).as_py()
    assert log.requests.num_rows == load_config("tiny").n_requests
    # unexposed candidates carry neither a position nor a click
    unexposed = imp.filter(imp["position"].is_null())
    assert unexposed.num_rows > 0 and unexposed["click"].null_count == unexposed.num_rows


def test_each_request_exposes_its_top_k_of_the_logging_ranker(tiny_world):
    _, imp = _log(tiny_world)
    k = load_config("tiny").exposed_k
    request = imp["request_id"].to_numpy()
    exposed = imp["position"].is_valid().to_numpy(zero_copy_only=False)
    assert np.all(np.bincount(request, weights=exposed) == k)
    score = imp["logging_score"].to_numpy()
    lowest_exposed = np.full(request.max() + 1, np.inf)
    np.minimum.at(lowest_exposed, request[exposed], score[exposed])
    highest_hidden = np.full(request.max() + 1, -np.inf)
    np.maximum.at(highest_hidden, request[~exposed], score[~exposed])
    assert np.all(lowest_exposed >= highest_hidden)


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_relevance_can_be_read_from_the_text(tiny_world):
    log, imp = _log(tiny_world)
    titles = dict(
        zip(log.items["item_id"].to_pylist(), log.items["title"].to_pylist(), strict=True)
    )
    overlap = {g: [] for g in range(4)}
    for query, item, grade in zip(
        imp["query"].to_pylist(),
        imp["item_id"].to_pylist(),
        imp["true_relevance"].to_pylist(),
        strict=True,
    ):
        q = _tokens(query)
        overlap[grade].append(len(q & _tokens(titles[item])) / max(len(q), 1))
    mean = [np.mean(overlap[g]) for g in range(4)]
    assert mean[3] > mean[1] + 0.1 and mean[2] > mean[0] + 0.1, mean


def test_test_day_holds_items_never_seen_in_training(tiny_world):
    world = World(tiny_world)
    train = world.requests(days=world.split["train"])["request_id"].combine_chunks()
    test = world.requests(days=world.split["test"])["request_id"].combine_chunks()
    seen = set(world.impressions(train, ["item_id"])["item_id"].to_pylist())
    test_items = set(world.impressions(test, ["item_id"])["item_id"].to_pylist())
    assert len(test_items - seen) > 0


def test_a_share_of_pairs_carries_a_human_label_consistent_with_the_truth(tiny_world):
    _, imp = _log(tiny_world)
    labelled = imp.filter(imp["relevance"].is_valid())
    share = labelled.num_rows / imp.num_rows
    assert 0.08 < share < 0.12
    assert set(labelled["relevance_source"].to_pylist()) == {"human"}
    assert labelled["relevance"].equals(labelled["true_relevance"])
    # a (query, item) pair is labelled wherever it occurs, or nowhere
    pairs = {}
    for q, i, g in zip(
        imp["query"].to_pylist(), imp["item_id"].to_pylist(), imp["relevance"].to_pylist(),
        strict=True,
    ):  # fmt: skip
        pairs.setdefault((q, i), set()).add(g is None)
    assert all(len(v) == 1 for v in pairs.values())


def test_user_activity_is_zipf_with_a_cold_start_slice(tiny_world):
    log, _ = _log(tiny_world)
    user = log.requests["user_id"].to_numpy()
    per_user = np.sort(np.bincount(user))[::-1]
    top_decile = per_user[: max(1, per_user.size // 10)].sum() / user.size
    assert top_decile > 0.35
    cold = earlier_requests(user) <= 2
    assert 0.1 < cold.mean() < 0.6


def test_other_users_under_a_query_tell_about_a_new_user(tiny_world):
    """Cross-user mining works when the crowd under a query shares the searcher's segment."""
    log, _ = _log(tiny_world)
    segment = pq.read_table(tiny_world / "truth" / "users.parquet")["segment"].to_numpy()
    query = pc.dictionary_encode(log.requests["query"]).combine_chunks().indices.to_numpy()
    user = log.requests["user_id"].to_numpy()
    n_segments = load_config("tiny").n_segments
    counts = np.zeros((query.max() + 1, n_segments))
    np.add.at(counts, (query, segment[user]), 1)
    others = counts[query].copy()
    others[np.arange(user.size), segment[user]] -= 1  # leave the request's own user out
    has_crowd = others.sum(1) > 0
    hit = others[has_crowd].argmax(1) == segment[user][has_crowd]
    assert hit.mean() > 2.0 / n_segments


def _clicks_by(imp, request_value, bins):
    exposed = imp.filter(imp["position"].is_valid())
    group = np.digitize(request_value[exposed["request_id"].to_numpy()], bins)
    grade = exposed["true_relevance"].to_numpy()
    click = exposed["click"].to_numpy()
    return group, grade, click


def _truth(root: Path, table: str) -> pa.Table:
    return pq.read_table(root / "truth" / f"{table}.parquet")


def test_tolerant_requests_click_substitutes_more_than_strict_ones(tiny_world):
    _, imp = _log(tiny_world)
    tolerance = _truth(tiny_world, "requests")["tolerance"].to_numpy()
    group, grade, click = _clicks_by(imp, tolerance, [-1 / 3, 1 / 3])
    ctr = {g: click[(group == g) & (grade == 2)].mean() for g in (0, 2)}
    assert ctr[2] > 1.5 * ctr[0], ctr


def test_each_stage_of_the_cascade_shows_fewer_irrelevant_items(tiny_world):
    """Retrieval returns a broad set that is mostly irrelevant or complement; the pre-ranker's
    pool holds fewer irrelevant items, the exposed top k fewer still (exposure bias)."""
    _, imp = _log(tiny_world)
    grade = imp["true_relevance"].to_numpy()
    exposed = imp["position"].is_valid().to_numpy(zero_copy_only=False)
    broad = World(tiny_world).broad()["true_relevance"].to_numpy()
    assert (broad <= 1).mean() > 0.8
    assert (broad == 0).mean() > (grade == 0).mean() + 0.2
    assert (grade[exposed] == 0).mean() < (grade[~exposed] == 0).mean() / 2
    assert (grade[~exposed] <= 1).mean() > 0.3  # the pool is far from clean


def test_clicks_fall_with_position_and_rise_with_grade(tiny_world):
    _, imp = _log(tiny_world)
    exposed = imp.filter(imp["position"].is_valid())
    pos = exposed["position"].to_numpy()
    click = exposed["click"].to_numpy()
    grade = exposed["true_relevance"].to_numpy()
    assert click[pos == 1].mean() > 2 * click[pos >= 8].mean()
    ctr = [click[grade == g].mean() for g in (1, 2, 3)]
    assert ctr[0] < ctr[1] < ctr[2]


def test_several_days_allow_a_time_split(tiny_world):
    world = World(tiny_world)
    days = world.day_of(world.requests()["timestamp"]).to_numpy()
    config = load_config("tiny")
    assert set(np.unique(days)) == set(range(config.n_days))
    assert world.split["test"] == list(range(max(days) - config.test_days + 1, max(days) + 1))
    assert world.split["valid"] == [max(days) - config.test_days]
    assert world.split["train"] == list(range(max(days) - config.test_days))
    ts = world.requests()["timestamp"].cast(pa.int64()).to_numpy()
    assert np.all(np.diff(ts) >= 0)


@pytest.mark.parametrize("model", ["cascade", "dcm"])
def test_other_click_models_generate_valid_worlds(tmp_path, model):
    out = tmp_path / model
    simulate(load_config("tiny", overrides={"click_model": model, "n_requests": 300}), out)
    _, imp = _log(out)
    exposed = imp.filter(imp["position"].is_valid())
    clicks = np.bincount(exposed["request_id"].to_numpy(), weights=exposed["click"].to_numpy())
    if model == "cascade":
        assert clicks.max() <= 1  # the first click ends a cascade session
    assert clicks.sum() > 0


def test_replaying_the_logging_ranker_reproduces_the_logged_clicks(tiny_world):
    world = World(tiny_world)
    pool = world.impressions(columns=["request_id", "item_id", "click", "logging_score"])
    replay = world.replay(pool.select(["request_id", "item_id"]).append_column(
        "score", pool["logging_score"]))  # fmt: skip
    logged = np.bincount(pool["request_id"].to_numpy(), weights=pool["click"].fill_null(0))
    per_request = replay.per_request["expected_clicks"].to_numpy()
    stderr = logged.std() / np.sqrt(logged.size)
    assert abs(per_request.mean() - logged.mean()) < 4 * stderr


def test_replay_rewards_a_better_ranking(tiny_world):
    world = World(tiny_world)
    pool = world.impressions(columns=["request_id", "item_id", "true_relevance"])
    keys = pool.select(["request_id", "item_id"])
    rng = np.random.default_rng(0)
    oracle = world.replay(keys.append_column("score", pool["true_relevance"].cast(pa.float64())))
    shuffled = world.replay(keys.append_column("score", pa.array(rng.random(pool.num_rows))))
    assert oracle.expected_clicks > 1.3 * shuffled.expected_clicks
    assert oracle.clicks > shuffled.clicks


def test_replay_refuses_scores_that_miss_candidates(tiny_world):
    world = World(tiny_world)
    pool = world.impressions(columns=["request_id", "item_id"]).slice(0, 200)
    partial = pool.slice(0, 140).append_column("score", pa.array(np.zeros(140)))
    with pytest.raises(ValueError, match="scores miss"):
        world.replay(partial)


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "world"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        simulate(load_config("tiny", overrides={"n_requests": 100}), out)
    assert (out / "keep.txt").read_text() == "mine"


def test_a_failure_mid_generation_writes_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_chunk(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return original(*args)

    original = generate._chunk
    monkeypatch.setattr(generate, "_chunk", failing_chunk)
    out = tmp_path / "world"
    with pytest.raises(RuntimeError, match="disk full"):
        simulate(load_config("tiny"), out)
    assert not out.exists() and list(tmp_path.iterdir()) == []
