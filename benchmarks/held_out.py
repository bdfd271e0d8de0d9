"""Flags the encoder benchmarks share: a log's held-out pairs and a student, as the encoder
commands take them (``encoder_speed.py``, ``encoder_lexical.py``), and the shape of the students
a benchmark trains (``student.py``, ``distill_transfer.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prectr.cli.output import flag_type
from prectr.data.grades import parse_grade_map
from prectr.encoder.pairs import LogPairs, PairsConfig, read_pairs


def add_log_flags(parser: argparse.ArgumentParser) -> None:
    """``--log``, ``--held-out``, ``--grade-map`` and ``--student``."""
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--held-out", default="day", help="as the encoder commands take it")
    parser.add_argument("--grade-map", type=flag_type(parse_grade_map))
    parser.add_argument("--student", type=Path, required=True, help="a student directory")


def read_log_pairs(args: argparse.Namespace) -> LogPairs:
    """The pairs of ``--log`` split as ``--held-out`` and ``--grade-map`` say."""
    return read_pairs(args.log, PairsConfig(args.held_out, args.grade_map))


def add_piece_overlap_flag(parser: argparse.ArgumentParser) -> None:
    """``--piece-overlap`` / ``--no-piece-overlap`` for the students a benchmark trains; neither:
    the student's default (on for two towers since ``806ab79``)."""
    parser.add_argument("--piece-overlap", action=argparse.BooleanOptionalAction,
                        help="the students' piece overlap (default: the student's default, on "
                        "for two towers since 806ab79; --no-piece-overlap reproduces the "
                        "figures measured before it)")  # fmt: skip
