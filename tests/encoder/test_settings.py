"""The encoder's and the teachers' settings are config sections (:mod:`prectr.section`), checked
as an experiment config is: no hand-written check beside pydantic's."""

import pytest

from prectr.cli import main
from prectr.encoder.distill import EncoderTrainConfig
from prectr.encoder.student import StudentConfig
from prectr.encoder.teachers.adapt import HeadConfig
from prectr.encoder.teachers.finetune import FinetuneConfig
from prectr.section import Section

SECTIONS = [StudentConfig, EncoderTrainConfig, HeadConfig, FinetuneConfig]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_each_setting_is_described_and_a_misspelt_one_is_named(section: type[Section]) -> None:
    assert issubclass(section, Section)
    for name, field in section.model_fields.items():
        assert field.description, f"{section.__name__}.{name}"
    name = next(iter(section.model_fields))
    with pytest.raises(ValueError, match=rf"{name}x\s+unknown key; did you mean {name}\?"):
        section(**{f"{name}x": 1})


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        (StudentConfig, {"mode": "bi"}, r"mode\s+Input should be 'cross' or 'two_tower'"),
        (StudentConfig, {"dim": 30, "heads": 4}, "student dim 30 is not a multiple of heads 4"),
        (StudentConfig, {"layers": True}, r"layers\s+expected a number, not a boolean"),
        (EncoderTrainConfig, {"valid_share": 1.0}, r"valid_share\s+Input should be less than 1"),
        (EncoderTrainConfig, {"batch_size": 0}, r"batch_size\s+Input should be greater than"),
        (HeadConfig, {"valid_share": 0.0}, r"valid_share\s+Input should be greater than 0"),
        (HeadConfig, {"dropout": 1.0}, r"dropout\s+Input should be less than 1"),
        (FinetuneConfig, {"lora_rank": -1}, r"lora_rank\s+Input should be greater than or eq"),
    ],
)  # fmt: skip
def test_a_setting_out_of_its_range_is_refused_naming_it(section, values, message) -> None:
    with pytest.raises(ValueError, match=message):
        section(**values)


def test_the_saved_settings_read_back_as_written() -> None:
    """A run's ``config.json`` and a saved student or adapted teacher hold ``model_dump()``;
    reading it back gives the same settings (the finetune's targets as a JSON list too)."""
    configs = [
        StudentConfig(query_length=6, title_length=16),
        EncoderTrainConfig(lr=1),
        HeadConfig(hidden=0),
        FinetuneConfig(lora_rank=4, lora_targets=["q_proj"]),
    ]
    for config in configs:
        assert type(config)(**config.model_dump(mode="json")) == config
    assert EncoderTrainConfig(lr=1).model_dump()["lr"] == 1.0


def test_the_commands_refuse_a_bad_setting_before_reading_the_log(tmp_path, capsys) -> None:
    missing = tmp_path / "no-log"
    for argv, line in [
        (["encoder", "sft", missing, "--out", tmp_path / "s", "--valid-share", "1.5"],
         "EncoderTrainConfig: valid_share: Input should be less than 1 (got 1.5)"),
        (["teacher", "finetune", "--log", missing, "--teacher", "x", "--out", tmp_path / "t",
          "--lora-rank", "-1"],
         "FinetuneConfig: lora_rank: Input should be greater than or equal to 0 (got -1)"),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in argv])
        assert exit_info.value.code == 2 and line in capsys.readouterr().out
