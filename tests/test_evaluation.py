import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prectr.data.schema import read_log
from prectr.data.shards import time_split
from prectr.data.simulate import World
from prectr.evaluation import (
    click_metrics,
    compare_runs,
    evaluate_run,
    evaluate_scores,
    evaluation_pool,
    relevance_metrics,
    train_impressions,
)
from prectr.evaluation.context import ALL, EvaluationContext
from prectr.evaluation.slices import (
    ACTIVITY_BANDS,
    FAMILIES,
    evaluation_slices,
    query_frequency,
    slice_statistics,
    user_activity,
)
from prectr.evaluation.statistics import EvaluationRows, values
from prectr.evaluation.truth import open_truth
from prectr.metrics import auc, calibration, expected_calibration_error
from prectr.rankers import RANKERS

POOLED = ("auc", "gauc_user", "gauc_request", "logloss", "calibration", "ndcg@10",
          "mean_grade@10", "irrelevant@10", "expected_clicks")  # fmt: skip


@pytest.fixture(scope="module")
def results(tiny_world):
    world = World(tiny_world)
    pool, train = evaluation_pool(world), train_impressions(world)
    out = {}
    for name, ranker in RANKERS.items():
        scores, probability = ranker(train, pool)
        assert scores.shape == (pool.num_rows,) and np.isfinite(scores).all()
        out[name] = evaluate_scores(world, pool, scores, probability)
    return out


def test_the_logging_ranker_beats_random_on_every_axis(results):
    logging, random = results["logging"], results["random"]
    assert logging["auc"] > random["auc"] + 0.1
    assert logging["ndcg@10"] > random["ndcg@10"]
    assert logging["irrelevant@10"] < random["irrelevant@10"]
    assert logging["expected_clicks"] > random["expected_clicks"]
    assert abs(random["auc"] - 0.5) < 0.1


def test_popularity_gives_calibrated_probabilities(results):
    popularity = results["popularity"]
    assert 0.7 < popularity["calibration"] < 1.3
    assert popularity["logloss"] < 0.6
    assert results["logging"]["logloss"] is None  # a score, not a probability


@pytest.fixture(scope="module")
def context(tiny_world):
    return EvaluationContext.build(open_truth(read_log(tiny_world), tiny_world), 1, 2)


def test_statistics_at_weight_one_are_the_exact_metrics(context):
    rows = context.rows
    score = np.random.default_rng(0).random(rows.request.size)
    sections = context.statistics(score, context.expected_clicks(score), probability=score)
    for name in (ALL, "user:cold", "query:head", "exact:plenty"):
        where = (
            np.ones(rows.request.size, bool) if name == ALL else context.slices.row_mask(rows, name)
        )
        e = where & rows.exposed
        exact = click_metrics(rows.click[e], score[e], rows.user[e], rows.request[e]) | (
            relevance_metrics(rows.grade[where], score[where], rows.request[where])
        )
        got = values(sections[name], rows.n_requests)
        del exact["ece"]  # binned, not a statistic of request weights: evaluation adds it
        for metric, value in exact.items():
            assert got[metric] == pytest.approx(value, rel=1e-12, nan_ok=True), (name, metric)
    e = rows.exposed & context.slices.rows["new_items"]
    exact = click_metrics(rows.click[e], score[e], rows.user[e], rows.request[e])
    assert values(sections["new_items"], rows.n_requests)["auc"] == pytest.approx(exact["auc"])


def test_slices_partition_the_requests_and_follow_their_rules(context, tiny_world):
    rows, slices = context.rows, context.slices
    for family, bands in FAMILIES.items():
        count = sum(slices.requests[f"{family}:{b}"].astype(int) for b in bands)
        assert (count == 1).all(), family
    requests = read_log(tiny_world).requests
    train = requests.take(pa.array(time_split(requests, 1, 2)["train"]))
    unseen = ~np.isin(
        requests.take(pa.array(context.test_rows))["query"].to_numpy(zero_copy_only=False),
        train["query"].to_numpy(zero_copy_only=False),
    )
    assert unseen.sum() == slices.requests["query:unseen"].sum() > 0
    grade3 = np.bincount(rows.request, weights=rows.grade == 3, minlength=rows.n_requests)
    assert (grade3[slices.requests["exact:none"]] == 0).all()
    assert ((grade3[slices.requests["exact:scarce"]] - 2) ** 2 <= 1).all()
    assert (grade3[slices.requests["exact:plenty"]] >= 4).all()


