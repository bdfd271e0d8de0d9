"""Held-out relevance quality of a grade classifier against held-out grades.

Teachers, baselines and students are scored the same way on the same held-out set (the held-out
pools of :mod:`prectr.encoder.pairs`, graded by the simulator's ``true_relevance`` where the log
has it and by the human grades otherwise): a sample of held-out requests
(:func:`held_out_sample`), each distinct pair of it scored once, every graded row counted. The
figures, for evaluation only (the held-out grades never train anything):

* ``accuracy``: the argmax grade against the grade, per row;
* ``macro_f1``: the F1 of each grade (argmax against grade) averaged over the grades that occur
  as a grade or a prediction (a grade predicted but never true scores 0);
* ``recall@g``: the share of rows of grade ``g`` predicted ``g`` (nan where no row has it);
* ``expected@g``: the mean expected grade of the rows of grade ``g`` (nan where no row has it):
  whether the model orders the grades at all, e.g. an exact item above a substitute, even where
  its argmax rarely names the grade;
* ``spearman``: rank correlation of the expected grade with the grade (ties averaged; nan when
  either side is constant);
* ``ndcg@10``: NDCG@10 of each request's graded rows ranked by the expected grade (gains
  2^y - 1, requests without a relevant row skipped; tied rows share the mean discount of their
  ranks, so a constant prediction such as the majority grade scores chance, not the log's
  order). ``ranked_requests`` counts the requests
  with two rows of different grades, the only ones where a ranking can lose anything.

:func:`degenerate_metrics` says which figures cannot tell models apart on a sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from prectr.encoder.pairs import GRADES, LogPairs
from prectr.encoder.student import Student
from prectr.io import atomic_file
from prectr.metrics import ndcg_at_k
from prectr.metrics.grades import spearman, weighted_accuracy, weighted_macro_f1
from prectr.text.tokenizer import TextTokenizer


class NothingToScore(ValueError):
    """The held-out split holds no graded row; the message says why."""


def grade_metrics(probabilities: np.ndarray, grade: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1, each grade's recall and mean expected grade, and Spearman (the module
    docstring; accuracy, macro-F1 and Spearman as :mod:`prectr.metrics.grades` defines them)
    of grade distributions ``(n, 4)`` against grades, with the number of rows (``pairs``)."""
    expected = probabilities @ np.arange(probabilities.shape[1], dtype=probabilities.dtype)
    predicted = probabilities.argmax(1)
    recall, mean = {}, {}
    for g in range(GRADES):
        true, hit = grade == g, predicted == g
        recall[f"recall@{g}"] = float((true & hit).sum() / true.sum()) if true.any() else np.nan
        mean[f"expected@{g}"] = float(expected[true].mean()) if true.any() else np.nan
    every_row = np.ones((1, grade.size))
    return {
        "accuracy": float(weighted_accuracy(grade, predicted, every_row)[0]),
        "macro_f1": float(weighted_macro_f1(grade, predicted, every_row)[0]),
        **recall,
        **mean,
        "spearman": spearman(expected, grade),
        "pairs": int(grade.size),
    }


def held_out_metrics(
    probabilities: np.ndarray, grade: np.ndarray, request: np.ndarray
) -> dict[str, float]:
    """:func:`grade_metrics` and the ranking figures of the module docstring (NDCG@10 per
    request, requests, ranked requests)."""
    expected = probabilities @ np.arange(probabilities.shape[1], dtype=probabilities.dtype)
    return {
        **grade_metrics(probabilities, grade),
        "ndcg@10": ndcg_at_k(grade, expected, request, 10, ties="average"),
        "requests": int(np.unique(request).size),
        "ranked_requests": _ranked_requests(grade, request),
    }


def _ranked_requests(grade: np.ndarray, request: np.ndarray) -> int:
    """Requests with two rows of different grades."""
    order = np.lexsort((grade, request))
    r, g = request[order], grade[order]
    changes = (r[1:] == r[:-1]) & (g[1:] != g[:-1])
    return int(np.unique(r[1:][changes]).size)


#: below this share of requests that rank two grades, NDCG@10 is flagged as mostly constant
MOSTLY_RANKED = 0.5


def degenerate_metrics(metrics: dict[str, float]) -> list[str]:
    """Warnings, one a line, for figures of :func:`held_out_metrics` that are the same for
    every model, or on most requests, or undefined, on the sample they were measured on.
    (Spearman is undefined for a model whose expected grade is constant, such as the majority
    grade: nan.)"""
    out = []
    ranked, requests = metrics["ranked_requests"], metrics["requests"]
    if ranked == 0:
        out.append("ndcg@10 is degenerate: no held-out request has two titles of different "
                   "grades, so every model scores 1 (or nan)")  # fmt: skip
    elif ranked < MOSTLY_RANKED * requests:
        out.append(f"only {ranked:,} of the {requests:,} held-out requests "
                   f"({ranked / requests:.0%}) rank two titles of different grades; on the "
                   "others ndcg@10 is the same for every model (1, or left out where every "
                   "title is grade 0)")  # fmt: skip
    missing = [str(g) for g in range(GRADES) if np.isnan(metrics[f"recall@{g}"])]
    if missing:
        out.append(f"no held-out row has grade {', '.join(missing)}: its recall and mean "
                   "expected grade are undefined")  # fmt: skip
    return out


