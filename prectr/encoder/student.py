"""The student: a small transformer encoder judging (query, title) relevance in four grades.

Piece, position and segment embeddings feed ``layers`` pre-norm ``nn.TransformerEncoderLayer``
blocks; a masked mean over the non-padding pieces is the pooled state. Two modes:

* ``cross``: one sequence ``query [SEP] title``, so every piece of the query attends to every
  piece of the title; the pooled state is the pair's.
* ``two_tower``: query and title are encoded apart (segments 0 and 1) and an interaction layer
  reads ``[q, t, q * t, |q - t|]``; the title side depends on the item alone, so a server can
  precompute it (:meth:`Student.title_states`) and score a query against cached titles
  (:meth:`Student.pair_from_states`).

**The default is two-tower.** Fine-tuned alike on the `small` world's human grades (200 steps
of 256, the same tokenizer), the two-tower student scored 0.686 accuracy, 0.815 Spearman and
0.926 NDCG@10 on 300 held-out test-day pools against the cross-encoder's 0.480, 0.306 and 0.639:
its explicit ``q * t`` and ``|q - t|`` interaction learns matching much sooner than attention
across one sequence does. It is also the one whose item side a server can cache, its attention
spans one side at a time, and a batch's candidates share one encoding of their query
(``prectr encoder sft --mode cross`` and ``--mode two_tower``; figures in README, "Figures").

Within a call each distinct query, title (two-tower) or pair (cross) is encoded once and the
result gathered back, so a batch of a request's candidates encodes its query once; and the
pieces of the texts are packed end to end, without padding, the rows of one length attending
together (eager only; a traced or exported graph runs the padded rows with a mask). A linear head
turns the pair state into grade logits (0 irrelevant .. 3 exact). The student is saved as a
directory: ``student.pt`` (config and weights) and ``tokenizer.json``.

Scoring (eval mode, no gradient) remembers each text's state across calls while the weights
stay unchanged, so a log's items are encoded once however many requests show them
(:meth:`Student._encode_remembered`).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prectr.cache import SlotCache
from prectr.capture import eager
from prectr.encoder.settings import STUDENT_OPTIONS_BEFORE, StudentConfig
from prectr.io import atomic_file
from prectr.text.student_files import TOKENIZER, WEIGHTS, saved_student, student_tokenizer
from prectr.text.tokenizer import PAD, SEP, TextTokenizer

GRADES = 4
OVERLAP_FEATURES = 6  # piece_overlap's columns
SCORED_TEXTS = 100_000  # texts a scoring student remembers (about 1 KB each at dim 144)
KEPT_TEXTS = 200_000  # texts whose fixed layers' output training keeps (~5 KB for 8 pieces)


class Student(nn.Module):
    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config, c = config, config
        if c.query_length is None or c.title_length is None:
            raise ValueError("the student's query_length and title_length must be set (a "
                             "training run takes them from the tokenizer)")  # fmt: skip
        self.pieces = nn.Embedding(c.vocab_size, c.dim, padding_idx=PAD)
        self.positions = nn.Embedding(c.query_length + c.title_length + 1, c.dim)
        self.segments = nn.Embedding(2, c.dim)
        layer = nn.TransformerEncoderLayer(
            c.dim, c.heads, c.ff, c.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, c.layers, norm=nn.LayerNorm(c.dim), enable_nested_tensor=False
        )
        overlap = OVERLAP_FEATURES if c.piece_overlap else 0
        self.interaction = (
            nn.Sequential(nn.Linear(4 * c.dim + overlap, c.dim), nn.GELU())
            if c.mode == "two_tower"
            else None
        )
        self.head = nn.Linear(c.dim, GRADES)
        # zero, and built without drawing from the random stream: a seed gives the plain
        # student's weights and whatever is drawn after it, the option adding none
        self.overlap_skip = None
        if c.overlap_skip:
            self.overlap_skip = nn.utils.skip_init(nn.Linear, overlap, c.dim, bias=False)
            nn.init.zeros_(self.overlap_skip.weight)
        self.dim = c.dim
        self.frozen_layers = 0
        self._kept: OrderedDict[bytes, torch.Tensor] = OrderedDict()  # fixed part's output
        self.reuse_steps = 0
        self._passes = 0  # training passes so far (the clock of what is reused)
        self._reused: dict[bytes, tuple[int, torch.Tensor]] = {}  # pass, pooled state per text
        self._scored: SlotCache | None = None  # the states of the texts scored
        self._scored_weights: tuple[int, ...] = ()  # the weights' versions when scored

    def freeze_lower(self, layers: int) -> None:
        """Fix the piece, position and segment embeddings and the lowest ``layers`` transformer
        layers (all of them: the final norm too) and keep, for each distinct text an eager pass
        meets, their output, computed once in float32 without dropout. Since those weights never
        change, what is kept is exact: a pass then runs only the upper layers (or, with every
        layer fixed, reads each text's pooled state), and its states and the gradients of what
        still trains are those of the full encoding. ``0`` fixes nothing. What is kept grows
        with the distinct texts training passes meet, a few KB each (scoring reads it but
        adds nothing), up to ``KEPT_TEXTS`` texts: beyond, the least recently met are dropped
        (met by a training pass that encodes them, not one that reads them from
        :meth:`reuse_states`), and computed again when met again (the same output up to float
        rounding, which can depend on the other texts of the pass). It is dropped when weights
        are loaded or the student is moved."""
        if not 0 <= layers <= self.config.layers:
            raise ValueError(f"the student has {self.config.layers} layers; cannot fix "
                             f"{layers}")  # fmt: skip
        self.frozen_layers, self._kept = layers, OrderedDict()
        for part in self._fixed_parts():
            part.requires_grad_(False)
        self.train(self.training)

    def reuse_states(self, steps: int) -> None:
        """Let a text's pooled state, once encoded in a training pass, serve that pass and the
        ``steps - 1`` after it: those read it detached (no gradient reaches the student through
        them, the interaction and head still train on it), and only the texts not encoded
        within the last ``steps`` passes are encoded afresh, with gradient (SpeedyFeed's cache,
        Xiao et al., KDD 2022). Not exact: a reused state is up to ``steps - 1`` passes stale.
        Scoring (eval mode) always encodes afresh. What is held expires after ``steps`` passes
        and is dropped every ``steps`` passes (so at most the texts of the last ``2 steps - 1``
        passes are held), and when weights are loaded or the student is moved. It is neither
        checkpointed nor shared between processes: a resumed run starts it empty, so it does
        not end with the weights of a run that never stopped, and each process of a parallel
        run holds the texts its own rows met. ``0`` or ``1`` encodes every text every pass."""
        if steps < 0:
            raise ValueError(f"student_reuse_steps must be 0 or more, not {steps}")
        self.reuse_steps, self._passes, self._reused = steps, 0, {}

    def _fixed_parts(self) -> list[nn.Module]:
        if not self.frozen_layers:
            return []
        parts = [self.pieces, self.positions, self.segments]
        parts += list(self.encoder.layers[: self.frozen_layers])
        return parts + ([self.encoder.norm] if self._all_fixed() else [])

    def _all_fixed(self) -> bool:
        return self.frozen_layers == self.config.layers

    def train(self, mode: bool = True) -> Self:
        if mode:  # training changes the weights: what scoring remembered is stale
            self.forget_scored()
        super().train(mode)
        for part in self._fixed_parts():  # fixed parts keep their inference behaviour
            part.eval()
        return self

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._kept, self._reused = OrderedDict(), {}
        self.forget_scored()
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse: bool = True) -> Self:  # .to(), .double(): held states are stale
        self._kept, self._reused = OrderedDict(), {}
        self.forget_scored()
        return super()._apply(fn, recurse)

    def forget_scored(self) -> None:
        """Drop the states scoring remembers (:meth:`_encode_remembered`): the next scoring call
        encodes every text afresh (a pairs/s measurement from text calls it before each)."""
        self._scored = None

    def encode(self, ids: torch.Tensor, segment: torch.Tensor | int) -> torch.Tensor:
        """Pooled states ``(n, dim)`` of piece-id rows ``(n, L)`` (0 = padding anywhere): the
        mean over each row's pieces. Eager, the pieces are packed (:meth:`_encode_packed`);
        traced or exported, the padded rows run with a key-padding mask (shapes fixed by ``L``).
        Both give the same states up to rounding. A training pass with :meth:`reuse_states`
        reads the held states of the texts it met recently (:meth:`_encode_reusing`)."""
        mask = ids != PAD
        mask[:, 0] = True  # an empty text still attends to something (its padding piece)
        position = mask.cumsum(1) - 1
        segments = torch.as_tensor(segment, device=ids.device).expand_as(ids)
        if eager() and len(ids):
            if self.training and self.reuse_steps > 1:
                return self._encode_reusing(ids, position, segments, mask)
            if not self.training and not torch.is_grad_enabled():
                return self._encode_remembered(ids, position, segments, mask)
            return self._encode_packed(ids, position, segments, mask)
        x = self._embed(ids, position, segments)
        x = self.encoder(x, src_key_padding_mask=~mask)
        weight = mask.unsqueeze(-1).to(x.dtype)
        return (x * weight).sum(1) / weight.sum(1)

    def _embed(
        self, ids: torch.Tensor, position: torch.Tensor, segments: torch.Tensor
    ) -> torch.Tensor:
        return self.pieces(ids) + self.positions(position) + self.segments(segments)

    def _encode_packed(self, ids: torch.Tensor, position: torch.Tensor, segments: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """:meth:`encode` without padding: the rows sorted by length and their pieces laid end
        to end, so the linear layers read real pieces only and attention runs on each group of
        rows of one length, which needs no mask (:func:`_packed_layer`)."""
        lengths = mask.sum(1)
        order = torch.argsort(lengths, stable=True)
        ids, position, segments, mask = ids[order], position[order], segments[order], mask[order]
        if self.frozen_layers:
            kept = self._kept_outputs(ids, position, segments, mask)
            if self._all_fixed():
                return torch.stack(kept)[torch.argsort(order)]
            x = torch.cat(kept)
        else:
            x = self._embed(ids[mask], position[mask], segments[mask])
        groups = _groups(lengths[order])
        for layer in self.encoder.layers[self.frozen_layers :]:
            x = _packed_layer(layer, x, groups)
        return _pooled(self.encoder.norm(x), groups)[torch.argsort(order)]

    def _encode_reusing(self, ids: torch.Tensor, position: torch.Tensor, segments: torch.Tensor,
                        mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """:meth:`_encode_packed` of the rows whose state was not encoded within the last
        ``reuse_steps`` passes (stored with this pass), the held states of the others."""
        keys = _keys(ids, segments)
        now, reused = self._passes, self._reused
        held = [row for row, key in enumerate(keys)
                if key in reused and now - reused[key][0] < self.reuse_steps]  # fmt: skip
        fresh = sorted(set(range(len(keys))) - set(held))
        if not held:
            states = new = self._encode_packed(ids, position, segments, mask)
        else:
            old = torch.stack([reused[keys[row]][1] for row in held])
            states = old.new_empty(len(keys), old.shape[1])
            states = states.index_copy(0, torch.tensor(held, device=ids.device), old)
            if not fresh:
                return states
            rows = torch.tensor(fresh, device=ids.device)
            new = self._encode_packed(ids[rows], position[rows], segments[rows], mask[rows])
            states = states.to(new.dtype).index_copy(0, rows, new)
        # held in the dtype the student's passes give (float32 in autocast), as rows of one copy
        # of this pass's fresh states (a copy: the caller may change what it is given in place),
        # freed once every row is dropped (they expire together, dropped at a later _tick)
        for row, state in zip(fresh, new.detach().clone(), strict=True):
            reused[keys[row]] = (now, state)
        return states

    def _encode_remembered(self, ids: torch.Tensor, position: torch.Tensor,
                           segments: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """:meth:`_encode_packed` of the rows whose text was not scored since the weights last
        changed (an optimiser step, a load, a move), the remembered states of the others: the
        same states up to rounding. The ``SCORED_TEXTS`` most recently used are held (a
        :class:`~prectr.cache.SlotCache`)."""
        weights = tuple(p._version for p in self.parameters())  # in-place updates bump these
        if self._scored is None or weights != self._scored_weights:
            self._scored, self._scored_weights = SlotCache(SCORED_TEXTS), weights
        keys = _keys(ids, segments)
        if len(set(keys)) > SCORED_TEXTS:  # more than it could hold at once
            return self._encode_packed(ids, position, segments, mask)
        slots = self._scored.lookup(keys)  # this call's texts become the most recent
        new = np.flatnonzero(slots < 0)
        if new.size:  # stored without evicting the call's own texts: they fit, and are newest
            rows = torch.from_numpy(new).to(ids.device)
            states = self._encode_packed(ids[rows], position[rows], segments[rows], mask[rows])
            self._scored.store([keys[row] for row in new], {"state": states})
            slots = self._scored.lookup(keys)
        return self._scored.gather(slots)["state"]

    def _tick(self) -> None:
        """A training pass begins: the clock advances, and every ``reuse_steps`` passes the
        states that have expired are dropped."""
        self._passes += 1
        if self._passes % self.reuse_steps == 0:
            now, steps = self._passes, self.reuse_steps
            self._reused = {k: v for k, v in self._reused.items() if now - v[0] < steps}

    def _kept_outputs(self, ids: torch.Tensor, position: torch.Tensor, segments: torch.Tensor,
                      mask: torch.Tensor) -> list[torch.Tensor]:  # fmt: skip
        """The fixed part's output for each row (rows sorted by length): its pieces' states
        after the fixed layers, or with every layer fixed its pooled state; computed for the
        rows not met before, in float32 and without gradient, and kept (:meth:`freeze_lower`)."""
        keys = _keys(ids, segments)
        kept, computed = self._kept, {}
        new = [row for row, key in enumerate(keys) if key not in kept]
        if new:
            rows = torch.tensor(new)
            lengths, keep = mask[rows].sum(1), mask[rows]
            groups = _groups(lengths)
            with torch.no_grad(), torch.autocast(ids.device.type, enabled=False):
                x = self._embed(ids[rows][keep], position[rows][keep], segments[rows][keep])
                for layer in self.encoder.layers[: self.frozen_layers]:
                    x = _packed_layer(layer, x, groups)
                if self._all_fixed():
                    states = _pooled(self.encoder.norm(x), groups).unbind()
                else:
                    states = x.split(lengths.tolist())
            for row, state in zip(new, states, strict=True):
                computed[keys[row]] = state.clone()
        outputs = [kept[key] if key in kept else computed[key] for key in keys]
        # only training passes keep what they compute: scoring (evaluation, a server) reads
        # what training kept but does not grow it with every text it meets
        if self.training:
            for key in keys:
                if key in kept:
                    kept.move_to_end(key)  # the most recently met are dropped last
            kept.update(computed)
            while len(kept) > KEPT_TEXTS:
                kept.popitem(last=False)
        return outputs

    def query_states(self, queries: torch.Tensor) -> torch.Tensor:
        """Two-tower only: the query side, ``(n, dim)``, each distinct query encoded once."""
        if self.interaction is None:
            raise ValueError("query states exist in the two_tower mode only (this is cross)")
        return _once(queries, lambda ids: self.encode(ids, 0))

    def title_states(self, titles: torch.Tensor) -> torch.Tensor:
        """Two-tower only: the title side, ``(n, dim)``, which depends on the item alone."""
        if self.interaction is None:
            raise ValueError("title states exist in the two_tower mode only (this is cross)")
        return _once(titles, lambda ids: self.encode(ids, 1))

    def pair_from_states(
        self, query: torch.Tensor, title: torch.Tensor, overlap: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Two-tower: the pair state from query and title states (e.g. cached titles), and with
        ``piece_overlap`` the pair's :func:`piece_overlap` ``(B, 6)`` (with ``overlap_skip``
        also mapped linearly onto the state)."""
        parts = [query, title, query * title, (query - title).abs()]
        if self.config.piece_overlap:
            if overlap is None:
                raise ValueError("this student reads the pair's piece overlap: pass overlap")
            parts.append(overlap)
        state = self.interaction(torch.cat(parts, 1))
        if self.overlap_skip is not None:
            state = state + self.overlap_skip(overlap.to(state.dtype))
        return state

    def pair_state(self, queries: torch.Tensor, titles: torch.Tensor) -> torch.Tensor:
        """The pooled pair state ``(B, dim)`` of query and title piece ids ``(B, Lq)``,
        ``(B, Lt)``; each distinct query, title or pair is encoded once. In training, one
        call is one pass of :meth:`reuse_states`' clock."""
        if self.training and self.reuse_steps > 1:
            self._tick()
        if self.interaction is not None:
            overlap = (
                piece_overlap(queries, titles, self.config.vocab_size)
                if self.config.piece_overlap
                else None
            )
            return self.pair_from_states(
                self.query_states(queries), self.title_states(titles), overlap
            )
        sep = torch.full_like(queries[:, :1], SEP)
        ids = torch.cat([queries, sep, titles], 1)
        segment = torch.zeros_like(ids)
        segment[:, queries.shape[1] + 1 :] = 1
        return _once(ids, lambda rows: self.encode(rows, segment[: rows.shape[0]]))

    def forward(self, queries: torch.Tensor, titles: torch.Tensor) -> torch.Tensor:
        """Grade logits ``(B, 4)``."""
        return self.head(self.pair_state(queries, titles))


def piece_overlap(queries: torch.Tensor, titles: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The lexical match of each pair of piece ids ``(B, Lq)``, ``(B, Lt)`` (padding ``PAD``,
    ids below ``vocab_size``), ``(B, 6)``: for pieces and for adjacent piece pairs, the share
    of the query's that the title holds and the share of the title's that the query holds
    (the special pieces, padding, unknown and separator, match nothing); then ``log1p`` of both
    lengths in pieces. Pieces of a script without spaces are mostly characters and frequent
    words, so these are the character n-gram overlaps a string baseline reads."""
    queries, titles = queries.long(), titles.long()
    columns = [
        *_held_shares(queries, queries > SEP, titles, titles > SEP),
        *_held_shares(*_bigrams(queries, vocab_size), *_bigrams(titles, vocab_size)),
    ]
    lengths = [(queries != PAD).sum(1, keepdim=True), (titles != PAD).sum(1, keepdim=True)]
    return torch.cat([*columns, *(torch.log1p(n.float()) for n in lengths)], 1)


def _bigrams(ids: torch.Tensor, base: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjacent pairs of pieces as one id each, matchable where both pieces are; a padding
    column is added first, so a text one piece wide has one (unmatchable) pair."""
    ids = F.pad(ids, (0, 1), value=PAD)
    matchable = ids > SEP
    return ids[:, :-1] * base + ids[:, 1:], matchable[:, :-1] & matchable[:, 1:]


def _held_shares(
    a: torch.Tensor, real_a: torch.Tensor, b: torch.Tensor, real_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The share of ``a``'s real entries found among ``b``'s, and of ``b``'s among ``a``'s."""
    same = (a[:, :, None] == b[:, None, :]) & real_a[:, :, None] & real_b[:, None, :]
    same = same.float()
    in_b, in_a = same.amax(2), same.amax(1)
    share_a = in_b.sum(1, keepdim=True) / real_a.sum(1, keepdim=True).clamp(min=1)
    share_b = in_a.sum(1, keepdim=True) / real_b.sum(1, keepdim=True).clamp(min=1)
    return share_a, share_b


def _packed_layer(
    layer: nn.TransformerEncoderLayer, x: torch.Tensor, groups: list[tuple[int, int]]
) -> torch.Tensor:
    """``layer`` (pre-norm) on packed pieces ``x`` ``(pieces, dim)``, its own weights: each
    group ``(length, rows)`` of consecutive rows of one length attends within its rows."""
    attention = layer.self_attn
    qkv = F.linear(layer.norm1(x), attention.in_proj_weight, attention.in_proj_bias)
    mixed = []
    for part, (size, n) in zip(qkv.split([size * n for size, n in groups]), groups, strict=True):
        q, k, v = part.view(n, size, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        # written out: on CPU, for texts this short, several times faster than
        # scaled_dot_product_attention's kernels, forward and backward
        weight = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, -1)
        weight = F.dropout(weight, attention.dropout, layer.training)
        mixed.append((weight @ v).transpose(1, 2).reshape(n * size, -1))
    x = x + layer.dropout1(attention.out_proj(torch.cat(mixed)))
    return x + layer.dropout2(
        layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(x)))))
    )


def _keys(ids: torch.Tensor, segments: torch.Tensor) -> list[bytes]:
    """A key per row naming its text: its piece ids and segments (read on the CPU)."""
    rows = zip(ids.cpu().numpy(), segments.cpu().numpy(), strict=True)
    return [i.tobytes() + s.tobytes() for i, s in rows]


def _groups(lengths: torch.Tensor) -> list[tuple[int, int]]:
    """``(length, rows)`` of each run of equal lengths in ``lengths`` (sorted)."""
    sizes, counts = torch.unique_consecutive(lengths, return_counts=True)
    return list(zip(sizes.tolist(), counts.tolist(), strict=True))


def _pooled(x: torch.Tensor, groups: list[tuple[int, int]]) -> torch.Tensor:
    """The mean state of each row of packed pieces ``x`` laid out in ``groups``."""
    parts = x.split([size * n for size, n in groups])
    return torch.cat(
        [p.view(n, size, -1).mean(1) for p, (size, n) in zip(parts, groups, strict=True)]
    )


def _once(ids: torch.Tensor, encode) -> torch.Tensor:
    """``encode`` applied to the distinct rows of ``ids`` only, gathered back to every row.
    (The segment layout is the same for every row, so a prefix of it serves the distinct ones.)"""
    if not eager():
        return encode(ids)
    distinct, inverse = _distinct_rows(ids)
    return encode(distinct)[inverse]


def _distinct_rows(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of piece ids ``(n, L)`` and each row's index among them, as
    ``torch.unique(ids, dim=0, return_inverse=True)`` gives them but in another order. Each
    row is read as one integer, a random combination of its pieces too small to overflow, and
    the rows one integer gathers are checked to be one row (else whole rows are compared):
    exact, and sorting one integer a row is about 14 times faster on a CPU than sorting rows
    (a step's 20,000 titles: 1.6 ms against 22 ms)."""
    n, width = ids.shape
    # bits left for a weight (none for no rows, or pieces below 0)
    room = 62 - int(ids.max()).bit_length() - width.bit_length() if n and ids.min() >= 0 else 0
    if room >= 16:
        keys, inverse = torch.unique((ids * _row_weights(width, room, ids.device)).sum(1),
                                     return_inverse=True)  # fmt: skip
        first = torch.full((len(keys),), n, device=ids.device)
        first.scatter_reduce_(0, inverse, torch.arange(n, device=ids.device), "amin")
        distinct = ids[first]
        if torch.equal(distinct[inverse], ids):
            return distinct, inverse
    return torch.unique(ids, dim=0, return_inverse=True)


def _row_weights(width: int, bits: int, device: torch.device) -> torch.Tensor:
    """``width`` random weights below ``2 ** bits`` (the same on every call)."""
    generator = torch.Generator().manual_seed(width)
    return torch.randint(1, 2**bits, (width,), generator=generator).to(device)


def save_student(directory: str | Path, student: Student, tokenizer: TextTokenizer,
                 meta: dict | None = None) -> Path:  # fmt: skip
    """Write ``student.pt`` (config, weights, ``meta``) and ``tokenizer.json``, each atomically."""
    directory = Path(directory)
    if tokenizer.vocab_size != student.config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces, the student "
                         f"{student.config.vocab_size}")  # fmt: skip
    tokenizer.save(directory / TOKENIZER)
    config = student.config.model_dump()
    state = {"config": config, "state": student.state_dict(), "meta": meta or {}}
    with atomic_file(directory / WEIGHTS) as tmp:
        torch.save(state, tmp)
    return directory


def load_student(directory: str | Path) -> tuple[Student, TextTokenizer]:
    """The student and tokenizer saved in ``directory`` by :func:`save_student`."""
    state = saved_student(directory)
    # saved before an option existed: without it
    student = Student(StudentConfig(**{**STUDENT_OPTIONS_BEFORE, **state["config"]}))
    student.load_state_dict(state["state"])
    tokenizer = student_tokenizer(directory)
    if tokenizer.vocab_size != student.config.vocab_size:
        raise ValueError(f"{directory}: {TOKENIZER} has {tokenizer.vocab_size} pieces, "
                         f"{WEIGHTS} expects {student.config.vocab_size}")  # fmt: skip
    return student, tokenizer
