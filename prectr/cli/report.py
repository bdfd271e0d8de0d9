"""`prectr report`: one HTML page comparing evaluated runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from prectr.cli.output import console


def cmd_report(args: argparse.Namespace) -> int:
    from prectr.report import write_report

    out = write_report(args.runs, args.out, labels=args.labels)
    console.print(f"report: {out.resolve()}")
    return 0


def add_report_command(sub: argparse._SubParsersAction) -> None:
    """Register ``prectr report``."""
    p = sub.add_parser(
        "report",
        help="one self-contained HTML page comparing evaluated runs",
        description="Metric table, training curves, calibration, NDCG@10 against AUC, slices "
        "and the online proxy of runs that `prectr evaluate` has scored, in one HTML file.",
    )
    p.add_argument("runs", type=Path, nargs="+", help="evaluated run directories, in order")
    p.add_argument("--out", type=Path, default=Path("runs/report.html"), help="HTML file")
    p.add_argument("--labels", nargs="+", metavar="LABEL",
                   help="one name per run, in the same order, shown in every table and figure "
                   "(default: each run's config name)")  # fmt: skip
    p.set_defaults(func=cmd_report)
