"""Both sides of the peer comparison on the same rows: the exposed impressions exported for
FuxiCTR with prectr's feature values, each side's test scores scored by the same code, and the
summary over seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import record  # noqa: F401  (this checkout's prectr, not an installed one: record.py)

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
from prectr.train.predict import predict

CATEGORICAL = ["user_id", "query", "item_id", "category", "query_category", "brand", "price_bucket"]
NUMERIC = ["log_price"]


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
