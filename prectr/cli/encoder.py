"""`prectr encoder`: the distilled student text encoder (tokenizer, distill, sft, evaluate,
cache)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import get_args

from rich.table import Table

from prectr.cli.output import console, fmt
from prectr.cli.pairs import pairs_config, pairs_flags
from prectr.words import count

STUDENT_FLAGS = {
    "dim": "width of the transformer", "layers": "transformer layers", "heads": "attention heads",
    "ff": "feed-forward width", "query_length": "pieces kept of a query",
    "title_length": "pieces kept of a title",
}  # fmt: skip
SFT_FLAGS = {  # type, help
    "loss": (str, "the fine-tuning loss: cross-entropy, class-weighted, or soft ordinal labels"),
    "pair_weight": (str, "draw each distinct graded pair once an epoch (pairs), or once per "
                    "graded row of it, as often as the log shows and grades it (rows)"),
    "valid_share": (float, "share of training queries whose graded pairs validate (0: none)"),
    "valid_every": (int, "steps between validation scores"),
    "patience": (int, "validations without a better --select-on figure before stopping "
                 "(0: never)"),
    "select": (str, "the validation figure early stopping watches and the kept student "
               "maximises: macro_f1 (every grade alike), spearman (the pairs' order by "
               "expected grade) or macro_f1+spearman (their sum)"),
}  # fmt: skip
TRAINING_FLAGS = {
    "epochs": "passes over the training pairs",
    "max_steps": "stop after this many steps in all (0: run every epoch)",
    "batch_size": "pairs per step", "seed": "seed of the initialisation and of the order",
    "checkpoint_every": "steps between checkpoints",
    "eval_requests": "held-out test requests scored at the end (0: all)",
}  # fmt: skip


def _student_flags(parser: argparse.ArgumentParser) -> None:
    from prectr.encoder.settings import MODES, EncoderTrainConfig, Precision, StudentConfig

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
    group.add_argument("--piece-overlap", action=argparse.BooleanOptionalAction,
                       help="two towers: the interaction also reads the share of query and "
                       "title pieces (and piece pairs) the other side holds, the lexical "
                       "match pooled towers blur (default: on for two towers, off for "
                       "cross)")  # fmt: skip
    group.add_argument("--overlap-skip", action=argparse.BooleanOptionalAction,
                       help="with piece overlap: a linear path from its columns to the pair "
                       "state besides the interaction (the wide part of wide and deep; "
                       f"default: {'on' if s.overlap_skip else 'off'})")  # fmt: skip
    group.add_argument("--vocab-size", type=int, default=t.vocab_size, help="tokenizer pieces")
    group.add_argument("--tokenizer", type=Path, help="a trained tokenizer (else one is trained)")
    group = parser.add_argument_group("training")
    for name, doc in TRAINING_FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(t, name),
                           help=doc)  # fmt: skip
    group.add_argument("--lr", type=float, default=t.lr, help="learning rate")
    group.add_argument("--ema-decay", type=float, default=t.ema_decay,
                       help="keep an exponential moving average of the weights with this "
                       "decay per step; validation scores it and the run exports it "
                       "(0: off)")  # fmt: skip
    group.add_argument("--precision", choices=get_args(Precision), default=t.precision,
                       help="the student's training passes in float32 (fp32), in bfloat16 "
                       "autocast (bf16), or in bf16 where the processor multiplies bfloat16 "
                       "natively (auto); losses, validation and scoring stay float32")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")


def cmd_encoder_train(args: argparse.Namespace) -> int:
    import torch

    from prectr.encoder.distill import EncoderRun
    from prectr.encoder.settings import EncoderTrainConfig, student_config

    if args.threads:
        torch.set_num_threads(args.threads)
    student = student_config(
        args.piece_overlap, args.overlap_skip, mode=args.mode, dim=args.dim, layers=args.layers,
        heads=args.heads, ff=args.ff, dropout=args.dropout, query_length=args.query_length,
        title_length=args.title_length,
    )  # fmt: skip
    given = [*TRAINING_FLAGS, "lr", "ema_decay", "precision", "vocab_size", "temperature",
             "hidden_weight", *SFT_FLAGS]  # fmt: skip
    train = EncoderTrainConfig(**{k: getattr(args, k) for k in given if hasattr(args, k)})
    config = pairs_config(args)
    run = EncoderRun(args.encoder_command, args.log, args.out, student, train,
                     getattr(args, "labels", None), args.init, args.resume,
                     tokenizer=args.tokenizer, pairs=config)  # fmt: skip
    _print_pairs(run.pairs, config)
    result = run.fit()
    if not result:  # another process of a torchrun: the main one reports
        return 0
    console.print(f"{result['kind']}: {result['steps']} steps on {result['samples']:,} samples "
                  f"({result['train_pairs_per_s']:,.0f} pairs/s), student in "
                  f"{args.out / 'student'}")  # fmt: skip
    if train.max_steps and result["steps"] < train.max_steps and not result.get("stopped_early"):
        console.print(f"[yellow]note[/]: the run ended with its {count(result['epochs'], 'epoch')} "
                      f"at step {result['steps']}, before --max-steps {train.max_steps}; raise "
                      "--epochs for more steps")  # fmt: skip
    if result["unmatched_labels"]:
        console.print(f"{result['unmatched_labels']:,} teacher labels name pairs outside the "
                      "log's training pairs; left out", style="dim")  # fmt: skip
    _print_limits(result["query_length"], result["title_length"], result["truncated"])
    if result.get("validation"):
        v = result["validation"]
        recall = ", ".join(f"{g}: {v[f'recall@{g}']:.3f}" for g in range(4))
        kept = {"macro_f1": "macro-F1", "spearman": "Spearman",
                "macro_f1+spearman": "macro-F1 + Spearman"}[result["select"]]  # fmt: skip
        console.print(f"validation ({v['pairs']:,} pairs, {result['loss']} loss), best "
                      f"{kept} at step {v['step']}"
                      f"{' (stopped early)' if result['stopped_early'] else ''}: "
                      f"accuracy {v['accuracy']:.3f}, macro-F1 {v['macro_f1']:.3f}, Spearman "
                      f"{v['spearman']:.3f}, recall per grade {recall}")  # fmt: skip
    if "held_out" in result:
        _print_relevance(f"held out ({config.describe()})", {"student": result["held_out"]})
    else:
        console.print(f"[yellow]held-out pairs not scored[/]: {result['held_out_skipped']}")
    return 0


def _print_pairs(pairs, config) -> None:
    c = pairs.counts
    truth = ("the simulator's true_relevance" if pairs.truth == "true_relevance"
             else "the human grades")  # fmt: skip
    console.print(
        f"held out: {config.describe()}, {pairs.held_out.num_rows:,} pool rows "
        f"({c['held_out_unscored']:,} without a grade), scored against {truth}; training: "
        f"{count(pairs.train.num_rows, 'distinct pair')}, {pairs.labelled.num_rows:,} with a "
        f"human grade; {count(c['overlap_dropped'], 'pair')} shown in both training and "
        "held-out requests left out of training; grades merged (the mean, rounded to the "
        "scale's nearest grade, halves down) "
        f"for {c['conflicting_train']:,} training and {c['conflicting_held_out']:,} held-out "
        "pairs graded differently more than once"
    )  # fmt: skip


RELEVANCE_METRICS = ("accuracy", "macro_f1", "spearman", "ndcg@10")


def _print_relevance(title: str, results: dict[str, dict]) -> None:
    """One row per model, so that many models stay readable: the overall figures, then each
    grade's recall, then each grade's mean expected grade."""
    from prectr.encoder.evaluate import degenerate_metrics

    first = next(iter(results.values()))
    heading = f"{title}: {count(first['requests'], 'request')}, {first['pairs']:,} graded rows"
    grades = [str(g) for g in range(4)]
    for caption, columns, keys in (
        (heading, RELEVANCE_METRICS, RELEVANCE_METRICS),
        ("recall of each grade (recall@g)", grades, [f"recall@{g}" for g in grades]),
        ("mean expected grade of each grade's rows (expected@g)", grades,
         [f"expected@{g}" for g in grades]),
    ):  # fmt: skip
        table = Table(title=caption)
        table.add_column("model", overflow="fold")
        for column in columns:
            table.add_column(column, justify="right")
        for name, m in results.items():
            table.add_row(name, *(fmt(m[key], 3) for key in keys))
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
    from prectr.text.tokenizer import TextTokenizer

    pairs = read_pairs(args.log, pairs_config(args))
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
    config = pairs_config(args)
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
    from prectr.encoder.pairs import log_texts
    from prectr.encoder.teacher import MiniLM
    from prectr.text.cache import build_embedding_cache

    texts = log_texts(args.log)
    build_embedding_cache(texts, MiniLM().embed, args.out)
    console.print(f"wrote {args.out}: {len(texts):,} texts embedded by the frozen MiniLM")
    return 0


def add_encoder_commands(sub: argparse._SubParsersAction) -> None:
    from prectr.encoder.settings import PAIR_WEIGHTS, SELECTIONS, SFT_LOSSES, EncoderTrainConfig
    from prectr.text.tokenizer import MAX_TRUNCATED

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
    pairs_flags(p)
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
    pairs_flags(p)
    p.set_defaults(func=cmd_encoder_train)

    p = commands.add_parser(
        "sft",
        help="fine-tune the student on the human grades, early-stopped on validation",
        description="A loss on the human grades of the log's training pairs (--loss), from a "
        "distilled student (--init) or from scratch. The graded pairs of a hashed "
        "--valid-share of the training queries validate: every --valid-every steps the "
        "student's macro-F1 and Spearman on them are scored, the student of the best "
        "--select-on figure (their sum by default) is kept and exported, and training stops "
        "after --patience scores without a better one. "
        "The --held-out requests are scored at the end.",
    )
    p.add_argument("log", type=Path)
    p.add_argument("--init", type=Path, help="a distilled student directory (RUN/student)")
    choices = {"loss": SFT_LOSSES, "pair_weight": PAIR_WEIGHTS, "select": SELECTIONS}
    for name, (kind, doc) in SFT_FLAGS.items():
        flag = "--select-on" if name == "select" else f"--{name.replace('_', '-')}"
        p.add_argument(flag, dest=name, type=kind, default=getattr(defaults, name), help=doc,
                       choices=choices.get(name))  # fmt: skip
    _student_flags(p)
    pairs_flags(p)
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
    pairs_flags(p)
    p.set_defaults(func=cmd_encoder_evaluate)

    p = commands.add_parser(
        "cache",
        help="embed every query and title of a log with the frozen MiniLM, once (PRECTR V1)",
    )
    p.add_argument("log", type=Path)
    p.add_argument("--out", type=Path, required=True, help="embedding cache (parquet)")
    p.set_defaults(func=cmd_encoder_cache)
