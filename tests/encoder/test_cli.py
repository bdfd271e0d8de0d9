import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import f1_score

from prectr.data.schema import read_log
from prectr.encoder.pairs import PairsConfig, read_pairs
from prectr.text.tokenizer import TextTokenizer
from tests.encoder.conftest import TINY, overlap_logits
from tests.encoder.graded_log import graded_log, shop_judgments
from tests.test_cli import run_cli

FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
STEPS = ["--max-steps=6", "--batch-size=32", "--eval-requests=10", "--vocab-size=400"]


def test_tokenizer_distill_sft_and_evaluate_from_the_command_line(
    tiny_world, labels_path, tmp_path, capsys
) -> None:
    code, out = run_cli(
        [
            "encoder",
            "tokenizer",
            str(tiny_world),
            "--out",
            str(tmp_path / "tok.json"),
            "--vocab-size",
            "400",
        ],
        capsys,
    )
    tokenizer = TextTokenizer.load(tmp_path / "tok.json")
    assert code == 0 and "pieces" in out
    assert (f"query {tokenizer.query_length} ({tokenizer.truncated['query']:.1%} of training "
            "queries truncated)") in " ".join(out.split())  # fmt: skip
    code, out = run_cli(
        [
            "encoder",
            "distill",
            str(tiny_world),
            "--labels",
            str(labels_path),
            "--tokenizer",
            str(tmp_path / "tok.json"),
            "--out",
            str(tmp_path / "d"),
            "--hidden-weight=0.1",
            *FLAGS,
            *STEPS,
        ],
        capsys,
    )
    assert code == 0 and "distill: 6 steps" in out and "held-out" in out
    assert "teacher labels name pairs outside" in " ".join(out.split())  # one foreign pair
    code, out = run_cli(
        [
            "encoder",
            "sft",
            str(tiny_world),
            "--init",
            str(tmp_path / "d/student"),
            "--out",
            str(tmp_path / "s"),
            *STEPS,
        ],
        capsys,
    )
    assert code == 0 and "sft: 6 steps" in out and "piece limits: query 6" in out
    assert "ce loss), best macro-F1 + Spearman at step" in " ".join(out.split())
    args = ["encoder", "sft", str(tiny_world), "--init", str(tmp_path / "d/student"), *STEPS]
    code, out = run_cli([*args, "--out", str(tmp_path / "sp"), "--select-on", "spearman"], capsys)
    assert code == 0 and "ce loss), best Spearman at step" in " ".join(out.split())
    assert json.loads((tmp_path / "sp/config.json").read_text())["train"]["select"] == "spearman"
    code, out = run_cli([*args, "--out", str(tmp_path / "f1"), "--select-on", "macro_f1"],
                        capsys)  # fmt: skip
    assert code == 0 and "ce loss), best macro-F1 at step" in " ".join(out.split())
    code, out = run_cli(
        [
            "encoder",
            "evaluate",
            str(tmp_path / "s/student"),
            "--world",
            str(tiny_world),
            "--eval-requests=10",
            "--predictions",
            str(tmp_path / "rows.parquet"),
            "--json",
        ],
        capsys,
    )
    assert code == 0
    results = json.loads(out.strip().splitlines()[-1])
    assert list(results) == ["majority", "overlap", str(tmp_path / "s/student")]
    # the baselines and the student are scored on the same rows
    assert len({(m["requests"], m["pairs"]) for m in results.values()}) == 1
    assert results[str(tmp_path / "s/student")]["requests"] == 10
    # each model's figures recomputed from its per-row predictions (scikit-learn's macro-F1)
    rows = pq.read_table(tmp_path / "rows.parquet").to_pandas()
    for name, metrics in results.items():
        mine = rows[rows["model"] == name]
        assert len(mine) == metrics["pairs"] and mine["request"].nunique() == 10
        truth, predicted = mine["grade"].to_numpy(), mine["predicted"].to_numpy()
        assert metrics["accuracy"] == pytest.approx((truth == predicted).mean(), abs=1e-12)
        assert metrics["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))


def test_a_distillation_without_labels_or_a_bad_resume_fails_clearly(
    tiny_world, tmp_path, capsys
) -> None:
    code, out = run_cli(
        ["encoder", "sft", str(tiny_world), "--out", str(tmp_path / "s"), "--resume", *STEPS],
        capsys,
    )
    assert code == 2 and "nothing to resume" in " ".join(out.split())  # rich wraps lines
    code, out = run_cli(
        [
            "encoder",
            "distill",
            str(tiny_world),
            "--labels",
            str(tmp_path / "none.parquet"),
            "--out",
            str(tmp_path / "d"),
        ],
        capsys,
    )
    assert code == 2 and "no teacher labels" in " ".join(out.split())


def test_a_human_graded_set_at_one_instant_trains_and_evaluates_by_hashed_query(
    tmp_path, capsys
) -> None:
    # a 3-level scale (0, 1, 2), mapped onto 0, 2, 3
    judgments = [(q, t, {0: 0, 1: 1, 2: 1, 3: 2}[g]) for q, t, g in shop_judgments(60)]
    log = str(graded_log(tmp_path / "log", judgments))
    split = ["--held-out", "query:0.3", "--grade-map", "0:0,1:2,2:3"]
    code, out = run_cli(["encoder", "sft", log, "--out", str(tmp_path / "s"), *FLAGS, *STEPS,
                         *split], capsys)  # fmt: skip
    text = " ".join(out.split())
    assert code == 0 and "scored against the human grades" in text and "(recall@g)" in text
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    steps = metrics["steps"]
    assert steps < 6 and f"1 epoch at step {steps}, before --max-steps 6; raise --epochs" in text
    assert metrics["held_out"]["recall@1"] != metrics["held_out"]["recall@1"]  # no grade 1: nan
    predictions = ["--predictions", str(tmp_path / "p.parquet"), "--json"]
    code, out = run_cli(["encoder", "evaluate", str(tmp_path / "s/student"), "--log", log, *split,
                         *predictions], capsys)  # fmt: skip
    assert code == 0
    results = json.loads(out.strip().splitlines()[-1])
    assert results["overlap"]["macro_f1"] > results["majority"]["macro_f1"]
    text = " ".join(out.split())
    assert "no held-out row has grade 1" in text and "spearman is undefined for majority" in text
    assert results["majority"]["spearman"] is None and results["overlap"]["recall@1"] is None
    table = pq.read_table(tmp_path / "p.parquet")
    assert set(table["model"].to_pylist()) == set(results)
    assert set(table["grade"].to_pylist()) == {0, 2, 3}


def test_a_log_without_held_out_grades_says_why_nothing_is_scored(tmp_path, capsys) -> None:
    log = read_log(graded_log(tmp_path / "graded", shop_judgments(40)))
    n = log.impressions.num_rows
    log.impressions = log.impressions.set_column(
        4, "relevance", pa.array([None if k % 3 == 0 else 1 for k in range(n)], pa.int8())
    ).set_column(
        5, "relevance_source", pa.array([None if k % 3 == 0 else "teacher" for k in range(n)])
    )
    log.write(tmp_path / "log")
    argv = [str(tmp_path / "log"), "--held-out", "query"]
    code, out = run_cli(["encoder", "evaluate", "--log", *argv], capsys)
    text = " ".join(out.split())
    assert code == 1 and "has a human grade" in text and "nothing to score" in text
    pairs = read_pairs(tmp_path / "log", PairsConfig("query"))
    queries = [pairs.queries[i] for i in pairs.train["query"].to_numpy()]
    titles = [pairs.titles[i] for i in pairs.train["title"].to_numpy()]
    logits = [overlap_logits(q, t) for q, t in zip(queries, titles, strict=True)]
    labels = tmp_path / "labels.parquet"
    logits = pa.array(logits, pa.list_(pa.float32()))
    pq.write_table(pa.table({"query": queries, "title": titles, "logits": logits}), labels)
    code, out = run_cli(["encoder", "distill", *argv, "--labels", str(labels), "--out",
                         str(tmp_path / "d"), *FLAGS, *STEPS], capsys)  # fmt: skip
    text = " ".join(out.split())
    assert code == 0 and "held-out pairs not scored" in text and "has a human grade" in text
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert "held_out" not in metrics and "human grade" in metrics["held_out_skipped"]
