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
   restrict prectr to the shared features and switch its position-bias tower off), then
   FuxiCTR's with the same seed.
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
   end), `BaseModel.predict` on test. The runner is the string RUNNER below, written to the
   work directory and run with the peer environment's python; it prints JSON.
5. Both sides' test predictions (prectr: the run's `checkpoints/best.pt` applied to the run's
   `data/test/`) are scored by the same code, `prectr.metrics.auc`/`logloss`, on the
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
its model zoo, so the runner defines `DNN` and `DeepFM` from those layers the way the zoo
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
- Initialisation: each library's default (FuxiCTR: embeddings N(0, 1e-4), Linear layers Xavier
  normal with zero bias; prectr: embeddings N(0, 0.05), Linear layers torch's default,
  DeepFM's first-order weights zero).
- Output: FuxiCTR applies the sigmoid in the model and uses binary_cross_entropy on
  probabilities; prectr uses binary_cross_entropy_with_logits.
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
  the runner therefore passes `RankDataLoader` (through its `data_loader` argument) a small
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
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import torch

from prectr import __version__ as prectr_version
from prectr.config import load_experiment
from prectr.data.dataset import Collator
from prectr.data.features import Categorical, FeatureEncoder
from prectr.data.schema import read_log
from prectr.data.shards import time_split
from prectr.data.stream import BatchStream
from prectr.io import atomic_file
from prectr.metrics import auc, logloss
from prectr.models import build_model
from prectr.train.checkpoint import load_checkpoint
from prectr.train.data import load_prepared
from prectr.train.trainer import predict

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".venv-peer"
TORCH = "torch==2.13.0"
FUXICTR = "fuxictr==2.3.10"
POLARS = "polars<2"  # fuxictr 2.3.10 calls pl.scan_csv(dtypes=...), which polars 2 removed
CATEGORICAL = ["user_id", "query", "item_id", "category", "query_category", "brand", "price_bucket"]
NUMERIC = ["log_price"]
MODELS = {"dnn": "DNN", "deepfm": "DeepFM"}

