"""Online = offline: the README's example request, and what a request without a timestamp or a
query category is scored with."""

import json
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from fastapi.testclient import TestClient

from prectr.data.history import normalised_query
from prectr.data.schema import SearchLog, read_log
from prectr.evaluation.run import score_run
from prectr.serve.app import create_app
from prectr.serve.ranker import Ranker
from prectr.serve.store import QUERY_CATEGORY_VOTES
from prectr.train.run import load_trained
from tests.serve.test_ranker import request_of

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_request() -> dict:
    """The body of the README's ``curl .../rank`` example."""
    found = re.search(r"curl [^\n]*/rank .*?-d '(\{.*?\})'", README.read_text(), re.S)
    assert found, f"{README}: no curl example of POST /rank"
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def readme_log(tiny_world, tmp_path_factory) -> tuple[Path, int]:
    """The tiny world with the README's request in it, and that request's id: its candidates
    as items (in place of an item of the same id), the request under a new id, its candidates
    as unexposed impressions."""
    body = readme_request()
    log = read_log(tiny_world)
    sent = [{f: c.get(f) for f in ("item_id", "title", "category", "brand", "price")}
            for c in body["candidates"]]  # fmt: skip
    ids = pa.array([c["item_id"] for c in sent], log.items.schema.field("item_id").type)
    items = pa.concat_tables([log.items.filter(pc.invert(pc.is_in(log.items["item_id"], ids))),
                              pa.Table.from_pylist(sent, log.items.schema)])  # fmt: skip
    request_id = pc.max(log.requests["request_id"]).as_py() + 1
    stamp = datetime.fromisoformat(body["timestamp"])
    request = {"request_id": request_id, "user_id": body["user_id"], "query": body["query"],
               "timestamp": stamp, "query_category": body["query_category"]}  # fmt: skip
    requests = pa.concat_tables([log.requests,
                                 pa.Table.from_pylist([request], log.requests.schema)])  # fmt: skip
    shown = pa.Table.from_pylist([{"request_id": request_id, "item_id": c["item_id"]}
                                  for c in sent], log.impressions.schema)  # fmt: skip
    impressions = pa.concat_tables([log.impressions, shown])
    out = tmp_path_factory.mktemp("readme") / "log"
    SearchLog(items, requests, impressions).write(out)
    return out, request_id


@pytest.fixture(scope="module")
def readme_client(prectr_run, readme_log) -> TestClient:
    return TestClient(create_app(Ranker(prectr_run, history=readme_log[0])))


def scores_of(response) -> dict:
    assert response.status_code == 200, response.text
    return {r["item_id"]: r["score"] for r in response.json()["ranking"]}


def test_the_readme_request_carries_what_parity_needs():
    body = readme_request()
    assert {"user_id", "query", "query_category", "timestamp", "candidates"} <= set(body)
    assert all({"item_id", "title", "category", "brand", "price"} <= set(c)
               for c in body["candidates"])  # fmt: skip


def test_the_readme_request_scores_online_as_offline(prectr_run, readme_log, readme_client,
                                                      tmp_path):  # fmt: skip
    path, request_id = readme_log
    run = tmp_path / "run"  # score_run writes into the run: a copy keeps the shared one intact
    shutil.copytree(prectr_run, run)
    log = read_log(path)
    row = pc.index(log.requests["request_id"], request_id).as_py()
    offline = score_run(load_trained(run), log, np.array([row]), None)
    want = dict(zip(offline["item_id"].to_pylist(), offline["score"].to_pylist(), strict=True))
    body = readme_request()
    got = scores_of(readme_client.post("/rank", json=body))
    assert set(got) == set(want) == {c["item_id"] for c in body["candidates"]}
    np.testing.assert_allclose([got[i] for i in want], list(want.values()), atol=1e-6, rtol=0)
    # and what parity needs is what the README sends: without it the scores move
    for field in ("timestamp", "query_category"):
        moved = scores_of(readme_client.post("/rank", json={**body, field: None}))
        assert max(abs(moved[i] - want[i]) for i in want) > 1e-3, field


