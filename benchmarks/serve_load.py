"""HTTP load on loopback: `prectr serve` under a lean load generator in another process, with
clean bodies and with a share of malformed ones, optionally beside the code before a change.

Run: .venv/bin/python benchmarks/serve_load.py --run runs/v2_bench --history runs/worlds/bench-s0 \\
         --workers 1 --malformed 0 0.1 --baseline /tmp/before --rounds 3
For each worker count and each code checkout (this one, and ``--baseline``, a checkout of the
code before a change, e.g. ``git archive COMMIT | tar -x -C /tmp/before``) the service starts
as its own process (`prectr serve` from that checkout). Then, for each share of malformed
bodies, each service in turn takes ``--seconds`` of load: ``--concurrency`` keep-alive
connections, each sending ``POST /rank`` with ``--candidates`` candidates (logged requests of
the history log, padded with catalogue items) and waiting for the answer. A malformed body is
one of ``KINDS``, in turn: a NaN price, a wrong type, a missing field, a body over the service's
body limit. The generator writes prepared bytes and reads the status and Content-Length itself
(about 0.2 ms of CPU a request, against 1.7 ms for an httpx client): on a machine whose cores
it shares with the service, a heavier client takes the service's CPU. Reports requests/s,
client-side p50/p99 latency (all requests, and clean ones), the statuses of clean and malformed
requests (every clean one should be 200, every malformed one a 4xx), the service's memory at
the start, end and peak of the load (all its processes, sampled every second), and the CPU
each side spent per request; before the loads, where a request's CPU goes in process
(:func:`in_process`); with ``--baseline``, this code over the baseline in each round
(``--rounds``: the codes take turns, each going first in turn). ``--profile SECONDS`` adds one
more clean load of this code under py-spy (``pip install py-spy``): the share of the
service's samples in each part of a request (``PARTS``). Writes results/serve_load.json
(results/serve_load_onnx.json with ``--engine onnx``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import psutil
from pydantic_core import to_json
from record import ROOT, machine, write_record

from prectr.serve.app import MAX_BODY_BYTES, create_app
from prectr.serve.ranker import Candidate, Ranker, SearchRequest

KINDS = ("nan_price", "wrong_type", "missing_field", "oversized")
# the parts of a request a profile is summed by: a sample counts in the first part (in this
# order) with a frame of one of its functions on the stack, else in the HTTP server's part
PARTS = {
    "features and batch": ("Ranker.batch",),
    "model forward (eager PyTorch)": ("ScoringGraph.forward",),
    "rest of the endpoint (request objects, order, JSON)": ("create_app.<locals>.rank",),
    "body parsing and validation (FastAPI, pydantic)": ("get_request_handler.<locals>.app",),
    "writing the response (uvicorn)": ("RequestResponseCycle.send",),
}
SERVER = "HTTP parsing, middleware, event loop"


def bodies(ranker: Ranker, candidates: int, n: int) -> list[dict]:
    """``n`` bodies: the history log's last requests, each with its logged candidates padded
    to ``candidates`` with catalogue items, its query category and timestamp."""
    out, row = [], ranker.store.requests.num_rows - 1
    items = ranker.store.items.slice(0, 20_000).to_pylist()
    while len(out) < n:
        request = ranker.logged_request(row)
        row -= 1
        fill = [{k: i[k] for k in ("item_id", "title", "category", "brand", "price")}
                for i in items[len(out) * candidates : (len(out) + 1) * candidates]]  # fmt: skip
        cands = ([vars(c) for c in request.candidates] + fill)[:candidates]
        out.append({"user_id": request.user_id, "query": request.query,
                    "query_category": request.query_category,
                    "timestamp": request.timestamp.isoformat(), "candidates": cands})  # fmt: skip
    return out


def malformed(body: dict, kind: str, limit: int) -> bytes:
    """``body`` broken in one way of ``KINDS``; ``limit``: the service's body limit."""
    body = {**body, "candidates": [dict(c) for c in body["candidates"]]}
    if kind == "nan_price":
        body["candidates"][-1]["price"] = math.nan  # json.dumps writes NaN
    elif kind == "wrong_type":
        body["user_id"] = True
    elif kind == "missing_field":
        del body["query"]
    elif kind == "oversized":
        body["candidates"][0]["title"] = "x" * limit
    else:
        raise ValueError(f"unknown kind of malformed body {kind!r}")
    return json.dumps(body).encode()


