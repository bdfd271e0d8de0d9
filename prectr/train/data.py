"""Preparing a log for training: time split, features fitted on the training days, and the
encoded log cached (item and request features in the run directory, each split's impressions
as ``data.shards`` parquet shards). One process prepares; every training process then loads the
features and streams its own shards, without reading the log.

Preparing streams: the log is read in chunks of about ``data.chunk_rows`` candidates in time
order (:class:`prectr.data.chunks.LogChunks`), each chunk encoded by
:meth:`FeatureEncoder.encode_chunk` from the history state the chunks before it left, its
impressions appended to the shards and its request features to ``features.npz``, so memory
does not grow with the log. The prepared requests are the log's in time order (ties in the
log's order): for a log whose requests are in time order, its own rows. The chunks are encoded
by an engine: in this process one after the other (:func:`encode_in_turn`), or in parallel on
Ray (:class:`prectr.data.ray_engine.RayEngine`, ``prectr prepare --engine ray``), with the same
output.

The shards go to ``data.shards_uri`` when it is set, a local folder or any pyarrow filesystem
URI (``file:///data/prepared``, ``s3://bucket/prepared``, ...), one folder per split
(``train/part-00000.parquet``, ...); else to the run directory's ``data/``. The location is
resolved once to a filesystem and a path (:func:`shard_location`), and prepare writes and
training reads through them.

:func:`open_run` creates (or reopens) the run directory and prepares into it, once the whole
config, the model built over the fitted features included, has passed."""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import posixpath
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from zipfile import ZIP_STORED, ZipFile

import numpy as np
import numpy.lib.format as npformat
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from prectr.config import ExperimentConfig
from prectr.data.chunks import LogChunks
from prectr.data.dataset import Collator
from prectr.data.features import ChunkContext, EncodedLog, FeatureEncoder
from prectr.data.history import HistoryState
from prectr.data.shards import ShardWriter, resolve_location, shard_paths, shards_of, time_split
from prectr.data.stream import BatchStream
from prectr.io import atomic_file, claim_run_dir
from prectr.models import RankingModel, build_model

