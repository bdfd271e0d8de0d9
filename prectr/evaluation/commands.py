"""`prectr evaluate` and `prectr compare`: parsers and printed tables."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from prectr.evaluation.band import BAND_POINTS, parse_after_click
from prectr.evaluation.context import SPLITS
from prectr.evaluation.slices import FAMILIES, ROW_SLICES
from prectr.metrics.paired import RESAMPLES

console = Console(highlight=False)

METRIC_ORDER = (
    "auc", "gauc_user", "gauc_request", "click_ndcg@10", "logloss", "calibration", "ece", "ndcg@10",
    "mean_grade@10", "irrelevant@10", "recall@100", "expected_clicks", "test_requests",
    "test_exposed", "requests", "candidates", "exposed",
)  # fmt: skip
FAMILY_TITLES = {
    "query": "by query frequency (training days)",
    "user": "by user activity (earlier requests)",
    "exact": "by exact-item scarcity of the pool",
}


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"


def _ordered(sections: list[dict]) -> list[str]:
    names = {k for section in sections for k in section}
    return [k for k in METRIC_ORDER if k in names]


def _sections_table(
    title: str, sections: dict[str, dict], cell: Callable[[dict, str], str]
) -> Table:
    """Rows: metrics; columns: sections (each a metric -> value mapping, shown by ``cell``)."""
    table = Table(title=title)
    table.add_column("metric")
    for name in sections:
        table.add_column(name.replace("_", " "), justify="right")
    for metric in _ordered(list(sections.values())):
        table.add_row(metric, *(cell(s, metric) for s in sections.values()))
    return table


def _metric_table(title: str, sections: dict[str, dict]) -> Table:
    return _sections_table(title, sections, lambda s, metric: _fmt(s.get(metric)))


def _family_sections(slices: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Slices grouped for printing: one group per family, then the row slices."""
    groups = {
        FAMILY_TITLES[family]: {
            band: slices[f"{family}:{band}"] for band in bands if f"{family}:{band}" in slices
        }
        for family, bands in FAMILIES.items()
        if any(f"{family}:{band}" in slices for band in bands)
    }
    groups["new items and unexposed candidates"] = {
        name: slices[name] for name in ROW_SLICES if name in slices
    }
    return groups


def cmd_evaluate(args: argparse.Namespace) -> int:
    from prectr.evaluation.run import EVALUATION, SCORES, evaluate_run, split_file

    after_click = parse_after_click(args.after_click)
    r = evaluate_run(args.run, args.log, args.checkpoint, args.bootstrap, args.seed, args.split,
                     after_click, args.top_examination)  # fmt: skip
    days = ", ".join(r["test_days"])
    what = "test days" if args.split == "test" else "validation days"
    title = f"{r['name']} ({r['model']}) on the {what} {days} of {r['log']}"
    console.print(_metric_table(title, {"all": r["metrics"], **r["per_day"]}))
    for title, sections in _family_sections(r["slices"]).items():
        console.print(_metric_table(title, sections))
    if "broad" in r:
        broad = r["broad"]
        console.print(
            _metric_table(
                f"broad set: {broad['requests']:,} requests x "
                f"{broad['candidates_per_request']:.0f} sampled candidates",
                {"broad": {k: v for k, v in broad.items() if k in METRIC_ORDER}},
            )
        )
    console.print(f"relevance metrics on {r['truth']['grades']}", style="dim")
    for what, reason in r["skipped"].items():
        console.print(f"skipped {what}: {reason}", style="dim")
    if "online" in r:
        o = r["online"]
        console.print(
            f"online proxy: {o['expected_clicks']:.4f} expected clicks per request "
            f"[{o['expected_clicks_lo']:.4f}, {o['expected_clicks_hi']:.4f}], logging ranker "
            f"{o['logging_expected_clicks']:.4f}; lift {o['lift']:+.1%} "
            f"[{o['lift_lo']:+.1%}, {o['lift_hi']:+.1%}] (95% CI, bootstrap over "
            f"{o['requests']:,} requests)"
        )
    if "offpolicy" in r and "band" in r["offpolicy"]:
        _print_band(r["offpolicy"])
    elif "offpolicy" in r:
        o = r["offpolicy"]
        console.print(
            f"off-policy clicks per request on the top {o['k']}: IPS {_est(o['ips'])}, doubly "
            f"robust {_est(o['dr'])}, logged {_est(o['logged'])}; DR - logged {_est(o['dr_lift'])} "
            f"(95% CI; {o['coverage']['supported']:.0%} of the new top {o['k']}'s examination "
            f"shown in the log; {o['model'].split(':')[0]}: docs/offpolicy.md)"
        )
    written = Path(args.run) / split_file(EVALUATION, args.split)
    console.print(f"wrote {written} and {split_file(SCORES, args.split)}", style="dim")
    return 0


