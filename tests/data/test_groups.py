"""Feature groups: every declared feature has one group and a role no other feature has; a
module that reads a role the features lack is refused naming itself and the role; a config
that leaves a feature out says which setting would declare it."""

import pytest

from prectr.data import groups as g
from prectr.data.features import FeatureConfig, feature_specs, undeclared
from prectr.data.groups import GROUPS, MissingFeatures, Role, in_group, require

EVERYTHING = FeatureConfig(relevance_context=True, student="s", text_cache="c")


@pytest.mark.parametrize("has_query_category", [True, False])
def test_every_feature_has_a_group_and_a_role_of_its_own(has_query_category) -> None:
    specs = feature_specs(EVERYTHING, has_query_category)
    assert all(s.role.group in GROUPS for s in specs)
    assert len({s.role for s in specs}) == len(specs)
    assert {s.role.group for s in specs} == set(GROUPS)


def test_the_groups_hold_what_they_say() -> None:
    specs = feature_specs(EVERYTHING, has_query_category=True)
    levels = {group: {s.level for s in in_group(specs, group)} for group in GROUPS}
    assert levels["match"] == {"impression"}  # one value per (request, item) pair
    assert levels["user_history"] == levels["crowd_history"] == {"request"}
    assert levels["item"] == {"item"} and levels["user"] == {"request"}
    names = {group: [s.name for s in in_group(specs, group)] for group in GROUPS}
    assert names["crowd_history"] == ["crowd_items", "crowd_categories", "crowd_match",
                                      "crowd_clicks"]  # fmt: skip
    assert names["text"] == ["query_pieces", "title_pieces", "query_text", "title_text"]


def test_an_unknown_group_is_refused() -> None:
    with pytest.raises(ValueError, match="feature group 'context'"):
        Role("context", "position")


def test_require_gives_the_specs_in_the_order_asked_and_names_every_missing_role() -> None:
    specs = feature_specs(FeatureConfig(), has_query_category=False)
    found = require(specs, (g.TITLE_WORDS, g.ITEM), "Reader")
    assert [s.name for s in found] == ["title_tokens", "item_id"]
    message = "Reader reads features the encoded features lack: match.level, crowd_history.click"
    with pytest.raises(MissingFeatures, match=message):
        require(specs, (g.ITEM, g.MATCH_LEVEL, g.CROWD_CLICKS), "Reader")


def test_a_missing_feature_is_named_with_what_would_declare_it() -> None:
    plain = FeatureConfig()
    assert undeclared(plain, g.CROWD_CLICKS) == "crowd_clicks; set features.relevance_context"
    assert undeclared(plain, g.TITLE_PIECES) == "title_pieces; set features.student"
    assert undeclared(plain, g.QUERY_EMBEDDING) == "query_text; set features.text_cache"
    narrow = FeatureConfig(include=["user_id"])
    assert undeclared(narrow, g.ITEM) == "item_id; features.include leaves it out"
