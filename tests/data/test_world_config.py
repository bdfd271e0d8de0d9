import pytest

from prectr.cli import build_parser
from prectr.data.simulate import PRESETS, load_config
from prectr.data.simulate.config import WorldConfig
from prectr.section import ConfigError


def test_presets_grow_in_size():
    grown = [p for p in PRESETS if p != "stationary"]  # the control has bench's size
    sizes = [load_config(p).n_requests * load_config(p).pool_size for p in grown]
    assert sizes == sorted(sizes)
    assert load_config("large").n_requests * load_config("large").pool_size >= 10_000_000


def test_yaml_then_overrides_take_precedence(tmp_path):
    path = tmp_path / "world.yaml"
    path.write_text("click_model: dcm\neta: 1.5\nn_users: 77\n")
    config = load_config("tiny", path, {"eta": 2.0})
    assert (config.click_model, config.eta, config.n_users) == ("dcm", 2.0, 77)
    assert config.n_items == PRESETS["tiny"]["n_items"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"n_itemz": 3}, "n_itemz: unknown key; did you mean n_items?"),
        ({"eta": "high"}, "eta: Input should be a valid number"),
        ({"n_users": 2.5}, "n_users: Input should be a valid integer"),
        ({"seed": True}, "seed: expected a number, not a boolean"),
        ({"label_share": 1.5}, r"label_share: Input should be less than or equal to 1 \(got 1.5\)"),
        ({"ranker_noise": -1}, "ranker_noise: Input should be greater than or equal to 0"),
        ({"n_segments": 0}, "n_segments: Input should be greater than or equal to 1"),
        ({"tolerance_query_share": 1.0}, "tolerance_query_share: Input should be less than 1"),
        ({"click_model": "ubm"}, "click_model: Input should be 'pbm', 'dcm' or 'cascade'"),
        ({"exposed_k": 80}, r"exposed_k: must lie in \[1, pool_size \(50\)\]"),
        ({"retrieval_size": 40}, r"pool_size: must be <= retrieval_size \(40\)"),
        ({"n_days": 4}, r"test_days: n_days \(4\) must exceed valid_days \+ test_days"),
        (
            {"pool_same_kind": 0.8},
            r"pool_same_department: pool_same_category \+ pool_same_kind "
            r"\+ pool_same_department must not exceed 1",
        ),
    ],
)
def test_bad_knobs_are_refused_by_name(values, message):
    with pytest.raises(ValueError, match=f"^preset tiny \\+ overrides: {message}"):
        load_config("tiny", overrides=values)


def test_every_problem_of_a_world_config_is_reported_at_once(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("pool_sise: 3\neta: high\nexposed_k: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config("tiny", path, {"label_share": 2})
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"preset tiny + {path} + overrides: ") for line in lines)
    assert sorted(e["loc"][0] for e in caught.value.errors) == [
        "eta", "exposed_k", "label_share", "pool_sise"]  # fmt: skip
    assert any("pool_sise: unknown key; did you mean pool_size?" in line for line in lines)


def test_knobs_are_checked_however_a_config_is_made():
    """Built directly or replaced, a world config is checked as a loaded one is; an integer for
    a real-valued knob is taken as a float."""
    config = load_config("tiny", overrides={"eta": 2})
    assert config.eta == 2.0 and isinstance(config.eta, float)
    with pytest.raises(ConfigError, match="world config: dcm_lambda: Input should be less"):
        config.replace(dcm_lambda=1.5)
    with pytest.raises(ConfigError, match="world config: exposed_k: must lie in"):
        WorldConfig(pool_size=5, retrieval_size=5)


def test_every_knob_has_a_command_line_flag():
    args = build_parser().parse_args(
        ["simulate", "--out", "x", "--click-model", "cascade", "--pool-size", "30", "--eta", "2"]
    )
    assert (args.knob_click_model, args.knob_pool_size, args.knob_eta) == ("cascade", 30, 2.0)


def test_docs_world_lists_every_knob_with_each_preset_s_value():
    from dataclasses import fields
    from pathlib import Path

    from prectr.data.simulate.config import WorldConfig

    doc = (Path(__file__).parents[2] / "docs" / "world.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in doc.splitlines()
            if line.startswith("| `")}  # fmt: skip
    for f in fields(WorldConfig):
        assert f.name in rows, f.name
        cells = [c.strip() for c in rows[f.name].split("|")[2:-2]]
        if len(cells) == len(PRESETS):
            values = [getattr(load_config(p), f.name) for p in PRESETS]
            assert cells == [f"{v:,}" if isinstance(v, int) else str(v) for v in values], f.name
