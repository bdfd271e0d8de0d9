"""FuxiCTR's side of the peer comparison (benchmarks/peer_fuxictr.py).

Run in the peer environment, never in prectr's: `.venv-peer/bin/python
benchmarks/peer/fuxictr_runner.py CONFIG.json`. It imports nothing of prectr or of the other
benchmarks, only FuxiCTR and what FuxiCTR brings (torch, numpy, pyarrow, ray).

CONFIG (written by peer_fuxictr.py): ``work`` (FuxiCTR's data root), ``csv`` (the exported
train, valid and test CSV files), ``categorical`` and ``numeric`` (the feature columns),
``models`` (``dnn``, ``deepfm``; none: preprocess only), ``seed``, ``threads``, ``epochs``,
``patience``, ``lr``, ``clip_norm``, ``batch_size``, ``embedding_dim``, ``hidden_units`` and
``loader`` (``memory`` or ``ray``).

It preprocesses the CSVs with FuxiCTR's `FeatureProcessor` and `build_dataset` (CSV ->
parquet, its own vocabularies; a rerun reuses them), then trains each model through
FuxiCTR's own pipeline (`FeatureMap`, `RankDataLoader`, `BaseModel.fit`, the best epoch on
valid reloaded at the end), timing `BaseModel.train_step` alone, and predicts the test split.
It saves each model's test labels and scores as ``WORK/test_MODEL.npy`` and prints one JSON
line: versions, threads, preprocessing seconds and, per model, training samples and seconds,
the validation metrics of every epoch, the best epoch, the parameter count and the path of
its predictions.

The pip wheel of FuxiCTR ships its layers and `BaseModel` but not its model zoo, so `DNN` and
`DeepFM` are defined here from those layers the way the zoo composes them.
"""

import json
import logging
import os
import sys
import time
from pathlib import Path

import fuxictr
import numpy as np
import pyarrow.parquet as pq
import torch
from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor, build_dataset
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything


class DNN(BaseModel):
    """`FeatureEmbedding` -> `MLP_Block` with the sigmoid output."""

    def __init__(self, feature_map, model_id="DNN", embedding_dim=10, hidden_units=(64,),
                 hidden_activations="ReLU", net_dropout=0, batch_norm=False,
                 learning_rate=1e-3, **kwargs):  # fmt: skip
        super().__init__(feature_map, model_id=model_id, **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1,
                             hidden_units=list(hidden_units),
                             hidden_activations=hidden_activations,
                             output_activation=self.output_activation,
                             dropout_rates=net_dropout, batch_norm=batch_norm)  # fmt: skip
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        emb = self.embedding_layer(self.get_inputs(inputs), flatten_emb=True)
        return {"y_pred": self.mlp(emb)}


class DeepFM(BaseModel):
    """`FeatureEmbedding` -> `FactorizationMachine` (first-order LR + pairwise product sum)
    plus `MLP_Block` on the flattened embeddings, then the sigmoid."""

    def __init__(self, feature_map, model_id="DeepFM", embedding_dim=10, hidden_units=(64,),
                 hidden_activations="ReLU", net_dropout=0, batch_norm=False,
                 learning_rate=1e-3, **kwargs):  # fmt: skip
        super().__init__(feature_map, model_id=model_id, **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1,
                             hidden_units=list(hidden_units),
                             hidden_activations=hidden_activations, output_activation=None,
                             dropout_rates=net_dropout, batch_norm=batch_norm)  # fmt: skip
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        logit = self.fm(X, emb) + self.mlp(emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(logit)}


MODELS = {"dnn": DNN, "deepfm": DeepFM}


class InMemoryLoader:
    """FuxiCTR's transformed parquet held in memory, batched in-process (no Ray workers)."""

    def __init__(self, feature_map, data_path, split="train", batch_size=32, shuffle=False,
                 seed=0, **kwargs):  # fmt: skip
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
                rows = order[start : start + self.batch_size]
                yield {c: v[rows] for c, v in self.columns.items()}
        else:
            for start in range(0, self.num_samples, self.batch_size):
                yield {c: v[start : start + self.batch_size] for c, v in self.columns.items()}