RUNNER = r'''
"""FuxiCTR side of benchmarks/peer_fuxictr.py; runs in .venv-peer. Prints one JSON line."""
import json, logging, os, sys, time
import numpy as np
import pyarrow.parquet as pq
import torch
import fuxictr
from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor, build_dataset
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything

cfg = json.loads(open(sys.argv[1]).read())
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
torch.set_num_threads(cfg["threads"])


class DNN(BaseModel):
    def __init__(self, feature_map, model_id="DNN", embedding_dim=10, hidden_units=(64,),
                 hidden_activations="ReLU", net_dropout=0, batch_norm=False,
                 learning_rate=1e-3, **kwargs):
        super().__init__(feature_map, model_id=model_id, **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1,
                             hidden_units=list(hidden_units),
                             hidden_activations=hidden_activations,
                             output_activation=self.output_activation,
                             dropout_rates=net_dropout, batch_norm=batch_norm)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        emb = self.embedding_layer(self.get_inputs(inputs), flatten_emb=True)
        return {"y_pred": self.mlp(emb)}


class DeepFM(BaseModel):
    def __init__(self, feature_map, model_id="DeepFM", embedding_dim=10, hidden_units=(64,),
                 hidden_activations="ReLU", net_dropout=0, batch_norm=False,
                 learning_rate=1e-3, **kwargs):
        super().__init__(feature_map, model_id=model_id, **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1,
                             hidden_units=list(hidden_units),
                             hidden_activations=hidden_activations, output_activation=None,
                             dropout_rates=net_dropout, batch_norm=batch_norm)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        logit = self.fm(X, emb) + self.mlp(emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(logit)}


class InMemoryLoader:
    """FuxiCTR's transformed parquet held in memory, batched in-process (no Ray workers)."""

    def __init__(self, feature_map, data_path, split="train", batch_size=32, shuffle=False,
                 seed=0, **kwargs):
        cols = list(feature_map.features) + feature_map.labels
        table = pq.read_table(data_path, columns=cols)
        self.columns = {c: torch.from_numpy(table[c].to_numpy()) for c in cols}
        self.num_samples, self.num_blocks = table.num_rows, 1
        self.batch_size, self.shuffle = batch_size, shuffle and split == "train"
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return -(-self.num_samples // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=self.generator)
            for start in range(0, self.num_samples, self.batch_size):
                rows = order[start:start + self.batch_size]
                yield {c: v[rows] for c, v in self.columns.items()}
        else:
            for start in range(0, self.num_samples, self.batch_size):
                yield {c: v[start:start + self.batch_size] for c, v in self.columns.items()}


seed_everything(cfg["seed"])
feature_cols = [
    {"name": name, "active": True, "dtype": "str", "type": "categorical",
     **({"share_embedding": "category"} if name == "query_category" else {})}
    for name in cfg["categorical"]
] + [{"name": name, "active": True, "dtype": "float", "type": "numeric"}
     for name in cfg["numeric"]]
label_col = {"name": "click", "dtype": "float"}
data_root, dataset_id = cfg["work"], "data"
started = time.perf_counter()
processor = FeatureProcessor(feature_cols=feature_cols, label_col=label_col,
                             dataset_id=dataset_id, data_root=data_root)
train_data, valid_data, test_data = build_dataset(
    processor, train_data=cfg["csv"]["train"], valid_data=cfg["csv"]["valid"],
    test_data=cfg["csv"]["test"], data_format="csv", min_categr_count=1)
preprocess_s = time.perf_counter() - started

feature_map = FeatureMap(dataset_id, os.path.join(data_root, dataset_id))
feature_map.load(os.path.join(data_root, dataset_id, "feature_map.json"),
                 {"embedding_dim": cfg["embedding_dim"]})
loader = {}
if cfg["loader"] == "memory":
    import ray
    ray.shutdown()
    loader = {"data_loader": InMemoryLoader}
common = dict(data_format="parquet", train_data=train_data, valid_data=valid_data,
              test_data=test_data, batch_size=cfg["batch_size"], seed=cfg["seed"], **loader)
params = dict(
    gpu=-1, task="binary_classification", verbose=0, model_root=os.path.join(data_root, "ckpt"),
    metrics=["AUC", "logloss"], monitor="AUC", monitor_mode="max", save_best_only=True,
    early_stop_patience=cfg["patience"], reduce_lr_on_plateau=False, optimizer="adam",
    loss="binary_crossentropy", learning_rate=cfg["lr"], embedding_dim=cfg["embedding_dim"],
    hidden_units=cfg["hidden_units"], hidden_activations="ReLU", net_dropout=0.0,
    batch_norm=False, embedding_regularizer=None, net_regularizer=None,
)
results = {"fuxictr": fuxictr.__version__, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "preprocess_seconds": preprocess_s,
           "loader": cfg["loader"], "models": {}}
for name in cfg["models"]:
    seed_everything(cfg["seed"])
    model = {"dnn": DNN, "deepfm": DeepFM}[name](feature_map, **params)
    train_gen, valid_gen = RankDataLoader(feature_map, stage="train", shuffle=True, **common)
    clock = {"seconds": 0.0, "samples": 0, "valid": []}
    train_step, checkpoint = model.train_step, model.checkpoint_and_earlystop

    def timed_step(batch, train_step=train_step, clock=clock):
        begun = time.perf_counter()
        loss = train_step(batch)
        clock["seconds"] += time.perf_counter() - begun
        clock["samples"] += int(batch["click"].shape[0])
        return loss

    def recorded(logs, checkpoint=checkpoint, clock=clock, **kw):
        clock["valid"].append({k: float(v) for k, v in logs.items()})
        return checkpoint(logs, **kw)

    model.train_step, model.checkpoint_and_earlystop = timed_step, recorded
    os.makedirs(os.path.dirname(model.checkpoint), exist_ok=True)
    wall = time.perf_counter()
    model.fit(train_gen, epochs=cfg["epochs"], validation_data=valid_gen,
              max_gradient_norm=cfg["clip_norm"])
    wall = time.perf_counter() - wall
    test_gen = RankDataLoader(feature_map, stage="test", shuffle=False, **common)
    scores = model.predict(test_gen)
    labels = pq.read_table(test_data, columns=["click"])["click"].to_numpy()
    np.save(os.path.join(data_root, f"test_{name}.npy"), np.stack([labels, scores]))
    aucs = [v["AUC"] for v in clock["valid"]]
    results["models"][name] = {
        "train_samples": clock["samples"], "train_seconds": clock["seconds"],
        "train_samples_per_s": clock["samples"] / clock["seconds"], "fit_seconds": wall,
        "valid": clock["valid"], "best_epoch": int(np.argmax(aucs)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "predictions": os.path.join(data_root, f"test_{name}.npy"),
    }
print(json.dumps(results))
'''


