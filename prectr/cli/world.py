"""`prectr simulate`, `prectr headroom` and `prectr score`: a simulated world, what a perfect
model could gain on it, and the reference rankers' metrics on its test day."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from rich.table import Table

from prectr.cli.output import console, flag_type, fmt
from prectr.data.simulate.config import PRESETS, WorldConfig, load_config
from prectr.io import atomic_file


def _knob_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("world knobs (override the preset and --config)")
    for f in fields(WorldConfig):
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f"knob_{f.name}",
            type={"int": int, "float": float, "str": str}[f.type],
            choices=f.metadata.get("choices"),
            default=None,
            metavar=f.type.upper(),
            help=f"{f.metadata['doc']} (default {f.default})",
        )


def cmd_simulate(args: argparse.Namespace) -> int:
    from prectr.data.simulate import simulate

    overrides = {
        k.removeprefix("knob_"): v
        for k, v in vars(args).items()
        if k.startswith("knob_") and v is not None
    }
    config = load_config(args.preset, args.config, overrides)
    console.print(
        f"simulating world [bold]{args.preset}[/] seed {config.seed}: {config.n_requests:,} "
        f"requests x pool {config.pool_size} -> {args.out}"
    )
    summary = simulate(config, args.out, overwrite=args.overwrite,
                       validate=not args.no_validate, preset=args.preset)  # fmt: skip
    print_summary(summary, config)
    return 0


def positive(number: Callable[[str], float]) -> Callable[[str], float]:
    """``number`` (``int`` or ``float``) of a flag's text, refusing anything not above 0."""

    def parse(text: str) -> float:
        value = number(text)
        if not value > 0:
            raise ValueError(f"{text}: expected a positive number")
        return value

    parse.__name__ = number.__name__
    return parse