def test_query_frequency_lays_training_requests_out_by_query():
    # 12 training requests: a starts the layout (head), b at 6/12 (torso), c at 9/12 and d at
    # 11/12 (tail); e never occurs in training
    train = pa.array(list("aaaaaabbbccd"))
    bands = query_frequency(pa.array(list("abcde")), train)
    assert bands.tolist() == [0, 1, 2, 2, 3]


def test_user_activity_counts_earlier_requests_in_time_order():
    n = 35
    requests = pa.table(
        {
            "request_id": np.arange(n)[::-1].copy(),  # ids descending, so time must decide
            "user_id": np.zeros(n, np.int64),
            "timestamp": pa.array(np.arange(n) * 1000, pa.timestamp("ms")),
        }
    )
    band = user_activity(requests)
    expected = [0] * 3 + [1] * 7 + [2] * 20 + [3] * 5
    assert [ACTIVITY_BANDS[b] for b in band] == [ACTIVITY_BANDS[b] for b in expected]


def test_a_log_without_truth_skips_the_exact_slice_and_relevance(context, tiny_world):
    rows = context.rows
    blind = EvaluationRows(rows.request_ids, rows.request, rows.item_id, rows.user, rows.click,
                           rows.exposed, None)  # fmt: skip
    requests = read_log(tiny_world).requests
    slices = evaluation_slices(requests, time_split(requests, 1, 2)["train"], np.array([]), blind)
    assert "exact" in slices.skipped and not any(s.startswith("exact:") for s in slices.requests)
    from prectr.evaluation.statistics import model_statistics

    assert "ndcg@10" not in model_statistics(
        blind, np.random.default_rng(0).random(rows.item_id.size)
    )


def test_evaluating_a_run_writes_every_metric_and_recomputable_scores(tiny_run, tiny_world):
    result = evaluate_run(tiny_run, tiny_world, n_resamples=200)
    saved = json.loads((tiny_run / "evaluation.json").read_text())
    assert saved["metrics"] == pytest.approx(result["metrics"])
    for key in POOLED:
        assert result["metrics"][key] is not None, key
    families = {f"{f}:{b}" for f, bands in FAMILIES.items() for b in bands}
    assert set(result["slices"]) == families | {"new_items", "unexposed"}
    assert result["slices"]["unexposed"]["ndcg@10"] > 0
    assert result["test_days"] == list(result["per_day"]) and len(result["test_days"]) == 1
    online = result["online"]
    assert online["expected_clicks_lo"] < online["expected_clicks"] < online["expected_clicks_hi"]
    assert online["lift_lo"] < online["lift"] < online["lift_hi"]
    assert online["logging_expected_clicks"] > 0
    assert "broad" in result or "broad" in result["skipped"]
    assert 5 <= len(result["calibration_bins"]) <= 10
    for section in (result["metrics"], *result["per_day"].values()):
        assert 0 <= section["ece"] < 0.2

    # scores.parquet covers every candidate of the run's test split and reproduces the AUC
    scores = pq.read_table(tiny_run / "scores.parquet")
    pool = evaluation_pool(World(tiny_world), scores["request_id"].unique())
    assert scores.num_rows == pool.num_rows
    joined = pool.join(scores, ["request_id", "item_id"])
    exposed = joined.filter(joined["click"].is_valid())
    assert auc(exposed["click"].to_numpy(), exposed["score"].to_numpy()) == pytest.approx(
        result["metrics"]["auc"]
    )
    # calibration compares the probability at each impression's logged position with clicks
    click, shown = exposed["click"].to_numpy().astype(int), exposed["shown"].to_numpy()
    assert calibration(click, shown) == pytest.approx(result["metrics"]["calibration"])
    assert expected_calibration_error(click, shown) == pytest.approx(result["metrics"]["ece"])


def test_a_run_is_scored_on_each_of_its_test_days(two_day_runs, tiny_world):
    run, _ = two_day_runs
    result = evaluate_run(run, tiny_world, n_resamples=100)
    requests = read_log(tiny_world).requests
    test = requests["request_id"].take(pa.array(time_split(requests, 1, 2)["test"]))
    scored = pq.read_table(run / "scores.parquet")["request_id"].unique()
    assert sorted(scored.to_pylist()) == sorted(test.to_pylist())
    assert len(result["per_day"]) == 2
    days = result["per_day"].values()
    assert sum(d["test_requests"] for d in days) == result["metrics"]["test_requests"]
    assert sum(d["test_exposed"] for d in days) == result["metrics"]["test_exposed"]


