"""Off-policy estimates of clicks against the world's replay, over world seeds and click models.

Run: .venv/bin/python benchmarks/offpolicy.py [--preset bench] [--seeds 0 1 2]
     [--click-models pbm dcm]
Simulates each world (reusing runs/worlds/offpolicy/<preset>-<model>-s<seed> when it exists),
harvests propensities and fits the attraction prior on the training days, and estimates the
expected clicks per request (top 10) of several rankings of each test request's logged pool by
IPS and DR assuming the position-based model and, on a dcm world, the dependent click model
with the world's own lambda (95% bootstrap CIs over requests), against the world's replay of the
same ranking (closed form). Writes results/offpolicy.json.

Rankings: ``logging`` (the log's own order); ``top10:*`` reorder the 10 items the log showed in
each request (by reversed logging order, training-day popularity, true grade, at random) and
keep the rest below: every top-10 slot is supported, where the estimators claim to be right;
``pool:*`` rank the whole 100-candidate pool, so most top-10 slots hold items the log never
showed in that request (unsupported: IPS counts nothing for them, DR's direct method predicts).

With ``--band LO:HI[:N]`` (repeatable) it estimates instead the band over lambda
(:mod:`prectr.evaluation.band`) of the ``top10:*`` reorderings at every point of the ranges'
grids and at the world's own lambda (1 under pbm), one harvest per lambda, and counts, among
the (world, ranking) cases whose range holds the world's lambda, those whose band covers the
replay, with the band's width against the width of the CI at the world's lambda (cases outside
the range: ``left_out``). One ``--band`` per range. Writes results/offpolicy_band.json (or
``--out``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
from record import machine, write_record

from prectr.data.simulate import World, load_config, simulate
from prectr.evaluation.band import fit_grid, offpolicy_band, parse_after_click
from prectr.evaluation.offpolicy import AttractionPrior, offpolicy_clicks, offpolicy_statistics
from prectr.evaluation.propensity import RESAMPLES as PROPENSITY_REFITS
from prectr.evaluation.propensity import Propensities, harvest_propensities
from prectr.rankers import popularity_ranker

ROOT = Path(__file__).resolve().parents[1]
PRIMARIES = ("reversed", "popularity", "relevance", "random")


def world_at(preset: str, click_model: str, seed: int) -> World:
    out = ROOT / "runs" / "worlds" / "offpolicy" / f"{preset}-{click_model}-s{seed}"
    config = load_config(preset, overrides={"seed": seed, "click_model": click_model})
    if not (out / "world.json").is_file():
        print(f"simulating {out.name}", flush=True)
        simulate(config, out, overwrite=True, preset=preset)
    world = World(out)
    if world.config != config:
        raise ValueError(f"{out}: holds a world of other knobs; remove it to simulate again")
    return world


def strict_scores(request: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Distinct scores ranking each request's rows by ``keys`` (the first most significant,
    each descending): the replay and the estimators then break no tie differently."""
    order = np.lexsort((*reversed([-np.asarray(k, np.float64) for k in keys]), request))
    score = np.empty(request.size)
    score[order] = -np.arange(request.size, dtype=np.float64)
    return score


def rankings(world: World, pool: pa.Table, train: pa.Table) -> dict[str, np.ndarray]:
    request = pool["request_id"].to_numpy()
    shown = pool["position"].is_valid().to_numpy(zero_copy_only=False)
    logging = pool["logging_score"].to_numpy()
    tie = np.random.default_rng(world.config.seed).random(pool.num_rows)
    primary = {
        "reversed": -logging,
        "popularity": popularity_ranker(train, pool)[0],
        "relevance": pool["true_relevance"].to_numpy().astype(np.float64),
        "random": tie,
    }
    out = {"logging": strict_scores(request, logging)}
    for name in PRIMARIES:
        out[f"top10:{name}"] = strict_scores(request, shown, primary[name], tie)
    for name in PRIMARIES:
        out[f"pool:{name}"] = strict_scores(request, primary[name], tie)
    return out


def assumed_models(world: World) -> dict[str, tuple[float, float]]:
    """The click models the estimators assume, as (after_click, top_examination): always the
    position-based model; on a dcm world also the dependent click model with the world's own
    lambda and examination of position 1 (the estimator given its click model; the log alone
    does not give lambda: docs/offpolicy.md)."""
    models = {"position-based": (1.0, 1.0)}
    if world.config.click_model == "dcm":
        top = float(world.click_model.examination(1)[0])
        models["dcm"] = (world.config.dcm_lambda, top)
    return models


