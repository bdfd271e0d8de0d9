"""Preparing a log for training: time split, features fitted on the training days, and the
encoded log cached in the run directory (item and request features, each split's impressions)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prectr.config import ExperimentConfig
from prectr.data.dataset import BatchStream, Collator, time_split, write_impressions
from prectr.data.features import EncodedLog, FeatureEncoder
from prectr.data.schema import SearchLog, read_log
from prectr.io import atomic_file

SPLITS = ("train", "valid", "test")


@dataclass
class PreparedData:
    encoder: FeatureEncoder
    encoded: EncodedLog
    split: dict[str, np.ndarray]  # request rows per split
    paths: dict[str, Path]  # encoded impressions per split
    user_of_request: np.ndarray  # dense user code per request row (for user-GAUC)
    collator: Collator

    def stream(
        self, split: str, config: ExperimentConfig, shuffle: bool, rows: str = "exposed",
        rank: int = 0, world_size: int = 1,
    ) -> BatchStream:  # fmt: skip
        return BatchStream(
            self.paths[split], self.collator, config.data.batch_size, shuffle,
            config.train.seed, rows, config.data.buffer_rows, rank, world_size,
        )  # fmt: skip


def read_training_log(config: ExperimentConfig, log_dir: str | Path | None = None) -> SearchLog:
    """The log to train on (``log_dir`` or the config's ``data.log``), validated."""
    source = log_dir or config.data.log
    if source is None:
        raise ValueError("no log to train on: set data.log in the config or pass --log")
    return read_log(source)


def prepare(config: ExperimentConfig, run_dir: Path, log: SearchLog) -> PreparedData:
    """Fit (or reload) the features on the training days and encode the log once: the item
    and request features (histories included) and each split's impressions are cached in the
    run directory, and a resumed run reuses them."""
    split = time_split(log.requests, config.data.valid_days, config.data.test_days)
    features_dir = run_dir / "features"
    if (features_dir / "features.json").is_file():
        encoder = FeatureEncoder.load(features_dir)
    else:
        encoder = FeatureEncoder(config.features).fit(log, split["train"])
        encoder.save(features_dir)
    data_dir = run_dir / "data"
    paths = {name: data_dir / f"{name}.parquet" for name in SPLITS}
    cache = data_dir / "features.npz"
    if cache.is_file() and all(p.is_file() for p in paths.values()):
        encoded = _load_features(cache, encoder)
    else:
        encoded = encoder.encode(log)
        rows = encoded.impressions["request_row"].to_numpy()
        data_dir.mkdir(parents=True, exist_ok=True)
        for name, path in paths.items():
            write_impressions(
                encoded.impressions.filter(pa.array(np.isin(rows, split[name]))), path
            )
        _save_features(cache, encoded)  # last: its presence marks a complete cache
    user = pc.dictionary_encode(log.requests["user_id"]).combine_chunks().indices
    return PreparedData(
        encoder, encoded, split, paths, user.to_numpy().astype(np.int64), Collator(encoded)
    )


def _save_features(path: Path, encoded: EncodedLog) -> None:
    arrays = {f"{level}.{name}": values for level in ("item", "request")
              for name, values in getattr(encoded, level).items()}  # fmt: skip
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _load_features(path: Path, encoder: FeatureEncoder) -> EncodedLog:
    with np.load(path) as arrays:
        levels: dict[str, dict[str, np.ndarray]] = {"item": {}, "request": {}}
        for key in arrays.files:
            level, name = key.split(".", 1)
            levels[level][name] = arrays[key]
    return EncodedLog(encoder.specs, encoder.vocab_sizes, levels["item"], levels["request"], None)
