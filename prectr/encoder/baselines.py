"""The relevance baselines a user tries before a student: both fitted on the human grades of the
training pairs (:attr:`prectr.encoder.pairs.LogPairs.labelled`) and scored on the same held-out
pairs as the student (:mod:`prectr.encoder.evaluate`).

``majority``: every pair gets the training grades' distribution, so its argmax is the majority
grade (its expected grade is a constant: Spearman undefined, NDCG@10 the pools' own order).

``overlap``: a multinomial logistic regression (L2 :data:`L2`, fitted to convergence by L-BFGS)
on :data:`FEATURES` string-overlap features of the pair, each standardised on the training
pairs. Character n-grams work for scripts without spaces (Chinese, Japanese); words are the
lowercased runs of letters and digits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from prectr.encoder.pairs import GRADES, LogPairs
from prectr.encoder.teachers.quality import softmax

WORD = re.compile(r"\w+")
CHAR_NGRAMS = (1, 2, 3)
L2 = 1e-3
FEATURES = (
    *(f"char{n}_{side}" for n in CHAR_NGRAMS for side in ("query_share", "title_share", "jaccard")),
    "word_query_share", "word_title_share", "word_jaccard", "query_in_title",
    "log_query_chars", "log_title_chars",
)  # fmt: skip


def overlap_features(query: str, title: str) -> np.ndarray:
    """The :data:`FEATURES` of one pair: for character n-grams (n = 1, 2, 3) and for words, the
    share of the query's distinct grams found in the title, the same share of the title's, and
    their Jaccard index; whether the query occurs in the title; and both lengths (log1p)."""
    q, t = query.lower(), title.lower()
    grams = [({q[i : i + n] for i in range(len(q) - n + 1)},
              {t[i : i + n] for i in range(len(t) - n + 1)}) for n in CHAR_NGRAMS]  # fmt: skip
    grams.append((set(WORD.findall(q)), set(WORD.findall(t))))
    values = []
    for a, b in grams:
        common = len(a & b)
        values += [common / max(len(a), 1), common / max(len(b), 1),
                   common / max(len(a | b), 1)]  # fmt: skip
    values += [float(bool(q.strip()) and q.strip() in t), np.log1p(len(q)), np.log1p(len(t))]
    return np.asarray(values, np.float32)


def _feature_matrix(queries: list[str], titles: list[str]) -> np.ndarray:
    rows = [overlap_features(q, t) for q, t in zip(queries, titles, strict=True)]
    return np.stack(rows) if rows else np.zeros((0, len(FEATURES)), np.float32)


def _training_grades(pairs: LogPairs) -> np.ndarray:
    grades = pairs.labelled["grade"].to_numpy().astype(np.int64)
    if grades.size == 0:
        raise ValueError("the training pairs hold no human grade: the baselines have nothing "
                         "to fit")  # fmt: skip
    return grades


@dataclass
class Majority:
    """The training grades' distribution, the same for every pair."""

    distribution: np.ndarray  # (4,)

    @classmethod
    def fit(cls, pairs: LogPairs) -> Majority:
        counts = np.bincount(_training_grades(pairs), minlength=GRADES)
        return cls(counts / counts.sum())

    def predict(self, queries: list[str], titles: list[str]) -> np.ndarray:
        """Grade distributions ``(n, 4)``."""
        return np.tile(self.distribution, (len(queries), 1))


@dataclass
class Overlap:
    """Logistic regression on standardised :func:`overlap_features`."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray  # (features, 4)
    bias: np.ndarray  # (4,)

    @classmethod
    def fit(cls, pairs: LogPairs, max_iter: int = 200) -> Overlap:
        grades = _training_grades(pairs)
        labelled = pairs.labelled
        x = _feature_matrix([pairs.queries[i] for i in labelled["query"].to_numpy()],
                            [pairs.titles[i] for i in labelled["title"].to_numpy()])  # fmt: skip
        mean, scale = x.mean(0), x.std(0)
        scale[scale == 0] = 1.0
        features = torch.from_numpy((x - mean) / scale).double()
        target = torch.from_numpy(grades)
        weight = torch.zeros(features.shape[1], GRADES, dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(GRADES, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter,
                                      line_search_fn="strong_wolfe")  # fmt: skip

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(features @ weight + bias, target)
            loss = loss + L2 * (weight**2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return cls(mean, scale, weight.detach().numpy(), bias.detach().numpy())

    def predict(self, queries: list[str], titles: list[str]) -> np.ndarray:
        """Grade distributions ``(n, 4)``."""
        features = (_feature_matrix(queries, titles) - self.mean) / self.scale
        return softmax(features @ self.weight + self.bias)


BASELINES = {"majority": Majority, "overlap": Overlap}
