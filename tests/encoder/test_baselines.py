import math

import numpy as np
import pytest

from prectr.encoder.baselines import FEATURES, Majority, Overlap, overlap_features
from prectr.encoder.evaluate import held_out_sample
from prectr.encoder.pairs import PairsConfig, read_pairs
from tests.encoder.graded_log import graded_log, shop_judgments


def test_overlap_features_by_hand() -> None:
    f = dict(zip(FEATURES, overlap_features("Red Mug", "red mug big"), strict=True))
    # character unigrams: query {r,e,d, ,m,u,g} (7), title adds b, i: 9 distinct, 7 shared
    assert math.isclose(f["char1_query_share"], 1.0)
    assert math.isclose(f["char1_title_share"], 7 / 9, rel_tol=1e-6)
    assert math.isclose(f["char1_jaccard"], 7 / 9, rel_tol=1e-6)
    assert math.isclose(f["word_query_share"], 1.0) and math.isclose(
        f["word_jaccard"], 2 / 3, rel_tol=1e-6
    )
    assert f["query_in_title"] == 1.0
    assert math.isclose(f["log_query_chars"], math.log1p(7), rel_tol=1e-6)
    # scripts without spaces overlap by characters: 红色 杯子 against 红色杯
    g = dict(zip(FEATURES, overlap_features("红色杯子", "红色杯"), strict=True))
    assert math.isclose(g["char2_query_share"], 2 / 3, rel_tol=1e-6)  # 红色 色杯 of 红色 色杯 杯子
    assert g["word_query_share"] == 0.0 and g["query_in_title"] == 0.0


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    log = graded_log(tmp_path_factory.mktemp("graded") / "log", shop_judgments(120))
    return read_pairs(log, PairsConfig("query:0.3"))


def test_the_majority_baseline_predicts_the_training_grades_distribution(pairs) -> None:
    model = Majority.fit(pairs)
    counts = np.bincount(pairs.labelled["grade"].to_numpy(), minlength=4)
    np.testing.assert_allclose(model.distribution, counts / counts.sum())
    out = model.predict(["a", "b"], ["c", "d"])
    assert out.shape == (2, 4) and (out == model.distribution).all()


def test_the_overlap_baseline_learns_grades_that_follow_string_overlap(pairs) -> None:
    sample = held_out_sample(pairs)
    queries, titles = sample.texts(pairs)
    overlap = sample.score(Overlap.fit(pairs).predict(queries, titles))
    majority = sample.score(Majority.fit(pairs).predict(queries, titles))
    assert overlap["accuracy"] > majority["accuracy"] + 0.2
    assert overlap["macro_f1"] > 0.6 > majority["macro_f1"] and overlap["spearman"] > 0.7
    assert math.isnan(majority["spearman"])


def test_the_baselines_need_human_grades(pairs) -> None:
    empty = type(pairs)(pairs.queries, pairs.titles, pairs.train, pairs.labelled.slice(0, 0),
                        pairs.held_out)  # fmt: skip
    for model in (Majority, Overlap):
        with pytest.raises(ValueError, match="no human grade"):
            model.fit(empty)
