"""benchmarks/offpolicy.py: distinct scores in the intended order, and one world's entry."""

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import offpolicy

from prectr.data.simulate import World, load_config, simulate


def test_strict_scores_order_by_keys_within_requests_without_ties():
    request = np.array([7, 7, 7, 3, 3])
    shown = np.array([0, 1, 1, 1, 0])
    primary = np.array([5.0, 1.0, 2.0, 0.0, 9.0])
    score = offpolicy.strict_scores(request, shown, primary)
    assert np.unique(score).size == score.size
    first = request == 7  # shown rows first (2.0 before 1.0), then the unshown one
    assert list(np.argsort(-score[first])) == [2, 1, 0]
    assert score[3] > score[4]  # request 3: the shown row above the unshown one


def test_world_entry_on_tiny(tiny_world):
    entry = offpolicy.world_entry(World(tiny_world), resamples=50)
    assert set(entry["estimators"]) == {"position-based"}  # a pbm world
    rankings = entry["estimators"]["position-based"]["rankings"]
    assert set(rankings) == {"logging"} | {
        f"{kind}:{name}" for kind in ("top10", "pool") for name in offpolicy.PRIMARIES
    }
    for name, found in rankings.items():
        supported = found["coverage"]["supported"]
        if name.startswith("pool"):
            assert supported < 0.9
        else:
            assert supported == pytest.approx(1.0)
        assert found["ips_covers"] == (found["ips"]["lo"] <= found["replay"] <= found["ips"]["hi"])
    assert rankings["logging"]["ips"]["value"] == rankings["logging"]["logged"]["value"]
    table = offpolicy.summary([entry])
    assert table["pbm"]["position-based"]["logging"]["worlds"] == 1


def test_a_dcm_world_is_also_estimated_under_its_own_click_model(tmp_path):
    config = load_config("tiny", overrides={"click_model": "dcm"})
    simulate(config, tmp_path / "world")
    models = offpolicy.assumed_models(World(tmp_path / "world"))
    assert models["position-based"] == (1.0, 1.0)
    assert models["dcm"] == (config.dcm_lambda, pytest.approx(0.68))


def test_band_entry_on_tiny(tiny_world, tmp_path):
    bands = {"0.6:1": (0.6, 0.8, 1.0), "1:1": (1.0,)}
    entry = offpolicy.band_entry(World(tiny_world), bands, resamples=50, refits=5)
    assert entry["after_click"] == 1.0  # a pbm world: the band's known lambda is 1
    assert set(entry["bands"]) == set(bands)
    for band_name, found in entry["bands"].items():
        assert set(found) == {f"top10:{name}" for name in offpolicy.PRIMARIES}
        for r in found.values():
            assert r["true_in_range"]
            # the band is the grid's extremes; the true lambda (1) is a grid point, so the band
            # covers the replay wherever the CI at it does
            lowest, highest = min(p["lo"] for p in r["grid"]), max(p["hi"] for p in r["grid"])
            assert r["covers"] == (lowest <= r["replay"] <= highest)
            assert r["covers"] or not r["known_covers"]
            assert [p["after_click"] for p in r["grid"]] == list(bands[band_name])
            assert r["width"] >= r["known_width"] - 1e-12
            if band_name == "1:1":  # one point, the world's own lambda: the known CI
                assert (r["ips"]["lo"], r["ips"]["hi"]) == (r["known"]["lo"], r["known"]["hi"])
    table = offpolicy.band_summary([entry])
    assert table["pbm"]["0.6:1"]["all"]["cases"] == len(offpolicy.PRIMARIES)
    assert table["pbm"]["0.6:1"]["all"]["left_out"] == 0
    assert table["pbm"]["1:1"]["all"]["width_ratio"] == pytest.approx(1.0)

    # a case whose range does not hold the world's lambda is left out of the counts
    outside = copy.deepcopy(entry)
    first = next(iter(outside["bands"]["0.6:1"].values()))
    first |= {"true_in_range": False, "covers": False, "width": 1e9}
    cells = offpolicy.band_summary([outside])["pbm"]["0.6:1"]
    assert cells["all"]["cases"] == len(offpolicy.PRIMARIES) - 1
    assert cells["all"]["left_out"] == 1
    assert cells["all"]["covers"] == table["pbm"]["0.6:1"]["all"]["covers"] - int(
        next(iter(entry["bands"]["0.6:1"].values()))["covers"]
    )
    assert cells["all"]["width"] < 1e9
    alone = next(iter(outside["bands"]["0.6:1"]))
    assert cells[alone] == {"cases": 0, "left_out": 1, "covers": 0,
        "known_covers": 0, "width": None, "known_width": None, "width_ratio": None}  # fmt: skip

    # the record names the command that wrote it, --out included
    out = tmp_path / "band.json"
    args = argparse.Namespace(preset="tiny", seeds=[0], click_models=["pbm"], resamples=50,
                              refits=5, band=["0.6:1:3", "1:1"], out=out)  # fmt: skip
    offpolicy.write_band_record(args, bands, [entry])
    record = json.loads(out.read_text())
    assert record["command"] == (
        ".venv/bin/python benchmarks/offpolicy.py --preset tiny --seeds 0 --click-models pbm "
        f"--resamples 50 --refits 5 --band 0.6:1:3 --band 1:1 --out {out}"
    )
    assert record["summary"] == table


def test_a_range_given_twice_is_refused():
    args = argparse.Namespace(band=["0.4:1:4", "0.6:1", "0.4:1"])
    with pytest.raises(SystemExit, match=r"--band 0\.4:1: a second grid over the range 0\.4:1 "):
        offpolicy.run_bands(args)
