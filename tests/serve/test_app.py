import gc
import json

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from prectr.serve.app import create_app
from prectr.serve.ranker import Ranker, SearchRequest
from prectr.serve.schema import MAX_ERRORS, RULES, RankedOut, RankOut
from tests.serve.test_ranker import request_of


@pytest.fixture(scope="module")
def ranker(prectr_run, tiny_world) -> Ranker:
    return Ranker(prectr_run, history=tiny_world)


@pytest.fixture(scope="module")
def client(ranker) -> TestClient:
    return TestClient(create_app(ranker, max_candidates=60))


@pytest.fixture(scope="module")
def logged(tiny_world) -> SearchRequest:
    """The log's last request, as a caller would send it."""
    from prectr.data.schema import read_log

    log = read_log(tiny_world)
    return request_of(log, int(log.requests["request_id"][-1].as_py()))


@pytest.fixture(scope="module")
def body(logged) -> dict:
    request = logged
    return {
        "user_id": request.user_id,
        "query": request.query,
        "query_category": request.query_category,
        "timestamp": request.timestamp.isoformat(),
        "candidates": [vars(c) for c in request.candidates],
    }


def test_rank_returns_the_ranker_s_ranking(client, ranker, body, logged):
    response = client.post("/rank", json=body)
    assert response.status_code == 200, response.text
    got = response.json()
    # built as JSON directly, the body still is the documented RankOut, field for field
    assert RankOut.model_validate(got).model_dump(mode="json") == got
    assert set(got["ranking"][0]) == set(RankedOut.model_fields)
    assert got["dropped"] == 0 and len(got["ranking"]) == len(body["candidates"])
    assert (got["timestamp"], got["query_category"]) == (body["timestamp"], body["query_category"])
    scores = [r["score"] for r in got["ranking"]]
    assert scores == sorted(scores, reverse=True)
    first = got["ranking"][0]
    assert abs(first["relevant"] - sum(first["grades"][2:])) < 1e-6
    # item for item, what the ranker itself gives the logged request: score, grades, incentive
    direct = ranker.rank(logged)
    assert [r["item_id"] for r in got["ranking"]] == [r.item_id for r in direct]
    for served, ranked in zip(got["ranking"], direct, strict=True):
        assert served["score"] == pytest.approx(ranked.score, abs=1e-6)
        assert served["grades"] == pytest.approx(ranked.grades, abs=1e-6)
        assert served["incentive"] == pytest.approx(ranked.incentive, abs=1e-6)


def test_relevance_floor_drops_doubtful_candidates(client, body):
    everything = client.post("/rank", json=body).json()["ranking"]
    floor = sorted(r["relevant"] for r in everything)[len(everything) // 2]
    kept = client.post("/rank", json={**body, "relevance_floor": floor}).json()
    assert kept["dropped"] > 0 and all(r["relevant"] >= floor for r in kept["ranking"])
    assert kept["dropped"] + len(kept["ranking"]) == len(everything)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"candidates": [{"item_id": 1, "title": "t", "category": "c"}] * 61}, "candidates"),
        ({"query": None}, "query"),
        ({"candidates": [{"item_id": 1, "category": "c"}]}, "title"),
        ({"candidates": [{"item_id": 1, "title": "t", "category": "c", "price": "cheap"}]},
         "price"),
        ({"candidates": [{"item_id": "x-1", "title": "t", "category": "c"}]}, "item_id"),
    ],
)  # fmt: skip
def test_bad_bodies_get_a_422_naming_the_field(client, body, change, field):
    response = client.post("/rank", json={**body, **change})
    assert response.status_code == 422
    assert field in response.text