def world_split(world: World) -> tuple[pa.Table, pa.Table, pa.Table, dict[str, np.ndarray]]:
    """Every request, the training days' impressions (the reference log), the test days' pools,
    and the rankings of the pools."""
    requests = world.requests()
    day = world.day_of(requests["timestamp"]).to_numpy()
    ids = requests["request_id"].to_numpy()
    train_ids = pa.array(ids[np.isin(day, world.split["train"])])
    reference = world.impressions(train_ids)
    pool = world.impressions(pa.array(ids[np.isin(day, world.split["test"])]))
    return requests, reference, pool, rankings(world, pool, reference.select(["item_id", "click"]))


def pool_scores(pool: pa.Table, score: np.ndarray) -> pa.Table:
    return pa.table({"request_id": pool["request_id"], "item_id": pool["item_id"], "score": score})


def world_entry(world: World, resamples: int) -> dict:
    started = time.perf_counter()
    requests, reference, pool, ranked = world_split(world)
    entry = {
        "click_model": world.config.click_model,
        "seed": world.config.seed,
        "estimators": {},
    }
    for assumed, (after_click, top) in assumed_models(world).items():
        propensities = harvest_propensities(reference, requests, after_click=after_click,
                                            top_examination=top)  # fmt: skip
        prior = AttractionPrior.fit(reference, propensities)
        exam = world.click_model.examination(propensities.k)
        # the click model's own examination curve (the true propensities under pbm and, with
        # no click above, under dcm), to tell the harvested propensities' error from the noise
        model = Propensities(exam / exam[0], propensities.pairs, np.empty((0, propensities.k)),
                             after_click, top)  # fmt: skip
        found = {
            "propensities": propensities.to_dict(),
            "click_model_examination": (exam / exam[0]).tolist(),
            "prior": prior.to_dict(),
            "rankings": {},
        }
        print(f" assuming {assumed}", flush=True)
        for name, score in ranked.items():
            scores = pool_scores(pool, score)
            truth = world.replay(scores).expected_clicks
            estimate = offpolicy_clicks(pool, requests, scores, propensities, prior, resamples)
            with_model = offpolicy_statistics(pool, requests, scores, model, prior)
            found["rankings"][name] = {
                "replay": truth,
                **estimate.to_dict(),
                "ips_with_model_examination": float(
                    with_model.statistics["ips"](np.ones((1, estimate.n_requests)))[0]
                ),
                "ips_covers": estimate.ips.covers(truth),
                "dr_covers": estimate.dr.covers(truth),
            }
            print(f"  {name:16} replay {truth:.4f}  ips {_fmt(estimate.ips)}  dr "
                  f"{_fmt(estimate.dr)}  supported {estimate.coverage['supported']:.0%}",
                  flush=True)  # fmt: skip
        entry["estimators"][assumed] = found
        entry["n_requests"] = estimate.n_requests
    entry["seconds"] = time.perf_counter() - started
    return entry


def world_lambda(world: World) -> float | None:
    """The world's after-click factor: 1 under pbm, its lambda under dcm, None under cascade
    (lambda 0, which the estimate cannot take)."""
    return {"pbm": 1.0, "dcm": world.config.dcm_lambda}.get(world.config.click_model)


