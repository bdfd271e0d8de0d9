"""Peer comparison: prectr's DNN and DeepFM against FuxiCTR's, on one split, one feature set.

Run: .venv/bin/python benchmarks/peer_fuxictr.py [--preset small|bench] [--epochs N]
     [--seeds 0 1 2 3 4] [--threads N] [--models dnn deepfm] [--peer-loader memory|ray]
Prints a markdown table and writes results/peer_fuxictr.json (with every command, the
versions and the machine). About 4 minutes on `small` with the default five seeds on a quiet
2-core machine, about 15 minutes on `bench` with three; building the peer environment the
first time adds about a minute.

What it does, in order:

1. Simulates a world (`prectr simulate --preset P --seed 0`) under runs/peer_fuxictr/P/.
2. For each training seed and each model, one after the other (so that both libraries meet
   the same conditions on the machine): trains prectr's model with
   `prectr train configs/peer_MODEL.yaml --log WORLD --set train.seed=S ...` (the configs
   restrict prectr to the shared features and freeze its position bias, `train.position_bias:
   false`: every position keeps the log-odds of the training click rate it starts at, one
   constant added to every logit), then FuxiCTR's with the same seed.
3. Before the first FuxiCTR training it exports the exposed impressions of each split (time
   split: last day test, the day before valid, the rest train) to CSV, one column per
   feature, from the vocabulary ids that prectr's fitted encoder (the first run's
   `features/`) gives: user_id, query, item_id, category, query_category, brand, price_bucket
   (categorical) and log_price (numeric, already standardised), plus the click label; both
   libraries therefore see the same values. FuxiCTR then preprocesses the CSVs once, in a
   separate untimed call: `FeatureProcessor` + `build_dataset` (CSV -> parquet, with its own
   vocabularies).
4. FuxiCTR trains in a separate virtual environment (below) through its own pipeline:
   `FeatureMap`, `RankDataLoader`, `BaseModel.fit` (the best epoch on valid reloaded at the
   end), `BaseModel.predict` on test. That side is `benchmarks/peer/fuxictr_runner.py`, run
   with the peer environment's python on a JSON config this script writes to the work
   directory (one per seed and model, and one for the preprocessing); it prints JSON.
5. Both sides' test predictions (prectr: the run's `checkpoints/best.pt` applied to the run's
   prepared test shards) are scored by the same code, `prectr.metrics.auc`/`logloss`, on the
   same exposed test impressions. The table gives the mean over seeds (± their standard
   deviation) and the median samples/s; the verdict compares the mean AUC difference (with its
   standard error over seeds) with the issue's ±0.002 and the samples/s ratio with 1.0.

The peer environment. FuxiCTR never becomes a dependency of prectr: the script makes
`.venv-peer/` (git-ignored) with `python3.11 -m venv` and installs, in two steps,
`torch==2.13.0` (the CPU wheel, from this machine's local wheel directory; any other version
would pull a multi-GB CUDA build), then `fuxictr==2.3.10` with `torch==2.13.0` pinned again so
that fuxictr's requirements cannot move torch, and `polars<2`: fuxictr 2.3.10 declares polars
without a bound but calls `pl.scan_csv(dtypes=...)`, which polars 2 removed (it fails with
ArgumentRemovedError). A `pip install --dry-run` of that second step comes first, and the
script stops if it would install any torch but 2.13.0. fuxictr's other requirements (pandas,
pyyaml, scikit-learn, numpy, h5py, tqdm, pyarrow, ray[data]>=2.52, pydantic) install normally
here (ray 2.60), so no `--no-deps` fallback is needed. An existing `.venv-peer` with those
versions is reused as it is. The pip wheel of FuxiCTR ships its layers and `BaseModel` but not
its model zoo, so the FuxiCTR side defines `DNN` and `DeepFM` from those layers the way the zoo
composes them: `FeatureEmbedding` -> `MLP_Block` with a sigmoid output (DNN);
`FeatureEmbedding` -> `FactorizationMachine` (first-order LR + pairwise product sum) plus
`MLP_Block` on the flattened embeddings, then a sigmoid (DeepFM).

Matched on both sides: features and their values (above); embedding dimension 16 for every
field; MLP 256-128-64-1 with ReLU, no dropout, no batch norm; batch size 4096; Adam with lr 1e-3
for every parameter, no weight decay or regularizer (prectr: AdamW with weight_decay 0 and all
three learning rates 1e-3); gradient norm clipped at 10 (FuxiCTR's default); binary
cross-entropy on exposed impressions; the number of epochs (default 2); validation AUC after
each epoch, the best epoch's weights reported, patience 2 (FuxiCTR's reduce_lr_on_plateau is
switched off: prectr has no such schedule); the training seed; the torch intra-op thread
count (`--threads`, default all cores, set in both processes, plus OMP_NUM_THREADS and
MKL_NUM_THREADS); each side trains in a single process.

Differences the two APIs leave:
- Numeric features: FuxiCTR embeds log_price as a field (a bias-free Linear(1, 16)) that enters
  the MLP and the FM; prectr feeds the raw value to the MLP (and to DeepFM's first-order term,
  after a BatchNorm without affine parameters) and keeps it out of the FM. So the MLP input is
  128 wide in FuxiCTR and 113 in prectr.
- Initialisation: each library's default, which agree on the embeddings (N(0, 1e-4)) and the
  Linear layers (Xavier normal, zero bias) since prectr took FuxiCTR's (commit 9958c71);
  prectr's DeepFM starts its first-order weights at zero.
- Output: FuxiCTR applies the sigmoid in the model and uses binary_cross_entropy on
  probabilities; prectr uses binary_cross_entropy_with_logits, on a logit that includes the
  frozen position bias (the training click rate's log-odds), so it starts at the base rate
  where FuxiCTR's starts near 0.5.
- Vocabularies: prectr's are fitted on every training request and every item in a training
  pool; FuxiCTR refits its own on the exported training rows (exposed only, min count 1). A
  value FuxiCTR did not see in training goes to its OOV id; in prectr such an item (pooled but
  never exposed in training) keeps its own, never-trained embedding. query_category shares the
  category table on both sides (FuxiCTR `share_embedding`), except in FuxiCTR's first-order
  LR, which never shares.
- Batches and shuffling: prectr's batches hold whole requests (the cut is at the first request
  boundary at or after 4096 rows, so up to 4105 rows) shuffled by request within 262,144-row
  buffers; FuxiCTR's hold exactly 4096 rows, shuffled row by row over the whole training set.
- Data loading: FuxiCTR 2.3's stock ParquetDataLoader streams through Ray Data worker
  processes that prefetch while the model trains; on a 2-core machine those compete with the
  timed steps (measured: about 25% fewer samples/s for FuxiCTR's DNN on `small`). By default
  the FuxiCTR side therefore passes `RankDataLoader` (through its `data_loader` argument) a small
  in-process loader that reads FuxiCTR's own transformed parquet into memory and yields the
  same batch dicts, synchronously, as prectr's loader does; Ray is still used, and shut down,
  in FuxiCTR's preprocessing. `--peer-loader ray` uses the stock loader instead.

Throughput ("train samples/s"): exposed training rows processed per second of training-step
time, summed over all epochs. Timed on both sides is exactly one optimisation step per batch,
from the forward pass to the optimizer step: forward, loss, zero_grad, backward, gradient
clipping, optimizer step (prectr: its trainer's own `train_samples_per_s`; FuxiCTR:
`BaseModel.train_step` wrapped in a timer). Not timed: reading and batching data, validation,
checkpoints, logging, preprocessing.

Other work on the machine ruins throughput figures (with other trainings running, both sides
fell from about 200k to about 6k samples/s: their threads spin against each other). So before
each training the script waits until other processes use under a quarter of a core
(`--wait-quiet`, 300 s in all by default), and records per run how many cores other processes
used before and during it (total busy CPU less the run's own and its reaped children's; Ray's
daemons under `--peer-loader ray` count as "others"); it warns when that exceeded 0.25.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import psutil
import torch
from peer.environment import PEER_VENV, ensure_peer_venv, sh
from peer.quiet import measured
from peer.sides import CATEGORICAL, NUMERIC, export_csv, fuxictr_row, prectr_row, summarise
from record import ROOT, cpu

from prectr import __version__ as prectr_version
from prectr.config import load_experiment
from prectr.io import atomic_file

RUNNER = Path(__file__).resolve().parent / "peer" / "fuxictr_runner.py"  # runs in .venv-peer
MODELS = {"dnn": "DNN", "deepfm": "DeepFM"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["small", "bench"], default="small")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="training seeds (the world is always seed 0)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--peer-loader", choices=["memory", "ray"], default="memory")
    parser.add_argument("--wait-quiet", type=float, default=300.0, metavar="SECONDS",
                        help="before each training, wait for other processes to go quiet, "
                        "up to this many seconds in all (0: don't wait)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "peer_fuxictr")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "peer_fuxictr.json")
    args = parser.parse_args()

    work = args.work / args.preset
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    log = work / "commands.log"
    bin_dir = Path(sys.executable).parent
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    torch.set_num_threads(args.threads)
    commands: list[str] = []

    def rel(p: Path | str) -> str:
        p = Path(p)
        return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)

    def shown(cmd: list[str]) -> str:
        return " ".join(rel(c) if c.startswith("/") else c for c in cmd)

    peer, setup = ensure_peer_venv(PEER_VENV, log)
    commands += setup

    world = work / "world"
    cmd = [str(bin_dir / "prectr"), "simulate", "--preset", args.preset, "--seed", "0"]
    cmd += ["--out", str(world)]
    print(f"simulating {args.preset} ...", flush=True)
    sh(cmd, log, env)
    commands.append(shown(cmd))

    config = load_experiment(ROOT / "configs" / f"peer_{args.models[0]}.yaml")
    peer_dir, csv_dir = work / "fuxictr", work / "csv"
    peer_dir.mkdir()
    peer_cfg = {
        "work": str(peer_dir),
        "csv": {k: str(csv_dir / f"{k}.csv") for k in ("train", "valid", "test")},
        "categorical": CATEGORICAL,
        "numeric": NUMERIC,
        "threads": args.threads,
        "epochs": args.epochs,
        "patience": config.train.patience,
        "lr": config.train.lr_dense,
        "clip_norm": config.train.clip_norm,
        "batch_size": config.data.batch_size,
        "embedding_dim": config.model_params["embedding_dim"],
        "hidden_units": config.model_params["hidden"],
        "loader": args.peer_loader,
    }
    wait = {"left": args.wait_quiet}
    runs: list[dict] = []
    counts: dict[str, int] = {}
    preprocess_s = None
    for seed in args.seeds:
        for name in args.models:
            run = work / f"prectr_{name}_seed{seed}"
            cmd = [str(bin_dir / "prectr"), "train", str(ROOT / "configs" / f"peer_{name}.yaml")]
            cmd += ["--log", str(world), "--out", str(run), "--set", f"train.seed={seed}"]
            cmd += ["--set", f"train.epochs={args.epochs}", "--set", f"train.threads={threads}"]
            print(f"seed {seed}: prectr {name} ...", flush=True)
            _, load = measured(cmd, log, env, wait)
            commands.append(shown(cmd))
            runs.append({**prectr_row(name, run, world, seed), **load})
            if not counts:
                counts = export_csv(world, run / "features", csv_dir)
                cfg_path = peer_dir / "config_preprocess.json"
                cfg_path.write_text(json.dumps({**peer_cfg, "models": [], "seed": 0}, indent=2))
                cmd = [str(PEER_VENV / "bin" / "python"), str(RUNNER)]
                cmd.append(str(cfg_path))
                print("FuxiCTR preprocessing ...", flush=True)
                out = json.loads(sh(cmd, log, env).strip().splitlines()[-1])
                commands.append(shown(cmd))
                preprocess_s = out["preprocess_seconds"]

            cfg_path = peer_dir / f"config_{name}_seed{seed}.json"
            cfg_path.write_text(json.dumps({**peer_cfg, "models": [name], "seed": seed}, indent=2))
            cmd = [str(PEER_VENV / "bin" / "python"), str(RUNNER), str(cfg_path)]
            print(f"seed {seed}: FuxiCTR {name} ...", flush=True)
            out, load = measured(cmd, log, env, wait)
            commands.append(shown(cmd))
            out = json.loads(out.strip().splitlines()[-1])
            runs.append({**fuxictr_row(name, out, seed), **load})
            if (
                runs[-1]["test_rows"] != runs[-2]["test_rows"]
                or runs[-1]["test_rows"] != counts["test"]
            ):
                sys.exit(f"test rows differ: {runs[-2]['test_rows']}, {runs[-1]['test_rows']}")

    table, verdicts = summarise(runs, args.models)
    seeds = ", ".join(map(str, args.seeds))
    print()
    print(f"test day of `{args.preset}` (world seed 0): {counts['test']:,} exposed impressions; "
          f"trained on {counts['train']:,} for {args.epochs} epochs, {args.threads} threads; "
          f"AUC and logloss: mean over training seeds {seeds}; samples/s: median")  # fmt: skip
    print()
    print("| library | model | test AUC | test logloss | train samples/s | ratio |")
    print("|---|---|---|---|---|---|")
    for r in table:
        sd = f" ± {r['test_auc_sd']:.4f}" if r["test_auc_sd"] is not None else ""
        print(f"| {r['library']} | {r['model']} | {r['test_auc']:.4f}{sd} | "
              f"{r['test_logloss']:.4f} | {r['train_samples_per_s']:,.0f} | "
              f"{r['ratio']:.2f} |")  # fmt: skip
    print()
    for name, v in verdicts.items():
        se = f" (s.e. {v['auc_delta_se']:.4f})" if v["auc_delta_se"] is not None else ""
        print(f"{name}: AUC {v['auc_delta']:+.4f}{se} vs FuxiCTR, target ±0.002 "
              f"{'met' if v['auc_within_0.002'] else 'not met'}; speed x{v['speed_ratio']:.2f}, "
              f"target ≥ 1.0 {'met' if v['speed_ratio_at_least_1'] else 'not met'}")  # fmt: skip
    busiest = max(r["others_cores_during"] for r in runs)
    if busiest > 0.25:
        print(f"\nnote: other processes used up to {busiest:.1f} cores during a training; "
              "the samples/s figures are unreliable")  # fmt: skip

    result = {
        "preset": args.preset,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "threads": args.threads,
        "peer_loader": args.peer_loader,
        "rows": counts,
        "summary": table,
        "targets": verdicts,
        "runs": runs,
        "fuxictr_preprocess_seconds": preprocess_s,
        "versions": {
            "prectr": prectr_version,
            "torch": torch.__version__,
            "peer": peer,
            "python": platform.python_version(),
        },
        "commands": [shown([sys.executable, *sys.argv]), *commands],
        "machine": {
            "platform": platform.platform(),
            "processor": cpu()["model"],
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30),
        },
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_file(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {rel(args.out)}")


if __name__ == "__main__":
    main()
