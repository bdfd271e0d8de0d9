"""What each run's ranking rule is worth in the world's replay, every run and rule paired.

Run: .venv/bin/python benchmarks/ranking_rule.py --world runs/worlds/bench-s0 \\
         runs/fidelity/bench-s0/two_model-s0 runs/fidelity/bench-s0/prectr_v2-s0
(every run evaluated by ``prectr evaluate``; ``--split valid`` reads the validation days).

A run's served score ranks each request's logged pool (100 candidates on `bench`, of which the
logging ranker showed 10), and the world replays the new top ten. The score of a model that
multiplies a click probability by a relevance utility (the two-model fusion, ``P(click) *
E[grade] / 3``) and that of a model that ranks by its click probability alone (PRECTR,
PRECTR-V2, DNN) differ in their rule as well as in what they learnt. Each run is therefore
replayed under every rule its scores allow:

* ``served``: the score as served, what ``prectr evaluate`` reports;
* ``click``: the run's own click probability before calibration, so that every run's click
  part is on its model's scale (a product rule is not blind to a monotone recalibration): the
  served score with its Platt calibration inverted, and for a product model that product
  divided by the utility (a product clamped at its floor keeps no click part: those rows are
  ranked last, and counted); for PRECTR-V2 the fused probability with its incentive;
* ``utility``: the click part times the run's own relevance utility ``E[grade] / 3``, from its
  grade distribution (runs without one are skipped); a product model's ``served``;
* ``utility^A`` (``--relevance-weights A ...``): the click part times the run's own utility to
  the power ``A``, the family of rules that trade clicks for graded relevance (``A`` = 0 is
  ``click``, 1 is ``utility``): each model read at several operating points, so that two
  models can be compared at a point of equal relevance rather than at the point each serves;
* ``given_click^A`` (the same weights, for a run with per-grade click heads: PRECTR,
  PRECTR-V2): the click part times ``E[(grade / 3)^A | click, x]``, the grade expected of a
  click under the model's own factorisation, ``P(rsl = r | click, x) ∝ P(click | rsl = r, x)
  P(rsl = r | x)`` (the ``click_at_grade_r`` and ``grade_r`` columns that ``prectr
  evaluate`` writes). Up to the incentive (which reads the grade distribution too) and the
  reference position's bias, which shift the fused logit before its sigmoid, it is ``sum_r
  P(click | r, x) P(r | x) (r / 3)^A``: ``A`` = 1 ranks by the expected relevant click, a
  large ``A`` by the top grade's click alone. The model's relevance estimate then weighs the
  heads once, inside the fusion's sum, where ``utility^A`` multiplies a click probability
  that already holds it by it again;
* ``modal_head^A`` (the same weights and runs): the click head of the run's likeliest grade,
  shifted by the incentive and the reference position's bias as the served score is, times
  the run's own utility to the power ``A``: the click estimate of one grade rather than the
  mixture over the grade distribution, whose weights move a candidate's click estimate with
  the model's uncertainty about its grade, so that uncertainty enters through the utility
  (and the incentive, which the shift keeps);
* ``fused^A`` (the same weights and runs): the fused probability ``sum_r P(click | r, x)
  P(r | x)`` alone, without the incentive and the reference position's bias that the served
  score adds to its logit, times the run's own utility to the power ``A``: the served order
  with the incentive taken out (the model still trained with it);
* ``prior_heads^A`` (the same weights and runs): the heads mixed by one grade distribution,
  the run's own averaged over every evaluated row, the same for every candidate, shifted as
  ``modal_head^A``, times the run's own utility to the power ``A``: a click part whose heads
  are not weighed by the candidate's own grade estimate, as the two-model fusion's click
  model is not, so the relevance enters through the utility (and through the incentive,
  which the shift keeps);
* ``utility of RUN``: the click part times another run's relevance utility (each other run
  with a grade distribution), so that two runs' click parts and relevance parts can be told
  apart;
* ``true_utility``: the click part times the true grade / 3: the rule with a perfect
  relevance model, what relevance knowledge could add to this click model (only where every
  candidate's grade is known, as in a simulated world);
* ``within_true_grade``: the candidates ordered by their true grade, and within a grade by
  the click part: every run's ranking then differs only in the order among candidates of one
  grade, which taste and popularity set in the world (same condition).
* ``within_true_grade:fused``, ``:own_head`` and ``:prior_heads`` (a run with per-grade click
  heads, same condition): the true grade first, and within a grade the fused click
  probability without the incentive and the position bias, ``sum_r P(click | r, x) P(r |
  x)``, the click head of the candidate's true grade, ``P(click | rsl = grade, x)``, or the
  heads mixed by the pool's mean grade distribution: the order the heads give once the
  model's relevance estimate no longer weighs them.

For each (run, rule) it reports expected clicks (the replay), NDCG@10, irrelevant@10 and
``unexposed@10`` (the share of the new top ten that the logging ranker never showed), and
each one minus the first run's served score, minus the first run under the same rule (where
it has that rule; a variant ``RULE:x`` under ``RULE``) and minus the same run's served score, paired
over the same request resamples as ``prectr compare``. Each run is read at the checkpoint
its evaluation scored, on the world its evaluation names. With ``--shown-only`` every ranking
keeps the ten shown candidates on top (each rule only reorders them), so that a gap can be
told apart into the order of the shown candidates and the candidates never shown. Writes
results/ranking_rule_<world>_<split>[_shown].json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from record import machine, write_record

from prectr.config import saved_experiment
from prectr.data.schema import read_log
from prectr.evaluation.context import EvaluationContext
from prectr.evaluation.run import EVALUATION, SCORES, split_file
from prectr.evaluation.statistics import EvaluationRows, model_statistics
from prectr.evaluation.truth import LOG_COLUMNS, open_truth
from prectr.metrics.groups import rank_within_group
from prectr.metrics.paired import RESAMPLES, Statistic, mean_statistic, paired_bootstrap
from prectr.models.baselines.two_model import EPS
from prectr.models.calibration import load_calibrator
from prectr.modules.rsl import GRADES

ROOT = Path(__file__).resolve().parents[1]
TOP_K = 10
PRODUCT_MODELS = ("two_model",)  # served score: calibrated P(click) * E[grade] / 3
METRICS = ("expected_clicks", "ndcg@10", "irrelevant@10", "unexposed@10")


def log_odds(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))``."""
    return np.log(p) - np.log1p(-p)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def click_part(
    run: Path, score: np.ndarray, utility: np.ndarray | None, checkpoint: str = "best"
) -> tuple[np.ndarray, int]:
    """A run's own click probability before calibration, from its served score
    ``sigmoid(a * logit(p) + b)`` (Platt on ``checkpoint``, or none): ``p`` itself for a model
    that serves a click probability (for PRECTR-V2, the fused probability with its incentive),
    ``p / utility`` for a product model (``p = P(click) * utility``). A product clamped at its
    floor (``p`` at most :data:`EPS`, a near-zero utility) keeps no click part: such rows get
    -1, below every recovered one, and their count is returned beside the clicks."""
    calibrator = load_calibrator(run / "checkpoints" / f"{checkpoint}.pt")
    if calibrator.kind not in ("none", "platt"):
        raise ValueError(f"{run}: a {calibrator.kind} calibration cannot be inverted here; "
                         "the click part needs none or platt")  # fmt: skip
    logit = log_odds(score)
    if calibrator.kind == "platt":
        logit = (logit - float(calibrator.b)) / float(calibrator.a)
    p = sigmoid(logit)
    if saved_experiment(run).model not in PRODUCT_MODELS:
        return p, 0
    if utility is None:
        raise ValueError(f"{run}: a product model's scores need their grade columns")
    clamped = p <= EPS * (1.0 + 1e-3)
    click = np.where(clamped, -1.0, p / np.maximum(utility, EPS))
    if (click > 1.0 + 1e-3).any():
        raise ValueError(f"{run}: a recovered click probability exceeds 1; its scores and "
                         "its calibration do not belong together")  # fmt: skip
    return np.minimum(click, 1.0), int(clamped.sum())


