"""`prectr train`, `prectr calibrate` and `prectr prepare`: a run directory from an experiment
config and a log."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from prectr.cli.output import console
from prectr.models.calibration_kinds import KINDS


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
        + ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k not in ("epoch", "step"))
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
    from prectr.train.data import impressions, open_run, prepared_shards

    config = load_experiment(args.config, args.set)
    run_dir = args.out or Path("runs") / (config.name or Path(args.config).stem)
    if args.engine == "ray":
        from prectr.data.ray_engine import RayEngine

        with RayEngine(args.address, args.cpus) as engine:
            open_run(config, run_dir, log_dir=args.log, overwrite=args.overwrite, engine=engine)
    else:
        if args.address is not None or args.cpus is not None:
            raise ValueError("--address and --cpus set up Ray: pass them with --engine ray")
        open_run(config, run_dir, log_dir=args.log, overwrite=args.overwrite)
    filesystem, shards = prepared_shards(run_dir, config.data.shards_uri)
    where = f", shards at {config.data.shards_uri}" if config.data.shards_uri else ""
    table = Table("split", "shards", "impressions", title=f"prepared {run_dir}{where}")
    for split, paths in shards.items():
        table.add_row(split, str(len(paths)), f"{impressions(paths, filesystem):,}")
    console.print(table)
    return 0


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``prectr train``, ``prectr calibrate`` and ``prectr prepare``."""
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
    p.add_argument("--method", choices=KINDS, default="platt")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "prepare",
        help="encode a log into a run directory once, before training (e.g. under torchrun)",
        description="Fit the config's features on the training days and write the encoded log "
        "into the run directory as data.shards parquet shards per split. `prectr train` with "
        "the same config and --out then trains without reading the log; under torchrun every "
        "process streams only its own shards. --engine ray encodes the log's chunks in "
        "parallel on Ray (a local Ray started for the command, or the cluster at --address), "
        "with the same output as the local engine; it needs `pip install 'prectr[ray]'`.",
    )
    experiment_arguments(p)
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="encode the chunks in this process (local) or on Ray")  # fmt: skip
    p.add_argument("--address", metavar="ADDR",
                   help="a running Ray cluster's address (`ray start --head` prints it; "
                   "`auto`: the cluster this machine belongs to); default: a local Ray "
                   "started for the command")  # fmt: skip
    p.add_argument(
        "--cpus",
        type=int,
        metavar="N",
        help="CPUs of the local Ray, one worker each (default: the machine's)",
    )
    p.set_defaults(func=cmd_prepare)