@torch.no_grad()
def grade_probabilities(
    student: Student, tokenizer: TextTokenizer, queries: list[str], titles: list[str],
    query: np.ndarray, title: np.ndarray, batch_size: int = 1024,
) -> np.ndarray:  # fmt: skip
    """Grade distributions ``(n, 4)`` of the pairs ``(queries[query[i]], titles[title[i]])``."""
    student.eval()
    c = student.config
    out = []
    for start in range(0, query.size, batch_size):
        q, t = query[start : start + batch_size], title[start : start + batch_size]
        q_ids = torch.from_numpy(tokenizer.encode([queries[i] for i in q], c.query_length))
        t_ids = torch.from_numpy(tokenizer.encode([titles[i] for i in t], c.title_length))
        out.append(torch.softmax(student(q_ids, t_ids), -1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 4), np.float32)


@dataclass
class HeldOutSample:
    """Graded rows of a sample of held-out pools and the distinct pairs they show (indices into
    the :class:`LogPairs` texts); ``inverse`` maps each row to its distinct pair."""

    request: np.ndarray
    grade: np.ndarray
    query: np.ndarray
    title: np.ndarray
    inverse: np.ndarray
    truth: str  # where the grades come from: true_relevance or relevance (human)

    def texts(self, pairs: LogPairs) -> tuple[list[str], list[str]]:
        """The distinct pairs as (queries, titles) texts."""
        return [pairs.queries[i] for i in self.query], [pairs.titles[i] for i in self.title]

    def table(self, pairs: LogPairs) -> pa.Table:
        """The distinct pairs as a ``query``, ``title`` table of texts (what a teacher labels)."""
        queries, titles = self.texts(pairs)
        return pa.table({"query": pa.array(queries, pa.string()),
                         "title": pa.array(titles, pa.string())})  # fmt: skip

    def score(self, probabilities: np.ndarray) -> dict[str, float]:
        """:func:`held_out_metrics` of grade distributions ``(distinct pairs, 4)``."""
        if probabilities.shape != (self.query.size, GRADES):
            raise ValueError(f"probabilities of shape {probabilities.shape} for "
                             f"{self.query.size} distinct pairs")  # fmt: skip
        return held_out_metrics(probabilities[self.inverse], self.grade, self.request)


def held_out_sample(pairs: LogPairs, max_requests: int = 0, seed: int = 0) -> HeldOutSample:
    """The graded rows of the held-out pools (of ``max_requests`` requests drawn at random among
    those with a graded row, when > 0). Raises :class:`NothingToScore` saying why when no
    held-out row is graded."""
    rows = pairs.held_out
    rows = rows.filter(rows["grade"].is_valid())
    if rows.num_rows == 0:
        source = ("the simulator's true_relevance" if pairs.truth == "true_relevance"
                  else "a human grade (relevance with relevance_source 'human')")  # fmt: skip
        raise NothingToScore(f"none of the {pairs.held_out.num_rows:,} held-out pool rows has "
                             f"{source}: nothing to score")  # fmt: skip
    request = rows["request"].to_numpy()
    if max_requests:
        distinct = np.unique(request)
        if distinct.size > max_requests:
            chosen = np.random.default_rng(seed).choice(distinct, max_requests, replace=False)
            keep = np.isin(request, chosen)
            rows, request = rows.filter(keep), request[keep]
    pair_key = np.stack([rows["query"].to_numpy(), rows["title"].to_numpy()], 1)
    distinct_pairs, inverse = np.unique(pair_key, axis=0, return_inverse=True)
    return HeldOutSample(request, rows["grade"].to_numpy(), distinct_pairs[:, 0],
                         distinct_pairs[:, 1], inverse.ravel(), pairs.truth)  # fmt: skip


def evaluate_held_out(
    student: Student, tokenizer: TextTokenizer, pairs: LogPairs, max_requests: int = 0,
    seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """:func:`held_out_metrics` of the student on :func:`held_out_sample`."""
    sample = held_out_sample(pairs, max_requests, seed)
    return sample.score(grade_probabilities(student, tokenizer, pairs.queries, pairs.titles,
                                            sample.query, sample.title))  # fmt: skip


def write_predictions(
    path: str | Path, sample: HeldOutSample, pairs: LogPairs, predictions: dict[str, np.ndarray]
) -> Path:
    """Write, atomically, one parquet row per model and scored held-out row: ``model``,
    ``request`` (the request's row in the log's requests table; a held-out log's rows follow
    the first log's), ``query``, ``title``, ``grade`` (what it is scored against),
    ``predicted`` (the argmax grade), ``expected`` (the expected grade) and ``p0`` to ``p3``
    (the grade distribution). ``predictions`` maps a model's name to its grade distributions
    ``(distinct pairs, 4)`` of ``sample``."""
    queries, titles = sample.texts(pairs)
    shared = {
        "request": pa.array(sample.request, pa.int64()),
        "query": pa.array(queries, pa.string()).take(sample.inverse),
        "title": pa.array(titles, pa.string()).take(sample.inverse),
        "grade": pa.array(sample.grade, pa.int8()),
    }  # fmt: skip
    tables = []
    for name, probabilities in predictions.items():
        rows = probabilities[sample.inverse].astype(np.float32)
        tables.append(pa.table({
            "model": pa.array([name] * sample.request.size, pa.string()), **shared,
            "predicted": pa.array(rows.argmax(1), pa.int8()),
            "expected": pa.array(rows @ np.arange(GRADES, dtype=np.float32)),
            **{f"p{g}": pa.array(rows[:, g]) for g in range(GRADES)},
        }))  # fmt: skip
    with atomic_file(path) as tmp:
        pq.write_table(pa.concat_tables(tables), tmp)
    return Path(path)
