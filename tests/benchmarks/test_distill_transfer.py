"""benchmarks/distill_transfer.py: the distillation recipes side by side, or those asked for."""

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import distill_transfer

from prectr.encoder.pairs import read_pairs
from prectr.encoder.settings import student_config
from prectr.text.tokenizer import TextTokenizer
from tests.encoder.conftest import TINY, overlap_logits


@pytest.mark.slow
def test_only_the_recipes_asked_for_run_beside_sft_alone(tiny_world, tmp_path, monkeypatch):
    pairs = read_pairs(tiny_world)
    tokenizer = tmp_path / "tokenizer.json"
    TextTokenizer.train(pairs.queries, pairs.titles, vocab_size=400).save(tokenizer)
    train = pairs.train.slice(0, 512)  # labels of a few pairs: distillation's epoch is 2 steps
    queries = [pairs.queries[i] for i in train["query"].to_numpy()]
    titles = [pairs.titles[i] for i in train["title"].to_numpy()]
    labels = tmp_path / "labels.parquet"
    pq.write_table(pa.table({
        "query": queries, "title": titles,
        "logits": pa.array([overlap_logits(q, t) for q, t in zip(queries, titles, strict=True)],
                           pa.list_(pa.float32())),
        "hidden": pa.array(list(np.ones((len(queries), 4), np.float32)), pa.list_(pa.float32())),
    }), labels)  # fmt: skip
    out, work = tmp_path / "transfer.json", tmp_path / "work"
    # two one-epoch recipes of a tiny student: the selection is under test, not the recipes
    monkeypatch.setattr(distill_transfer, "RECIPES", {"plain": (1, 0.0), "hidden": (1, 1.0)})
    monkeypatch.setattr(distill_transfer, "student_config",
                        lambda overlap: student_config(overlap, **TINY))  # fmt: skip
    recipe = "hidden"
    argv = ["distill_transfer.py", "--world", str(tiny_world), "--labels", str(labels),
            "--tokenizer", str(tokenizer), "--work", str(work), "--recipe", recipe, recipe,
            "--sft-steps", "2", "--eval-requests", "5", "--seed", "1"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)  # a subset would overwrite the record of them all
    with pytest.raises(SystemExit):
        distill_transfer.main()
    assert not work.exists()
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])  # a recipe named twice runs once
    distill_transfer.main()
    record = json.loads(out.read_text())
    assert list(record["runs"]) == [recipe, f"{recipe}, then SFT", "SFT alone (from scratch)"]
    assert record["seed"] == 1 and record["runs"][f"{recipe}, then SFT"]["steps"] == 2
    assert record["command"].endswith(f"--out {out}")
    # the recipe keeps its own work directory whichever others run beside it (runs resume)
    assert sorted(p.name for p in work.iterdir()) == ["probe", "recipe1", "scratch"]
    distilled = json.loads((work / "recipe1" / "distill" / "config.json").read_text())
    assert (distilled["train"]["epochs"], distilled["train"]["hidden_weight"]) == (1, 1.0)