def _est(e: dict) -> str:
    return f"{e['value']:.4f} [{e['lo']:.4f}, {e['hi']:.4f}]"


def _print_band(o: dict) -> None:
    """The off-policy estimate at each lambda of a grid, then the band of each estimator."""
    grid = o["after_click"]
    table = Table(title=f"off-policy clicks per request on the top {o['k']} at each assumed "
                  "lambda, the after-click factor (95% CIs; 1: position-based)")  # fmt: skip
    for column in ("lambda", "IPS", "doubly robust", "DR - logged", "supported"):
        table.add_column(column, justify="right")
    for point in o["grid"]:
        table.add_row(f"{point['after_click']:g}", _est(point["ips"]), _est(point["dr"]),
                      _est(point["dr_lift"]), f"{point['coverage']['supported']:.0%}")  # fmt: skip

    def band(name: str) -> str:
        b = o["band"][name]
        return (f"[{b['lo']:.4f}, {b['hi']:.4f}] (lambda {b['after_click_lo']:g} and "
                f"{b['after_click_hi']:g})")  # fmt: skip

    console.print(table)
    console.print(
        f"band over lambda in [{grid[0]:g}, {grid[-1]:g}]: IPS {band('ips')}, doubly robust "
        f"{band('dr')}, DR - logged {band('dr_lift')}; logged {_est(o['logged'])} (it covers "
        "the clicks wherever the true lambda is a grid point and the estimate there covers; "
        "docs/offpolicy.md)"
    )


def _difference(d: dict) -> str:
    """``diff [lo, hi]``, bold where the CI excludes 0."""
    if d["diff"] is None:
        return "-"
    if d["lo"] is None:
        return f"{d['diff']:+.4f}"
    text = f"{d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"
    return text if d["spans_zero"] else f"[bold]{text}[/]"


def _difference_table(title: str, sections: dict[str, dict]) -> Table:
    return _sections_table(
        title, sections, lambda s, metric: _difference(s[metric]) if metric in s else "-"
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from prectr.evaluation.compare import compare_runs, write_draws
    from prectr.io import atomic_file

    summary, draws = compare_runs(args.run_a, args.run_b, args.log, args.bootstrap, args.seed,
                                  args.split, args.day)  # fmt: skip
    sections = summary["sections"]
    pooled = Table(title=f"{summary['b']} - {summary['a']} on {summary['requests']:,} requests "
                   f"of {', '.join(summary['test_days'])} (95% CI)")  # fmt: skip
    for column in ("metric", summary["a"], summary["b"], "B - A [95% CI]", ""):
        pooled.add_column(column, justify="left" if column == "metric" else "right")
    for metric, d in sections["all"].items():
        verdict = "no difference" if d["spans_zero"] else ""
        pooled.add_row(metric, _fmt(d["a"]), _fmt(d["b"]), _difference(d), verdict)
    console.print(pooled)
    slices = {k: v for k, v in sections.items() if k not in ("all", "broad")}
    for title, group in _family_sections(slices).items():
        console.print(_difference_table(f"B - A {title}", group))
    if "broad" in sections:
        console.print(_difference_table("B - A on the broad set", {"broad": sections["broad"]}))
    for what, reason in summary["skipped"].items():
        console.print(f"skipped {what}: {reason}", style="dim")
    console.print(
        f"paired bootstrap over requests, {args.bootstrap} resamples, seed {args.seed}; bold: the "
        "95% CI excludes 0, otherwise no difference",
        style="dim",
    )
    if args.out:
        with atomic_file(args.out) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
        console.print(f"wrote {args.out}", style="dim")
    if args.draws:
        write_draws(draws, args.draws)
        console.print(f"wrote {args.draws}", style="dim")
    return 0


def _bootstrap_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", type=int, default=RESAMPLES, metavar="B",
                   help=f"bootstrap resamples of requests (default {RESAMPLES})")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the resamples")


