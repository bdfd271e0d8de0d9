import torch

from prectr.modules.incentive import other_query_requests, relative_clicks


def test_relative_clicks_by_hand() -> None:
    """Match-level ids 2.. (0 = padding), click ids 2 (no click) and 3 (click). Crowd one: level
    0 clicked 2 of 3, level 2 clicked 0 of 1, mean 2/4: +1/6 and -1/2, level 1 not shown (0).
    Crowd two is empty: every level 0."""
    match = torch.tensor([[0, 2, 2, 2, 4], [0, 0, 0, 0, 0]])
    clicks = torch.tensor([[0, 3, 3, 2, 2], [0, 0, 0, 0, 0]])
    expected = torch.tensor([[2 / 3 - 0.5, 0.0, -0.5], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(relative_clicks(match, clicks, 3), expected)


def test_a_requests_partner_is_half_the_batch_away_in_query_order() -> None:
    """Queries 7, 5, 9, 5 sort as requests 1, 3, 0, 2; each takes the one two places on:
    1 -> 0, 3 -> 2, 0 -> 1, 2 -> 3, and no partner shares its query. With one query holding
    three of four requests, two of them are paired within it (the caller gives those none)."""
    assert other_query_requests(torch.tensor([7, 5, 9, 5])).tolist() == [1, 0, 3, 2]
    query = torch.tensor([5, 5, 5, 7])
    partner = other_query_requests(query)
    assert sorted(partner.tolist()) == [0, 1, 2, 3]
    assert (query[partner] == query).sum() == 2
    assert other_query_requests(torch.tensor([3])).tolist() == [0]