def test_a_run_is_scored_on_its_validation_days_without_touching_the_test_evaluation(
    two_day_runs, tiny_world
):
    run, _ = two_day_runs
    test = evaluate_run(run, tiny_world, n_resamples=50)
    valid = evaluate_run(run, tiny_world, n_resamples=50, split="valid")
    requests = read_log(tiny_world).requests
    days = requests["request_id"].take(pa.array(time_split(requests, 1, 2)["valid"]))
    scored = pq.read_table(run / "scores_valid.parquet")["request_id"].unique()
    assert sorted(scored.to_pylist()) == sorted(days.to_pylist())
    assert valid["split"] == "valid" and len(valid["per_day"]) == 1
    assert set(valid["test_days"]).isdisjoint(test["test_days"])
    assert json.loads((run / "evaluation_valid.json").read_text())["split"] == "valid"
    assert json.loads((run / "evaluation.json").read_text())["test_days"] == test["test_days"]
    with pytest.raises(ValueError, match="split 'train'"):
        evaluate_run(run, tiny_world, split="train")
    # two runs compared on their validation days read those days' scores
    other = two_day_runs[1]
    evaluate_run(other, tiny_world, n_resamples=50, split="valid")
    summary, _ = compare_runs(run, other, tiny_world, n_resamples=50, split="valid")
    assert summary["split"] == "valid" and summary["test_days"] == valid["test_days"]
    assert summary["sections"]["all"]["auc"]["a"] == pytest.approx(valid["metrics"]["auc"])


def test_a_comparison_on_one_day_reads_that_day_as_evaluate_reports_it(two_day_runs, tiny_world):
    """``on_days`` keeps that day's requests alone: each run's metric there is its per-day
    figure from ``evaluate``, the days' requests add up to the pooled comparison's, and a day
    outside the split is refused by name, with the split's days."""
    a, b = two_day_runs
    result = evaluate_run(a, tiny_world, n_resamples=50)
    evaluate_run(b, tiny_world, n_resamples=50)
    pooled, _ = compare_runs(a, b, tiny_world, n_resamples=50)
    requests = 0
    for day, metrics in result["per_day"].items():
        summary, draws = compare_runs(a, b, tiny_world, n_resamples=50, on_days=[day])
        assert summary["test_days"] == [day] and summary["requests"] == metrics["test_requests"]
        assert summary["sections"]["all"]["auc"]["a"] == pytest.approx(metrics["auc"])
        assert len(draws["all/auc"]) == 50
        requests += summary["requests"]
    assert requests == pooled["requests"] and len(result["per_day"]) == 2
    with pytest.raises(ValueError, match="not in the test split, whose days are"):
        compare_runs(a, b, tiny_world, n_resamples=50, on_days=["1999-01-01"])


def test_the_broad_set_is_scored_without_changing_the_pool_scores(two_day_runs, tiny_world):
    from prectr.evaluation.run import score_run
    from prectr.train.run import load_trained

    run = two_day_runs[0]
    result = evaluate_run(run, tiny_world, n_resamples=100)
    broad = result["broad"]
    config = World(tiny_world).config
    kept = config.broad_requests * 2  # the kept sample of each of the run's 2 test days
    assert broad["requests"] == kept
    assert broad["candidates_per_request"] == pytest.approx(config.broad_sample, rel=0.05)
    for key in ("irrelevant@10", "ndcg@10", "recall@100", "expected_clicks"):
        assert broad[key] is not None, key
    written = pq.read_table(run / "broad_scores.parquet")
    assert written.num_rows / kept == pytest.approx(broad["candidates_per_request"], abs=0.05)
    # irrelevant@10 and recall@100 of the exact items, request by request from the scores
    truth = World(tiny_world).broad(pc.unique(written["request_id"]))
    scored = written.join(truth, ["request_id", "item_id"]).to_pandas()
    irrelevant, recall = [], []
    for _, pool in scored.groupby("request_id"):
        ranked = pool.sort_values("score", ascending=False)["true_relevance"].to_numpy()
        irrelevant.append(np.mean(ranked[:10] == 0))
        if (ranked == 3).any():
            recall.append((ranked[:100] == 3).sum() / (ranked == 3).sum())
    assert broad["irrelevant@10"] == pytest.approx(np.mean(irrelevant), rel=1e-9)
    assert broad["recall@100"] == pytest.approx(np.mean(recall), rel=1e-9)

    # appending the broad candidates leaves every pool candidate's features and score unchanged
    log, trained = read_log(tiny_world), load_trained(run)
    context = EvaluationContext.build(open_truth(log, tiny_world), 1, 2)
    plain = score_run(trained, log, context.test_rows, None)
    extended = score_run(trained, log, context.test_rows, context.broad.table)
    assert extended.num_rows > plain.num_rows
    both = plain.join(extended, ["request_id", "item_id"], right_suffix="_broad")
    assert both.num_rows == plain.num_rows
    assert np.allclose(both["score"].to_numpy(), both["score_broad"].to_numpy(), atol=1e-6)


