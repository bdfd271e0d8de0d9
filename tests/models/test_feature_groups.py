"""Models read features by group and role, never by name: renamed features change nothing, and
a feature left out either leaves the model training or is refused when the config loads, naming
the module that reads it."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

import prectr
from prectr.config import experiment_from_dict
from prectr.data.features import EncodedLog, FeatureConfig, feature_specs
from prectr.data.groups import MissingFeatures
from prectr.models.registry import build_model, feature_roles, registered_models
from prectr.section import ConfigError
from tests.models.conftest import World, collate

NAMES = registered_models()


def renamed(encoded: EncodedLog) -> EncodedLog:
    """``encoded`` with every feature named by its position alone (``x0``, ``x1``, ...)."""
    new = {s.name: f"x{i}" for i, s in enumerate(encoded.specs)}
    return dataclasses.replace(
        encoded,
        specs=[dataclasses.replace(s, name=new[s.name]) for s in encoded.specs],
        item={new[k]: v for k, v in encoded.item.items() if k in new},
        request={new[k]: v for k, v in encoded.request.items() if k in new},
        impressions=encoded.impressions.rename_columns(
            [new.get(c, c) for c in encoded.impressions.column_names]
        ),
    )


@pytest.mark.parametrize("name", NAMES)
def test_renamed_features_leave_every_model_unchanged(world: World, name: str) -> None:
    other = renamed(world.encoded)
    assert not {s.name for s in other.specs} & {s.name for s in world.encoded.specs}
    outputs = []
    for encoded in (world.encoded, other):
        torch.manual_seed(0)
        model = build_model(name, encoded.specs, encoded.vocab_sizes).eval()
        with torch.no_grad():
            outputs.append(model(collate(encoded)))
    assert outputs[0].keys() == outputs[1].keys()
    for key, value in outputs[0].items():
        assert torch.equal(value, outputs[1][key]), key


def every_feature(world: World) -> list[str]:
    return [s.name for s in world.encoded.specs]


@pytest.mark.parametrize("name", NAMES)
def test_a_feature_left_out_trains_or_is_refused_when_the_config_loads(world, name) -> None:
    """For each feature: a config without it is refused, naming the module that reads it and
    the feature's role, exactly when the model cannot be built over the features left; else
    the model trains on them (three steps lower its loss on a batch)."""
    refused = set()
    for dropped in every_feature(world):
        kept = [s for s in world.encoded.specs if s.name != dropped]
        role = next(s.role for s in world.encoded.specs if s.name == dropped)
        include = [s.name for s in kept]
        values = {"model": name, "features": {"relevance_context": True, "include": include}}
        try:
            experiment_from_dict(values, "c.yaml")
        except ConfigError as err:
            refused.add(dropped)
            readers = [r for r, roles in feature_roles(name).items() if role in roles]
            assert readers, (dropped, str(err))
            message = f"features: model {name}: {readers[0]} reads "
            assert message in str(err) and f"{role} ({dropped}; features.include" in str(err)
            with pytest.raises(MissingFeatures, match=str(role)):
                build_model(name, kept, world.encoded.vocab_sizes)
            continue
        encoded = dataclasses.replace(world.encoded, specs=kept)
        assert_trains(name, encoded)
    read = {s.name for s in world.encoded.specs
            if any(s.role in roles for roles in feature_roles(name).values())}  # fmt: skip
    assert refused == read


def assert_trains(name: str, encoded: EncodedLog) -> None:
    torch.manual_seed(0)
    model = build_model(name, encoded.specs, encoded.vocab_sizes)
    batch = collate(encoded)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(4):
        loss = model.loss(batch, model(batch))["loss"]
        losses.append(loss.item())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses


def test_no_module_or_model_names_a_feature() -> None:
    """No string in the code of prectr/modules, prectr/models or prectr/losses (docstrings
    aside) is the name of a feature, whichever switches declare it: the student's and the
    cache's inputs, which the renaming above does not reach, included."""
    config = FeatureConfig(relevance_context=True, student="s", text_cache="c")
    features = {s.name for s in feature_specs(config, has_query_category=True)}
    root = Path(prectr.__file__).parent
    found = []
    for path in sorted(
        p for d in ("modules", "models", "losses") for p in (root / d).rglob("*.py")
    ):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr)}  # fmt: skip
        found += [f"{path.relative_to(root)}:{node.lineno}: {node.value!r}"
                  for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in features
                  and id(node) not in docstrings]  # fmt: skip
    assert not found, found
