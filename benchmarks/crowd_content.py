"""What a trained model's crowd itself contributes: its validation AUC with the crowd as
logged, with no crowd and with another request's crowd.

Run: .venv/bin/python benchmarks/crowd_content.py RUN [RUN ...]
For each run, scores the exposed impressions of its validation day (its prepared shards) three
ways: every crowd sequence as logged; every one padding (no crowd); and each row's crowd taken
from another row of its batch, drawn at random (another request's, mostly). Prints the AUC of
the served score for each. Equal AUCs say the model's scores do not depend on what the crowd
holds, whatever it gains over an ablation without the mining module (docs/fidelity.md, third
crowd design).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Iterator

import torch

from prectr.data.dataset import Batch
from prectr.data.groups import in_group
from prectr.metrics.click import auc
from prectr.train.data import load_prepared
from prectr.train.predict import predict
from prectr.train.run import load_trained

VARIANTS = ("logged", "none", "other")


def with_crowd(batches: Iterable[Batch], crowd: list[str], variant: str, seed: int = 0
               ) -> Iterator[Batch]:  # fmt: skip
    """``batches`` with the sequences named in ``crowd`` as logged, all padding (``none``) or
    permuted across each batch's rows (``other``); every other input unchanged."""
    generator = torch.Generator().manual_seed(seed)
    for batch in batches:
        if variant == "logged":
            yield batch
            continue
        order = torch.randperm(len(batch), generator=generator)
        sequences = {
            name: (torch.zeros_like(ids) if variant == "none" else ids[order])
            if name in crowd else ids
            for name, ids in batch.sequences.items()
        }  # fmt: skip
        yield dataclasses.replace(batch, sequences=sequences)


def crowd_content(run: str) -> dict[str, float]:
    """The validation AUC of ``run``'s best checkpoint under each of :data:`VARIANTS`."""
    trained = load_trained(run)
    data = load_prepared(trained.path, trained.config.data.shards_uri)
    crowd = [s.name for s in in_group(trained.encoder.specs, "crowd_history")]
    out = {}
    for variant in VARIANTS:
        batches = data.stream("valid", trained.config, shuffle=False).epoch()
        p = predict(trained.model, with_crowd(batches, crowd, variant))
        shown = p["exposed"].astype(bool)
        out[variant] = auc(p["click"][shown], p["score"][shown])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+")
    for run in parser.parse_args().runs:
        aucs = crowd_content(run)
        print(run, " ".join(f"{k} {v:.4f}" for k, v in aucs.items()), flush=True)


if __name__ == "__main__":
    main()