def test_comparing_runs_pairs_every_metric(two_day_runs, tiny_world):
    a, b = two_day_runs
    for run in (a, b):
        evaluate_run(run, tiny_world, n_resamples=50)
    same, same_draws = compare_runs(a, a, tiny_world, n_resamples=100)
    for section in same["sections"].values():
        for d in section.values():
            assert d["diff"] in (0.0, None) and d["lo"] in (0.0, None) and d["hi"] in (0.0, None)
    assert all((d[~np.isnan(d)] == 0).all() for d in same_draws.values())

    summary, draws = compare_runs(a, b, tiny_world, n_resamples=100)
    sections = summary["sections"]
    assert {"all", "broad", "user:cold", "query:unseen", "new_items", "unexposed"} <= set(sections)
    assert set(sections["broad"]) == {"irrelevant@10", "ndcg@10", "recall@100", "expected_clicks"}
    d = sections["all"]["auc"]
    assert d["a"] == pytest.approx(
        json.loads((a / "evaluation.json").read_text())["metrics"]["auc"]
    )
    assert d["lo"] <= d["mean"] <= d["hi"] and d["spans_zero"] == (d["lo"] <= 0 <= d["hi"])
    assert draws["all/auc"].shape == (100,)
    for metric in ("logloss", "calibration"):  # at the logged position, as evaluate reads them
        assert sections["all"][metric]["a"] == pytest.approx(
            json.loads((a / "evaluation.json").read_text())["metrics"][metric]
        ), metric


def test_comparing_runs_of_different_splits_is_refused(tiny_run, two_day_runs, tiny_world):
    with pytest.raises(ValueError, match="split"):
        compare_runs(tiny_run, two_day_runs[0], tiny_world, n_resamples=10)