def test_malformed_json_and_empty_candidates(client, body):
    response = client.post(
        "/rank", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    response = client.post("/rank", json={**body, "candidates": []})
    assert response.status_code == 200 and response.json()["ranking"] == []
    assert client.get("/health").json()["status"] == "ok"


def test_metrics_count_requests_and_latency(client, body):
    client.post("/rank", json=body)
    text = client.get("/metrics").text
    assert 'prectr_requests_total{path="/rank",status="200"}' in text
    assert "prectr_rank_seconds_bucket" in text and 'prectr_item_cache{kind="hits"}' in text


def test_openapi_schema_describes_rank(client):
    schema = client.get("/openapi.json").json()
    assert "/rank" in schema["paths"] and "RankOut" in schema["components"]["schemas"]
    assert schema["info"]["description"] == RULES and "each item once" in RULES


def test_a_floor_needs_a_model_with_grades(tiny_run, tiny_world):
    with pytest.raises(ValueError, match="no relevance grades"):
        create_app(Ranker(tiny_run, history=tiny_world), relevance_floor=0.5)


def test_the_service_refreshes_its_history_store_in_the_background(prectr_run, tiny_world):
    import time

    ranker = Ranker(prectr_run, history=tiny_world)
    calls = []
    ranker.refresh_history = lambda: calls.append(1) or False
    with TestClient(create_app(ranker, refresh_seconds=0.05)) as client:
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        text = client.get("/metrics").text
    assert calls and 'prectr_history_refreshes_total{outcome="unchanged"}' in text


MARK = "do-not-echo-me"  # a title in every bad body: no response may carry it back


def obj(**fields: object) -> str:
    """A JSON object from the JSON text of each value (NaN and Infinity are not JSON, so
    json.dumps cannot write the bodies below)."""
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"


def candidate(item_id: object, **fields: str) -> str:
    return obj(item_id=item_id, title=f'"{MARK}"', category='"c"', **fields)


def raw(candidates: list[str], user_id: str = "1", **fields: str) -> str:
    return obj(user_id=user_id, query='"sofa"', candidates=f"[{', '.join(candidates)}]", **fields)


def post(client: TestClient, content) -> Response:
    return client.post("/rank", content=content, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("text", "loc"),
    [
        (raw([candidate(1, price="NaN")]), ["body", "candidates", 0, "price"]),
        (raw([candidate(1), candidate(2, price="Infinity")]), ["body", "candidates", 1, "price"]),
        (raw([candidate(1, price="-Infinity")]), ["body", "candidates", 0, "price"]),
        (raw([candidate(1, price="1e308")]), ["body", "candidates", 0, "price"]),
        (raw([candidate(1, price="-1")]), ["body", "candidates", 0, "price"]),
        (raw([candidate(1, price="true")]), ["body", "candidates", 0, "price"]),
        (raw([candidate(1)], relevance_floor="NaN"), ["body", "relevance_floor"]),
        (raw([candidate(1)], relevance_floor="1.5"), ["body", "relevance_floor"]),
        (raw([candidate(1)], user_id="true"), ["body", "user_id", "int"]),
        (raw([candidate(1)], user_id="1.5"), ["body", "user_id", "int"]),
        (raw([candidate(1), candidate("false")]), ["body", "candidates", 1, "item_id", "int"]),
        (raw([candidate(i) for i in range(61)]), ["body", "candidates"]),
        (raw([candidate(5), candidate(7), candidate('"5"'), candidate(7)]), ["body", "candidates"]),
        (raw([candidate(1), candidate('"x-1"')]), ["body", "candidates", 1, "item_id"]),  # ids: int
        (f'{{"not json {MARK}', ["body", 1]),
        (f'["{MARK}"]', ["body"]),
    ],
)  # fmt: skip
def test_bad_input_gets_a_small_422_naming_where_and_never_echoing(client, text, loc):
    response = post(client, text)
    assert response.status_code == 422, response.text
    assert loc in [p["loc"] for p in response.json()["detail"]]
    assert MARK not in response.text and len(response.content) < 1000
    assert all(set(p) == {"loc", "msg", "type"} for p in response.json()["detail"])


def test_a_body_that_is_not_json_at_all_gets_a_422(client):
    response = client.post("/rank", content=MARK, headers={"content-type": "text/plain"})
    assert response.status_code == 422 and MARK not in response.text


def test_repeated_item_ids_are_refused_naming_each_copy(client):
    text = raw([candidate(5), candidate(7), candidate('"5"'), candidate(7), candidate(8)])
    response = post(client, text)
    (problem,) = response.json()["detail"]
    assert problem["type"] == "duplicate_item_id"
    assert "candidate 2 repeats 0, 3 repeats 1" in problem["msg"]  # 5 and "5" are one item


def test_a_422_lists_at_most_max_errors_problems_and_counts_them_all(client):
    text = raw([candidate(i, price="NaN") for i in range(50)])
    response = post(client, text)
    got = response.json()
    assert len(got["detail"]) == MAX_ERRORS and got["errors"] == 50
    assert len(response.content) < 4000


def test_bodies_over_the_limit_get_a_413_whether_sized_or_streamed(ranker, body):
    client = TestClient(create_app(ranker, max_body_bytes=10_000))
    big = raw([candidate(i) for i in range(300)])
    assert len(big) > 10_000
    response = post(client, big)
    assert response.status_code == 413 and MARK not in response.text
    assert response.json()["detail"][0]["type"] == "body_too_large"

    def chunks(text: str):  # no Content-Length: sent chunked
        data = text.encode()
        yield from (data[i : i + 1000] for i in range(0, len(data), 1000))

    streamed = post(client, chunks(big))
    assert streamed.status_code == 413 and MARK not in streamed.text
    small = json.dumps({**body, "candidates": body["candidates"][:5]})
    assert len(small) < 10_000
    ok = post(client, chunks(small))
    assert ok.status_code == 200 and len(ok.json()["ranking"]) == 5


def test_metrics_count_every_response_once_by_path_and_status(ranker, body, monkeypatch):
    client = TestClient(create_app(ranker, max_body_bytes=10_000), raise_server_exceptions=False)
    assert client.post("/rank", json=body).status_code == 200
    assert client.post("/rank", json={**body, "user_id": True}).status_code == 422
    assert client.post("/rank", content=b"x" * 10_001).status_code == 413
    assert client.get("/nowhere").status_code == 404

    def fail(_):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(ranker, "rank", fail)
    assert client.post("/rank", json=body).status_code == 500
    text = client.get("/metrics").text
    for path, status in [("/rank", 200), ("/rank", 422), ("/rank", 413), ("/rank", 500),
                         ("other", 404)]:  # fmt: skip
        assert f'prectr_requests_total{{path="{path}",status="{status}"}} 1.0' in text
    assert "prectr_rank_seconds_count 1.0" in text  # only the answered request is timed


def test_the_service_freezes_what_it_loaded_out_of_the_collector_s_sight(ranker):
    gc.unfreeze()
    with TestClient(create_app(ranker)) as client:  # the lifespan runs
        assert gc.get_freeze_count() > 100_000  # the run and its history store, among others
        assert client.get("/health").status_code == 200