def sh(cmd: list[str], log: Path | None = None, env: dict | None = None) -> str:
    """Run ``cmd``; its output goes to ``log`` (appended) and stdout is returned."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    return proc.stdout


def peer_versions(python: Path) -> dict | None:
    probe = "import json, torch, fuxictr, polars, ray; print(json.dumps([m.__version__ for m in "
    probe += "(torch, fuxictr, polars, ray)]))"
    if not python.is_file():
        return None
    proc = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    if proc.returncode:
        return None
    return dict(zip(("torch", "fuxictr", "polars", "ray"), json.loads(proc.stdout), strict=True))


def _usable(found: dict | None) -> bool:
    return bool(
        found
        and found["torch"].split("+")[0] == TORCH.split("==")[1]
        and found["fuxictr"] == FUXICTR.split("==")[1]
        and int(found["polars"].split(".")[0]) < 2
    )


def ensure_peer_venv(venv: Path, log: Path) -> tuple[dict, list[str]]:
    """Make (or reuse) the peer environment; return its versions and the commands run."""
    python, pip = venv / "bin" / "python", [str(venv / "bin" / "python"), "-m", "pip"]
    found = peer_versions(python)
    if _usable(found):
        return found, [f"(reused {venv.relative_to(ROOT)}: {found})"]
    print(f"building the peer environment {venv} ...", flush=True)
    commands = [
        ["python3.11", "-m", "venv", str(venv)],
        [*pip, "install", "-q", TORCH],
        [*pip, "install", "--dry-run", FUXICTR, TORCH, POLARS],
        [*pip, "install", "-q", FUXICTR, TORCH, POLARS],
    ]
    for cmd in commands:
        out = sh(cmd, log)
        if "--dry-run" in cmd:
            planned = re.findall(r"\btorch-(\S+)", out.split("Would install")[-1])
            if any(not v.startswith(TORCH.split("==")[1]) for v in planned):
                sys.exit(f"pip would install torch {planned}, not {TORCH}: stopped")
    found = peer_versions(python)
    if not _usable(found):
        sys.exit(f"the peer environment has {found}, wanted {TORCH}, {FUXICTR}, {POLARS}")
    return found, [" ".join(c).replace(str(ROOT) + "/", "") for c in commands]


def busy_cores() -> float:
    """Cores' worth of CPU time all processes used, since boot."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def wait_until_quiet(limit_s: float, threshold: float = 0.25) -> float:
    """Wait (up to ``limit_s``) until other processes use under ``threshold`` of a core;
    return the share last measured."""
    deadline = time.monotonic() + limit_s
    while True:
        before, start = busy_cores(), time.monotonic()
        time.sleep(2.0)
        share = (busy_cores() - before) / (time.monotonic() - start)
        if share < threshold or time.monotonic() >= deadline:
            return round(max(share, 0.0), 2)
        print(f"  waiting: other processes use {share:.1f} cores", flush=True)


def measured(cmd: list[str], log: Path, env: dict, wait: dict) -> tuple[str, dict]:
    """Run ``cmd`` after waiting for a quiet machine (drawing on the budget ``wait["left"]``
    seconds); also return how busy other processes kept the machine meanwhile (cores: total
    busy CPU time less this command's and its reaped children's, per second of wall time)."""
    quiet = None
    if wait["left"] > 0:
        started = time.monotonic()
        quiet = wait_until_quiet(wait["left"])
        wait["left"] -= time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, start = busy_cores(), time.monotonic()
    out = sh(cmd, log, env)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    others = max(0.0, (busy_cores() - busy - ours) / wall)
    return out, {"others_cores_before": quiet, "others_cores_during": round(others, 2)}


def export_csv(world: Path, features_dir: Path, out: Path) -> dict[str, int]:
    """The exposed impressions of each split as CSV, columns = the shared features + click."""
    log = read_log(world)
    encoded = FeatureEncoder.load(features_dir).encode(log)
    split = time_split(log.requests)
    imp = encoded.impressions
    rows = imp["request_row"].to_numpy()
    exposed = pc.is_valid(imp["click"]).to_numpy(zero_copy_only=False)
    levels = {"item": encoded.item, "request": encoded.request}
    index = {"item": imp["item_row"].to_numpy(), "request": rows}
    specs = {s.name: s for s in encoded.specs}
    counts = {}
    for name, requests in split.items():
        keep = np.flatnonzero(exposed & np.isin(rows, requests))
        columns = {}
        for feature in CATEGORICAL + NUMERIC:
            spec = specs[feature]
            values = levels[spec.level][feature][index[spec.level][keep]]
            columns[feature] = values.astype(np.int64) if isinstance(spec, Categorical) else values
        columns["click"] = imp["click"].to_numpy(zero_copy_only=False)[keep].astype(np.int64)
        with atomic_file(out / f"{name}.csv") as tmp:
            pacsv.write_csv(pa.table(columns), tmp)
        counts[name] = int(keep.size)
    return counts


