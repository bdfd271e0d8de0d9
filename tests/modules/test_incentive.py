import torch

from prectr.modules.incentive import relative_clicks


def test_relative_clicks_by_hand() -> None:
    """Match-level ids 2.. (0 = padding), click ids 2 (no click) and 3 (click). Crowd one: level
    0 clicked 2 of 3, level 2 clicked 0 of 1, mean 2/4: +1/6 and -1/2, level 1 not shown (0).
    Crowd two is empty: every level 0."""
    match = torch.tensor([[0, 2, 2, 2, 4], [0, 0, 0, 0, 0]])
    clicks = torch.tensor([[0, 3, 3, 2, 2], [0, 0, 0, 0, 0]])
    expected = torch.tensor([[2 / 3 - 0.5, 0.0, -0.5], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(relative_clicks(match, clicks, 3), expected)
