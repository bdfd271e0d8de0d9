"""Held-out relevance quality of a grade classifier against the simulator's true grades.

Teachers and students are scored the same way on the same held-out set (the test day's pools,
:mod:`prectr.encoder.pairs`): a sample of test-day requests (:func:`held_out_sample`), each
distinct pair of it scored once, and three figures, for evaluation only (the true grades never
train anything): grade accuracy (argmax against the true grade, per pool row), Spearman
correlation between the expected grade and the true grade (ties averaged), and NDCG@10 of each
request's full candidate pool ranked by the expected grade (gains 2^y - 1, requests without a
relevant item skipped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from prectr.encoder.pairs import LogPairs
from prectr.encoder.student import Student
from prectr.encoder.teachers.quality import spearman
from prectr.encoder.tokenizer import TextTokenizer
from prectr.metrics import ndcg_at_k


def relevance_metrics(
    probabilities: np.ndarray, true_grade: np.ndarray, request: np.ndarray
) -> dict[str, float]:
    """Accuracy, Spearman and NDCG@10 of grade distributions ``(n, 4)`` against true grades."""
    expected = probabilities @ np.arange(probabilities.shape[1], dtype=probabilities.dtype)
    return {
        "accuracy": float((probabilities.argmax(1) == true_grade).mean()),
        "spearman": spearman(expected, true_grade),
        "ndcg@10": ndcg_at_k(true_grade, expected, request, 10),
        "pairs": int(true_grade.size),
        "requests": int(np.unique(request).size),
    }


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
    """Rows of a sample of held-out pools and the distinct pairs they show (indices into the
    :class:`LogPairs` texts); ``inverse`` maps each row to its distinct pair."""

    request: np.ndarray
    true_grade: np.ndarray
    query: np.ndarray
    title: np.ndarray
    inverse: np.ndarray

    def texts(self, pairs: LogPairs) -> tuple[list[str], list[str]]:
        """The distinct pairs as (queries, titles) texts."""
        return [pairs.queries[i] for i in self.query], [pairs.titles[i] for i in self.title]

    def table(self, pairs: LogPairs) -> pa.Table:
        """The distinct pairs as a ``query``, ``title`` table of texts (what a teacher labels)."""
        queries, titles = self.texts(pairs)
        return pa.table({"query": pa.array(queries, pa.string()),
                         "title": pa.array(titles, pa.string())})  # fmt: skip

    def score(self, probabilities: np.ndarray) -> dict[str, float]:
        """:func:`relevance_metrics` of grade distributions ``(distinct pairs, 4)``."""
        if probabilities.shape != (self.query.size, 4):
            raise ValueError(f"probabilities of shape {probabilities.shape} for "
                             f"{self.query.size} distinct pairs")  # fmt: skip
        return relevance_metrics(probabilities[self.inverse], self.true_grade, self.request)


def held_out_sample(pairs: LogPairs, max_requests: int = 0, seed: int = 0) -> HeldOutSample:
    """The test day's pools (``max_requests`` of them drawn at random when > 0)."""
    rows = pairs.held_out
    if "true_grade" not in rows.column_names:
        raise ValueError("the log has no true_relevance column: held-out evaluation needs a "
                         "simulated world")  # fmt: skip
    request = rows["request"].to_numpy()
    if max_requests:
        distinct = np.unique(request)
        if distinct.size > max_requests:
            chosen = np.random.default_rng(seed).choice(distinct, max_requests, replace=False)
            keep = np.isin(request, chosen)
            rows, request = rows.filter(keep), request[keep]
    pair_key = np.stack([rows["query"].to_numpy(), rows["title"].to_numpy()], 1)
    distinct_pairs, inverse = np.unique(pair_key, axis=0, return_inverse=True)
    return HeldOutSample(request, rows["true_grade"].to_numpy(), distinct_pairs[:, 0],
                         distinct_pairs[:, 1], inverse.ravel())  # fmt: skip


def evaluate_held_out(
    student: Student, tokenizer: TextTokenizer, pairs: LogPairs, max_requests: int = 0,
    seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """:func:`relevance_metrics` of the student on :func:`held_out_sample`."""
    sample = held_out_sample(pairs, max_requests, seed)
    return sample.score(grade_probabilities(student, tokenizer, pairs.queries, pairs.titles,
                                            sample.query, sample.title))  # fmt: skip
