"""A human-graded Chinese query-title set, loaded from a JSON lines file and run through the
encoder's commands end to end: load, tokenizer, distillation, fine-tuning and evaluation, all
from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prectr.encoder.pairs import PairsConfig, read_pairs
from prectr.text.tokenizer import TextTokenizer
from tests.test_cli import run_cli

STYLES = ("现代", "简约", "北欧", "复古")
COLOURS = ("红色", "蓝色", "白色", "黑色", "灰色", "绿色")
MATERIALS = ("木质", "真皮", "布艺", "金属")
PRODUCTS = ("沙发", "椅子", "桌子", "灯", "床", "柜子", "书架", "地毯")
EXTRAS = ("家用", "客厅", "卧室", "新款", "包邮", "大号")
SPLIT = ["--held-out", "query:0.3"]
STUDENT = ["--dim=32", "--layers=1", "--heads=2", "--ff=64", "--batch-size=32", "--lr=3e-3"]


def cjk_judgments(n_queries: int = 150, seed: int = 0) -> list[tuple[str, str, int]]:
    """Queries written without spaces (a style, a colour, a product: 现代红色沙发) and titles
    graded by the words they share with the query: all of them (3), the product alone (2), the
    colour but another product (1), nothing (0, twice per query, so grade 0 is the majority)."""
    rng = np.random.default_rng(seed)

    def other(words: tuple[str, ...], word: str) -> str:
        return str(rng.choice([w for w in words if w != word]))

    out = []
    for _ in range(n_queries):
        style, colour, product = (str(rng.choice(w)) for w in (STYLES, COLOURS, PRODUCTS))
        query = style + colour + product

        def title(s: str, c: str, p: str) -> str:
            return s + c + str(rng.choice(MATERIALS)) + p + str(rng.choice(EXTRAS))

        out += [
            (query, title(style, colour, product), 3),
            (query, title(other(STYLES, style), other(COLOURS, colour), product), 2),
            (query, title(other(STYLES, style), colour, other(PRODUCTS, product)), 1),
            *((query, title(other(STYLES, style), other(COLOURS, colour),
                            other(PRODUCTS, product)), 0) for _ in range(2)),
        ]  # fmt: skip
    return out


def grade_labels(log: Path, out: Path) -> Path:
    """Teacher labels of every training pair made from its human grade: logits falling with
    the distance from it (a teacher adapted to the grades, without the teacher)."""
    pairs = read_pairs(log, PairsConfig(SPLIT[1]))
    graded = pairs.labelled
    grade = graded["grade"].to_numpy().astype(np.float32)
    logits = -2.0 * np.abs(grade[:, None] - np.arange(4, dtype=np.float32))
    pq.write_table(pa.table({
        "query": [pairs.queries[i] for i in graded["query"].to_numpy()],
        "title": [pairs.titles[i] for i in graded["title"].to_numpy()],
        "logits": pa.array(list(logits), pa.list_(pa.float32())),
    }), out)  # fmt: skip
    return out


def test_a_chinese_graded_log_runs_tokenizer_distill_sft_and_evaluate(tmp_path, capsys) -> None:
    pairs_file = tmp_path / "pairs.jsonl"  # as a team exports its judgments, grades as text
    pairs_file.write_text("".join(json.dumps({"query": q, "title": t, "label": str(g)},
                                             ensure_ascii=False) + "\n"
                                  for q, t, g in cjk_judgments()), encoding="utf-8")  # fmt: skip
    log = tmp_path / "log"
    assert run_cli(["load", "pairs", str(pairs_file), "--out", str(log)], capsys)[0] == 0
    code, out = run_cli(["encoder", "tokenizer", str(log), "--out", str(tmp_path / "tok.json"),
                         "--vocab-size", "400", *SPLIT], capsys)  # fmt: skip
    assert code == 0
    tokenizer = TextTokenizer.load(tmp_path / "tok.json")
    vocab = set(tokenizer.tokenizer.get_vocab())
    assert {*STYLES, *EXTRAS, "木质", "真皮", "沙发", "椅子", "地毯"} <= vocab  # words are pieces
    queries, titles = read_pairs(log, PairsConfig(SPLIT[1])).train_texts()
    for text in queries + titles:  # whole characters and words: no byte, no unknown piece
        tokens = tokenizer.tokenizer.encode(text).tokens
        assert "".join(tokens) == text and len(tokens) < len(text)
    limits = {"query": (queries, tokenizer.query_length), "title": (titles, tokenizer.title_length)}
    for side, (texts, limit) in limits.items():  # the limits cut at most 2% of either side
        assert tokenizer.truncated[side] == tokenizer.truncated_share(texts, limit) <= 0.02
        assert tokenizer.truncated_share(texts, limit - 1) > 0.02  # and are the smallest that do
    assert (f"query {tokenizer.query_length} ({tokenizer.truncated['query']:.1%} of training "
            "queries truncated)") in " ".join(out.split())  # fmt: skip

    labels = grade_labels(log, tmp_path / "labels.parquet")
    code, out = run_cli(["encoder", "distill", str(log), "--labels", str(labels), "--tokenizer",
                         str(tmp_path / "tok.json"), "--out", str(tmp_path / "d"),
                         "--max-steps=40", "--epochs=10", *STUDENT, *SPLIT], capsys)  # fmt: skip
    text = " ".join(out.split())
    assert code == 0 and "distill: 40 steps" in text and "scored against the human grades" in text
    assert f"piece limits: query {tokenizer.query_length} " in text
    assert (tmp_path / "d/student").is_dir()
    assert "held_out" in json.loads((tmp_path / "d/metrics.json").read_text())

    code, out = run_cli(["encoder", "sft", str(log), "--init", str(tmp_path / "d/student"),
                         "--out", str(tmp_path / "s"), "--max-steps=60", "--epochs=10",
                         "--valid-every=20", *STUDENT, *SPLIT], capsys)  # fmt: skip
    text = " ".join(out.split())
    assert code == 0 and "sft: 60 steps" in text and "best macro-F1 + Spearman at step" in text
    assert "(recall@g)" in text
    sft = json.loads((tmp_path / "s/metrics.json").read_text())["held_out"]

    student = str(tmp_path / "s/student")
    predictions = tmp_path / "predictions.parquet"
    code, out = run_cli(["encoder", "evaluate", student, "--log", str(log), *SPLIT,
                         "--predictions", str(predictions), "--json"], capsys)  # fmt: skip
    assert code == 0
    for metric in ("accuracy", "macro_f1", "spearman", "recall@0", "recall@3"):
        assert metric in out
    results = json.loads(out.strip().splitlines()[-1])
    assert list(results) == ["majority", "overlap", student]
    assert results[student]["macro_f1"] > results["majority"]["macro_f1"] + 0.1
    assert results[student]["spearman"] > 0.2
    assert results[student]["macro_f1"] == pytest.approx(sft["macro_f1"])  # the kept student
    table = pq.read_table(predictions)
    assert set(table["model"].to_pylist()) == set(results)
    rows = table.filter(pc.equal(table["model"], student))
    assert rows.num_rows == results[student]["pairs"]
    assert not set(rows["query"].to_pylist()) & set(queries)  # held-out queries only
    accuracy = np.mean(rows["predicted"].to_numpy() == rows["grade"].to_numpy())
    assert abs(accuracy - results[student]["accuracy"]) < 1e-6
