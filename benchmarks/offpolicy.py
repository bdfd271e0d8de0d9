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
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from record import machine, write_record

from prectr.data.simulate import World, load_config, simulate
from prectr.evaluation.offpolicy import AttractionPrior, offpolicy_clicks, offpolicy_statistics
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


def world_entry(world: World, resamples: int) -> dict:
    started = time.perf_counter()
    requests = world.requests()
    day = world.day_of(requests["timestamp"]).to_numpy()
    ids = requests["request_id"].to_numpy()
    train_ids = pa.array(ids[np.isin(day, world.split["train"])])
    reference = world.impressions(train_ids)
    pool = world.impressions(pa.array(ids[np.isin(day, world.split["test"])]))
    ranked = rankings(world, pool, reference.select(["item_id", "click"]))
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
            scores = pa.table(
                {"request_id": pool["request_id"], "item_id": pool["item_id"], "score": score}
            )
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
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "offpolicy.json")
    args = parser.parse_args()
    worlds = []
    for click_model in args.click_models:
        for seed in args.seeds:
            world = world_at(args.preset, click_model, seed)
            print(f"{args.preset} {click_model} seed {seed}", flush=True)
            worlds.append(world_entry(world, args.resamples))
    table = summary(worlds)
    print(f"\n{'click model':12} {'assumed':15} {'ranking':16} {'IPS covers':>10} "
          f"{'DR covers':>10} {'IPS - replay':>13} {'DR - replay':>12}")  # fmt: skip
    for click_model, by_assumed in table.items():
        for assumed, cells in by_assumed.items():
            for name, c in cells.items():
                print(f"{click_model:12} {assumed:15} {name:16} "
                      f"{c['ips_covers']:>5}/{c['worlds']:<4} {c['dr_covers']:>5}/{c['worlds']:<4} "
                      f"{c['ips_error']:>+13.4f} {c['dr_error']:>+12.4f}")  # fmt: skip
    write_record(
        args.out,
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
