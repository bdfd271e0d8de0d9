"""Headroom: what a perfect model could gain from each mechanism, read off a world's truth.

No model is trained. Each "oracle" ranks the test days' candidates by the world's own attraction
(click probability once examined) computed with more or less of the truth, and the world replays
the ranking (closed-form expected clicks per request). Gaps between oracles bound what a
mechanism can add:

* **click ranking**: the full oracle against the logging ranker, on every test request.
* **cross-user mining** (cold and low-activity users): an oracle that knows each request's true
  tolerance, one that knows only the crowd's tolerance under the query (the query's part that
  day plus the mean user part of the *other* requests of that query), and one that knows none
  (the population mean). crowd - none is the ceiling of what mining the crowd under a query can
  add; true - crowd is what only the user's own history can. A fourth, ``query``, knows what a
  model could learn of each query on the training days without mining: the mean of its query
  part over its training-day requests, taken to what it predicts of the test days' part (the
  least-squares line through the seen queries' test requests: a part that drifts regresses
  towards the mean), or for a query they never saw the mean part of the queries that were new
  on a training day (after the first), on the day each was new, plus the same mean user part.
  crowd - query (``mining_gain``) is the ceiling of what mining adds over a model with a query
  embedding: today's drift of the query's intent and the queries the
  training days never saw. All four know the item's grade, the user's taste and the item's
  popularity. Slices: by user activity (``cold``, ``low``) and the requests whose query no
  training day issued (``unseen_query``; there the query oracle is one constant for every new
  query, a weak baseline, so that slice's mining gains overstate what mining could add).
* **what a crowd window can tell**: the crowd oracle knows the query's part exactly, but mining
  reads a window of the log, the last ``crowd_length`` exposed impressions under the query
  within ``crowd_days`` days (the features' defaults), a handful of clicks. The ``window``
  oracle estimates the query's part from exactly those impressions: the posterior mean, on a
  grid, of a normal prior centred where the ``query`` oracle stands (its spread the test
  requests' own, an oracle's knowledge, apart for seen and unseen queries) times each
  impression's click likelihood under the world's click model, everything but the query's
  part known (the user's part, the grade, the preference, the examination of its position;
  the position-based model's likelihood, an approximation under a cascade), an older
  impression's tempered by the part's correlation over its age. ``window_gain`` (window -
  query) is what decoding a window of that size adds over a query embedding: a reference
  scale rather than a strict bound, since a posterior mean plugged in is not the ranking that
  maximises AUC under uncertainty, and the tempering approximates the drift.

  The mining oracles also score the test days' exposed impressions, each its attraction times
  the examination of the position it was shown at (the click probability under the
  position-based model; under a cascade model an approximation), and ``auc`` holds each one's
  AUC against the logged clicks: ``mining_auc_gain`` (crowd - query) and ``window_auc_gain``
  (window - query) bound the AUC that mining can add over a query embedding, the figure the
  V2 - V1 target reads.
* **exposure bias** (the kept broad-set sample): the full oracle against a relevance-blind one
  that ranks by taste and popularity alone: a model fit only to logged impressions, which are
  mostly relevant, learns little about rejecting the irrelevant bulk of retrieval. Reported as
  irrelevant@10 and expected clicks of each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from prectr.data.history import COLD_START_MAX_EARLIER, HistoryIndex, earlier_requests
from prectr.data.simulate import World
from prectr.data.simulate.clicks import relevance_attraction
from prectr.data.simulate.config import WorldConfig
from prectr.data.specs import FeatureConfig
from prectr.evaluation.slices import ACTIVITY_MAX_EARLIER
from prectr.metrics import irrelevant_share_at_k
from prectr.metrics.click import auc

LOW_ACTIVITY_MAX_EARLIER = ACTIVITY_MAX_EARLIER[1]  # low: 3..9 earlier requests (cold: <= 2)
CROWD_LENGTH = FeatureConfig.model_fields["crowd_length"].default
CROWD_DAYS = FeatureConfig.model_fields["crowd_days"].default
# the query's part a window's posterior is taken on, in prior standard deviations
PRIOR_GRID = np.linspace(-6.0, 6.0, 121)
WINDOW_CELLS = 2**22  # grid cells (impressions x grid points) of a chunk of requests
TOP_K = 10
BOOTSTRAP_RESAMPLES = 1000


class _Truth:
    """The latent state of a world that attraction is computed from."""

    def __init__(self, world: World):
        truth = world.root / "truth"
        self.world = world
        self.requests = pq.read_table(truth / "requests.parquet")
        self.users = pq.read_table(truth / "users.parquet", columns=["user_tolerance"])
        user = world.requests()["user_id"].to_numpy()  # indexed by request id
        self.user = user
        self.tolerance = self.requests["tolerance"].to_numpy()
        self.earlier = earlier_requests(user)
        # The crowd under a query: its query part that day, plus the mean user part of the
        # *other* requests of that query (the population's mean where there are none).
        user_part = self.users["user_tolerance"].to_numpy()[user]
        _, query = np.unique(self.requests["query_index"].to_numpy(), return_inverse=True)
        total = np.bincount(query, weights=user_part)[query] - user_part
        others = np.bincount(query)[query] - 1
        crowd_user_part = np.where(others > 0, total / np.maximum(others, 1), user_part.mean())
        query_part = self.requests["query_tolerance"].to_numpy()
        self.crowd_tolerance = np.clip(query_part + crowd_user_part, -1.0, 1.0)
        # What the training days teach of each query: its query part's mean over them.
        day = self.requests["day"].to_numpy()
        trained = np.isin(day, world.split["train"])
        seen = np.bincount(query, weights=trained.astype(float))
        learnt = np.bincount(query, weights=np.where(trained, query_part, 0.0))
        # a query training never saw is judged by the queries it saw for the first time: their
        # parts on the day each was new (new queries are tail ones, unlike the requests' mean)
        first_day = np.full(query.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(first_day, query, day)
        born = trained & (day == first_day[query]) & (day > min(world.split["train"]))
        new_query_part = query_part[born].mean() if born.any() else query_part[trained].mean()
        learnt = np.where(seen > 0, learnt / np.maximum(seen, 1), new_query_part)
        self.query_seen = seen[query] > 0
        learnt = learnt[query]
        # A drifting part has moved since: what the training mean predicts of it is the least
        # squares line through the test days' (mean, part) pairs of seen queries.
        tested = np.isin(day, world.split["test"]) & self.query_seen
        if tested.sum() > 1 and np.ptp(learnt[tested]) > 0:
            slope, intercept = np.polyfit(learnt[tested], query_part[tested], 1)
            learnt = np.where(self.query_seen, intercept + slope * learnt, learnt)
        self.query_tolerance = np.clip(learnt + crowd_user_part, -1.0, 1.0)
        self.query_part, self.user_part = query_part, user_part
        self.learnt_query_part, self.crowd_user_part = learnt, crowd_user_part
        self.mean_tolerance = np.full_like(self.tolerance, self.tolerance.mean())

    def preference(self, request: np.ndarray, item: np.ndarray) -> np.ndarray:
        """The non-relevance part of attraction, in (0, 1): taste and popularity."""
        return 1.0 / (1.0 + np.exp(-self.world.preference_logit(self.user[request], item)))

    def attraction(self, candidates: pa.Table, tolerance: np.ndarray) -> np.ndarray:
        request = candidates["request_id"].to_numpy()
        item = candidates["item_id"].to_numpy()
        grade = candidates["true_relevance"].to_numpy()
        strength = self.world.config.tolerance_strength
        return relevance_attraction(grade, tolerance[request], strength) * self.preference(
            request, item
        )


def window_tolerance(
    world: World, truth: _Truth, test: np.ndarray, crowd_length: int, crowd_days: float | None
) -> np.ndarray:
    """Each request's tolerance as its crowd window tells it (the ``window`` oracle): indexed
    by request id, the test requests' filled in, the others the ``query`` oracle's. An
    impression ``k`` days older than the request counts with the weight of the query part's
    correlation over ``k`` days (:func:`query_part_correlation`): the window's older clicks
    tell less of today's intent."""
    requests = world.requests()
    log = world.impressions(None, ["request_id", "item_id", "position", "click", "true_relevance"])
    log = log.filter(log["position"].is_valid())  # mining reads exposed impressions only
    index = HistoryIndex.of_log(requests, log)
    asked = requests.take(pa.array(test))
    window = index.histories(asked, crowd_length=crowd_length, crowd_days=crowd_days).query_crowd
    entry_request = log["request_id"].to_numpy()
    entry_item = log["item_id"].to_numpy()
    _, examination = _examination(world, log)
    grade = log["true_relevance"].to_numpy()
    click = log["click"].to_numpy()
    day = truth.requests["day"].to_numpy()
    # the prior's spread: how far the part strays from the query oracle's, apart for the queries
    # training saw (drift since) and those it did not (a new query's whole part)
    strays = truth.query_part[test] - truth.learnt_query_part[test]
    seen = truth.query_seen[test]
    spread = np.where(seen, _rms(strays[seen]), _rms(strays[~seen]))
    out = truth.query_tolerance.copy()
    cfg = world.config
    chunks = max(1, test.size * window.shape[1] * PRIOR_GRID.size // WINDOW_CELLS)
    for rows in np.array_split(np.arange(test.size), chunks):
        w = window[rows]  # (n, L) impression rows of the log, -1 where the window is short
        e = np.where(w >= 0, w, 0)
        request, item = entry_request[e], entry_item[e]
        prior = truth.learnt_query_part[test[rows]]
        grid = prior[:, None, None] + spread[rows, None, None] * PRIOR_GRID  # (n, 1, grid)
        t = np.clip(truth.user_part[request][..., None] + grid, -1.0, 1.0)  # (n, L, grid)
        p = relevance_attraction(grade[e][..., None], t, cfg.tolerance_strength)
        reach = examination[e] * truth.preference(request.ravel(), item.ravel()).reshape(e.shape)
        p = np.clip(p * reach[..., None], 1e-9, 1 - 1e-9)
        ll = np.where(click[e][..., None] == 1, np.log(p), np.log1p(-p))
        age = day[test[rows]][:, None] - day[request]
        weight = query_part_correlation(cfg, age) * (w >= 0)
        ll = (ll * weight[..., None]).sum(1) - 0.5 * PRIOR_GRID**2  # (n, grid)
        post = np.exp(ll - ll.max(1, keepdims=True))
        estimate = (post * grid[:, 0]).sum(1) / post.sum(1)
        # an empty window tells nothing, and nothing strays where the spread is 0: the prior
        told = (spread[rows] > 0) & (w >= 0).any(1)
        estimate = np.where(told, estimate, prior)
        out[test[rows]] = np.clip(estimate + truth.crowd_user_part[test[rows]], -1.0, 1.0)
    return out


def query_part_correlation(config: WorldConfig, days: np.ndarray) -> np.ndarray:
    """The correlation of a query's part with itself ``days`` apart: its breadth share never
    moves, its own share keeps ``sqrt(1 - tolerance_drift)`` a day
    (:func:`prectr.data.simulate.population.query_tolerance`)."""
    breadth = config.tolerance_breadth_weight
    return breadth + (1.0 - breadth) * np.sqrt(1.0 - config.tolerance_drift) ** np.abs(days)


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values**2))) if values.size else 0.0


