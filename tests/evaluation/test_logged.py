"""Scores joined to a log's rows: in row order, and every way they can fail named."""

import numpy as np
import pyarrow as pa
import pytest

from prectr.evaluation.logged import scores_in_row_order

REQUEST = pa.array([2, 1, 2])
ITEM = pa.array([10, 10, 11])


def scores(rows: list[tuple[int, int, float]], column: str = "score") -> pa.Table:
    request, item, score = zip(*rows, strict=True)
    return pa.table({"request_id": request, "item_id": item, column: score})


def test_scores_come_back_in_row_order():
    table = scores([(1, 10, 0.5), (2, 11, 0.25), (2, 10, 0.75), (3, 9, 0.0)])  # one extra row
    np.testing.assert_array_equal(scores_in_row_order(REQUEST, ITEM, table), [0.75, 0.5, 0.25])
    shown = scores([(1, 10, 1.0), (2, 11, 2.0), (2, 10, 3.0)], column="shown")
    np.testing.assert_array_equal(
        scores_in_row_order(REQUEST, ITEM, shown, column="shown"), [3.0, 1.0, 2.0]
    )


def test_every_failure_is_named():
    with pytest.raises(ValueError, match=r"run scores: missing column\(s\) score"):
        scores_in_row_order(REQUEST, ITEM, scores([(1, 10, 0.5)], "p"), "run scores")
    twice = scores([(1, 10, 0.5), (1, 10, 0.6), (2, 10, 0.1), (2, 11, 0.2)])
    with pytest.raises(ValueError, match="pair is scored more than once"):
        scores_in_row_order(REQUEST, ITEM, twice)
    partial = scores([(1, 10, 0.5), (2, 10, float("nan"))])
    with pytest.raises(ValueError, match="2 of the 3 pairs of the sample have no score"):
        scores_in_row_order(REQUEST, ITEM, partial, what="pairs of the sample")
