"""The held-out pairs' flags, shared by `prectr teacher` and `prectr encoder`: which requests
are held out (--held-out) and how the log's relevance values map onto grades (--grade-map)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prectr.encoder.pairs import PairsConfig


def pairs_flags(parser: argparse.ArgumentParser) -> None:
    """Add --held-out and --grade-map to a teacher or encoder step."""
    from prectr.cli.output import flag_type
    from prectr.data.grades import parse_grade_map
    from prectr.encoder.pairs import QUERY_FRACTION

    parser.add_argument(
        "--held-out", default="day", metavar="SPLIT",
        help="the held-out requests: day (the last day; the log must span 3 days or more), "
        f"query[:SHARE] (the queries whose text hashes into a SHARE, default {QUERY_FRACTION}: "
        "for a graded set with one timestamp, as `prectr load esci` writes), or a log directory "
        "(all its requests)",
    )  # fmt: skip
    parser.add_argument(
        "--grade-map", type=flag_type(parse_grade_map), metavar="FROM:TO,...",
        help="map the log's relevance values onto grades 0-3, e.g. 0:0,1:2,2:3 for a 3-level "
        "scale (default: the grades are 0-3 already)",
    )  # fmt: skip


def pairs_config(args: argparse.Namespace) -> PairsConfig:
    """The held-out split and grade map that --held-out and --grade-map name."""
    from prectr.encoder.pairs import PairsConfig

    return PairsConfig(args.held_out, args.grade_map)