@pytest.fixture(scope="module")
def ranker(prectr_run, tiny_world) -> Ranker:
    return Ranker(prectr_run, history=tiny_world)


@pytest.fixture(scope="module")
def log(tiny_world):
    return read_log(tiny_world)


def test_a_request_without_a_timestamp_is_scored_as_of_its_arrival(ranker, readme_log):
    client = TestClient(create_app(ranker))
    body = {**readme_request(), "timestamp": None}
    before = datetime.now(UTC).replace(tzinfo=None)
    response = client.post("/rank", json=body)
    after = datetime.now(UTC).replace(tzinfo=None)
    stamp = datetime.fromisoformat(response.json()["timestamp"])
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= stamp <= after
    explicit = client.post("/rank", json={**body, "timestamp": stamp.isoformat()})
    assert scores_of(response) == scores_of(explicit)
    aware = client.post("/rank", json={**body, "timestamp": "2026-01-17T04:34:43.591+02:00"})
    assert aware.json()["timestamp"] == "2026-01-17T02:34:43.591000"  # UTC, naive as the log


def test_a_request_without_a_query_category_takes_the_log_s_most_frequent(ranker, log):
    requests = log.requests.to_pylist()
    query = normalised_query(log.requests["query"]).to_pylist()
    checked = set()
    for row in np.linspace(len(requests) // 2, len(requests) - 1, 40).astype(int).tolist():
        req = requests[row]
        before = [i for i in range(len(requests)) if query[i] == query[row]
                  and requests[i]["timestamp"] < req["timestamp"]]  # fmt: skip
        votes = [requests[i]["query_category"] for i in before[-QUERY_CATEGORY_VOTES:]]
        counts = {c: votes.count(c) for c in votes}
        best = max(counts.values(), default=0)
        want = next((c for c in reversed(votes) if counts[c] == best), None)
        got = ranker.store.query_category(req["query"].upper() + "  ", req["timestamp"])
        assert got == want, row
        checked.add((want is None, best < len(votes)))  # none, unanimous, or a vote
        request = request_of(log, req["request_id"])
        derived = ranker.score(replace(request, query_category=None))
        explicit = ranker.score(replace(request, query_category=want))
        np.testing.assert_array_equal(derived["score"], explicit["score"])
    assert (False, True) in checked and (False, False) in checked  # split votes were checked
    assert ranker.store.query_category("a query never logged", datetime(2030, 1, 1)) is None


def test_a_history_log_without_query_categories_reads_as_all_null(prectr_run, log, tmp_path):
    nulls = log.requests.set_column(
        log.requests.column_names.index("query_category"), "query_category",
        pa.nulls(log.requests.num_rows, pa.string()),
    )  # fmt: skip
    SearchLog(log.items, log.requests.drop_columns("query_category"), log.impressions).write(
        tmp_path / "without"
    )
    SearchLog(log.items, nulls, log.impressions).write(tmp_path / "null")
    without, null = Ranker(prectr_run, tmp_path / "without"), Ranker(prectr_run, tmp_path / "null")
    request = request_of(log, log.requests["request_id"][-1].as_py())
    for category in (None, request.query_category):
        sent = replace(request, query_category=category)
        assert without.resolve(sent).query_category == category  # none derived from the log
        np.testing.assert_array_equal(without.score(sent)["score"], null.score(sent)["score"])


def test_a_model_trained_without_query_categories_reads_none(tiny_world, log, tmp_path):
    from prectr.train.trainer import Trainer
    from tests.conftest import tiny_config

    SearchLog(log.items, log.requests.drop_columns("query_category"), log.impressions).write(
        tmp_path / "log"
    )
    Trainer(tiny_config(tmp_path / "log"), tmp_path / "run").fit()
    client = TestClient(create_app(Ranker(tmp_path / "run", history=tiny_world)))
    body = readme_request()
    sent = client.post("/rank", json=body)
    assert sent.json()["query_category"] is None
    assert scores_of(sent) == scores_of(client.post("/rank", json={**body, "query_category": None}))