def preprocess(cfg: dict) -> tuple[str, str, str, float]:
    """FuxiCTR's parquet of the three CSVs (train, valid, test) and the seconds it took."""
    feature_cols = [
        {"name": name, "active": True, "dtype": "str", "type": "categorical",
         **({"share_embedding": "category"} if name == "query_category" else {})}
        for name in cfg["categorical"]
    ] + [{"name": name, "active": True, "dtype": "float", "type": "numeric"}
         for name in cfg["numeric"]]  # fmt: skip
    label_col = {"name": "click", "dtype": "float"}
    started = time.perf_counter()
    processor = FeatureProcessor(feature_cols=feature_cols, label_col=label_col,
                                 dataset_id="data", data_root=cfg["work"])  # fmt: skip
    train_data, valid_data, test_data = build_dataset(
        processor, train_data=cfg["csv"]["train"], valid_data=cfg["csv"]["valid"],
        test_data=cfg["csv"]["test"], data_format="csv", min_categr_count=1)  # fmt: skip
    return train_data, valid_data, test_data, time.perf_counter() - started


def train(name: str, cfg: dict, feature_map, params: dict, common: dict, test_data: str) -> dict:
    """Train model ``name``, timing each `train_step`; save its test labels and scores."""
    data_root = cfg["work"]
    seed_everything(cfg["seed"])
    model = MODELS[name](feature_map, **params)
    train_gen, valid_gen = RankDataLoader(feature_map, stage="train", shuffle=True, **common)
    clock = {"seconds": 0.0, "samples": 0, "valid": []}
    train_step, checkpoint = model.train_step, model.checkpoint_and_earlystop

    def timed_step(batch):
        begun = time.perf_counter()
        loss = train_step(batch)
        clock["seconds"] += time.perf_counter() - begun
        clock["samples"] += int(batch["click"].shape[0])
        return loss

    def recorded(logs, **kw):
        clock["valid"].append({k: float(v) for k, v in logs.items()})
        return checkpoint(logs, **kw)

    model.train_step, model.checkpoint_and_earlystop = timed_step, recorded
    os.makedirs(os.path.dirname(model.checkpoint), exist_ok=True)
    wall = time.perf_counter()
    model.fit(train_gen, epochs=cfg["epochs"], validation_data=valid_gen,
              max_gradient_norm=cfg["clip_norm"])  # fmt: skip
    wall = time.perf_counter() - wall
    test_gen = RankDataLoader(feature_map, stage="test", shuffle=False, **common)
    scores = model.predict(test_gen)
    labels = pq.read_table(test_data, columns=["click"])["click"].to_numpy()
    predictions = os.path.join(data_root, f"test_{name}.npy")
    np.save(predictions, np.stack([labels, scores]))
    aucs = [v["AUC"] for v in clock["valid"]]
    return {
        "train_samples": clock["samples"], "train_seconds": clock["seconds"],
        "train_samples_per_s": clock["samples"] / clock["seconds"], "fit_seconds": wall,
        "valid": clock["valid"], "best_epoch": int(np.argmax(aucs)),
        "parameters": sum(p.numel() for p in model.parameters()),
        "predictions": predictions,
    }  # fmt: skip


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(cfg["threads"])
    seed_everything(cfg["seed"])
    data_root, dataset_id = cfg["work"], "data"
    train_data, valid_data, test_data, preprocess_s = preprocess(cfg)
    feature_map = FeatureMap(dataset_id, os.path.join(data_root, dataset_id))
    feature_map.load(os.path.join(data_root, dataset_id, "feature_map.json"),
                     {"embedding_dim": cfg["embedding_dim"]})  # fmt: skip
    loader = {}
    if cfg["loader"] == "memory":
        import ray

        ray.shutdown()
        loader = {"data_loader": InMemoryLoader}
    common = dict(data_format="parquet", train_data=train_data, valid_data=valid_data,
                  test_data=test_data, batch_size=cfg["batch_size"], seed=cfg["seed"],
                  **loader)  # fmt: skip
    params = dict(
        gpu=-1, task="binary_classification", verbose=0, model_root=os.path.join(data_root, "ckpt"),
        metrics=["AUC", "logloss"], monitor="AUC", monitor_mode="max", save_best_only=True,
        early_stop_patience=cfg["patience"], reduce_lr_on_plateau=False, optimizer="adam",
        loss="binary_crossentropy", learning_rate=cfg["lr"], embedding_dim=cfg["embedding_dim"],
        hidden_units=cfg["hidden_units"], hidden_activations="ReLU", net_dropout=0.0,
        batch_norm=False, embedding_regularizer=None, net_regularizer=None,
    )  # fmt: skip
    results = {"fuxictr": fuxictr.__version__, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "preprocess_seconds": preprocess_s,
               "loader": cfg["loader"], "models": {}}  # fmt: skip
    for name in cfg["models"]:
        results["models"][name] = train(name, cfg, feature_map, params, common, test_data)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
