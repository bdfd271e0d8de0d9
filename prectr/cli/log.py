"""`prectr validate` and `prectr load`: a search log checked against the schema, and public
data sets converted into it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow.compute as pc

from prectr.cli.output import console, flag_type
from prectr.data.schema import TABLES, SchemaError, SearchLog, read_log
from prectr.words import count


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        log = read_log(args.path)
    except SchemaError as err:
        console.print(f"[red]invalid[/]: {args.path}: {count(len(err.problems), 'problem')}")
        for problem in err.problems:
            console.print(f"  - {problem}", markup=False)
        return 1
    rows = ", ".join(f"{log.table(t).num_rows:,} {t}" for t in TABLES)
    console.print(f"[green]valid[/]: {args.path}: {rows}")
    for note in usability_notes(log):
        console.print(f"[yellow]note[/]: {note}")
    return 0


def usability_notes(log: SearchLog) -> list[str]:
    """What a valid log is too small or too bare for, naming the commands that need more."""
    from prectr.data.shards import time_split

    notes = []
    try:
        time_split(log.requests)
    except ValueError as err:
        notes.append(f"{err} (train, validation, test): `prectr train` and `prectr evaluate` "
                     "refuse it, and so do `prectr teacher` and `prectr encoder` with --held-out "
                     "day (their default); these two can hold out queries instead (--held-out "
                     "query) or a second log (--held-out LOG)")  # fmt: skip
    human = pc.and_(pc.equal(log.impressions["relevance_source"], "human"),
                    pc.is_valid(log.impressions["relevance"]))  # fmt: skip
    if not pc.any(human).as_py():
        notes.append("no human grade (relevance with relevance_source 'human'): `prectr encoder "
                     "sft`, `prectr teacher adapt` and the encoder's baselines have nothing to "
                     "learn from, and held-out pairs are scored only where true_relevance is "
                     "given")  # fmt: skip
    return notes


def cmd_load(args: argparse.Namespace) -> int:
    from prectr.data.loaders import LOADERS

    options = {name: value for name in ("grade_map", "columns")
               if (value := getattr(args, name)) is not None}  # fmt: skip
    log = LOADERS[args.name](*args.sources, **options)
    log.write(args.out, overwrite=args.overwrite)
    rows = ", ".join(f"{log.table(t).num_rows:,} {t}" for t in TABLES)
    console.print(f"wrote {args.out}: {rows}")
    return 0


def add_log_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``prectr validate`` and ``prectr load``."""
    from prectr.data.grades import parse_grade_map
    from prectr.data.loaders import LOADERS

    p = sub.add_parser(
        "validate",
        help="check a search log against the schema",
        description="Check a log directory (items, requests, impressions as NAME.parquet or "
        "NAME/) and list every problem with its table, row and column. Exit 1 if invalid. A "
        "valid log gets a note for each command family it is too small or too bare for (e.g. "
        "fewer than 3 days for a time split, no human grade).",
    )
    p.add_argument("path", type=Path, help="log directory")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "load",
        help="convert a public data set into the schema",
        description="Convert real data into a validated log directory. Loaders: "
        + "; ".join(f"{name}: {loader.description}" for name, loader in LOADERS.items()),
    )
    p.add_argument("name", choices=list(LOADERS))
    p.add_argument("sources", nargs="+", type=Path, help="the data set's files, in order")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--grade-map", type=flag_type(parse_grade_map), metavar="FROM:TO,...",
        help="pairs: map the file's grades onto 0-3, e.g. 0:0,1:2,2:3 for a 3-level scale "
        "(default: the grades are 0-3 already)",
    )  # fmt: skip
    p.add_argument(
        "--columns", type=flag_type(parse_columns), metavar="ROLE=NAME,...",
        help="pairs: the file's names of the query, title and grade columns, e.g. "
        "grade=score,title=product_name (default: query, title, and the first of grade, "
        "relevance and label)",
    )  # fmt: skip
    p.set_defaults(func=cmd_load)


def parse_columns(text: str) -> dict[str, str]:
    """``"grade=score,title=name"`` as ``{"grade": "score", "title": "name"}``."""
    columns = {}
    for item in text.split(","):
        role, sep, name = item.partition("=")
        if not sep or not role.strip() or not name.strip():
            raise ValueError(f"columns {text!r}: {item!r} is not ROLE=NAME")
        columns[role.strip()] = name.strip()
    return columns