def add_evaluation_commands(sub: argparse._SubParsersAction) -> None:
    """The `evaluate` and `compare` subcommands."""
    p = sub.add_parser(
        "evaluate",
        help="score a trained run on its test days: every metric, per day, by slice",
        description="Score every candidate of the run's test split (its data.test_days last "
        "days) of a log in the schema and print click metrics (exposed impressions: AUC, "
        "GAUC, NDCG@10 on clicks, logloss, calibration, ECE) and relevance metrics (on the "
        "log's human grades, or on a simulated world's true grades of the full pool), pooled "
        "and per test day, and the slices (query frequency, user activity, exact-item "
        "scarcity, new items, unexposed candidates). On a simulated world also the broad-set "
        "sample and the online proxy (the world replays the ranking) against the logging "
        "ranker with a 95%% CI; on a plain log it says what needs a world. Writes "
        "RUN/evaluation.json and RUN/scores.parquet (request_id, item_id, score, and grade "
        "probabilities and per-grade click probabilities if any), and "
        "RUN/broad_scores.parquet with a broad-set sample.",
    )
    p.add_argument("run", type=Path)
    p.add_argument("--log", "--world", type=Path, dest="log",
                   help="the log to evaluate on, a simulated world or any log in the schema "
                   "(default: the log the run trained on)")  # fmt: skip
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="the run's test days, or its validation days (where choices are made; "
                   "writes evaluation_valid.json and so on)")  # fmt: skip
    p.add_argument("--after-click", default="1", metavar="LAMBDA|LO:HI[:N]",
                   help="plain logs: the off-policy estimate's dependent click model, how much "
                   "less often a user goes on after a click (1: position-based; the log does "
                   "not identify it: docs/offpolicy.md); a range LO:HI estimates at "
                   f"{BAND_POINTS} points from LO to HI (LO:HI:N at N) and reports the band "
                   "from the lowest CI end to the highest")  # fmt: skip
    p.add_argument("--top-examination", type=float, default=1.0, metavar="P",
                   help="plain logs, with --after-click below 1: the probability that "
                   "position 1 is examined (used where the direct method meets the click "
                   "model)")  # fmt: skip
    _bootstrap_flags(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "compare",
        help="paired difference (B - A) of two evaluated runs, every metric with a 95%% CI",
        description="Bootstrap the requests of the runs' common test split (both evaluated "
        "on LOG with `prectr evaluate`) and print B - A of every metric with its 95%% "
        "percentile CI, pooled, by slice and on the broad set; a CI that spans 0 reads "
        "'no difference'.",
    )
    p.add_argument("run_a", type=Path, help="run A (the reference)")
    p.add_argument("run_b", type=Path, help="run B")
    p.add_argument("--log", "--world", type=Path, dest="log", required=True,
                   help="the log both runs were evaluated on (a world or a plain log)")  # fmt: skip
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="compare the runs' test days, or their validation days (both evaluated "
                   "with --split valid)")  # fmt: skip
    p.add_argument("--day", action="append", default=[], metavar="YYYY-MM-DD",
                   help="compare on this day of the split alone (repeatable): does a "
                   "difference hold, or age, day by day")  # fmt: skip
    _bootstrap_flags(p)
    p.add_argument("--out", type=Path, help="write the comparison as JSON")
    p.add_argument("--draws", type=Path,
                   help="write B - A of each resample as parquet (to pool seeds)")  # fmt: skip
    p.set_defaults(func=cmd_compare)
