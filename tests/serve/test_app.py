import pytest
from fastapi.testclient import TestClient

from prectr.serve.app import RankedOut, RankOut, create_app
from prectr.serve.ranker import Ranker
from tests.serve.test_ranker import request_of


@pytest.fixture(scope="module")
def ranker(prectr_run, tiny_world) -> Ranker:
    return Ranker(prectr_run, history=tiny_world)


@pytest.fixture(scope="module")
def client(ranker) -> TestClient:
    return TestClient(create_app(ranker, max_candidates=60))


@pytest.fixture(scope="module")
def body(ranker, tiny_world) -> dict:
    from prectr.data.schema import read_log

    log = read_log(tiny_world)
    request = request_of(log, int(log.requests["request_id"][-1].as_py()))
    return {
        "user_id": request.user_id,
        "query": request.query,
        "query_category": request.query_category,
        "timestamp": request.timestamp.isoformat(),
        "candidates": [vars(c) for c in request.candidates],
    }


def test_rank_returns_the_ranker_s_ranking(client, ranker, body):
    response = client.post("/rank", json=body)
    assert response.status_code == 200, response.text
    got = response.json()
    # built as JSON directly, the body still is the documented RankOut, field for field
    assert RankOut.model_validate(got).model_dump() == got
    assert set(got["ranking"][0]) == set(RankedOut.model_fields)
    assert got["dropped"] == 0 and len(got["ranking"]) == len(body["candidates"])
    scores = [r["score"] for r in got["ranking"]]
    assert scores == sorted(scores, reverse=True)
    first = got["ranking"][0]
    assert abs(first["relevant"] - sum(first["grades"][2:])) < 1e-6
    assert first["incentive"] is not None


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
    assert 'prectr_requests_total{status="200"}' in text
    assert "prectr_rank_seconds_bucket" in text and 'prectr_item_cache{kind="hits"}' in text


def test_openapi_schema_describes_rank(client):
    schema = client.get("/openapi.json").json()
    assert "/rank" in schema["paths"] and "RankOut" in schema["components"]["schemas"]


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