def http_post(body: bytes) -> bytes:
    return (b"POST /rank HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body)) + body  # fmt: skip


def workload(payloads: list[dict], share: float, limit: int, seed: int = 0) -> list[tuple]:
    """(kind, request bytes) per payload: ``clean``, or with probability ``share`` a malformed
    body, the kinds in turn."""
    rng, out, broken = random.Random(seed), [], 0
    for body in payloads:
        if rng.random() < share:
            kind, broken = KINDS[broken % len(KINDS)], broken + 1
            out.append((kind, http_post(malformed(body, kind, limit))))
        else:
            out.append(("clean", http_post(json.dumps(body).encode())))
    return out


async def asgi_post(app: Callable, body: bytes) -> list[dict]:
    """The messages ``app`` sends for ``POST /rank`` with ``body``, called in process."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/rank", "raw_path": b"/rank",
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {}}  # fmt: skip
    messages, sent = [{"type": "http.request", "body": body, "more_body": False}], []

    async def receive() -> dict:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def in_process(ranker: Ranker, payloads: list[dict], passes: int = 5) -> dict[str, float]:
    """Milliseconds of CPU per request in this process, the least over ``passes`` passes over
    the bodies (warm): ``app``, a request through the ASGI app without sockets, and of it
    ``batch`` (features and batch) and ``model`` (the scoring graph); serialising a response
    by pydantic-core (``to_json``, as the service does) and by ``json.dumps``; a full garbage
    collection of this process holding the service, and the same once it is frozen
    (``gc.freeze``, as the service does at startup)."""
    app = create_app(ranker)
    raw = [json.dumps(p).encode() for p in payloads]
    requests = [ranker.resolve(SearchRequest(
        p["user_id"], p["query"], [Candidate(**c) for c in p["candidates"]],
        p["query_category"], datetime.fromisoformat(p["timestamp"])))
        for p in payloads]  # fmt: skip
    answers = [json.loads(asyncio.run(asgi_post(app, b))[-1]["body"]) for b in raw]  # warms up
    batches = [ranker.batch(r) for r in requests]

    async def through_app() -> None:
        for b in raw:
            await asgi_post(app, b)

    def least(step: Callable[[], object]) -> float:
        times = []
        for _ in range(passes):
            started = time.process_time()
            step()
            times.append(time.process_time() - started)
        return 1e3 * min(times) / len(payloads)

    out = {"app_ms": least(lambda: asyncio.run(through_app())),
           "batch_ms": least(lambda: [ranker.batch(r) for r in requests]),
           "model_ms": least(lambda: [ranker.predict(b) for b in batches]),
           "to_json_ms": least(lambda: [to_json(a) for a in answers]),
           "json_dumps_ms": least(lambda: [json.dumps(a) for a in answers])}  # fmt: skip
    for key, freeze in (("full_gc_ms", False), ("full_gc_frozen_ms", True)):
        if freeze:
            gc.freeze()
        started = time.perf_counter()
        gc.collect()
        out[key] = 1e3 * (time.perf_counter() - started)
    gc.unfreeze()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes(server: psutil.Process) -> list[psutil.Process]:
    return [server, *server.children(recursive=True)]


def rss_mb(server: psutil.Process) -> float:
    return sum(p.memory_info().rss for p in processes(server) if p.is_running()) / 2**20


def cpu_seconds(server: psutil.Process) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes(server) if p.is_running())


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: bytes) -> int:  # fmt: skip
    """Send one request on a keep-alive connection and read its answer; its status."""
    writer.write(request)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) != b"\r\n":
        if not line:
            raise ConnectionError("the service closed the connection")
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def load(port: int, work: list[tuple], concurrency: int, seconds: float,
               server: psutil.Process) -> dict:  # fmt: skip
    """``concurrency`` connections sending ``work`` in turn for ``seconds``."""
    seen: list[tuple[str, int, float]] = []  # kind, status (0: no answer), seconds
    memory: list[float] = []
    stop = time.monotonic() + seconds

    async def connection(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while time.monotonic() < stop:
            kind, request = work[i % len(work)]
            i += concurrency
            started = time.perf_counter()
            try:
                status = await exchange(reader, writer, request)
            except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
                status = 0
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            seen.append((kind, status, time.perf_counter() - started))
        writer.close()

    async def sample() -> None:
        while time.monotonic() < stop:
            memory.append(rss_mb(server))
            await asyncio.sleep(1.0)

    client = psutil.Process()
    cpu_server, cpu_client = cpu_seconds(server), sum(client.cpu_times()[:2])
    started = time.monotonic()
    await asyncio.gather(sample(), *(connection(k) for k in range(concurrency)))
    elapsed = time.monotonic() - started
    cpu_server = cpu_seconds(server) - cpu_server
    cpu_client = sum(client.cpu_times()[:2]) - cpu_client
    n = len(seen)
    ms = np.array([s for *_, s in seen]) * 1e3
    clean = np.array([k == "clean" for k, *_ in seen])
    statuses: dict[str, dict[str, int]] = {}
    for kind, status, _ in seen:
        group = statuses.setdefault("clean" if kind == "clean" else "malformed", {})
        group[str(status)] = group.get(str(status), 0) + 1
    bad = sum(status != 200 for kind, status, _ in seen if kind == "clean")
    bad += sum(not 400 <= status < 500 for kind, status, _ in seen if kind != "clean")
    return {"requests": n, "requests_per_s": n / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "clean_p50_ms": float(np.percentile(ms[clean], 50)),
            "clean_p99_ms": float(np.percentile(ms[clean], 99)),
            "statuses": statuses, "unexpected": bad,
            "server_5xx": sum(500 <= status < 600 for _, status, _ in seen),
            "memory_mb_first": memory[0], "memory_mb_last": memory[-1],
            "memory_mb_max": max(memory),
            "server_cpu_ms_per_request": 1e3 * cpu_server / n,
            "client_cpu_ms_per_request": 1e3 * cpu_client / n}  # fmt: skip


def shares(raw: str) -> dict[str, float]:
    """The share of a py-spy raw profile's samples (``frame;frame;... count`` lines, frames
    as ``function (file:line)``) in each of ``PARTS``."""
    counts = dict.fromkeys([*PARTS, SERVER], 0)
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        functions = {frame.split(" (")[0] for frame in stack.split(";")}
        part = next((p for p, names in PARTS.items() if functions.intersection(names)), SERVER)
        counts[part] += int(n)
    total = sum(counts.values())
    return {part: n / total for part, n in counts.items()}


def profile(port: int, work: list[tuple], args: argparse.Namespace,
            server: psutil.Process) -> dict[str, float]:  # fmt: skip
    """:func:`shares` of a py-spy profile of the service under ``args.profile`` seconds of
    load (py-spy samples without pausing the service, 100 times a second)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.txt"
        spy = subprocess.Popen(["py-spy", "record", "-p", str(server.pid), "-d",
                                str(args.profile), "-r", "100", "--nonblocking", "-f", "raw",
                                "-o", str(out)])  # fmt: skip
        asyncio.run(load(port, work, args.concurrency, args.profile + 2, server))
        if spy.wait():
            raise SystemExit("py-spy failed")
        return shares(out.read_text())


