import copy

import pytest
import torch

from prectr.encoder import student as student_module
from prectr.encoder.settings import student_config
from prectr.encoder.student import Student, StudentConfig, load_student, save_student
from prectr.text.tokenizer import PAD, SEP, UNK
from tests.encoder.conftest import tiny_student


def ids(rows: list[list[int]], length: int) -> torch.Tensor:
    return torch.tensor([r + [PAD] * (length - len(r)) for r in rows])


def test_default_student_has_three_layers_and_about_two_million_parameters() -> None:
    for mode in ("cross", "two_tower"):
        student = Student(StudentConfig(mode=mode, query_length=12, title_length=32))
        assert len(student.encoder.layers) == 3
        assert 1.8e6 < sum(p.numel() for p in student.parameters()) < 2.2e6
    with pytest.raises(ValueError, match="query_length and title_length must be set"):
        Student(StudentConfig())  # the limits come from a tokenizer
    with pytest.raises(ValueError, match="mode"):
        StudentConfig(mode="bi")
    with pytest.raises(ValueError, match="multiple of heads"):
        StudentConfig(dim=30, heads=4)


@pytest.mark.parametrize("mode", ["cross", "two_tower"])
def test_each_distinct_input_is_encoded_once_and_results_match_row_by_row(mode) -> None:
    student = tiny_student(50, mode).eval()
    q = ids([[5, 6], [5, 6], [7], [5, 6]], 6)
    t = ids([[9, 10, 11], [12], [9, 10, 11], [9, 10, 11]], 16)
    calls = []
    encode = student.encode
    student.encode = lambda rows, segment: calls.append(rows.shape[0]) or encode(rows, segment)
    with torch.no_grad():
        together = student(q, t)
        alone = torch.cat([student(q[i : i + 1], t[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    # cross: 3 distinct pairs; two-tower: 2 distinct queries, then 2 distinct titles
    assert calls[:2] == ([2, 2] if mode == "two_tower" else [3, 1])
    assert together.shape == (4, 4)


@pytest.mark.parametrize("mode", ["cross", "two_tower"])
def test_packed_distinct_encoding_gives_the_padded_row_by_row_outputs_and_gradients(
    mode, monkeypatch
) -> None:
    """Eager training packs each distinct text's pieces without padding; with the shortcuts off
    (as when traced) every row runs padded with a mask. Same states, same gradients."""
    student = tiny_student(50, mode).train()
    q = ids([[5, 6], [5, 6], [7], [], [8, 9, 10, 11], [7]], 6)
    t = ids([[9, 10, 11], [12], [9, 10, 11], [13, 14], [12], [15, 16, 17, 18, 19, 20]], 16)
    weight = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        student.zero_grad(set_to_none=True)
        out = student(q, t)
        (out * weight).sum().backward()
        grads = {n: p.grad for n, p in student.named_parameters() if p.grad is not None}
        return out.detach(), grads

    packed, packed_grads = run()
    monkeypatch.setattr(student_module, "eager", lambda: False)
    padded, padded_grads = run()
    torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-5)
    assert packed_grads.keys() == padded_grads.keys()
    assert "encoder.layers.0.self_attn.in_proj_weight" in packed_grads
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, padded_grads[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize(("mode", "fixed"), [("two_tower", 1), ("two_tower", 2), ("cross", 1)])
def test_fixed_lower_layers_kept_per_text_give_the_full_encodings_states_and_gradients(
    mode, fixed
) -> None:
    """With the lowest layers fixed, each text's output of them is computed once and kept: the
    states and the gradients of what still trains are those of encoding every layer afresh with
    the same layers fixed, on the first pass (nothing kept), on a later one (everything kept,
    after an optimiser step of the upper layers) and with dropout in the upper layers."""
    kept, fresh = (tiny_student(50, mode, dropout=0.1, layers=2).train() for _ in range(2))
    kept.freeze_lower(fixed)
    for part in [fresh.pieces, fresh.positions, fresh.segments, *fresh.encoder.layers[:fixed]]:
        part.requires_grad_(False).eval()
    if fixed == len(fresh.encoder.layers):
        fresh.encoder.norm.requires_grad_(False)
    q = ids([[5, 6], [5, 6], [7], [], [8, 9, 10, 11], [7]], 6)
    t = ids([[9, 10, 11], [12], [9, 10, 11], [13, 14], [12], [15, 16, 17, 18, 19, 20]], 16)
    weight = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))

    def run(student: Student, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        student.zero_grad(set_to_none=True)
        torch.manual_seed(seed)  # the same dropout masks in the upper layers
        out = student(q, t)
        (out * weight).sum().backward()
        return out.detach(), {
            n: p.grad for n, p in student.named_parameters() if p.grad is not None
        }

    for seed in (0, 1):
        (a, a_grads), (b, b_grads) = run(kept, seed), run(fresh, seed)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        assert a_grads.keys() == b_grads.keys()
        assert not any(n.startswith(("pieces", "encoder.layers.0.")) for n in a_grads)
        assert "head.weight" in a_grads
        for name, grad in a_grads.items():
            torch.testing.assert_close(grad, b_grads[name], rtol=1e-4, atol=1e-5, msg=name)
        for student in (kept, fresh):  # the upper layers move; what is kept stays right
            with torch.no_grad():
                for p in student.parameters():
                    if p.grad is not None:
                        p -= 0.1 * p.grad
    assert len(kept._kept) == (8 if mode == "two_tower" else 6)  # distinct queries + titles


def test_kept_outputs_are_float32_dropped_on_load_and_the_layer_count_is_checked() -> None:
    student = tiny_student(50, "two_tower", layers=2).train()
    student.freeze_lower(1)
    q, t = ids([[5, 6], [7]], 6), ids([[9, 10, 11], [12]], 16)
    with torch.autocast("cpu", torch.bfloat16):
        student(q, t)
    assert {s.dtype for s in student._kept.values()} == {torch.float32}
    student(ids([[12]], 16), ids([[12]], 16))  # a title met before, now also as a query
    assert len(student._kept) == 5
    with torch.no_grad():  # scoring reads what training kept and adds nothing
        student.eval()(q, ids([[13], [9, 10, 11]], 16))
        assert len(student._kept) == 5
        torch.testing.assert_close(student(q, t), student.train()(q, t))  # no dropout here
    student.train().double()  # moved: what was kept is stale
    assert student._kept == {}
    student.float()
    student.load_state_dict(tiny_student(50, "two_tower", layers=2).state_dict())
    assert student._kept == {} and student.frozen_layers == 1
    assert not student.encoder.layers[0].training and student.encoder.layers[1].training
    with pytest.raises(ValueError, match="has 2 layers; cannot fix 3"):
        student.freeze_lower(3)


@pytest.mark.parametrize("fixed", [1, 2])  # 2: every layer fixed, pooled states kept
def test_kept_outputs_are_bounded_the_least_recently_met_dropped_first(monkeypatch, fixed) -> None:
    """Beyond ``KEPT_TEXTS`` texts the least recently met are dropped and computed again when
    met again: the same states as a student that keeps everything; scoring reorders nothing."""
    bounded, unbounded = (tiny_student(50, "two_tower", layers=2).train() for _ in range(2))
    unbounded.load_state_dict(bounded.state_dict())
    for student in (bounded, unbounded):
        student.freeze_lower(fixed)
    monkeypatch.setattr(student_module, "KEPT_TEXTS", 3)
    passes = [
        (ids([[5, 6]], 6), ids([[9, 10, 11]], 16)),  # query A, title B: kept A, B
        (ids([[7]], 6), ids([[9, 10, 11]], 16)),  # C, then B met again: A, C, B
        (ids([[8]], 6), ids([[13]], 16)),  # D, E: A, then C, the least recently met, dropped
    ]
    for q, t in passes:
        with torch.no_grad():
            bounded_out = bounded(q, t)
            bounded.eval()(ids([[5, 6]], 6), ids([[12]], 16))  # scoring reorders, keeps nothing
            bounded.train()
        monkeypatch.setattr(student_module, "KEPT_TEXTS", 10**6)
        with torch.no_grad():
            torch.testing.assert_close(bounded_out, unbounded(q, t))
        monkeypatch.setattr(student_module, "KEPT_TEXTS", 3)
        assert len(bounded._kept) <= 3
    assert len(unbounded._kept) == 5
    key = student_module._keys  # a text's key: its pieces and segments
    b, e = (key(ids([t], 16), torch.ones(1, 16, dtype=torch.long))[0] for t in ([9, 10, 11], [13]))
    d = key(ids([[8]], 6), torch.zeros(1, 6, dtype=torch.long))[0]
    assert list(bounded._kept) == [b, d, e]


@pytest.mark.parametrize("mode", ["two_tower", "cross"])
def test_reused_states_serve_their_passes_without_gradient_then_are_encoded_afresh(mode) -> None:
    student = tiny_student(50, mode).train()
    student.reuse_states(3)
    q, t = ids([[5, 6], [7]], 6), ids([[9, 10, 11], [12]], 16)
    student(q, t)  # pass 1: every text encoded and held
    old = copy.deepcopy(student).eval()
    with torch.no_grad():
        for p in student.parameters():
            p += 0.05 * torch.randn_like(p)  # the weights move between passes
    now = copy.deepcopy(student).eval()

    # pass 2: the texts met in pass 1 read their pass-1 states, a new title (13) is encoded
    # with today's weights, and only it passes gradient into the student
    q2, t2 = q, ids([[9, 10, 11], [13]], 16)
    out = student.pair_state(q2, t2)
    with torch.no_grad():
        if mode == "two_tower":
            titles = torch.cat([old.title_states(t2[:1]), now.title_states(t2[1:])])
            overlap = student_module.piece_overlap(q2, t2, 50)
            expected = now.pair_from_states(old.query_states(q2), titles, overlap)
        else:
            expected = torch.cat([old.pair_state(q2[:1], t2[:1]), now.pair_state(q2[1:], t2[1:])])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    touched = set(student.pieces.weight.grad.abs().sum(1).nonzero().flatten().tolist())
    assert touched == ({13} if mode == "two_tower" else {7, SEP, 13})

    student.zero_grad(set_to_none=True)
    student(q, t).sum().backward()  # pass 3: every text held, so only the head learns
    assert student.pieces.weight.grad is None and student.head.weight.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(student(q, t), now(q, t))  # pass 4: expired, afresh
        for _ in range(2):  # passes 5 and 6 (20, 21 held): pass 2's title 13 is dropped
            student(ids([[20]], 6), ids([[21]], 16))
        born = sorted(born for born, _ in student._reused.values())
        assert born == ([4] * 4 + [5] * 2 if mode == "two_tower" else [4, 4, 5])
        torch.testing.assert_close(student.eval()(q, t2), now(q, t2))  # scoring: afresh
        assert student._passes == 6  # and is no training pass
    student.train().load_state_dict(old.state_dict())
    assert student._reused == {} and student.reuse_steps == 3
    with pytest.raises(ValueError, match="0 or more"):
        student.reuse_states(-1)


def test_reused_states_expire_on_time_follow_the_students_dtype_and_go_when_it_moves() -> None:
    student = tiny_student(50, "two_tower").train()
    student.reuse_states(2)
    q = ids([[5]], 6)
    for title in (9, 10, 11, 12):  # passes 1-4, a new title each; dropped at passes 2 and 4
        student(q, ids([[title]], 16))
    born = sorted(born for born, _ in student._reused.values())
    assert born == [3, 3, 4]  # the query (afresh at 3), titles 11 and 12; 9 and 10 dropped
    with torch.autocast("cpu", torch.bfloat16):  # held and afresh side by side, in float32
        out = student.pair_state(ids([[5], [5]], 6), ids([[12], [13]], 16))
    assert torch.isfinite(out).all()
    assert {state.dtype for _, state in student._reused.values()} == {torch.float32}
    student.double()  # moved: what is held is stale, and new states are float64
    assert student._reused == {}
    for _ in range(2):  # afresh, then every text held: both in the student's dtype
        assert student.pair_state(q, ids([[9]], 16)).dtype == torch.float64


@pytest.mark.parametrize("mode", ["cross", "two_tower"])
def test_scoring_remembers_each_texts_state_until_the_weights_change(mode, monkeypatch) -> None:
    student = tiny_student(50, mode).eval()
    encoded = []
    packed = student._encode_packed

    def counted(rows: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        encoded.append(len(rows))
        return packed(rows, *rest)

    monkeypatch.setattr(student, "_encode_packed", counted)
    q, t = ids([[5, 6], [7]], 6), ids([[9, 10, 11], [12]], 16)
    with torch.enable_grad():  # a pass that may need gradient encodes afresh, remembers nothing
        direct = student(q, t)
    assert sum(encoded) == (4 if mode == "two_tower" else 2)
    with torch.no_grad():
        encoded.clear()
        torch.testing.assert_close(student(q, t), direct)
        assert sum(encoded) == (4 if mode == "two_tower" else 2)  # every text met once
        encoded.clear()
        torch.testing.assert_close(student(q, t), direct, rtol=0, atol=0)  # remembered
        assert student(q, ids([[9, 10, 11], [13]], 16)).shape == (2, 4)
        assert sum(encoded) == 1  # the new title (two-tower) or the new pair (cross) alone
    student(q, t).sum().backward()  # (grad enabled) the weights move in place
    torch.optim.SGD(student.parameters(), lr=1.0).step()
    with torch.enable_grad():
        moved = student(q, t).detach()
    with torch.no_grad():
        torch.testing.assert_close(student(q, t), moved)  # not the states of the old weights
    assert not torch.allclose(moved, direct)
    assert len(student._scored) > 0
    student.train()  # training: what scoring remembered goes
    assert student._scored is None
    monkeypatch.setattr(student_module, "SCORED_TEXTS", 3)
    student.eval()
    titles = [[9, 10, 11], [13], [14, 15], [16], [13], [9, 10, 11], [17], [18]]
    for start in range(0, len(titles) - 1):  # overlapping pairs: slots are evicted and reused
        q2, t2 = ids([[5, 6], [7]], 6), ids(titles[start : start + 2], 16)
        with torch.enable_grad():
            expected = student(q2, t2).detach()
        with torch.no_grad():
            torch.testing.assert_close(student(q2, t2), expected)
        assert len(student._scored) <= 3 and student._scored.capacity == 3


def test_distinct_rows_are_exact_whatever_one_integer_a_row_gives(monkeypatch) -> None:
    generator = torch.Generator().manual_seed(0)
    texts = torch.randint(0, 50, (40, 5), generator=generator)
    ids = texts[torch.randint(0, 40, (500,), generator=generator)]

    def check(ids: torch.Tensor) -> None:
        distinct, inverse = student_module._distinct_rows(ids)
        assert torch.equal(distinct[inverse], ids)
        assert torch.equal(torch.unique(distinct, dim=0), torch.unique(ids, dim=0))
        assert len(distinct) == len(torch.unique(ids, dim=0))  # no row twice

    check(ids)
    check(ids + 2**55)  # pieces too large for a combination that cannot overflow
    check(ids[:0])  # no rows
    # every row one integer: the rows it gathers differ, so whole rows are compared
    monkeypatch.setattr(
        student_module, "_row_weights", lambda width, *_: torch.zeros(width, dtype=torch.long)
    )
    check(ids)


def test_trailing_padding_and_piece_order_matter_as_they_should() -> None:
    student = tiny_student(50).eval()
    with torch.no_grad():
        a = student(ids([[5, 6]], 6), ids([[9, 10]], 16))
        padded = student(ids([[5, 6]], 9), ids([[9, 10]], 20))  # wider padding
        swapped = student(ids([[9, 10]], 6), ids([[5, 6]], 16))
    torch.testing.assert_close(a, padded)
    assert not torch.allclose(a, swapped)  # query and title are told apart (segments)


def test_two_tower_scores_from_cached_title_states_equal_direct_scores() -> None:
    student = tiny_student(50, "two_tower").eval()
    q, t = ids([[5], [6, 7]], 6), ids([[9, 10], [11]], 16)
    with torch.no_grad():
        cached = student.title_states(t)
        query = student.query_states(q)
        overlap = student_module.piece_overlap(q, t, 50)  # the default reads it
        from_cache = student.head(student.pair_from_states(query, cached, overlap))
        torch.testing.assert_close(from_cache, student(q, t))
    with pytest.raises(ValueError, match="two_tower"):
        tiny_student(50, "cross").title_states(t)
    with pytest.raises(ValueError, match="two_tower"):
        tiny_student(50, "cross").query_states(q)


def test_an_empty_text_gives_finite_scores() -> None:
    student = tiny_student(50).eval()
    with torch.no_grad():
        out = student(ids([[]], 6), ids([[]], 16))
    assert torch.isfinite(out).all()


def test_saved_student_reloads_identically_and_a_mismatched_tokenizer_is_refused(
    tmp_path, tokenizer
) -> None:
    student = tiny_student(tokenizer.vocab_size, "two_tower").eval()
    save_student(tmp_path / "s", student, tokenizer, {"kind": "sft"})
    again, tok = load_student(tmp_path / "s")
    q = torch.from_numpy(tokenizer.encode(["oak table"], 6))
    t = torch.from_numpy(tokenizer.encode(["round oak dining table"], 16))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(q, t), student(q, t))
    assert tok.vocab_size == tokenizer.vocab_size and again.config.mode == "two_tower"
    with pytest.raises(ValueError, match="pieces"):
        save_student(tmp_path / "bad", tiny_student(tokenizer.vocab_size + 1), tokenizer)
    with pytest.raises(FileNotFoundError, match=r"student\.pt"):
        load_student(tmp_path / "nothing")


def test_piece_overlap_counts_shared_pieces_and_piece_pairs_each_way() -> None:
    queries = ids([[5, 6, 7], [9]], 4)
    titles = ids([[6, 7, 8], [1, 2, 3, 4]], 5)
    expected = torch.tensor([[2 / 3, 2 / 3, 1 / 2, 1 / 2], [0.0, 0.0, 0.0, 0.0]])
    lengths = torch.log1p(torch.tensor([[3.0, 3.0], [1.0, 4.0]]))
    got = student_module.piece_overlap(queries, titles, 10)
    torch.testing.assert_close(got, torch.cat([expected, lengths], 1))
    # padding is no piece: a title of padding alone shares nothing, however wide
    empty = student_module.piece_overlap(ids([[PAD]], 3), ids([[]], 4), 10)
    torch.testing.assert_close(empty, torch.zeros(1, 6))
    # one piece wide (int32, as ranker features come) works; unknown pieces match nothing
    one = student_module.piece_overlap(ids([[5]], 1).int(), ids([[5, UNK]], 2).int(), 10)
    torch.testing.assert_close(one[:, :4], torch.tensor([[1.0, 1.0, 0.0, 0.0]]))


def test_a_piece_overlap_student_reads_the_match_traces_saves_and_is_two_tower_only(
    tmp_path, tokenizer
) -> None:
    student = tiny_student(tokenizer.vocab_size, "two_tower", piece_overlap=True).eval()
    q = torch.from_numpy(tokenizer.encode(["oak table", "oak table"], 6))
    t = torch.from_numpy(tokenizer.encode(["oak table", "blue lamp"], 16))
    with torch.no_grad():
        out = student(q, t)
        query, title = student.query_states(q), student.title_states(t)
        plain = student.head(student.pair_from_states(query, title, torch.zeros(2, 6)))
        traced = torch.jit.trace(student, (q, t), check_trace=False)
    assert not torch.allclose(out, plain)  # the overlap columns reach the scores
    with torch.no_grad():  # the graph computes the overlap of inputs it was not traced on
        torch.testing.assert_close(traced(q, t.flip(0)), student(q, t.flip(0)))
    with pytest.raises(ValueError, match="pass overlap"):
        student.pair_from_states(query, title)
    save_student(tmp_path / "s", student, tokenizer)
    again, _ = load_student(tmp_path / "s")
    assert again.config.piece_overlap
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(q, t), out)
    with pytest.raises(ValueError, match="two_tower option"):
        StudentConfig(mode="cross", piece_overlap=True)


def test_piece_overlap_is_on_by_default_for_two_towers_only_and_older_students_load_without_it(
    tmp_path, tokenizer
) -> None:
    assert StudentConfig().piece_overlap and StudentConfig(mode="two_tower").piece_overlap
    cross = StudentConfig(mode="cross")
    assert not cross.piece_overlap  # the default, not a refusal
    assert StudentConfig(**cross.model_dump()) == cross  # saved and read back: still cross
    assert not StudentConfig(piece_overlap=False).piece_overlap
    from prectr.cli import build_parser  # the command line leaves the default to the config

    for flags, want in (([], None), (["--piece-overlap"], True), (["--no-piece-overlap"], False)):
        args = build_parser().parse_args(["encoder", "sft", "LOG", "--out", "OUT", *flags])
        assert args.piece_overlap is want
        config = student_config(args.piece_overlap, mode="cross") if want is not True else None
        assert config is None or not config.piece_overlap
    assert (
        student_config(None).piece_overlap
        and "piece_overlap" not in student_config(None).model_fields_set
    )
    student = tiny_student(tokenizer.vocab_size, "two_tower", piece_overlap=False).eval()
    save_student(tmp_path / "s", student, tokenizer)
    saved = torch.load(tmp_path / "s" / "student.pt", weights_only=False)
    del saved["config"]["piece_overlap"]  # as a student saved before the option existed
    torch.save(saved, tmp_path / "s" / "student.pt")
    again, _ = load_student(tmp_path / "s")
    assert not again.config.piece_overlap
    q = torch.from_numpy(tokenizer.encode(["oak table"], 6))
    t = torch.from_numpy(tokenizer.encode(["blue lamp"], 16))
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(q, t), student(q, t))


def test_overlap_skip_starts_as_the_plain_student_adds_a_linear_path_and_saves(
    tmp_path, tokenizer
) -> None:
    plain = tiny_student(tokenizer.vocab_size, "two_tower", piece_overlap=True,
                          overlap_skip=False).eval()  # fmt: skip
    skip = tiny_student(tokenizer.vocab_size, "two_tower", piece_overlap=True,
                        overlap_skip=True).eval()  # fmt: skip
    q = torch.from_numpy(tokenizer.encode(["oak table", "oak table"], 6))
    t = torch.from_numpy(tokenizer.encode(["oak table", "blue lamp"], 16))
    with torch.no_grad():  # the same seed, the path at zero: the plain student's scores
        torch.testing.assert_close(skip(q, t), plain(q, t))
    skip.train()
    skip(q, t).logsumexp(1).sum().backward()
    assert skip.overlap_skip.weight.grad.abs().sum() > 0  # it trains from zero
    weight = torch.randn_like(skip.overlap_skip.weight)
    with torch.no_grad():
        skip.overlap_skip.weight.copy_(weight)
        skip.eval()
        query, title = skip.query_states(q), skip.title_states(t)
        overlap = student_module.piece_overlap(q, t, tokenizer.vocab_size)
        deep = plain.head(plain.pair_from_states(query, title, overlap))
        # the logits are the plain student's plus the head's map of a linear map of the overlap
        torch.testing.assert_close(skip(q, t), deep + overlap @ weight.T @ skip.head.weight.T)
    save_student(tmp_path / "s", skip, tokenizer)
    again, _ = load_student(tmp_path / "s")
    assert again.config.overlap_skip
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(q, t), skip(q, t))
    with pytest.raises(ValueError, match="piece_overlap is off"):
        StudentConfig(piece_overlap=False, overlap_skip=True)
    from prectr.cli import build_parser

    for flags, want in (([], None), (["--overlap-skip"], True), (["--no-overlap-skip"], False)):
        args = build_parser().parse_args(["encoder", "sft", "LOG", "--out", "OUT", *flags])
        assert args.overlap_skip is want
    assert student_config(None, None).overlap_skip  # left to the default: on (two towers)
    assert "overlap_skip" not in student_config(None, None).model_fields_set
    assert not student_config(None, None, mode="cross").overlap_skip  # no overlap to map
    # building the path draws nothing from the random stream: what follows is drawn alike
    draws = []
    for skip in (False, True):
        tiny_student(tokenizer.vocab_size, "two_tower", piece_overlap=True, overlap_skip=skip)
        draws.append(torch.rand(3))
    torch.testing.assert_close(*draws)
    saved = torch.load(tmp_path / "s" / "student.pt", weights_only=False)
    del saved["config"]["overlap_skip"]  # as a student saved before the option existed
    del saved["state"]["overlap_skip.weight"]
    torch.save(saved, tmp_path / "s" / "student.pt")
    assert not load_student(tmp_path / "s")[0].config.overlap_skip
