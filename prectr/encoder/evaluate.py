"""Held-out relevance quality of a grade classifier against the simulator's true grades.

Three figures, for evaluation only (the true grades never train anything): grade accuracy
(argmax against the true grade, per pool row), Spearman correlation between the expected grade
and the true grade (ties averaged), and NDCG@10 of each test request's full candidate pool
ranked by the expected grade (gains 2^y - 1, requests without a relevant item skipped).
"""

from __future__ import annotations

import numpy as np
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


def evaluate_held_out(
    student: Student, tokenizer: TextTokenizer, pairs: LogPairs, max_requests: int = 0,
    seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """:func:`relevance_metrics` on the test day's pools (``max_requests`` of them drawn at
    random when > 0); each distinct pair is scored once."""
    if pairs.held_out is None:
        raise ValueError("the log has no true_relevance column: held-out evaluation needs a "
                         "simulated world")  # fmt: skip
    rows = pairs.held_out
    request = rows["request"].to_numpy()
    if max_requests:
        distinct = np.unique(request)
        if distinct.size > max_requests:
            chosen = np.random.default_rng(seed).choice(distinct, max_requests, replace=False)
            keep = np.isin(request, chosen)
            rows, request = rows.filter(keep), request[keep]
    query, title = rows["query"].to_numpy(), rows["title"].to_numpy()
    pair_key = np.stack([query, title], 1)
    distinct_pairs, inverse = np.unique(pair_key, axis=0, return_inverse=True)
    probabilities = grade_probabilities(
        student, tokenizer, pairs.queries, pairs.titles, distinct_pairs[:, 0], distinct_pairs[:, 1]
    )[inverse.ravel()]
    return relevance_metrics(probabilities, rows["true_grade"].to_numpy(), request)