def prectr_test_scores(run: Path, world: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of the exposed test impressions from the run's best checkpoint."""
    config = load_experiment(run / "config.yaml")
    encoded = FeatureEncoder.load(run / "features").encode(read_log(world))
    model = build_model(config.model, encoded.specs, encoded.vocab_sizes, config.model_params)
    model.load_state_dict(load_checkpoint(run / "checkpoints" / "best.pt")["model"])
    data = load_prepared(run, config.data.shards_uri)
    stream = BatchStream(data.shards["test"], Collator(encoded), shuffle=False,
                         filesystem=data.filesystem)  # fmt: skip
    p = predict(model, stream.epoch())
    return p["click"][p["exposed"]].astype(np.int64), p["score"][p["exposed"]]


def prectr_row(name: str, run: Path, world: Path, seed: int) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    labels, scores = prectr_test_scores(run, world)
    valid = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return {
        "library": "prectr",
        "model": name,
        "seed": seed,
        "test_auc": auc(labels, scores),
        "test_logloss": logloss(labels, scores),
        "test_rows": int(labels.size),
        "train_samples_per_s": metrics["train_samples_per_s"],
        "train_samples": metrics["train_samples"],
        "best_epoch": metrics["best_valid"]["epoch"],
        "valid_auc": [v["auc"] for v in valid if v["split"] == "valid"],
        "parameters": metrics["parameters"],
    }


def fuxictr_row(name: str, out: dict, seed: int) -> dict:
    m = out["models"][name]
    labels, scores = np.load(m["predictions"])
    labels = labels.astype(np.int64)
    return {
        "library": "FuxiCTR",
        "model": name,
        "seed": seed,
        "test_auc": auc(labels, scores),
        "test_logloss": logloss(labels, scores),
        "test_rows": int(labels.size),
        "train_samples_per_s": m["train_samples_per_s"],
        "train_samples": m["train_samples"],
        "best_epoch": m["best_epoch"],
        "valid_auc": [v["AUC"] for v in m["valid"]],
        "parameters": m["parameters"],
    }


def summarise(runs: list[dict], models: list[str]) -> tuple[list[dict], dict]:
    """Per library and model: mean test AUC and logloss over seeds, median samples/s; per
    model: the AUC difference (mean and its standard error over seeds) and the speed ratio."""
    table, verdicts = [], {}
    for name in models:
        rows = {}
        for library in ("prectr", "FuxiCTR"):
            mine = [r for r in runs if r["library"] == library and r["model"] == name]
            rows[library] = {
                "library": library,
                "model": name,
                "seeds": len(mine),
                "test_auc": float(np.mean([r["test_auc"] for r in mine])),
                "test_auc_sd": float(np.std([r["test_auc"] for r in mine], ddof=1))
                if len(mine) > 1
                else None,
                "test_logloss": float(np.mean([r["test_logloss"] for r in mine])),
                "train_samples_per_s": float(np.median([r["train_samples_per_s"] for r in mine])),
            }
        ours, peer = rows["prectr"], rows["FuxiCTR"]
        peer_auc = {
            r["seed"]: r["test_auc"]
            for r in runs
            if r["model"] == name and r["library"] == "FuxiCTR"
        }
        diffs = [
            r["test_auc"] - peer_auc[r["seed"]]
            for r in runs
            if r["model"] == name and r["library"] == "prectr"
        ]
        ratio = ours["train_samples_per_s"] / peer["train_samples_per_s"]
        ours["ratio"], peer["ratio"] = ratio, 1.0
        delta = float(np.mean(diffs))
        se = float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else None
        verdicts[name] = {
            "auc_delta": delta,
            "auc_delta_se": se,
            "auc_within_0.002": abs(delta) <= 0.002,
            "speed_ratio": ratio,
            "speed_ratio_at_least_1": ratio >= 1.0,
        }
        table += [ours, peer]
    return table, verdicts


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
    (peer_dir / "runner.py").write_text(RUNNER)
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
                cmd = [str(PEER_VENV / "bin" / "python"), str(peer_dir / "runner.py")]
                cmd.append(str(cfg_path))
                print("FuxiCTR preprocessing ...", flush=True)
                out = json.loads(sh(cmd, log, env).strip().splitlines()[-1])
                commands.append(shown(cmd))
                preprocess_s = out["preprocess_seconds"]

            cfg_path = peer_dir / f"config_{name}_seed{seed}.json"
            cfg_path.write_text(json.dumps({**peer_cfg, "models": [name], "seed": seed}, indent=2))
            cmd = [str(PEER_VENV / "bin" / "python"), str(peer_dir / "runner.py"), str(cfg_path)]
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
            "processor": _cpu_name(),
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30),
        },
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_file(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {rel(args.out)}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
