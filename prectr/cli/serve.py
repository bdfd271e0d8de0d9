"""`prectr serve` and `prectr export`: a trained run behind HTTP, or its scoring graph in a
file."""

from __future__ import annotations

import argparse
from pathlib import Path

from prectr.cli.output import console


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from prectr.serve.app import create_app
    from prectr.serve.ranker import Ranker

    # build once here: an incomplete run, another version's checkpoint or a bad history log
    # stops the command with a clear message before any worker starts
    ranker = Ranker(args.run, args.history, args.checkpoint, args.cache_size, args.threads,
                    args.engine)  # fmt: skip
    app = create_app(ranker, args.max_candidates, args.relevance_floor, args.refresh_seconds,
                     args.max_body_bytes)  # fmt: skip
    if args.workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    os.environ.update({
        "PRECTR_RUN": str(args.run), "PRECTR_HISTORY": str(args.history or ""),
        "PRECTR_CHECKPOINT": args.checkpoint, "PRECTR_CACHE_SIZE": str(args.cache_size),
        "PRECTR_THREADS": str(args.threads), "PRECTR_ENGINE": args.engine,
        "PRECTR_MAX_CANDIDATES": str(args.max_candidates),
        "PRECTR_MAX_BODY_BYTES": str(args.max_body_bytes),
        "PRECTR_RELEVANCE_FLOOR": "" if args.relevance_floor is None else str(args.relevance_floor),
        "PRECTR_REFRESH_SECONDS": "" if args.refresh_seconds is None else str(args.refresh_seconds),
    })  # fmt: skip
    uvicorn.run("prectr.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="warning")  # fmt: skip
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from prectr.serve.ranker import Ranker

    worst = Ranker(args.run, args.history, args.checkpoint).export(args.out, args.format)
    console.print(f"wrote {args.out} ({args.format}); largest difference from eager PyTorch "
                  f"on the history log's last requests: {worst:.1e}")  # fmt: skip
    return 0


def add_serve_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``prectr serve`` and ``prectr export``."""
    p = sub.add_parser(
        "serve",
        help="serve a trained run over HTTP: POST /rank, GET /health, GET /metrics",
        description="Load a run (and the log its histories come from) and answer ranking "
        "requests with FastAPI + uvicorn. The OpenAPI schema is at /openapi.json.",
    )
    p.add_argument("run", type=Path, help="a trained run directory")
    p.add_argument("--history", type=Path, help="log feeding the histories (default: the log "
                   "the run trained on, its config's data.log)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="eager PyTorch, or the run exported to ONNX Runtime")  # fmt: skip
    p.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="the run's checkpoint to serve")  # fmt: skip
    p.add_argument("--cache-size", type=int, default=100_000, help="items in the LRU cache")
    p.add_argument("--max-candidates", type=int, default=1000, help="more get a 422")
    p.add_argument("--max-body-bytes", type=int, default=2 * 1024 * 1024,
                   help="a larger request body gets a 413 (default 2 MiB)")  # fmt: skip
    p.add_argument("--relevance-floor", type=float, help="drop candidates with P(grade>=2) below")
    p.add_argument(
        "--refresh-seconds",
        type=float,
        help="check the history log this often; rebuild the store if it changed",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "export",
        help="export a run's scoring graph to ONNX or TorchScript, checked against PyTorch",
        description="Trace the scoring graph on logged requests, write it, and keep it only "
        "if it matches eager PyTorch within 1e-5 on them.",
    )
    p.add_argument("run", type=Path, help="a trained run directory")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx",
                   help="file format of the scoring graph")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="file to write")
    p.add_argument("--history", type=Path, help="log to take the check requests from (default: "
                   "the log the run trained on, its config's data.log)")  # fmt: skip
    p.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="the run's checkpoint to export")  # fmt: skip
    p.set_defaults(func=cmd_export)
