import torch

from prectr.modules.attention import MultiHeadTargetAttention, TargetAttention


def test_multi_head_target_attention_shapes_masking_and_empty_histories() -> None:
    torch.manual_seed(0)
    attention = MultiHeadTargetAttention(target_dim=6, entry_dim=8, out_dim=12, heads=3)
    target = torch.randn(3, 6)
    entries = torch.randn(3, 5, 8, requires_grad=True)
    mask = torch.tensor([[True] * 5, [False, False, True, True, True], [False] * 5])
    out = attention(target, entries, mask)
    assert out.shape == (3, 12)
    assert torch.equal(out[2], torch.zeros(12))  # an all-padding history: zero, not NaN
    out.sum().backward()
    assert torch.isfinite(entries.grad).all() and torch.equal(entries.grad[2], torch.zeros(5, 8))
    noise = torch.where(mask.unsqueeze(-1), 0.0, torch.randn(3, 5, 8))
    torch.testing.assert_close(attention(target, entries + noise, mask), out)


def test_one_valid_entry_takes_all_the_weight() -> None:
    torch.manual_seed(0)
    attention = MultiHeadTargetAttention(4, 4, 4, heads=2)
    entries = torch.randn(1, 3, 4)
    only_first = attention(torch.randn(1, 4), entries, torch.tensor([[True, False, False]]))
    expected = attention.out(attention.value(entries[:, 0]))
    torch.testing.assert_close(only_first, expected)


def test_a_history_shared_by_the_batch_attends_like_one_repeated_per_row() -> None:
    """The one-row paths (one request's candidates, as served) are the batched function."""
    torch.manual_seed(0)
    target = torch.randn(5, 8)
    entries = torch.randn(1, 6, 8)
    mask = torch.tensor([[False, False, True, True, False, True]])
    for attention in (TargetAttention(8, (12, 6)), MultiHeadTargetAttention(8, 8, 6, heads=2)):
        with torch.no_grad():
            for parameter in attention.parameters():
                parameter.normal_(0, 0.5)  # non-zero biases too
        shared = attention(target, entries, mask)
        repeated = attention(target, entries.expand(5, -1, -1), mask.expand(5, -1))
        assert shared.shape == (5, 8 if isinstance(attention, TargetAttention) else 6)
        torch.testing.assert_close(shared, repeated, atol=1e-6, rtol=1e-5)
        none = attention(target, entries, torch.zeros_like(mask))
        assert torch.equal(none, torch.zeros_like(none))  # an empty shared history: zero


def test_histories_read_once_per_request_attend_like_one_per_row() -> None:
    """With ``owner`` a history comes once per request (rows of a request consecutive, of
    uneven counts, one request without rows' history valid): outputs and gradients equal those
    of the history copied to every row."""
    torch.manual_seed(0)
    owner = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])
    target = torch.randn(10, 8)
    mask = torch.tensor([[True, False, True, True], [False] * 4, [True] * 4,
                         [False, True, False, False]])  # fmt: skip
    for attention in (TargetAttention(8, (12, 6)), MultiHeadTargetAttention(8, 8, 6, heads=2)):
        with torch.no_grad():
            for parameter in attention.parameters():
                parameter.normal_(0, 0.5)
        entries = torch.randn(4, 4, 8, requires_grad=True)
        once = attention(target, entries, mask, owner)
        (grad_once,) = torch.autograd.grad(once.square().sum(), entries)
        per_row = attention(target, entries[owner], mask[owner])
        (grad_per_row,) = torch.autograd.grad(per_row.square().sum(), entries)
        torch.testing.assert_close(once, per_row, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(grad_once, grad_per_row, atol=1e-6, rtol=1e-5)
        assert torch.equal(once[3], torch.zeros_like(once[3]))  # its request's history is empty


def test_target_attention_is_dins_activation_unit_summed_over_valid_entries() -> None:
    """Against DIN's definition, entry by entry: weight ``MLP([q, k, q - k, q * k])``, output
    the sum of weight * k over the valid entries. Histories given per row and per request
    (padding inside, a request with none valid); outputs and every gradient agree."""
    torch.manual_seed(0)
    attention = TargetAttention(4, (6, 3))
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.normal_(0, 0.5)  # non-zero biases too
    owner = torch.tensor([0, 0, 1, 2, 2, 2])
    query = torch.randn(6, 4, requires_grad=True)
    keys = torch.randn(3, 5, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True, True, False], [False] * 5, [True] * 5])

    def reference() -> torch.Tensor:
        rows = []
        for b, r in enumerate(owner.tolist()):
            q, k = query[b].expand(5, -1), keys[r]
            weight = attention.score(torch.cat([q, k, q - k, q * k], 1)).squeeze(1)
            rows.append((weight * mask[r]) @ k)
        return torch.stack(rows)

    inputs = [query, keys, *attention.parameters()]
    expected = reference()
    expected_grads = torch.autograd.grad(expected.square().sum(), inputs)
    for out in (attention(query, keys, mask, owner),
                attention(query, keys[owner], mask[owner])):  # fmt: skip
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
        for grad, want in zip(torch.autograd.grad(out.square().sum(), inputs), expected_grads,
                              strict=True):  # fmt: skip
            torch.testing.assert_close(grad, want, atol=1e-6, rtol=1e-5)
    assert torch.equal(out[2], torch.zeros(4))  # no valid entry: zero