SPLITS = ("train", "valid", "test")
EncodedRows = tuple[dict[str, np.ndarray], pa.Table]  # a chunk's request features, impressions
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


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
        rank: int = 0, world_size: int = 1, counts: str | None = None,
    ) -> BatchStream:  # fmt: skip
        """The batches of process ``rank`` of ``world_size``: its shards of the split, in
        batches of ``data.batch_size / world_size`` exposed impressions or rows (``counts``,
        by default ``data.batch_counts``; one optimiser step takes about ``data.batch_size``
        whatever the number of processes)."""
        return BatchStream(
            shards_of(self.shards[split], rank, world_size), self.collator,
            -(-config.data.batch_size // world_size), shuffle, config.train.seed, rows,
            config.data.buffer_rows, self.filesystem, counts or config.data.batch_counts,
        )  # fmt: skip

    def impressions(self, split: str) -> int:
        """The encoded impressions of the split (from the shards' metadata)."""
        return impressions(self.shards[split], self.filesystem)

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


def fit_features(config: ExperimentConfig, log: LogChunks) -> FeatureEncoder:
    """The config's features fitted on the log's training days (the first requests in time
    order) and the items they show."""
    split = time_split(log.requests, config.data.valid_days, config.data.test_days)
    train = split["train"].size
    return FeatureEncoder(config.features).fit_seen(log.request_rows(train),
                                                    log.seen_before(train))  # fmt: skip


def shard_location(run_dir: Path, uri: str | None) -> tuple[pafs.FileSystem, str]:
    """Where the split shards of the run are: ``uri`` (``data.shards_uri``), else the run
    directory's ``data/``, as a filesystem and the path in it (see
    :func:`prectr.data.shards.resolve_location`)."""
    return resolve_location(run_dir / "data" if uri is None else uri)


def prepared(run_dir: Path) -> bool:
    """Whether the run directory holds a complete encoded log (features written last)."""
    return (run_dir / "data" / "features.npz").is_file()


#: encodes a log's chunks (:meth:`FeatureEncoder.encode_chunk`) and yields, in the chunks'
#: order, each one's request features and encoded impressions: :func:`encode_in_turn` here,
#: :class:`prectr.data.ray_engine.RayEngine` on a Ray cluster
ChunkEngine = Callable[[FeatureEncoder, ChunkContext, LogChunks], Iterator[EncodedRows]]


def encode_in_turn(
    encoder: FeatureEncoder, context: ChunkContext, log: LogChunks
) -> Iterator[EncodedRows]:  # fmt: skip
    """The local engine: each chunk encoded in this process, in time order, from the history
    state the chunk before it left. The state is handed on, never held here while the next
    chunk is encoded, so that :meth:`FeatureEncoder.encode_chunk` can let it go."""
    held = [HistoryState.start(context.keys)]
    for start, (requests, impressions) in zip(log.bounds, log, strict=False):
        chunk = encoder.encode_chunk(context, held.pop(), requests, impressions, int(start))
        held.append(chunk.state)
        request, encoded = chunk.request, chunk.impressions
        del chunk, requests, impressions
        yield request, encoded
        del request, encoded


def prepare(
    config: ExperimentConfig, run_dir: Path, log: LogChunks,
    encoder: FeatureEncoder | None = None, engine: ChunkEngine = encode_in_turn,
) -> None:  # fmt: skip
    """Fit the features on the training days (unless ``encoder`` holds them fitted) and encode
    the log once, chunk by chunk (by ``engine``): the features into the run directory, each
    split's shards to :func:`shard_location` (the features are written last: a run that has
    them reuses it all). Nothing encoded is held once written (:func:`load_prepared` reads it
    back)."""
    if prepared(run_dir):
        return
    with returning_freed_memory():
        filesystem, root = shard_location(run_dir, config.data.shards_uri)
        part = np.zeros(log.requests.num_rows, dtype=np.int8)
        split = time_split(log.requests, config.data.valid_days, config.data.test_days)
        for i, name in enumerate(SPLITS):
            part[split.pop(name)] = i
        encoder = encoder or fit_features(config, log)
        encoder.save(run_dir / "features")
        context = encoder.context(log.items, log.request_parts())
        directories = {name: posixpath.join(root, name) for name in SPLITS}
        path = run_dir / "data" / "features.npz"
        with (
            ShardWriter(directories, config.data.shards, filesystem) as shards,
            _FeatureFile(path, log.requests.num_rows) as features,
        ):
            for request, encoded in engine(encoder, context, log):
                rows = encoded.sort_by([("request_row", "ascending")])
                in_split = part[rows["request_row"].to_numpy()]
                shards.add(rows, in_split)
                for earlier in range(in_split.max(initial=0)):  # the requests are in time order
                    shards.finish(earlier)
                features.add("request", request)
                del request, encoded, rows  # not held while the next chunk is encoded
                pa.default_memory_pool().release_unused()  # one chunk's buffers at a time
            features.add("item", context.item)
            # the users' codes in the order they first appear, as the history keys number them
            user = [context.keys.user(p["user_id"]) for p in log.request_parts(["user_id"])]
            features.add("", {"user_of_request": np.concatenate(user)})


@contextmanager
def returning_freed_memory() -> Iterator[None]:
    """Allocators that hand freed memory back to the system, for preparing a log: glibc's
    thresholds fixed (:func:`_fixed_malloc_thresholds`), and arrow's buffers taken from the
    system allocator under them rather than from mimalloc, which keeps what it frees (the
    peak of filing the impressions by chunk then stays resident while the log is encoded);
    arrow's allocator is restored on leaving."""
    _fixed_malloc_thresholds()
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _fixed_malloc_thresholds() -> None:
    """Fix glibc's thresholds for returning freed memory (where the C library is glibc). By
    default glibc raises its mmap threshold each time a large array is freed, after which
    every chunk's arrays come from the heap and fragment it: resident memory then creeps up by
    a few MB a chunk (measured on `large4x`), bounded by nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 256 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 1024 * 1024)
    except (OSError, AttributeError):  # not glibc: its own allocator's policy stands
        return


def load_prepared(run_dir: Path, shards_uri: str | None = None) -> PreparedData:
    """The encoded log of a prepared run directory, its shards at ``shards_uri`` (the run's
    ``data.shards_uri``; default: in the run directory), where they stay."""
    if not prepared(run_dir):
        raise FileNotFoundError(f"{run_dir}: no prepared data (data/features.npz)")
    encoder = FeatureEncoder.load(run_dir / "features")
    encoded, user_of_request = _load_features(run_dir / "data" / "features.npz", encoder)
    filesystem, shards = prepared_shards(run_dir, shards_uri)
    return PreparedData(encoder, encoded, shards, user_of_request, Collator(encoded),
                        filesystem)  # fmt: skip


def prepared_shards(
    run_dir: Path, shards_uri: str | None = None
) -> tuple[pafs.FileSystem, dict[str, list[str]]]:  # fmt: skip
    """The filesystem and the shard paths of each split of a prepared run (see
    :func:`load_prepared`), without loading its features."""
    filesystem, root = shard_location(run_dir, shards_uri)
    try:
        shards = {name: shard_paths(posixpath.join(root, name), filesystem) for name in SPLITS}
    except OSError as err:
        where = f"data.shards_uri {shards_uri}" if shards_uri else str(run_dir)
        raise type(err)(f"{where}: the prepared shards cannot be read: {err}") from None
    return filesystem, shards


def impressions(paths: list[str], filesystem: pafs.FileSystem) -> int:
    """The encoded impressions in shards (from their metadata)."""
    return sum(pq.ParquetFile(p, filesystem=filesystem).metadata.num_rows for p in paths)


class _FeatureFile:
    """``features.npz`` written a block of rows at a time, in bounded memory: each array goes
    to a ``.npy`` file of its own, whose header holds the whole array's shape (request arrays
    have ``requests`` rows, added in order), and the files are stored in the archive when the
    ``with`` block ends (atomically; nothing when it raises)."""

    def __init__(self, path: Path, requests: int):
        self.path, self.requests = path, requests
        path.parent.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix=".features-", dir=path.parent))
        self.files: dict[str, BinaryIO] = {}

    def __enter__(self) -> _FeatureFile:
        return self

    def add(self, level: str, arrays: dict[str, np.ndarray]) -> None:
        """The next rows of ``level``'s arrays ("request"), or whole arrays (other levels;
        ``""``: stored under their own names)."""
        for name, values in arrays.items():
            key = f"{level}.{name}" if level else name
            if key not in self.files:
                shape = (self.requests, *values.shape[1:]) if level == "request" else values.shape
                f = self.files[key] = open(self.scratch / f"{key}.npy", "wb")  # noqa: SIM115
                header = {"descr": npformat.dtype_to_descr(values.dtype),
                          "fortran_order": False, "shape": shape}  # fmt: skip
                npformat.write_array_header_2_0(f, header)
            self.files[key].write(np.ascontiguousarray(values).tobytes())

    def __exit__(self, kind: type | None, *exc: object) -> None:
        try:
            for f in self.files.values():
                f.close()
            if kind is None:
                with atomic_file(self.path) as tmp, ZipFile(tmp, "w", ZIP_STORED) as archive:
                    for key in self.files:
                        archive.write(self.scratch / f"{key}.npy", f"{key}.npy")
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)


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


def open_run(
    config: ExperimentConfig, run_dir: str | Path, resume: bool = False,
    log_dir: str | Path | None = None, overwrite: bool = False,
    engine: ChunkEngine = encode_in_turn,
) -> None:  # fmt: skip
    """Create (or reopen) a run directory and encode the log into it (its chunks encoded by
    ``engine``: in this process, or on Ray with :class:`prectr.data.ray_engine.RayEngine`).

    Nothing is written until the whole config has passed: the shard location
    (``data.shards_uri``) is opened, the log is validated and the features fitted, and the
    model is built over them (every model parameter, by name, type
    and value, and the training stages it runs), so a config that fails leaves no run behind.
    The run records the absolute path of the log it trains on as ``data.log``: exporting and
    serving the run need nothing else.

    A directory that is not empty is reopened only to ``resume`` it or when it holds just the
    prepared data of the same config (``prectr prepare``); ``overwrite`` replaces the run in
    it instead. A reopened run keeps its recorded log unless ``log_dir`` names one, and does
    not read the log when it has its encoded log.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ValueError("--resume continues a run and --overwrite starts it afresh: pass one")
    only_prepared = prepared(run_dir) and not (run_dir / "checkpoints").exists()
    reopen = resume or (only_prepared and not overwrite)
    recorded = copy.deepcopy(config)
    saved = run_dir / "config.yaml"
    if reopen and log_dir is None and saved.is_file():
        recorded.data.log = (yaml.safe_load(saved.read_text()) or {}).get("data", {}).get("log")
    else:
        recorded.data.log = str(training_log_path(config, log_dir))
    if reopen and prepared(run_dir):
        encoder = FeatureEncoder.load(run_dir / "features")
        build_run_model(recorded, encoder)
        claim_run_dir(run_dir, "config.yaml", recorded.to_dict(), reopen, overwrite=overwrite)
        return
    shard_location(run_dir, recorded.data.shards_uri)
    with (
        returning_freed_memory(),
        LogChunks(training_log_path(recorded), recorded.data.chunk_rows) as log,
    ):
        encoder = fit_features(recorded, log)
        build_run_model(recorded, encoder)
        claim_run_dir(run_dir, "config.yaml", recorded.to_dict(), reopen, overwrite=overwrite)
        prepare(recorded, run_dir, log, encoder, engine)


def build_run_model(config: ExperimentConfig, encoder: FeatureEncoder) -> RankingModel:
    """The config's model over the fitted features, with the stages the config trains it in
    checked: a stage-1 epoch for a model without a relevance module, or none for a model
    that anchors to it, is refused."""
    model = build_model(config.model, encoder.specs, encoder.vocab_sizes, config.model_params,
                        config.train.reference_position)  # fmt: skip
    stage1 = config.train.relevance_epochs
    if stage1 and not hasattr(model, "relevance_loss"):
        raise ValueError(f"train.relevance_epochs: model {config.model!r} has no relevance "
                         "module to fit in stage 1")  # fmt: skip
    if not stage1 and getattr(model, "requires_relevance_stage", False):
        raise ValueError(f"model {config.model!r} as configured anchors to the stage-1 "
                         "relevance module: set train.relevance_epochs >= 1")  # fmt: skip
    return model
