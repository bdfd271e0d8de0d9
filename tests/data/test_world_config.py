import pytest

from prectr.cli import build_parser
from prectr.data.simulate import PRESETS, load_config


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
        ({"n_itemz": 3}, "unknown knob 'n_itemz'"),
        ({"eta": "high"}, "knob 'eta' expects float"),
        ({"n_users": 2.5}, "knob 'n_users' expects int"),
        ({"label_share": 1.5}, "label_share = 1.5 must lie in"),
        ({"click_model": "ubm"}, "click_model = 'ubm'"),
        ({"exposed_k": 80}, "exposed_k must lie in"),
    ],
)
def test_bad_knobs_are_refused_by_name(values, message):
    with pytest.raises(ValueError, match=message):
        load_config("tiny", overrides=values)


def test_bad_yaml_key_names_the_file(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("pool: 3\n")
    with pytest.raises(ValueError, match=r"w\.yaml: unknown knob 'pool'"):
        load_config("tiny", path)


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
