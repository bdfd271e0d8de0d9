from pathlib import Path

import pytest

from prectr.data.simulate import load_config, simulate


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` preset, seed 0, generated once per test session."""
    out = tmp_path_factory.mktemp("worlds") / "tiny"
    simulate(load_config("tiny"), out)
    return out


def tiny_config(tiny_world: Path, data: dict | None = None, **train):
    """A small DNN experiment on the tiny world (``data``: overrides of the data section)."""
    from prectr.config import experiment_from_dict

    return experiment_from_dict(
        {
            "model": "dnn",
            "name": "tiny_dnn",
            "model_params": {"hidden": [32, 16]},
            "data": {"log": str(tiny_world), "batch_size": 256, **(data or {})},
            "train": {"epochs": 1, "log_every": 5, "checkpoint_every": 10, **train},
        }
    )


@pytest.fixture(scope="session")
def tiny_run(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DNN trained for one epoch on the tiny world."""
    from prectr.train.trainer import Trainer

    run = tmp_path_factory.mktemp("runs") / "dnn"
    Trainer(tiny_config(tiny_world), run).fit()
    return run


@pytest.fixture(scope="session")
def two_day_runs(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two DNNs (training seeds 0 and 1) tested on the tiny world's last two days."""
    from prectr.train.trainer import Trainer

    root = tmp_path_factory.mktemp("two_day_runs")
    runs = (root / "a", root / "b")
    for seed, run in enumerate(runs):
        Trainer(tiny_config(tiny_world, {"test_days": 2}, seed=seed), run).fit()
    return runs


BROAD_REQUESTS, BROAD_EXTRA = 12, 40


@pytest.fixture
def fake_broad(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broad-set sample faked from a world's truth, for worlds that keep none: for the first
    BROAD_REQUESTS asked-for requests (ascending id), their pool plus BROAD_EXTRA random other
    items graded by the simulator's ``true_grade``; ``World.replay(..., candidates="broad")``
    ranks it with the world's click model and attraction by grade alone."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from prectr.data.simulate import World
    from prectr.data.simulate.catalogue import true_grade
    from prectr.data.simulate.world import ReplayResult, WorldState

    attraction = np.array([0.10, 0.23, 0.49, 1.00])
    real_replay = World.replay

    def broad(self: World, request_ids: pa.Array | None = None) -> pa.Table:
        state = WorldState.build(self.config)
        requests = self.requests().sort_by("request_id")
        if request_ids is not None:
            requests = requests.filter(pc.is_in(requests["request_id"], request_ids))
        requests = requests.slice(0, BROAD_REQUESTS)
        ids = requests["request_id"].to_numpy()
        index = {text: i for i, text in enumerate(state.queries.text)}
        query = np.array([index[q] for q in requests["query"].to_pylist()])
        pool = self.impressions(pa.array(ids), ["request_id", "item_id", "true_relevance"])
        rng = np.random.default_rng(0)
        extra = rng.choice(state.catalogue.size, size=(ids.size, BROAD_EXTRA), replace=False)
        grade = true_grade(state.catalogue, state.queries, query[:, None], extra)
        sample = pa.table(
            {
                "request_id": np.repeat(ids, BROAD_EXTRA),
                "item_id": extra.ravel().astype(np.int64),
                "true_relevance": grade.ravel().astype(np.int8),
            }
        )
        sample = sample.join(pool.select(["request_id", "item_id"]), ["request_id", "item_id"],
                             join_type="left anti")  # fmt: skip
        return pa.concat_tables([pool.cast(sample.schema), sample])

    def replay(self: World, scores: pa.Table, seed: int = 0, candidates: str = "pool"):
        if candidates == "pool":
            return real_replay(self, scores, seed)
        sample = broad(self, pc.unique(scores["request_id"]))
        ranked = sample.join(scores, ["request_id", "item_id"]).sort_by(
            [("request_id", "ascending"), ("score", "descending")]
        )
        request = ranked["request_id"].to_numpy()
        ids, first = np.unique(request, return_index=True)
        k = self.config.exposed_k
        top = np.zeros((ids.size, k))
        for i, start in enumerate(first):
            grades = ranked["true_relevance"].to_numpy()[start : start + k]
            top[i, : grades.size] = attraction[grades]
        expected = self.click_model.expected_clicks(top).sum(axis=1)
        return ReplayResult(
            pa.table(
                {
                    "request_id": ids,
                    "expected_clicks": expected,
                    "clicks": np.zeros(ids.size, np.int64),
                }
            )
        )

    monkeypatch.setattr(World, "broad", broad, raising=False)
    monkeypatch.setattr(World, "replay", replay)
