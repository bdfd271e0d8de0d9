"""Export the scoring graph of a run: TorchScript or ONNX, checked against eager PyTorch.

The graph takes a batch as plain tensors (categorical ids, numerics, then every sequence in
name order, each with a free batch dimension or one row shared by the batch) and returns the
served score (:meth:`RankingModel.score`: the click probability at the reference position,
through the run's calibrator, which the graph embeds), with the grade distribution and the
incentive where the model has them.
:func:`export` writes the file atomically and refuses to leave one that disagrees with eager
PyTorch by more than ``atol`` on a real batch. An ONNX file can carry metadata, such as the
:func:`fingerprint` of what it was built from, so that a cached export is known to be stale.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prectr.data.dataset import Batch
from prectr.io import atomic_file
from prectr.models import RankingModel
from prectr.models.calibration import calibration_path

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
FINGERPRINT = "prectr_fingerprint"  # the ONNX metadata key of :func:`fingerprint`


class ScoringGraph(nn.Module):
    """A model's scoring path over plain tensors, as export and ONNX Runtime see it."""

    def __init__(self, model: RankingModel, template: Batch, shared: tuple[str, ...] = ()):
        """``shared``: sequences that come as one row for the whole batch (a request's
        histories when every candidate belongs to it); the others have a row per candidate."""
        super().__init__()
        self.model, self.template, self.shared = model.eval(), template, shared
        self.sequence_names = sorted(template.sequences)
        outputs = model(template)
        self.output_names = ["score"] + [n for n in ("grades", "incentive")
                                         if _key(n) in outputs]  # fmt: skip
        self.eval()

    @property
    def input_names(self) -> list[str]:
        return ["categorical", "numeric", *self.sequence_names]

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        return (batch.categorical, batch.numeric,
                *(batch.sequences[n] for n in self.sequence_names))  # fmt: skip

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor, *sequences: torch.Tensor):
        batch = dataclasses.replace(
            self.template, categorical=categorical, numeric=numeric,
            sequences=dict(zip(self.sequence_names, sequences, strict=True)),
        )  # fmt: skip
        out = self.model(batch)
        result = [self.model.score(out)]
        if "grades" in self.output_names:
            result.append(torch.softmax(out["grade_logits"], -1))
        if "incentive" in self.output_names:
            result.append(out["incentive"])
        return tuple(result)


def _key(name: str) -> str:
    return {"grades": "grade_logits"}.get(name, name)


def fingerprint(checkpoint: Path) -> str:
    """What an export of ``checkpoint`` is built from: the checkpoint's bytes, its calibrator
    (:mod:`prectr.models.calibration`) and the source of the code that defines the scoring
    graph (every loaded module of ``prectr.models`` and ``prectr.modules``, and this one). A
    change to any makes a cached export stale."""
    digest = hashlib.sha256(checkpoint.read_bytes())
    calibration = calibration_path(checkpoint)
    if calibration.is_file():
        digest.update(calibration.read_bytes())
    for name in sorted(sys.modules):
        if name.startswith(("prectr.models", "prectr.modules")) or name == __name__:
            digest.update(Path(sys.modules[name].__file__).read_bytes())
    return digest.hexdigest()


def exported_fingerprint(path: Path) -> str | None:
    """The :func:`fingerprint` an ONNX export carries, None without one (or without a file)."""
    if not path.is_file():
        return None
    import onnx

    props = onnx.load(str(path), load_external_data=False).metadata_props
    return next((p.value for p in props if p.key == FINGERPRINT), None)


def export(
    model: RankingModel,
    batches: list[Batch],
    path: Path,
    fmt: str,
    atol: float = 1e-5,
    shared: tuple[str, ...] = (),
    metadata: dict[str, str] | None = None,
) -> float:
    """Write the scoring graph of ``model`` in ``fmt`` to ``path`` (traced on the first batch),
    check it against eager PyTorch on every batch, and only then move it into place. Returns
    the largest difference. ``metadata``: key-value pairs stored in an ONNX file."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if metadata and fmt != "onnx":
        raise ValueError(f"format {fmt!r} carries no metadata; only onnx does")
    graph = ScoringGraph(model, batches[0], shared)
    with atomic_file(path) as tmp:
        _write(graph, batches[0], tmp, fmt)
        if metadata:
            import onnx

            proto = onnx.load(str(tmp))
            onnx.helper.set_model_props(proto, metadata)
            onnx.save(proto, str(tmp))
        return check_export(tmp, fmt, graph, batches, atol)


def _write(graph: ScoringGraph, batch: Batch, path: Path, fmt: str) -> None:
    args = graph.inputs(batch)
    with torch.no_grad():
        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(torch.jit.trace(graph, args), str(path))
        else:
            rows = {0: torch.export.Dim("batch")}
            torch.onnx.export(
                graph, args, str(path), input_names=graph.input_names,
                output_names=graph.output_names, dynamo=True, external_data=False,
                dynamic_shapes=(rows, rows, tuple(None if n in graph.shared else rows
                                                  for n in graph.sequence_names)),
                verbose=False,
            )  # fmt: skip


def run_exported(path: Path, fmt: str, graph: ScoringGraph, batch: Batch) -> list[np.ndarray]:
    """The exported graph's outputs on ``batch``."""
    args = graph.inputs(batch)
    if fmt == "torchscript":
        with torch.no_grad():
            return [t.numpy() for t in torch.jit.load(str(path))(*args)]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {n: a.numpy() for n, a in zip(graph.input_names, args, strict=True)}
    return session.run(graph.output_names, feed)


def check_export(path: Path, fmt: str, graph: ScoringGraph, batches: list[Batch],
                 atol: float = 1e-5) -> float:  # fmt: skip
    """The largest difference between the export and eager PyTorch over ``batches``; raises
    if it exceeds ``atol``."""
    worst = 0.0
    for batch in batches:
        with torch.no_grad():
            eager = [t.numpy() for t in graph(*graph.inputs(batch))]
        for name, a, b in zip(graph.output_names, eager, run_exported(path, fmt, graph, batch),
                              strict=True):  # fmt: skip
            worst = max(worst, float(np.abs(a - b).max(initial=0.0)))
            if worst > atol:
                raise ValueError(f"{path}: exported {name} differs from eager PyTorch by "
                                 f"{worst:.2e} > {atol:.0e}")  # fmt: skip
    return worst