def band_entry(
    world: World, bands: dict[str, tuple[float, ...]], resamples: int, refits: int
) -> dict:
    """The supported reorderings (``top10:*``) of one world estimated at every point
    of the ``bands``' grids and at the world's own lambda (one fit each, the same resamples),
    and per band and ranking: the band, whether it covers the replay, its width against the
    width of the CI at the world's lambda."""
    started = time.perf_counter()
    requests, reference, pool, ranked = world_split(world)
    true = world_lambda(world)
    points = sorted({lam for grid in bands.values() for lam in grid} | {true} - {None})
    top = float(world.click_model.examination(1)[0])
    fits = fit_grid(reference, requests, points, top, n_refits=refits)
    print(f" harvested at lambda {points} in {time.perf_counter() - started:.0f} s", flush=True)
    entry = {"click_model": world.config.click_model, "seed": world.config.seed,
             "after_click": true, "top_examination": top, "bands": {}}  # fmt: skip
    for name, score in ranked.items():
        if not name.startswith("top10:"):  # logging: IPS is the logged clicks at every lambda
            continue
        scores = pool_scores(pool, score)
        replay = world.replay(scores).expected_clicks
        found = offpolicy_band(pool, requests, scores, fits, resamples)
        known = None if true is None else found.at([true]).estimates[0].ips
        for band_name, grid in bands.items():
            band = found.at(grid)
            ips = band.band("ips")
            entry["bands"].setdefault(band_name, {})[name] = {
                "replay": replay,
                "ips": ips.to_dict() | {"monotone": band.monotone("ips")},
                "covers": ips.covers(replay),
                "width": ips.hi - ips.lo,
                "true_in_range": true is not None and grid[0] <= true <= grid[-1],
                "known": None if known is None else known.to_dict(),
                "known_covers": None if known is None else known.covers(replay),
                "known_width": None if known is None else known.hi - known.lo,
                "grid": [{"after_click": lam, **e.ips.to_dict()}
                         for lam, e in zip(band.after_click, band.estimates, strict=True)],
            }  # fmt: skip
            print(f"  {band_name:10} {name:16} replay {replay:.4f}  band [{ips.lo:.4f}, "
                  f"{ips.hi:.4f}] (lambda {ips.after_click_lo:g}, {ips.after_click_hi:g})  "
                  f"known {'-' if known is None else _fmt(known)}", flush=True)  # fmt: skip
        entry["n_requests"] = found.estimates[0].n_requests
    entry["seconds"] = time.perf_counter() - started
    return entry


def band_summary(worlds: list[dict]) -> dict:
    """Per click model and band: per ranking and over the supported rankings, how many (world,
    ranking) cases whose range holds the world's lambda the band and the CI at that lambda
    cover, and their mean widths; ``left_out``: the cases whose range does not hold it (or
    whose lambda the estimate cannot take), which the band does not claim to cover."""
    out: dict = {}
    for w in worlds:
        for band_name, found in w["bands"].items():
            cells = out.setdefault(w["click_model"], {}).setdefault(band_name, {})
            for name, r in [*found.items(), *(("all", r) for r in found.values())]:
                cell = cells.setdefault(name, {"cases": 0, "left_out": 0, "covers": 0,
                                               "known_covers": 0, "width": [],
                                               "known_width": []})  # fmt: skip
                if not r["true_in_range"]:
                    cell["left_out"] += 1
                    continue
                cell["cases"] += 1
                cell["covers"] += int(r["covers"])
                cell["known_covers"] += int(r["known_covers"])
                cell["width"].append(r["width"])
                cell["known_width"].append(r["known_width"])
    for by_band in out.values():
        for cells in by_band.values():
            for cell in cells.values():  # widths None where every case is left out
                width, known = (float(np.mean(cell[k])) if cell["cases"] else None
                                for k in ("width", "known_width"))  # fmt: skip
                cell |= {"width": width, "known_width": known,
                         "width_ratio": None if width is None else width / known}  # fmt: skip
    return out


def table_cells(table: dict) -> Iterator[tuple[str, str, str, dict]]:
    """The cells of a summary (click model -> assumed model or band -> ranking -> cell) with
    their three keys, in order."""
    for click_model, by_column in table.items():
        for column, cells in by_column.items():
            for name, cell in cells.items():
                yield click_model, column, name, cell


def each_world(args: argparse.Namespace) -> Iterator[World]:
    """The worlds of ``--click-models`` and ``--seeds``, each announced as it is reached."""
    for seed in args.seeds:
        for click_model in args.click_models:
            world = world_at(args.preset, click_model, seed)
            print(f"{args.preset} {click_model} seed {seed}", flush=True)
            yield world


def run_bands(args: argparse.Namespace) -> None:
    bands = {}
    for text in args.band:
        grid = parse_after_click(text)
        if isinstance(grid, float):
            raise SystemExit(f"--band {text}: expected a range LO:HI or LO:HI:N")
        name = f"{grid[0]:g}:{grid[-1]:g}"
        if name in bands:
            raise SystemExit(f"--band {text}: a second grid over the range {name} (one --band "
                             "per range)")  # fmt: skip
        bands[name] = grid
    worlds = []
    for world in each_world(args):
        worlds.append(band_entry(world, bands, args.resamples, args.refits))
        write_band_record(args, bands, worlds)  # each world as it is done
    table = band_summary(worlds)
    print(f"\n{'click model':12} {'band':10} {'ranking':16} {'covers':>8} {'known':>8} "
          f"{'width':>7} {'known':>7} {'ratio':>6} {'left out':>8}")  # fmt: skip
    for click_model, band_name, name, c in table_cells(table):
        widths = ("-" if x is None else f"{x:.3f}"
                  for x in (c["width"], c["known_width"], c["width_ratio"]))  # fmt: skip
        print(f"{click_model:12} {band_name:10} {name:16} {c['covers']:>4}/{c['cases']:<3} "
              f"{c['known_covers']:>4}/{c['cases']:<3} {' '.join(f'{w:>7}' for w in widths)} "
              f"{c['left_out']:>8}")  # fmt: skip