def cmd_headroom(args: argparse.Namespace) -> int:
    from prectr.headroom import headroom

    window = {k: v for k, v in (("crowd_length", args.crowd_length),
                                ("crowd_days", args.crowd_days)) if v is not None}  # fmt: skip
    result = headroom(args.world, **window)
    table = Table(title=f"headroom on the test days of {args.world} (expected clicks per request)")
    columns = ("slice", "requests", "logging", "oracle", "crowd", "window", "query", "none")
    gains = {"oracle vs logging": "click_ranking_gain", "crowd vs none": "crowd_gain",
             "crowd vs query": "mining_gain", "window vs query": "window_gain",
             "oracle vs crowd": "personal_gain"}  # fmt: skip
    for col in (*columns, *gains):
        table.add_column(col, justify="right")
    for name, s in result["slices"].items():
        clicks = s["expected_clicks"]
        table.add_row(
            name.replace("_", " "), f"{s['requests']:,}",
            *(f"{clicks[k]:.4f}" for k in columns[2:]), *(f"{s[k]:+.2%}" for k in gains.values()),
        )  # fmt: skip
    console.print(table)
    aucs = Table(title="AUC of each oracle's click probability on the exposed test impressions")
    oracles = ("oracle", "crowd", "window", "query", "none")
    auc_gains = {"crowd - none": "crowd_auc_gain", "crowd - query": "mining_auc_gain",
                 "window - query": "window_auc_gain"}  # fmt: skip
    for col in ("slice", *oracles, *auc_gains):
        aucs.add_column(col, justify="right")
    for name, s in result["slices"].items():
        aucs.add_row(
            name.replace("_", " "), *(f"{s['auc'][k]:.4f}" for k in oracles),
            *(f"{s[k]:+.4f}" for k in auc_gains.values()),
        )  # fmt: skip
    console.print(aucs)
    broad = result["broad"]
    if broad is None:
        console.print("no broad-set sample kept for the test days", style="dim")
    else:
        console.print(
            f"broad set ({broad['requests']:,} requests x {broad['candidates_per_request']:.0f} "
            f"candidates): oracle {broad['oracle']['expected_clicks']:.4f} expected clicks, "
            f"irrelevant@10 {broad['oracle']['irrelevant@10']:.3f}; relevance-blind "
            f"{broad['relevance_blind']['expected_clicks']:.4f}, irrelevant@10 "
            f"{broad['relevance_blind']['irrelevant@10']:.3f}"
        )
    if args.out:
        with atomic_file(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {args.out}", style="dim")
    return 0


def print_summary(s: dict, config: WorldConfig) -> None:
    """The world summary `simulate` returns, as three tables: sizes, by true grade, CTR by
    position."""
    sizes = Table(title="world", show_header=False)
    for key in ("items", "users", "active_users", "queries", "real_queries", "requests"):
        sizes.add_row(key.replace("_", " "), f"{s[key]:,}")
    sizes.add_row("impressions (pool rows)", f"{s['impressions']:,}")
    sizes.add_row("exposed / clicks", f"{s['exposed']:,} / {s['clicks']:,}")
    sizes.add_row("CTR (exposed)", f"{s['ctr']:.4f}")
    sizes.add_row("labelled pairs", f"{s['label_share']:.1%}")
    sizes.add_row("cold-start requests (all / test day)",
                  f"{s['cold_start']['request_share']:.1%} / "
                  f"{s['cold_start']['test_request_share']:.1%}")  # fmt: skip
    sizes.add_row("test pool rows on items unseen in training",
                  f"{s['new_items']['test_pool_share']:.1%}")  # fmt: skip
    sizes.add_row("generated in", f"{s['seconds']:.1f} s ({s['impressions_per_second']:,} imp/s)")
    console.print(sizes)

    grades = Table(title="by true grade (0 irrelevant, 1 complement, 2 substitute, 3 exact)")
    for col in ("", "0", "1", "2", "3"):
        grades.add_column(col, justify="right")
    rows = [
        ("CTR", s["ctr_by_grade"]),
        *((f"CTR, {k} users", v) for k, v in s["ctr_by_grade_and_tolerance"].items()),
        ("share of pool", s["grade_mix"]["pool"]),
        ("share of exposed", s["grade_mix"]["exposed"]),
        ("share of real ESCI judged", s["grade_mix"]["esci_judged"]),
    ]
    for name, values in rows:
        grades.add_row(name, *(fmt(v) for v in values))
    console.print(grades)

    positions = Table(title=f"CTR by position ({config.click_model}, eta {config.eta})")
    for k in range(config.exposed_k):
        positions.add_column(str(k + 1), justify="right")
    positions.add_row(*(fmt(v, 3) for v in s["ctr_by_position"]))
    console.print(positions)


SCORE_METRICS = (
    "auc", "gauc_user", "gauc_request", "logloss", "calibration",
    "ndcg@10", "mean_grade@10", "irrelevant@10", "expected_clicks",
)  # fmt: skip


def cmd_score(args: argparse.Namespace) -> int:
    from prectr.data.simulate import World
    from prectr.evaluation import evaluate_scores, evaluation_pool, train_impressions
    from prectr.rankers import RANKERS

    world = World(args.world)
    pool, train = evaluation_pool(world), train_impressions(world)
    results = {}
    for name in args.rankers:
        started = time.perf_counter()
        scores, probability = RANKERS[name](train, pool)
        results[name] = evaluate_scores(world, pool, scores, probability)
        console.print(f"scored {name} in {time.perf_counter() - started:.1f} s", style="dim")
    table = Table(title=f"test day of {args.world}: {pool.num_rows:,} pool candidates")
    table.add_column("metric")
    for name in args.rankers:
        table.add_column(name, justify="right")
    for metric in SCORE_METRICS:
        table.add_row(metric, *(fmt(results[name][metric]) for name in args.rankers))
    console.print(table)
    console.print(
        "click metrics on exposed test impressions; ndcg/grade/irrelevant on the full pool "
        "(true grades); expected_clicks per request when the world replays the ranking",
        style="dim",
    )
    return 0


def add_world_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``prectr simulate``, ``prectr headroom`` and ``prectr score``."""
    from prectr.rankers import RANKERS

    p = sub.add_parser(
        "simulate",
        help="generate a simulated marketplace search log (the default data set)",
        description="Generate a seeded, deterministic search log in the schema: catalogue, "
        "users, requests, candidate pools, logging-ranker exposure and clicks. Knobs come from "
        "the preset, then --config YAML, then flags.",
    )
    p.add_argument(
        "--preset", choices=list(PRESETS), default="small", help="named knob set (docs/world.md)"
    )
    p.add_argument("--config", type=Path, help="YAML file of knobs")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing directory")
    p.add_argument("--no-validate", action="store_true", help="skip the final schema check")
    _knob_flags(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "headroom",
        help="what a perfect model could gain from each mechanism, from a world's truth",
        description="Oracles rank the test days' candidates by the world's own click model with "
        "more or less of the truth (true tolerance, the crowd's under the query, what a "
        "window of the crowd tells of it, what the training days taught of the query, none; "
        "relevance-aware or blind on the broad set) and the world replays each ranking. "
        "Prints expected clicks per request and the gains that bound each mechanism.",
    )
    p.add_argument("world", type=Path, help="a simulated world directory")
    p.add_argument("--out", type=Path, help="also write the result as JSON")
    p.add_argument(
        "--crowd-length",
        type=flag_type(positive(int)),
        help="impressions of the window oracle's crowd (default: the features')",
    )
    p.add_argument("--crowd-days", type=flag_type(positive(float)),
                   help="days of the window oracle's crowd (default: the features')")  # fmt: skip
    p.set_defaults(func=cmd_headroom)

    p = sub.add_parser(
        "score",
        help="score a world's test day with reference rankers and print the metric table",
        description="Fit the reference rankers on the training days of a simulated world, "
        "score every test-day candidate, and print click metrics (exposed impressions), "
        "relevance metrics (full pool, true grades) and the online proxy (replayed clicks).",
    )
    p.add_argument("world", type=Path, help="a simulated world directory")
    p.add_argument("--rankers", nargs="+", choices=list(RANKERS), default=list(RANKERS),
                   help="reference rankers to score")  # fmt: skip
    p.set_defaults(func=cmd_score)
