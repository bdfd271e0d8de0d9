"""``python -m prectr.report RUN [RUN ...] -o report.html``: write the comparison page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prectr.report import write_report


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, write the report and print its path; 2 on a run that breaks the contract."""
    parser = argparse.ArgumentParser(prog="python -m prectr.report", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, in report order")
    parser.add_argument("-o", "--out", type=Path, default=Path("report.html"), help="HTML file")
    parser.add_argument("--title", default="prectr run comparison", help="page title")
    parser.add_argument("--labels", nargs="+", metavar="LABEL",
                        help="one name per run, in the same order")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        out = write_report(args.runs, args.out, title=args.title, labels=args.labels)
    except ValueError as e:  # a RunError, or labels that do not fit the runs
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