def _brute_force_bands(requests: pa.Table, train: np.ndarray, evaluated: list[int]) -> dict:
    """Each evaluated request's query and user band, recomputed row by row from the rules in
    prectr/evaluation/slices.py: the layout of training requests query by query (most frequent
    first, ties by text), and each user's requests strictly before in (time, request id)."""
    query = requests["query"].to_pylist()
    user = requests["user_id"].to_pylist()
    ids = requests["request_id"].to_pylist()
    when = list(zip(requests["timestamp"].to_pylist(), ids, strict=True))
    counts: dict[str, int] = {}
    for i in train:
        counts[query[i]] = counts.get(query[i], 0) + 1
    start, layout = {}, 0
    for q in sorted(counts, key=lambda q: (-counts[q], q)):
        start[q] = layout
        layout += counts[q]
    bands = {}
    for i in evaluated:
        q = query[i]
        q_band = "unseen" if q not in start else ("head", "torso", "tail")[
            min(3 * start[q] // layout, 2)]  # fmt: skip
        earlier = sum(user[j] == user[i] and when[j] < when[i] for j in range(len(user)))
        u_band = "cold" if earlier <= 2 else "low" if earlier <= 9 else "mid" if earlier <= 29 \
            else "high"  # fmt: skip
        bands[ids[i]] = {"query": q_band, "user": u_band}
    return bands


def test_slices_equal_a_brute_force_recomputation_on_a_hand_made_log():
    """Every slice mask, and the AUC scored on each, against a row-by-row recomputation on a
    small log of 90 requests over 20 days, 15 of them training days. Users reach every
    activity band: one with 30 and more earlier requests, one with 5, three first seen on the
    evaluated days, and one with four requests at the same time, whose request ids run against
    the table's order (the id decides, and the fourth is no longer cold). Queries of unequal
    frequency, two never seen in training, and two with as many training requests either side
    of the head's third (the text decides which is head). Pools of 6 candidates, 4 shown,
    every one graded (a third of the pools mostly exact), items 20 and up new."""
    rng = np.random.default_rng(3)
    n = 90
    user = rng.choice(4, n, p=[0.5, 0.3, 0.15, 0.05])
    day = rng.integers(0, 20, n)  # several requests a day: equal times, the request id decides
    train, later = np.nonzero(day < 15)[0], np.nonzero(day >= 15)[0]
    head = -(-train.size // 3) - 2  # "a" ends two requests short of a third: b head, c torso
    rest = train.size - head - 8
    query = np.empty(n, dtype=object)
    tail = [f"r{j // 3}" for j in range(rest)]  # rarer than b and c: three requests each
    query[train] = rng.permutation(["a"] * head + ["b"] * 4 + ["c"] * 4 + tail)
    query[later] = rng.choice(["a", "b", "c", *tail], later.size)
    query[later[:6]] = ["y", "z", "y", "a", "b", "c"]  # y and z only after training
    user[later[4:7]] = [7, 8, 8]  # new users: cold
    user[train[:5]], user[later[7]] = 9, 9  # 5 earlier requests: low
    ids = rng.permutation(n) + 100
    same_time = later[8:12]
    user[same_time], day[same_time] = 10, 19
    ids[same_time] = np.sort(ids[same_time])[::-1]  # ids descending in the table's order
    requests = pa.table({
        "request_id": ids, "user_id": user, "query": query.astype(str),
        "timestamp": pa.array(day * 86_400_000, pa.timestamp("ms")),
    })  # fmt: skip
    pool = {"request_id": [], "item_id": [], "user_id": [], "click": [], "grade": []}
    mixes = ([0.4, 0.3, 0.2, 0.1], [0.2, 0.2, 0.3, 0.3], [0.05, 0.05, 0.1, 0.8])
    for k, i in enumerate(later):
        for rank, item in enumerate(rng.choice(30, 6, replace=False)):
            shown = rank < 4
            pool["request_id"].append(int(requests["request_id"][i].as_py()))
            pool["item_id"].append(int(item))
            pool["user_id"].append(int(user[i]))
            pool["click"].append(int(rng.random() < 0.4) if shown else None)
            pool["grade"].append(int(rng.choice(4, p=mixes[k % 3])))
    rows = EvaluationRows.from_pool(pa.table(pool))
    slices = evaluation_slices(requests, train, np.arange(20), rows)

    expected = _brute_force_bands(requests, train, [int(i) for i in later])
    for r, g in zip(pool["request_id"], pool["grade"], strict=True):
        expected[r]["exact"] = expected[r].get("exact", 0) + (g == 3)
    for bands in expected.values():
        bands["exact"] = ("none", "scarce", "scarce", "scarce", "plenty")[min(bands["exact"], 4)]
    for family in FAMILIES:
        for band in FAMILIES[family]:
            want = np.array([expected[int(r)][family] == band for r in rows.request_ids])
            assert want.any(), (family, band)  # the log reaches every band
            assert np.array_equal(slices.requests[f"{family}:{band}"], want), (family, band)
    assert np.array_equal(slices.rows["new_items"], rows.item_id >= 20)
    shown = {(r, i): c is not None for r, i, c in zip(pool["request_id"], pool["item_id"],
                                                      pool["click"], strict=True)}  # fmt: skip
    candidates = zip(rows.request_ids[rows.request], rows.item_id, strict=True)
    unexposed = [not shown[(int(r), int(i))] for r, i in candidates]
    assert np.array_equal(slices.rows["unexposed"], unexposed)

    score = rng.random(rows.request.size)
    sections = slice_statistics(slices, rows, score, None)
    for name in [*slices.requests, "new_items"]:
        mask = slices.row_mask(rows, name) & rows.exposed
        pos, neg = score[mask & (rows.click == 1)], score[mask & (rows.click == 0)]
        if pos.size and neg.size:  # AUC by counting every (click, skip) pair
            pairs = [(p > q) + 0.5 * (p == q) for p in pos for q in neg]
            got = values(sections[name], rows.n_requests)["auc"]
            assert got == pytest.approx(np.mean(pairs), rel=1e-12), name
