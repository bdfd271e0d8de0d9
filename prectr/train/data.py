"""Preparing a log for training: time split, features fitted on the training days, and the
encoded log cached (item and request features in the run directory, each split's impressions
as ``data.shards`` parquet shards). One process prepares; every training process then loads the
features and streams its own shards, without reading the log.

The shards go to ``data.shards_uri`` when it is set, a local folder or any pyarrow filesystem
URI (``file:///data/prepared``, ``s3://bucket/prepared``, ...), one folder per split
(``train/part-00000.parquet``, ...); else to the run directory's ``data/``. The location is
resolved once to a filesystem and a path (:func:`shard_location`), and prepare writes and
training reads through them."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from prectr.config import ExperimentConfig
from prectr.data.dataset import Collator
from prectr.data.shards import resolve_location, shard_paths, shards_of, time_split, write_shards
from prectr.data.stream import BatchStream
from prectr.data.features import EncodedLog, FeatureEncoder
from prectr.data.schema import SearchLog
from prectr.io import atomic_file

SPLITS = ("train", "valid", "test")


@dataclass
class PreparedData:
    encoder: FeatureEncoder
    encoded: EncodedLog  # item and request features (no impressions: those stay on disk)
    shards: dict[str, list[str]]  # encoded impressions per split: paths in ``filesystem``
    user_of_request: np.ndarray  # dense user code per request row (for user-GAUC)
    collator: Collator
    filesystem: pafs.FileSystem

    def stream(
        self, split: str, config: ExperimentConfig, shuffle: bool, rows: str = "exposed",
        rank: int = 0, world_size: int = 1,
    ) -> BatchStream:  # fmt: skip
        """The batches of process ``rank`` of ``world_size``: its shards of the split, in
        batches of ``data.batch_size / world_size`` rows (one optimiser step takes about
        ``data.batch_size`` rows whatever the number of processes)."""
        return BatchStream(
            shards_of(self.shards[split], rank, world_size), self.collator,
            -(-config.data.batch_size // world_size), shuffle, config.train.seed, rows,
            config.data.buffer_rows, self.filesystem,
        )  # fmt: skip

    def impressions(self, split: str) -> int:
        """The encoded impressions of the split (from the shards' metadata)."""
        return sum(pq.ParquetFile(p, filesystem=self.filesystem).metadata.num_rows
                   for p in self.shards[split])  # fmt: skip

    def click_rate(self) -> float:
        """The click-through rate of the exposed training impressions, smoothed by one click
        and one non-click so that it is never 0 or 1."""
        clicks = exposed = 0
        for path in self.shards["train"]:
            column = pq.read_table(path, columns=["click"], filesystem=self.filesystem)["click"]
            clicks += pc.sum(column).as_py() or 0
            exposed += pc.count(column).as_py()
        return (clicks + 1) / (exposed + 2)


def training_log_path(config: ExperimentConfig, log_dir: str | Path | None = None) -> Path:
    """The absolute path of the log to train on: ``log_dir``, else the config's ``data.log``
    (a relative path is taken from the working directory)."""
    source = log_dir or config.data.log
    if source is None:
        raise ValueError("no log to train on: set data.log in the config or pass --log")
    return Path(source).resolve()


def fit_features(config: ExperimentConfig, log: SearchLog) -> FeatureEncoder:
    """The config's features fitted on the log's training days."""
    split = time_split(log.requests, config.data.valid_days, config.data.test_days)
    return FeatureEncoder(config.features).fit(log, split["train"])


def shard_location(run_dir: Path, uri: str | None) -> tuple[pafs.FileSystem, str]:
    """Where the split shards of the run are: ``uri`` (``data.shards_uri``), else the run
    directory's ``data/``, as a filesystem and the path in it (see
    :func:`prectr.data.shards.resolve_location`)."""
    return resolve_location(run_dir / "data" if uri is None else uri)


def prepared(run_dir: Path) -> bool:
    """Whether the run directory holds a complete encoded log (features written last)."""
    return (run_dir / "data" / "features.npz").is_file()


def prepare(
    config: ExperimentConfig, run_dir: Path, log: SearchLog, encoder: FeatureEncoder | None = None
) -> PreparedData:
    """Fit the features on the training days (unless ``encoder`` holds them fitted) and encode
    the log once: the features into the run directory, each split's shards to
    :func:`shard_location` (the features are written last: a run that has them reuses it
    all)."""
    if not prepared(run_dir):
        filesystem, root = shard_location(run_dir, config.data.shards_uri)
        split = time_split(log.requests, config.data.valid_days, config.data.test_days)
        encoder = encoder or fit_features(config, log)
        encoder.save(run_dir / "features")
        encoded = encoder.encode(log)
        rows = encoded.impressions["request_row"].to_numpy()
        for name in SPLITS:
            write_shards(
                encoded.impressions.filter(pa.array(np.isin(rows, split[name]))),
                posixpath.join(root, name), config.data.shards, filesystem,
            )  # fmt: skip
        user = pc.dictionary_encode(log.requests["user_id"]).combine_chunks().indices
        _save_features(run_dir / "data" / "features.npz", encoded, user.to_numpy())
    return load_prepared(run_dir, config.data.shards_uri)


def load_prepared(run_dir: Path, shards_uri: str | None = None) -> PreparedData:
    """The encoded log of a prepared run directory, its shards at ``shards_uri`` (the run's
    ``data.shards_uri``; default: in the run directory), where they stay."""
    if not prepared(run_dir):
        raise FileNotFoundError(f"{run_dir}: no prepared data (data/features.npz)")
    encoder = FeatureEncoder.load(run_dir / "features")
    encoded, user_of_request = _load_features(run_dir / "data" / "features.npz", encoder)
    filesystem, root = shard_location(run_dir, shards_uri)
    try:
        shards = {name: shard_paths(posixpath.join(root, name), filesystem) for name in SPLITS}
    except OSError as err:
        where = f"data.shards_uri {shards_uri}" if shards_uri else str(run_dir)
        raise type(err)(f"{where}: the prepared shards cannot be read: {err}") from None
    return PreparedData(encoder, encoded, shards, user_of_request, Collator(encoded),
                        filesystem)  # fmt: skip


def _save_features(path: Path, encoded: EncodedLog, user_of_request: np.ndarray) -> None:
    arrays = {f"{level}.{name}": values for level in ("item", "request")
              for name, values in getattr(encoded, level).items()}  # fmt: skip
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, user_of_request=user_of_request, **arrays)


def _load_features(path: Path, encoder: FeatureEncoder) -> tuple[EncodedLog, np.ndarray]:
    with np.load(path) as arrays:
        levels: dict[str, dict[str, np.ndarray]] = {"item": {}, "request": {}}
        for key in arrays.files:
            if key != "user_of_request":
                level, name = key.split(".", 1)
                levels[level][name] = arrays[key]
        user_of_request = arrays["user_of_request"].astype(np.int64)
    features = EncodedLog(encoder.specs, encoder.vocab_sizes, levels["item"], levels["request"],
                          None)  # fmt: skip
    return features, user_of_request