def utility(scores: dict[str, np.ndarray]) -> np.ndarray | None:
    """A run's relevance utility ``E[grade] / 3`` of every row; None without grade columns."""
    if f"grade_{GRADES - 1}" not in scores:
        return None
    return sum(g * scores[f"grade_{g}"] for g in range(GRADES)) / (GRADES - 1)


def per_grade(scores: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """A run's per-grade click probabilities and grade distribution, each ``(rows, grades)``
    (the ``click_at_grade_r`` and ``grade_r`` columns); None without them."""
    if f"click_at_grade_{GRADES - 1}" not in scores or f"grade_{GRADES - 1}" not in scores:
        return None
    heads = np.stack([scores[f"click_at_grade_{g}"] for g in range(GRADES)], 1)
    return heads, np.stack([scores[f"grade_{g}"] for g in range(GRADES)], 1)


def given_click(heads: np.ndarray, grades: np.ndarray, weight: float) -> np.ndarray:
    """``E[(grade / 3)^weight | click, x]`` of every row from the run's per-grade click
    probabilities and grade distribution (:func:`rules`' ``given_click^A``)."""
    joint = heads * grades
    worth = (np.arange(GRADES) / (GRADES - 1)) ** weight
    return joint @ worth / joint.sum(1)


def mixed_click(
    click: np.ndarray, heads: np.ndarray, fused: np.ndarray, mix: np.ndarray
) -> np.ndarray:
    """The run's heads mixed by ``mix`` (rows' or one grade distribution) instead of each
    row's own grade distribution, which gives ``fused`` (``sum_r heads_r grades_r``), shifted
    as the served score shifts the fused probability (the incentive and the reference
    position's bias, ``logit(click) - logit(fused)``; the incentive reads the row's grade
    distribution, so it stays in the shift):
    :func:`rules`' ``modal_head^A`` (a one-hot mix at the likeliest grade) and
    ``prior_heads^A`` (the mean grade distribution over every evaluated row, the same for
    every row). Probabilities are kept within ``[1e-7, 1 - 1e-7]`` before their log-odds."""

    def clipped(p: np.ndarray) -> np.ndarray:
        return np.clip(p, 1e-7, 1 - 1e-7)

    mixed = clipped((heads * mix).sum(1))
    shifted = log_odds(mixed) + log_odds(clipped(click)) - log_odds(clipped(fused))
    return sigmoid(shifted)


def modal_mix(grades: np.ndarray) -> np.ndarray:
    """Every row's likeliest grade, one-hot (a tie goes to the lower grade)."""
    return np.eye(GRADES)[grades.argmax(1)]


def rules(
    run: Path, scores: dict[str, np.ndarray], grade: np.ndarray,
    others: dict[str, np.ndarray] | None = None, checkpoint: str = "best",
    weights: tuple[float, ...] = (),
) -> tuple[dict[str, np.ndarray], int]:  # fmt: skip
    """Every rule the run's scores allow (see the module's docstring), by name, and the
    number of rows whose click part could not be recovered (:func:`click_part`); ``others``:
    the other runs' relevance utilities, by run name; ``weights``: the powers of the run's own
    utility read as ``utility^A``, ``fused^A``, ``modal_head^A`` and ``prior_heads^A``, and of
    the grade given a click as ``given_click^A``."""
    out = {"served": scores["score"]}
    own = utility(scores)
    click, unrecovered = click_part(run, scores["score"], own, checkpoint)
    out["click"] = click
    if own is not None:
        out["utility"] = click * own
        for weight in weights:
            out[f"utility^{weight:g}"] = click * own**weight
    factored = per_grade(scores)
    if factored is not None:
        heads, grades = factored
        fused, pool_mix = (heads * grades).sum(1), grades.mean(0)
        modal = mixed_click(click, heads, fused, modal_mix(grades))
        prior = mixed_click(click, heads, fused, pool_mix)
        for weight in weights:
            out[f"given_click^{weight:g}"] = click * given_click(heads, grades, weight)
            out[f"fused^{weight:g}"] = fused * own**weight
            out[f"modal_head^{weight:g}"] = modal * own**weight
            out[f"prior_heads^{weight:g}"] = prior * own**weight
    for name, theirs in (others or {}).items():
        out[f"utility of {name}"] = click * theirs
    if (grade >= 0).all():
        out["true_utility"] = click * grade / (GRADES - 1)
        out["within_true_grade"] = 3 * grade + click  # click in [-1, 1]: the grade first
        if factored is not None:
            out["within_true_grade:fused"] = 3 * grade + fused
            out["within_true_grade:prior_heads"] = 3 * grade + (heads * pool_mix).sum(1)
            true_head = np.take_along_axis(heads, grade[:, None].astype(np.int64), 1)[:, 0]
            out["within_true_grade:own_head"] = 3 * grade + true_head
    return out, unrecovered


def unexposed_share(rows: EvaluationRows, score: np.ndarray) -> Statistic:
    """The share of each request's top ten by ``score`` that was never shown, averaged (ranks
    as the other metrics take them: :func:`rank_within_group`)."""
    rank, _, _ = rank_within_group(score, rows.request)
    top = rank <= TOP_K
    unshown = np.bincount(rows.request, weights=top & ~rows.exposed, minlength=rows.n_requests)
    ranked = np.bincount(rows.request, weights=top, minlength=rows.n_requests)
    keys = np.flatnonzero(ranked)
    return mean_statistic(unshown[keys] / ranked[keys], keys)


def statistics(
    context: EvaluationContext, score: np.ndarray, shown_only: bool = False
) -> dict[str, Statistic]:
    """The reported metrics of one ranking of the evaluated requests; ``shown_only``: every
    shown candidate ranked above every candidate never shown, in the score's order."""
    rows = context.rows
    if shown_only:
        score = np.where(rows.exposed, score, score - (np.ptp(score) + 1.0))
    every = model_statistics(rows, score, None, context.expected_clicks(score))
    return {k: every[k] for k in METRICS if k in every} | {
        "unexposed@10": unexposed_share(rows, score)
    }


def evaluated_runs(
    runs: list[Path], world: Path, split: str
) -> tuple[EvaluationContext, dict[Path, dict[str, np.ndarray]], dict[Path, str]]:
    """The evaluated requests of ``split`` on ``world`` (every candidate's grade known), each
    run's scores in their row order (``score``, ``grade_r``, ``click_at_grade_r``, as its
    ``prectr evaluate`` wrote them) and the checkpoint its evaluation scored. Refuses runs of
    another split, runs evaluated on another world, and runs that share a name."""
    data = saved_experiment(runs[0]).data
    log = read_log(world, columns=LOG_COLUMNS, validate_log=False)
    context = EvaluationContext.build(open_truth(log, world), data.valid_days, data.test_days,
                                      split)  # fmt: skip
    if context.rows.grade is None:
        raise ValueError(f"{world}: no candidate has a known grade to judge the runs against")
    if len({run.name for run in runs}) < len(runs):
        raise ValueError("two runs share a name; the records name runs by their directory's")
    scores, checkpoints = {}, {}
    for run in runs:
        days = saved_experiment(run).data
        if (days.valid_days, days.test_days) != (data.valid_days, data.test_days):
            raise ValueError(f"{run}: trained on another split than {runs[0]}")
        evaluation = run / split_file(EVALUATION, split)
        if not evaluation.is_file():
            raise FileNotFoundError(f"{evaluation}: none; run prectr evaluate {run} --world "
                                    f"{world} --split {split} first")  # fmt: skip
        evaluated = json.loads(evaluation.read_text())
        if Path(evaluated["log"]).resolve() != world.resolve():
            raise ValueError(f"{evaluation}: evaluated on {evaluated['log']}, not {world}")
        checkpoints[run] = evaluated["checkpoint"]
        path = run / split_file(SCORES, split)
        table = pq.read_table(path)
        columns = [c for c in table.column_names
                   if c == "score" or c.startswith(("grade_", "click_at_grade_"))]  # fmt: skip
        scores[run] = {c: context.aligned(table, str(path), c) for c in columns}
    return context, scores, checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="the first is the reference")
    parser.add_argument("--world", type=Path, required=True, help="the world every run scored")
    parser.add_argument("--split", choices=["valid", "test"], default="test")
    parser.add_argument(
        "--shown-only",
        action="store_true",
        help="reorder the shown candidates only (the never shown ranked last)",
    )
    parser.add_argument(
        "--relevance-weights",
        nargs="*",
        type=float,
        default=[],
        metavar="A",
        help="also rank by the click part (or its heads mixed otherwise: modal_head^A, "
        "prior_heads^A; or without the incentive: fused^A) times the run's own utility to the "
        "power A, and by the click part "
        "times the expected (grade / 3)^A given a click",
    )
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    weights = tuple(args.relevance_weights)
    if any(w < 0 for w in weights):
        parser.error(f"--relevance-weights {weights}: a weight below 0 would rank less relevant "
                     "candidates higher")  # fmt: skip
    context, scores, checkpoints = evaluated_runs(args.runs, args.world, args.split)
    rows = context.rows
    utilities = {run.name: u for run in args.runs if (u := utility(scores[run])) is not None}
    ranked: dict[tuple[str, str], dict[str, Statistic]] = {}
    unrecovered = {}
    for run in args.runs:
        others = {name: u for name, u in utilities.items() if name != run.name}
        by_rule, unrecovered[run.name] = rules(run, scores[run], rows.grade, others,
                                               checkpoints[run], weights)  # fmt: skip
        for rule, score in by_rule.items():
            ranked[run.name, rule] = statistics(context, score, args.shown_only)
        heads_written = f"click_at_grade_{GRADES - 1}" in scores[run]
        if weights and run.name in utilities and not heads_written:
            print(f"{run.name}: no per-grade click columns in its scores (evaluated before "
                  "prectr evaluate wrote them, or no heads): no given_click, modal_head or "
                  "prior_heads rules")  # fmt: skip
        if unrecovered[run.name]:
            print(f"{run.name}: {unrecovered[run.name]:,} rows' click part not recovered "
                  "(the product at its floor); ranked last by its click rules")  # fmt: skip
    reference = (args.runs[0].name, "served")
    n = rows.n_requests
    what = "the shown candidates reordered" if args.shown_only else "the pool reranked"
    print(f"{args.split} split, {n:,} requests, {what}, paired 95% CIs over "
          f"{args.resamples} resamples")  # fmt: skip
    results = []
    for (name, rule), stats in ranked.items():
        entry: dict = {"run": name, "rule": rule}
        same_rule = (reference[0], rule)
        if same_rule not in ranked:  # a variant RULE:x against the reference's RULE
            same_rule = (reference[0], rule.split(":")[0])
        for against in dict.fromkeys([reference, same_rule, (name, "served")]):
            if against == (name, rule) or against not in ranked:
                continue
            d = paired_bootstrap(ranked[against], stats, n, args.resamples)
            entry[f"minus {against[0]} {against[1]}"] = {k: d[k].summary() for k in d}
        entry["value"] = {k: s(np.ones((1, n)))[0].item() for k, s in stats.items()}
        results.append(entry)
        line = "  ".join(f"{k} {v:.4f}" for k, v in entry["value"].items())
        print(f"{name:28s} {rule:29s} {line}")
        for key, summaries in entry.items():
            if key.startswith("minus"):
                diff = "  ".join(f"{k} {s['diff']:+.4f} [{s['lo']:+.4f}, {s['hi']:+.4f}]"
                                 for k, s in summaries.items()
                                 if None not in (s["diff"], s["lo"], s["hi"]))  # fmt: skip
                print(f"    {key}: {diff}")
    shown = "_shown" if args.shown_only else ""
    out = args.out or ROOT / "results" / f"ranking_rule_{args.world.name}_{args.split}{shown}.json"
    record = {
        "command": " ".join([".venv/bin/python", "benchmarks/ranking_rule.py", *sys.argv[1:]]),
        "machine": machine(),
        "world": str(args.world), "split": args.split, "shown_only": args.shown_only,
        "requests": n,
        "resamples": args.resamples, "runs": [str(r) for r in args.runs],
        "unrecovered_click_rows": unrecovered, "results": results,
    }  # fmt: skip
    write_record(out, record)


if __name__ == "__main__":
    main()
