"""The tiny world encoded with every feature, as the model tests read it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from prectr.data.dataset import Batch, Collator
from prectr.data.features import EncodedLog, FeatureConfig, FeatureEncoder
from prectr.data.schema import read_log
from prectr.data.shards import time_split, write_impressions
from prectr.data.stream import BatchStream


@dataclasses.dataclass
class World:
    encoded: EncodedLog
    train: BatchStream
    labelled: BatchStream  # the training pairs with a human grade (stage 1)
    valid: Batch  # every exposed validation row
    pool: Batch  # the first training requests with every candidate, exposed or not


@pytest.fixture(scope="session")
def world(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("baselines")
    log = read_log(tiny_world)
    split = time_split(log.requests)
    # every feature, PRECTR's relevance context included (the baselines read it too)
    features = FeatureConfig(relevance_context=True)
    encoded = FeatureEncoder(features).fit(log, split["train"]).encode(log)
    imp = encoded.impressions
    req_row = imp["request_row"].to_numpy()
    collator = Collator(encoded)
    paths = {}
    for part in ("train", "valid"):
        rows = imp.filter(pa.array(np.isin(req_row, split[part])))
        paths[part] = write_impressions(rows, tmp / f"{part}.parquet")
    train = BatchStream(paths["train"], collator, batch_size=256, shuffle=True, seed=0)
    labelled = BatchStream(paths["train"], collator, batch_size=256, seed=0, rows="labelled")
    every = BatchStream(paths["train"], collator, batch_size=256, shuffle=False, rows="all")
    valid = BatchStream(paths["valid"], collator, batch_size=1 << 20, shuffle=False)
    return World(encoded, train, labelled, next(iter(valid.epoch())), next(iter(every.epoch())))


@pytest.fixture(scope="session")
def batch(world: World) -> Batch:
    return next(iter(world.train.epoch()))


def collate(encoded: EncodedLog, rows: int = 256) -> Batch:
    """The first ``rows`` impressions of ``encoded`` as a batch of its own features (whatever
    they are named, whichever are left out)."""
    table = encoded.impressions.slice(0, rows)
    labels = ("position", "click", "relevance")  # null where not shown or not graded
    columns = {name: table[name].cast(pa.float64()).fill_null(np.nan).to_numpy()
               if name in labels else np.array(table[name].to_numpy())
               for name in table.column_names}  # fmt: skip
    return Collator(encoded)(columns)