def write_band_record(
    args: argparse.Namespace, bands: dict[str, tuple[float, ...]], worlds: list[dict]
) -> None:
    write_record(
        args.out or ROOT / "results" / "offpolicy_band.json",
        {
            "command": f".venv/bin/python benchmarks/offpolicy.py --preset {args.preset} --seeds "
            f"{' '.join(map(str, args.seeds))} --click-models {' '.join(args.click_models)} "
            f"--resamples {args.resamples} --refits {args.refits} --band "
            + " --band ".join(args.band)
            + ("" if args.out is None else f" --out {args.out}"),
            "machine": machine(resamples=args.resamples, refits=args.refits),
            "preset": args.preset,
            "bands": {name: list(grid) for name, grid in bands.items()},
            "summary": band_summary(worlds),
            "worlds": worlds,
        },
    )


def _fmt(e) -> str:
    return f"{e.value:.4f} [{e.lo:.4f}, {e.hi:.4f}]"


def summary(worlds: list[dict]) -> dict:
    """Per click model, assumed model and ranking: how many worlds' CIs cover the replay, and
    the mean error."""
    out: dict = {}
    for w in worlds:
        for assumed, found in w["estimators"].items():
            for name, r in found["rankings"].items():
                empty = {"worlds": 0, "ips_covers": 0, "dr_covers": 0, "ips_error": [],
                         "dr_error": []}  # fmt: skip
                cells = out.setdefault(w["click_model"], {}).setdefault(assumed, {})
                cell = cells.setdefault(name, empty)
                cell["worlds"] += 1
                for est in ("ips", "dr"):
                    cell[f"{est}_covers"] += int(r[f"{est}_covers"])
                    cell[f"{est}_error"].append(r[est]["value"] - r["replay"])
    for by_assumed in out.values():
        for cells in by_assumed.values():
            for cell in cells.values():
                for est in ("ips", "dr"):
                    cell[f"{est}_error"] = float(np.mean(cell[f"{est}_error"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="bench")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--click-models", nargs="+", default=["pbm", "dcm"])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--band", action="append", metavar="LO:HI[:N]",
                        help="instead: the sensitivity band over lambda in [LO, HI] (N points, "
                        "default 7; repeat for several ranges) on the supported rankings, "
                        "written to results/offpolicy_band.json")  # fmt: skip
    parser.add_argument("--refits", type=int, default=PROPENSITY_REFITS,
                        help="with --band: propensity refits on resamples of the training "
                        "requests, at each lambda")  # fmt: skip
    parser.add_argument("--out", type=Path,
                        help="default results/offpolicy.json (results/offpolicy_band.json with "
                        "--band)")  # fmt: skip
    args = parser.parse_args()
    if args.band:
        run_bands(args)
        return
    worlds = [world_entry(world, args.resamples) for world in each_world(args)]
    table = summary(worlds)
    print(f"\n{'click model':12} {'assumed':15} {'ranking':16} {'IPS covers':>10} "
          f"{'DR covers':>10} {'IPS - replay':>13} {'DR - replay':>12}")  # fmt: skip
    for click_model, assumed, name, c in table_cells(table):
        print(f"{click_model:12} {assumed:15} {name:16} "
              f"{c['ips_covers']:>5}/{c['worlds']:<4} {c['dr_covers']:>5}/{c['worlds']:<4} "
              f"{c['ips_error']:>+13.4f} {c['dr_error']:>+12.4f}")  # fmt: skip
    write_record(
        args.out or ROOT / "results" / "offpolicy.json",
        {
            "command": ".venv/bin/python benchmarks/offpolicy.py --preset "
            + args.preset
            + " --seeds "
            + " ".join(map(str, args.seeds))
            + " --click-models "
            + " ".join(args.click_models),
            "machine": machine(resamples=args.resamples),
            "preset": args.preset,
            "summary": table,
            "worlds": worlds,
        },
    )


if __name__ == "__main__":
    main()
