"""The `prectr` command: one subcommand per step of the pipeline.

This module holds the top-level parser and ``main``; each command group registers itself from
its own module (``add_*_commands``): world (simulate, headroom, score), log (validate, load),
train (train, calibrate, prepare), `prectr.evaluation.commands` (evaluate, compare), config,
report, serve (serve, export), teacher and encoder.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from prectr import __version__
from prectr.cli.config import add_config_commands
from prectr.cli.encoder import add_encoder_commands
from prectr.cli.log import add_log_commands
from prectr.cli.output import console
from prectr.cli.report import add_report_command
from prectr.cli.serve import add_serve_commands
from prectr.cli.teacher import add_teacher_commands
from prectr.cli.train import add_train_commands
from prectr.cli.world import add_world_commands
from prectr.data.schema import SchemaError
from prectr.evaluation.commands import add_evaluation_commands
from prectr.section import ConfigError


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option's line with its default, except where there is none to show
    (None, an off flag, an empty list) or the help already states it ("(default ...")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default, text = action.default, action.help or ""
        if default is None or default is False or default == [] or "(default" in text:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """The `prectr` parser: its subcommands' parsers are of this class too (argparse makes them
    of the parent's), so every help page shows the defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The `prectr` parser with every command group registered, in the order `--help` lists
    them."""
    parser = Parser(
        prog="prectr",
        description="Relevance-aware CTR ranking for search (PRECTR, PRECTR-V2).",
    )
    parser.add_argument("--version", action="version", version=f"prectr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_world_commands(sub)
    add_log_commands(sub)
    add_train_commands(sub)
    add_evaluation_commands(sub)
    add_config_commands(sub)
    add_report_command(sub)
    add_serve_commands(sub)
    add_teacher_commands(sub)
    add_encoder_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (SchemaError, ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
        if isinstance(err, ValidationError):  # a settings section built from the flags
            err = ConfigError(err.title, err)
        console.print("[red]error[/]:", end=" ")
        console.print(str(err), markup=False)
        code = 2
    sys.exit(code)
