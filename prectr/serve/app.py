"""The HTTP ranking service: ``POST /rank``, ``GET /health``, ``GET /metrics``.

FastAPI validates every body against :mod:`prectr.serve.schema` (the OpenAPI document is at
``/openapi.json``), so bad input gets a 4xx and never reaches the model: a body over
``max_body_bytes`` a 413; a missing field, a wrong type (``true`` is no id), a number that is
not finite or out of range, more candidates than ``max_candidates`` or an item id repeated
a 422 that names each problem's field and index, never echoing the input; an id the log's
id type cannot hold also a 422 naming it. The relevance floor drops candidates whose
probability of being relevant, P(grade >= 2), is below it: the knob a product team turns to
trade clicks for relevance (per service, or per request). ``/metrics`` is Prometheus text:
every response by path and status, a latency histogram, item-cache counters.
"""

# no `from __future__ import annotations`: FastAPI reads the request model defined inside
# create_app from the endpoint's real annotation

import asyncio
import contextlib
import gc
import os
import time

from fastapi import FastAPI, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic_core import to_json
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prectr.serve.ranker import Candidate, IdError, Ranker, SearchRequest
from prectr.serve.schema import RULES, RankOut, problem, rank_in, refused, validation_error

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
MAX_BODY_BYTES = 2 * 1024 * 1024  # 1,000 candidates with long titles take about 300 kB


class BodyLimit:
    """Answers 413 to a request whose body passes ``limit`` bytes: at once when its
    Content-Length says so, otherwise when the bytes read pass it (the body is read here,
    before the app sees it, so a body streamed without a length is counted too)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await self.too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            size, more = size + len(chunks[-1]), message.get("more_body", False)
            if size > self.limit:
                return await self.too_large(scope, receive, send)
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def read() -> Message:
            return replay.pop() if replay else await receive()

        return await self.app(scope, read, send)

    async def too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        msg = f"the body passes the limit of {self.limit} bytes"
        await refused(413, [problem(["body"], msg, "body_too_large")])(scope, receive, send)


class CountResponses:
    """Counts every response by path and status in ``counter``, those the app refuses before
    an endpoint runs (413, 422) and the 500 of an exception included. Paths the app does not
    serve count as ``other``, so a scan of random URLs cannot grow the label set."""

    def __init__(self, app: ASGIApp, counter: Counter, paths: set[str]):
        self.app, self.counter, self.paths = app, counter, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = None

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except Exception:
            status = status or 500  # the error middleware outside answers it with a 500
            raise
        finally:
            if status is not None:
                path = scope["path"] if scope["path"] in self.paths else "other"
                self.counter.labels(path, str(status)).inc()
        return None


def create_app(
    ranker: Ranker,
    max_candidates: int = 1000,
    relevance_floor: float | None = None,
    refresh_seconds: float | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The service around ``ranker``. ``refresh_seconds``: how often to look at the history
    log on disk and rebuild the history store when it changed (in a thread; the old store
    serves until then); None never does. ``max_candidates`` and ``max_body_bytes`` bound a
    request (422 and 413 beyond them)."""
    if relevance_floor is not None and "grades" not in ranker.outputs:
        raise ValueError(f"{ranker.run.path}: model {ranker.run.config.model!r} predicts no "
                         "relevance grades, so a relevance floor cannot apply")  # fmt: skip
    RankIn = rank_in(max_candidates)

    registry = CollectorRegistry()
    requests = Counter("prectr_requests", "responses by path and status", ["path", "status"],
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
                if changed:
                    gc.freeze()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        # what is loaded by now (the run, the history store) lives as long as the service:
        # frozen, full collections skip it (in a process holding a `bench` service, 162 ms
        # before and 0.002 ms after: BENCHMARKS.md, Serving), a pause every waiting request
        # would share
        gc.freeze()
        task = asyncio.create_task(refresh_loop()) if refresh_seconds else None
        yield
        if task is not None:
            task.cancel()

    app = FastAPI(title="prectr ranking service", version=ranker.run.config.model,
                  lifespan=lifespan, description=RULES)  # fmt: skip
    app.add_exception_handler(RequestValidationError, validation_error)
    name = ranker.run.config.name or ranker.run.config.model

    # async on purpose: a worker ranks one request at a time on the event loop. Run in the
    # thread pool, concurrent requests thrash one worker's core (measured: 85 against 235
    # requests/s on one worker, benchmarks/serve_load.py); scale with --workers instead.
    # The response is built as JSON directly, by pydantic-core's serializer (0.045 ms against
    # json.dumps's 0.21 at 50 candidates, BENCHMARKS.md): RankOut documents it (the OpenAPI
    # schema), but validating the service's own output again per candidate would only cost
    # time.
    @app.post("/rank", response_model=RankOut)
    async def rank(body: RankIn) -> Response:
        started = time.perf_counter()
        request = ranker.resolve(SearchRequest(
            body.user_id, body.query,
            [Candidate(c.item_id, c.title, c.category, c.brand, c.price) for c in body.candidates],
            body.query_category, body.timestamp,
        ))  # fmt: skip
        try:
            ranked = ranker.rank(request)
        except IdError as err:  # ids that cannot be the log's ids
            return refused(422, [problem(["body", *err.loc], err.reason, "id_type")])
        floor = body.relevance_floor if body.relevance_floor is not None else relevance_floor
        out = []
        for r in ranked:
            relevant = None if r.grades is None else r.grades[2] + r.grades[3]
            if floor is not None and relevant is not None and relevant < floor:
                continue
            out.append({"item_id": r.item_id, "score": r.score, "grades": r.grades,
                        "relevant": relevant, "incentive": r.incentive})  # fmt: skip
        latency.observe(time.perf_counter() - started)
        answer = {"ranking": out, "dropped": len(ranked) - len(out), "model": name,
                  "timestamp": request.timestamp,
                  "query_category": request.query_category}  # fmt: skip
        return Response(to_json(answer), media_type="application/json")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "run": str(ranker.run.path), "model": ranker.run.config.model}

    @app.get("/metrics")
    def metrics() -> Response:
        cache.labels("hits").set(ranker.cache.hits)
        cache.labels("misses").set(ranker.cache.misses)
        cache.labels("size").set(len(ranker.cache))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # added last, so outermost: the 413s of the body limit are counted too
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(CountResponses, counter=requests, paths={r.path for r in app.routes})
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
                      float(refresh) if refresh else None,
                      int(env.get("PRECTR_MAX_BODY_BYTES", str(MAX_BODY_BYTES))))  # fmt: skip
