"""`prectr config`: the experiment config's JSON schema, for editors and checks."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prectr.io import atomic_file


def add_config_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``prectr config schema``."""
    config = sub.add_parser(
        "config",
        help="experiment configs: the JSON schema editors check them with",
        description="Tools for the YAML experiment configs of `prectr train`.",
    )
    commands = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "schema",
        help="print (or write) the JSON schema of an experiment config",
        description="The JSON schema of an experiment config: every section's keys, their "
        "types and defaults, the registered models and each one's parameters. Point an "
        "editor's YAML language server at it (a `# yaml-language-server: $schema=FILE` line "
        "or its settings) to get completion and errors while writing a config.",
    )
    p.add_argument("--out", type=Path, help="write the schema to this file instead of stdout")
    p.set_defaults(func=cmd_config_schema)


def cmd_config_schema(args: argparse.Namespace) -> int:
    from prectr.config import config_schema

    text = json.dumps(config_schema(), indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    with atomic_file(args.out) as tmp:
        tmp.write_text(text)
    print(f"{args.out}: the JSON schema of an experiment config")
    return 0
