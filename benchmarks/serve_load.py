"""HTTP load on loopback: `prectr serve` under a bounded load generator in another process.

Run: .venv/bin/python benchmarks/serve_load.py --run runs/quality/bench-s0/prectr_v2-s0 \\
         --history runs/worlds/bench-s0 --workers 1 2
For each worker count the service starts as its own process (`prectr serve`), this process
keeps ``--concurrency`` keep-alive connections busy for ``--seconds`` with ``POST /rank``
bodies of ``--candidates`` candidates (logged requests of the history log, repeated), and
samples the service's memory (all its processes) every second. Reports requests/s, p50/p99
latency seen by the client, errors, and memory at the start and end of the load. Writes
results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from record import machine, write_record

from prectr.serve.ranker import Ranker

ROOT = Path(__file__).resolve().parents[1]


def bodies(run: Path, history: Path, candidates: int, n: int) -> list[dict]:
    ranker = Ranker(run, history)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(process: psutil.Process) -> float:
    procs = [process, *process.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


async def load(url: str, payloads: list[dict], concurrency: int, seconds: float,
               server: psutil.Process) -> dict:  # fmt: skip
    latencies, errors, memory = [], 0, []
    stop = time.monotonic() + seconds

    async def worker(k: int, client: httpx.AsyncClient) -> None:
        nonlocal errors
        i = k
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                response = await client.post(url, json=payloads[i % len(payloads)])
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok
            i += concurrency

    async def sample() -> None:
        while time.monotonic() < stop:
            memory.append(rss_mb(server))
            await asyncio.sleep(1.0)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
        started = time.monotonic()
        await asyncio.gather(sample(), *(worker(k, client) for k in range(concurrency)))
        elapsed = time.monotonic() - started
    ms = np.array(latencies) * 1e3
    return {"requests": len(latencies), "requests_per_s": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "errors": errors, "memory_mb_first": memory[0], "memory_mb_last": memory[-1],
            "memory_mb_max": max(memory)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cache-size", type=int, default=20_000)
    parser.add_argument("--engine", choices=["torch", "onnx"], default="torch")
    args = parser.parse_args()
    payloads = bodies(args.run, args.history, args.candidates, 400)
    results = []
    for workers in args.workers:
        port = free_port()
        cmd = [sys.executable, "-m", "prectr.cli", "serve", str(args.run), "--history",
               str(args.history), "--port", str(port), "--workers", str(workers),
               "--threads", "1", "--cache-size", str(args.cache_size),
               "--engine", args.engine]  # fmt: skip
        server = subprocess.Popen(cmd)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the service did not start")
                time.sleep(1)
            time.sleep(5 * workers)  # every worker up
            asyncio.run(load(f"{base}/rank", payloads[:20], args.concurrency, 5.0,
                             psutil.Process(server.pid)))  # warm-up  # fmt: skip
            row = asyncio.run(load(f"{base}/rank", payloads, args.concurrency, args.seconds,
                                   psutil.Process(server.pid)))  # fmt: skip
            row = {"workers": workers, "engine": args.engine, "candidates": args.candidates,
                   "concurrency": args.concurrency, "seconds": args.seconds, **row}  # fmt: skip
            results.append(row)
            print(json.dumps(row), flush=True)
        finally:
            server.terminate()
            server.wait(60)
    out = ROOT / "results" / f"serve_load_{args.engine}.json"
    result = {"command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
              "results": results,
              "machine": machine()}  # fmt: skip
    write_record(out, result)


if __name__ == "__main__":
    main()