def against_baseline(results: list[dict]) -> list[dict]:
    """Per worker count and share of malformed bodies, this code over the baseline in each
    round (loads run back to back): requests/s and the service's CPU per request, and their
    medians over the rounds."""
    out = []
    for workers, share in sorted({(r["workers"], r["malformed_share"]) for r in results}):
        rows = [r for r in results if (r["workers"], r["malformed_share"]) == (workers, share)]
        pairs = [[r for r in rows if r["round"] == k] for k in sorted({r["round"] for r in rows})]
        by_code = [{r["code"]: r for r in pair} for pair in pairs if len(pair) == 2]
        if not by_code:
            continue
        speed = [p["this"]["requests_per_s"] / p["baseline"]["requests_per_s"] for p in by_code]
        cpu = [p["this"]["server_cpu_ms_per_request"] / p["baseline"]["server_cpu_ms_per_request"]
               for p in by_code]  # fmt: skip
        out.append({"workers": workers, "malformed_share": share, "requests_per_s": speed,
                    "requests_per_s_median": float(np.median(speed)),
                    "server_cpu_per_request": cpu,
                    "server_cpu_per_request_median": float(np.median(cpu))})  # fmt: skip
    return out


def start(code: Path, args: argparse.Namespace, workers: int) -> tuple[subprocess.Popen, int]:
    """`prectr serve` from the checkout ``code``, answering /health; its process and port."""
    port = free_port()
    cmd = [sys.executable, "-m", "prectr.cli", "serve", str(args.run.resolve()), "--history",
           str(args.history.resolve()), "--port", str(port), "--workers", str(workers),
           "--threads", "1", "--cache-size", str(args.cache_size), "--engine", args.engine,
           "--max-body-bytes", str(args.max_body_bytes)]  # fmt: skip
    server = subprocess.Popen(cmd, cwd=code, env={**os.environ, "PYTHONPATH": str(code)})
    deadline = time.monotonic() + 600
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"the service from {code} did not start")
        time.sleep(1)
    time.sleep(5 * workers)  # every worker up
    return server, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--workers", nargs="+", type=int, default=[1])
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--malformed", nargs="+", type=float, default=[0.0, 0.1],
                        help="shares of malformed bodies, one load each")  # fmt: skip
    parser.add_argument("--cache-size", type=int, default=20_000)
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES)
    parser.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--baseline", type=Path, help="a checkout of the code before a change")
    parser.add_argument("--rounds", type=int, default=1,
                        help="loads of each code at each share, taking turns")  # fmt: skip
    parser.add_argument("--profile", type=int, default=0,
                        help="seconds of one more load of this code, clean bodies, under py-spy "
                             "(on PATH): where the service's time goes")  # fmt: skip
    args = parser.parse_args()
    ranker = Ranker(args.run, args.history, cache_size=args.cache_size, threads=1,
                    engine=args.engine)  # fmt: skip
    payloads = bodies(ranker, args.candidates, 400)
    parts = in_process(ranker, payloads)
    print(json.dumps({"in_process": parts}), flush=True)
    del ranker
    codes = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    results, profiles = [], []
    for workers in args.workers:
        servers = {name: start(code, args, workers) for name, code in codes.items()}
        try:
            for k, share in enumerate([s for _ in range(args.rounds) for s in args.malformed]):
                work = workload(payloads, share, args.max_body_bytes)
                turn = list(servers.items())[:: -1 if k % 2 else 1]  # who goes first alternates
                for name, (server, port) in turn:
                    process = psutil.Process(server.pid)
                    asyncio.run(load(port, work, args.concurrency, 5.0, process))  # warm
                    row = asyncio.run(load(port, work, args.concurrency, args.seconds, process))
                    row = {"code": name, "workers": workers, "engine": args.engine,
                           "malformed_share": share, "round": k // len(args.malformed),
                           "candidates": args.candidates, "concurrency": args.concurrency,
                           "seconds": args.seconds, "load_average_1min": os.getloadavg()[0],
                           **row}  # fmt: skip
                    results.append(row)
                    print(json.dumps(row), flush=True)
            if args.profile:
                server, port = servers["this"]
                clean = workload(payloads, 0.0, args.max_body_bytes)
                where = profile(port, clean, args, psutil.Process(server.pid))
                profiles.append({"workers": workers, "shares": where})
                print(json.dumps(profiles[-1]), flush=True)
        finally:
            for server, _ in servers.values():
                server.terminate()
                server.wait(60)
    name = "serve_load.json" if args.engine == "torch" else f"serve_load_{args.engine}.json"
    record = {"command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
              "in_process": parts, "results": results,
              "against_baseline": against_baseline(results),
              "profiles": profiles, "machine": machine()}  # fmt: skip
    print(json.dumps(record["against_baseline"]))
    write_record(ROOT / "results" / name, record)


if __name__ == "__main__":
    main()
