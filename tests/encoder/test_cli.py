import json

from tests.encoder.conftest import TINY
from tests.test_cli import run_cli

FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
STEPS = ["--max-steps=6", "--batch-size=32", "--eval-requests=10", "--vocab-size=300"]


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
            "300",
        ],
        capsys,
    )
    assert code == 0 and "pieces" in out
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
    assert code == 0 and "sft: 6 steps" in out
    code, out = run_cli(
        [
            "encoder",
            "evaluate",
            str(tmp_path / "s/student"),
            "--world",
            str(tiny_world),
            "--eval-requests=10",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    results = json.loads(out.strip().splitlines()[-1])
    assert list(results) == ["majority", "overlap", str(tmp_path / "s/student")]
    # the baselines and the student are scored on the same rows
    assert len({(m["requests"], m["pairs"]) for m in results.values()}) == 1
    metrics = results[str(tmp_path / "s/student")]
    assert metrics["requests"] == 10 and 0 <= metrics["accuracy"] <= 1
    assert 0 <= metrics["macro_f1"] <= 1


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
