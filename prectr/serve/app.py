"""The HTTP ranking service: ``POST /rank``, ``GET /health``, ``GET /metrics``.

FastAPI validates every body against the schema below (the OpenAPI document is at
``/openapi.json``): a missing field, a wrong type or more candidates than ``max_candidates``
get a 422 that names the field, and a malformed body never reaches the model. The relevance
floor drops candidates whose probability of being relevant, P(grade >= 2), is below it: the
knob a product team turns to trade clicks for relevance (per service, or per request).
``/metrics`` is Prometheus text: requests by status, a latency histogram, item-cache hits.
"""

# no `from __future__ import annotations`: FastAPI reads the request model defined inside
# create_app from the endpoint's real annotation

import asyncio
import contextlib
import os
import time
from datetime import datetime
from typing import Annotated

from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field

from prectr.serve.ranker import Candidate, Ranker, SearchRequest

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class CandidateIn(BaseModel):
    item_id: int | str
    title: str
    category: str
    brand: str | None = None
    price: float | None = Field(default=None, ge=0)


class RankedOut(BaseModel):
    item_id: int | str
    score: float = Field(description="P(click), what the ranking sorts by")
    grades: list[float] | None = Field(default=None, description="P(grade = 0..3)")
    relevant: float | None = Field(default=None, description="P(grade >= 2)")
    incentive: float | None = Field(default=None, description="personalised incentive (logit)")


class RankOut(BaseModel):
    ranking: list[RankedOut]
    dropped: int = Field(description="candidates below the relevance floor")
    model: str


def create_app(
    ranker: Ranker,
    max_candidates: int = 1000,
    relevance_floor: float | None = None,
    refresh_seconds: float | None = None,
) -> FastAPI:
    """The service around ``ranker``. ``refresh_seconds``: how often to look at the history
    log on disk and rebuild the history store when it changed (in a thread; the old store
    serves until then); None never does."""
    if relevance_floor is not None and "grades" not in ranker.outputs:
        raise ValueError(f"{ranker.run.path}: model {ranker.run.config.model!r} predicts no "
                         "relevance grades, so a relevance floor cannot apply")  # fmt: skip

    class RankIn(BaseModel):
        user_id: int | str
        query: str
        query_category: str | None = None
        timestamp: datetime | None = None
        candidates: Annotated[list[CandidateIn], Field(max_length=max_candidates)]
        relevance_floor: float | None = Field(default=None, ge=0, le=1)

    registry = CollectorRegistry()
    requests = Counter("prectr_requests", "rank requests by status", ["status"],
                       registry=registry)  # fmt: skip
    latency = Histogram("prectr_rank_seconds", "time to rank a request", buckets=LATENCY_BUCKETS,
                        registry=registry)  # fmt: skip
    cache = Gauge("prectr_item_cache", "item cache counters", ["kind"], registry=registry)
    refreshes = Counter("prectr_history_refreshes", "history store rebuilds by outcome",
                        ["outcome"], registry=registry)  # fmt: skip

    async def refresh_loop() -> None:
        while True:
            await asyncio.sleep(refresh_seconds)
            try:
                changed = await asyncio.to_thread(ranker.refresh_history)
            except (ValueError, OSError):  # an invalid or unreadable log: keep the old store
                refreshes.labels("failed").inc()
            else:
                refreshes.labels("rebuilt" if changed else "unchanged").inc()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        task = asyncio.create_task(refresh_loop()) if refresh_seconds else None
        yield
        if task is not None:
            task.cancel()

    app = FastAPI(title="prectr ranking service", version=ranker.run.config.model,
                  lifespan=lifespan)  # fmt: skip
    name = ranker.run.config.name or ranker.run.config.model

    # async on purpose: a worker ranks one request at a time on the event loop. Run in the
    # thread pool, concurrent requests thrash one worker's core (measured: 85 against 235
    # requests/s on one worker, benchmarks/serve_load.py); scale with --workers instead.
    # The response is built as JSON directly: RankOut documents it (the OpenAPI schema), but
    # validating the service's own output again per candidate would only cost time.
    @app.post("/rank", response_model=RankOut)
    async def rank(body: RankIn) -> Response:
        started = time.perf_counter()
        request = SearchRequest(
            body.user_id, body.query,
            [Candidate(c.item_id, c.title, c.category, c.brand, c.price) for c in body.candidates],
            body.query_category, body.timestamp,
        )  # fmt: skip
        try:
            ranked = ranker.rank(request)
        except ValueError as err:  # ids that cannot be the log's ids
            requests.labels("422").inc()
            raise HTTPException(422, str(err)) from err
        floor = body.relevance_floor if body.relevance_floor is not None else relevance_floor
        out = []
        for r in ranked:
            relevant = None if r.grades is None else r.grades[2] + r.grades[3]
            if floor is not None and relevant is not None and relevant < floor:
                continue
            out.append({"item_id": r.item_id, "score": r.score, "grades": r.grades,
                        "relevant": relevant, "incentive": r.incentive})  # fmt: skip
        latency.observe(time.perf_counter() - started)
        requests.labels("200").inc()
        return JSONResponse({"ranking": out, "dropped": len(ranked) - len(out), "model": name})

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "run": str(ranker.run.path), "model": ranker.run.config.model}

    @app.get("/metrics")
    def metrics() -> Response:
        cache.labels("hits").set(ranker.cache.hits)
        cache.labels("misses").set(ranker.cache.misses)
        cache.labels("size").set(len(ranker.cache))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_env() -> FastAPI:
    """The app uvicorn workers build (``prectr serve`` passes its options in the environment)."""
    env = os.environ
    floor = env.get("PRECTR_RELEVANCE_FLOOR")
    ranker = Ranker(env["PRECTR_RUN"], env.get("PRECTR_HISTORY") or None,
                    env.get("PRECTR_CHECKPOINT", "best"),
                    int(env.get("PRECTR_CACHE_SIZE", "100000")),
                    int(env.get("PRECTR_THREADS", "1")),
                    env.get("PRECTR_ENGINE", "torch"))  # fmt: skip
    refresh = env.get("PRECTR_REFRESH_SECONDS")
    return create_app(ranker, int(env.get("PRECTR_MAX_CANDIDATES", "1000")),
                      float(floor) if floor else None,
                      float(refresh) if refresh else None)  # fmt: skip