def _expected_clicks(world: World, candidates: pa.Table, score: np.ndarray, where: str):
    scored = candidates.select(["request_id", "item_id"]).append_column("score", pa.array(score))
    per_request = world.replay(scored, candidates=where).per_request
    return per_request["request_id"].to_numpy(), per_request["expected_clicks"].to_numpy()


def _mean(values: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    return {
        name: float(v[rows].mean()) if rows.any() else float("nan") for name, v in values.items()
    }


def _gain(a: float, b: float) -> float:
    return a / b - 1.0 if b else float("nan")


def _gain_ci(a: np.ndarray, b: np.ndarray, seed: int = 0) -> list[float]:
    """95% CI of mean(a) / mean(b) - 1 by a paired percentile bootstrap over requests."""
    if a.size < 2:
        return [float("nan"), float("nan")]
    result = stats.bootstrap(
        (a, b), lambda x, y, axis: x.mean(axis) / y.mean(axis) - 1.0, paired=True,
        vectorized=True, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def headroom(
    world_dir: str | Path, crowd_length: int = CROWD_LENGTH, crowd_days: float | None = CROWD_DAYS
) -> dict:
    """Every oracle's expected clicks per test request, overall and by user activity, and the
    broad-set comparison; relative gains name what each mechanism could add at most. The
    ``window`` oracle reads crowd windows of ``crowd_length`` impressions over ``crowd_days``."""
    world = World(world_dir)
    truth = _Truth(world)
    test = world.requests(days=world.split["test"])["request_id"].combine_chunks()
    windowed = window_tolerance(world, truth, test.to_numpy(), crowd_length, crowd_days)
    pool = world.impressions(
        test, ["request_id", "item_id", "true_relevance", "logging_score", "position", "click"]
    )
    rankers = {
        "logging": pool["logging_score"].to_numpy(),
        "oracle": truth.attraction(pool, truth.tolerance),
        "crowd": truth.attraction(pool, truth.crowd_tolerance),
        "query": truth.attraction(pool, truth.query_tolerance),
        "window": truth.attraction(pool, windowed),
        "none": truth.attraction(pool, truth.mean_tolerance),
    }
    clicks = {}
    for name, score in rankers.items():
        request, clicks[name] = _expected_clicks(world, pool, score, "pool")
    exposed, click_probability = _exposed_click_probability(world, pool, rankers)
    exposed_request = pool["request_id"].to_numpy()[exposed]
    logged = pool["click"].to_numpy()[exposed]
    earlier = truth.earlier[request]
    slices = {
        "all": np.ones(request.size, dtype=bool),
        "cold": earlier <= COLD_START_MAX_EARLIER,
        "low": (earlier > COLD_START_MAX_EARLIER) & (earlier <= LOW_ACTIVITY_MAX_EARLIER),
        "cold_and_low": earlier <= LOW_ACTIVITY_MAX_EARLIER,
        "unseen_query": ~truth.query_seen[request],
    }
    by_slice = {}
    for name, rows in slices.items():
        mean = _mean(clicks, rows)
        shown = np.isin(exposed_request, request[rows])
        aucs = {k: auc(logged[shown], p[shown]) for k, p in click_probability.items()}
        by_slice[name] = {
            "requests": int(rows.sum()),
            "expected_clicks": mean,
            "click_ranking_gain": _gain(mean["oracle"], mean["logging"]),
            "crowd_gain": _gain(mean["crowd"], mean["none"]),
            "crowd_gain_ci": _gain_ci(clicks["crowd"][rows], clicks["none"][rows]),
            "personal_gain": _gain(mean["oracle"], mean["crowd"]),
            "mining_gain": _gain(mean["crowd"], mean["query"]),
            "mining_gain_ci": _gain_ci(clicks["crowd"][rows], clicks["query"][rows]),
            "auc": aucs,
            "crowd_auc_gain": aucs["crowd"] - aucs["none"],
            "mining_auc_gain": aucs["crowd"] - aucs["query"],
            "window_gain": _gain(mean["window"], mean["query"]),
            "window_auc_gain": aucs["window"] - aucs["query"],
        }
    return {
        "world": str(world_dir),
        "preset": world.meta.get("preset"),
        "seed": world.config.seed,
        "test_days": world.split["test"],
        "window": {"crowd_length": crowd_length, "crowd_days": crowd_days},
        "slices": by_slice,
        "broad": _broad(world, truth, test),
    }


def _exposed_click_probability(
    world: World, pool: pa.Table, attraction: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The exposed rows of ``pool`` and each oracle's click probability there: its attraction
    times the examination of the position shown (1-based)."""
    exposed, examination = _examination(world, pool)
    oracles = {k: v for k, v in attraction.items() if k != "logging"}
    return exposed, {k: v[exposed] * examination for k, v in oracles.items()}


def _examination(world: World, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of ``table`` were shown, and the examination of the position (1-based) each
    shown row was shown at."""
    exposed = table["position"].is_valid().to_numpy(zero_copy_only=False)
    shown = table["position"].filter(exposed).to_numpy().astype(np.int64)
    return exposed, world.click_model.examination(int(shown.max()))[shown - 1]


def _broad(world: World, truth: _Truth, test: pa.Array) -> dict | None:
    broad = world.broad(test)
    if broad.num_rows == 0:
        return None
    request = broad["request_id"].to_numpy()
    grade = broad["true_relevance"].to_numpy()
    rankers = {
        "oracle": truth.attraction(broad, truth.tolerance),
        "relevance_blind": truth.preference(request, broad["item_id"].to_numpy()),
    }
    out = {"requests": int(np.unique(request).size), "candidates_per_request": None}
    out["candidates_per_request"] = round(broad.num_rows / out["requests"], 1)
    for name, score in rankers.items():
        _, clicks = _expected_clicks(world, broad, score, "broad")
        out[name] = {
            "expected_clicks": float(clicks.mean()),
            "irrelevant@10": irrelevant_share_at_k(grade, score, request, k=TOP_K),
        }
    out["expected_clicks_gain"] = _gain(
        out["oracle"]["expected_clicks"], out["relevance_blind"]["expected_clicks"]
    )
    return out


def seed_spread(results: list[dict], slice_name: str = "cold_and_low") -> float:
    """Relative std over world seeds of the logging ranker's expected clicks on a slice: how
    much an expected-clicks figure moves from one seed to another."""
    values = np.array([r["slices"][slice_name]["expected_clicks"]["logging"] for r in results])
    return float(values.std(ddof=1) / values.mean()) if values.size > 1 else float("nan")
