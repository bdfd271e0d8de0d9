"""In-process ranking latency: p50 and p99 by candidate count, warm and cold item cache, eager
PyTorch against ONNX Runtime, on 1 and 2 threads.

Run: .venv/bin/python benchmarks/serve_latency.py --run runs/quality/bench-s0/prectr_v2-s0 \\
         --history runs/worlds/bench-s0
Requests are the history log's last requests (real users, queries and histories), each
padded with catalogue items to the candidate count. *Warm*: every item already in the LRU
cache (the request is ranked once, untimed, just before: it repeats). *Cold*: every
candidate's title is new (a fresh suffix), so every item is encoded again. Engines take turns
on the same requests. Where the warm time goes is timed on the same requests: the request's
features and the batch (``features``, item features from the cache), the scoring graph
(``model``, by the engine) and the rest of ``rank`` (sorting, the ranked list: a request's
``rank`` time less its two parts). Writes results/serve_latency.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from record import machine, write_record

from prectr.serve.ranker import Candidate, Ranker, SearchRequest

ROOT = Path(__file__).resolve().parents[1]


def requests_with(ranker: Ranker, count: int, n: int) -> list[SearchRequest]:
    """The log's last ``n`` requests, each with ``count`` candidates (its own first)."""
    items = ranker.store.items.slice(0, 20_000).to_pylist()
    rng = np.random.default_rng(count)
    out = []
    last = ranker.store.requests.num_rows - 1
    for row in range(last, last - n, -1):
        request = ranker.logged_request(row)
        extra = [items[i] for i in rng.choice(len(items), count, replace=False)]
        pool = request.candidates + [Candidate(**{f: i[f] for f in
                                                  ("item_id", "title", "category", "brand",
                                                   "price")}) for i in extra]  # fmt: skip
        request.candidates = pool[:count]
        out.append(request)
    return out


def cold(request: SearchRequest, round_: int) -> SearchRequest:
    fresh = [Candidate(c.item_id, f"{c.title} #{round_}", c.category, c.brand, c.price)
             for c in request.candidates]  # fmt: skip
    return SearchRequest(request.user_id, request.query, fresh, request.query_category,
                         request.timestamp)  # fmt: skip


def percentiles(times: list[float]) -> dict[str, float]:
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "n": int(ms.size)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--history", type=Path, required=True)
    parser.add_argument("--counts", nargs="+", type=int, default=[50, 200, 1000])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    results, phases = [], []
    rankers = {e: Ranker(args.run, args.history, engine=e, threads=1) for e in ("torch", "onnx")}
    for threads in args.threads:
        for ranker in rankers.values():
            ranker.set_threads(threads)
        for count in args.counts:
            requests = requests_with(rankers["torch"], count, args.requests)
            for engine, ranker in rankers.items():
                for r in requests[:10]:
                    ranker.rank(r)  # warm the engine
                warm, cold_times = [], []
                breakdown = {"features": [], "model": [], "rest": []}
                for i, r in enumerate(requests):
                    ranker.rank(r)  # the request repeats: its items are all in the cache
                    started = time.perf_counter()
                    batch = ranker.batch(r)
                    built = time.perf_counter()
                    ranker.predict(batch)
                    scored = time.perf_counter()
                    ranker.rank(r)
                    warm.append(time.perf_counter() - scored)
                    breakdown["features"].append(built - started)
                    breakdown["model"].append(scored - built)
                    breakdown["rest"].append(warm[-1] - (scored - started))
                    fresh = cold(r, i)
                    started = time.perf_counter()
                    ranker.rank(fresh)
                    cold_times.append(time.perf_counter() - started)
                parts = {k: float(np.percentile(v, 50) * 1e3) for k, v in breakdown.items()}
                phases.append({"threads": threads, "candidates": count, "engine": engine,
                               **{f"{k}_p50_ms": v for k, v in parts.items()}})  # fmt: skip
                print(
                    f"threads {threads} candidates {count:>5} {engine:>5} warm p50 parts: "
                    + "  ".join(f"{k} {v:.2f} ms" for k, v in parts.items()),
                    flush=True,
                )
                for cache, times in (("warm", warm), ("cold", cold_times)):
                    row = {"threads": threads, "candidates": count, "engine": engine,
                           "cache": cache, **percentiles(times)}  # fmt: skip
                    results.append(row)
                    print(
                        f"threads {threads} candidates {count:>5} {engine:>5} {cache}: "
                        f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms",
                        flush=True,
                    )
    ratios = []
    for row in results:
        if row["engine"] == "onnx":
            eager = next(r for r in results if r["engine"] == "torch" and all(
                r[k] == row[k] for k in ("threads", "candidates", "cache")))  # fmt: skip
            ratios.append({k: row[k] for k in ("threads", "candidates", "cache")}
                          | {"onnx_speedup_p50": eager["p50_ms"] / row["p50_ms"]})  # fmt: skip
    out = ROOT / "results" / "serve_latency.json"
    result = {
        "command": f"python benchmarks/serve_latency.py --run {args.run} --history {args.history}",
        "results": results,
        "warm_p50_breakdown": phases,
        "onnx_vs_eager": ratios,
        "machine": machine(),
    }  # fmt: skip
    write_record(out, result)


if __name__ == "__main__":
    main()
