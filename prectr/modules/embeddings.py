"""Embedding every feature of a batch, one table per vocabulary.

Fields that share a vocabulary share a table: the candidate item and the items a user clicked
live in one space (what target attention compares), and so do query and title tokens.

A sequence may come with one row for the whole batch (``(1, L)``): when every candidate belongs
to one request, as in serving, its request-level histories are embedded once and broadcast,
and every module that reads sequences accepts that. A batch of whole requests with a row per
candidate (training, validation, offline scoring) goes further with its ``requests``
(:meth:`~prectr.data.dataset.Batch.request_groups`): request-level sequences are then
embedded, pooled and attended over once per request, ``(R, L)``, and each row reads its
request's (``owner``). Within :meth:`FeatureEmbedding.reads_once` a column or a
sequence read by several modules is embedded once.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Collection, Iterator, Mapping

import torch
from torch import nn

from prectr.data.dataset import Batch
from prectr.data.features import PAD, Categorical, Numeric, Sequence
from prectr.data.groups import Role

# Small initial embeddings let rare ids start near zero instead of as random noise; with Xavier
# dense layers this is worth about 0.01 AUC on `bench` against std 0.05 and torch's default
# (measured by benchmarks/peer_fuxictr.py; FuxiCTR uses the same initialisation).
EMBEDDING_INIT_STD = 1e-4


class FeatureEmbedding(nn.Module):
    """Embedding tables for ``specs``. Sequences named in ``unpooled`` are embedded (and read
    through :meth:`sequence`) but are not fields: only a module that attends over them, such
    as cross-user preference mining over the crowd, sees what they hold."""

    def __init__(
        self,
        specs: list,
        vocab_sizes: dict[str, int],
        dim: int = 16,
        unpooled: Collection[str] = (),
    ):
        super().__init__()
        self.dim = dim
        self.categorical = [s for s in specs if isinstance(s, Categorical)]
        self.sequence_specs = [s for s in specs if isinstance(s, Sequence)]
        self.pooled_specs = [s for s in self.sequence_specs if s.name not in set(unpooled)]
        self.numeric_specs = [s for s in specs if isinstance(s, Numeric)]
        self.n_numeric = len(self.numeric_specs)
        vocabs = sorted({s.vocab for s in self.categorical + self.sequence_specs})
        self.tables = nn.ModuleDict(
            {v: nn.Embedding(vocab_sizes[v], dim, padding_idx=PAD) for v in vocabs}
        )
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=EMBEDDING_INIT_STD)
            with torch.no_grad():
                table.weight[PAD].zero_()
        self._reads: dict[tuple, object] | None = None
        self._untrained: Mapping[Role, torch.Tensor] = {}

    @property
    def n_fields(self) -> int:
        """Categorical fields plus one mean-pooled field per pooled sequence."""
        return len(self.categorical) + len(self.pooled_specs)

    @property
    def flat_dim(self) -> int:
        """Width of :meth:`flat`: every field's embedding, then the numerics."""
        return self.n_fields * self.dim + self.n_numeric

    def flat(self, batch: Batch) -> torch.Tensor:
        """``(B, flat_dim)``: :meth:`fields` flattened, then ``batch.numeric``: the input of a
        DNN tower."""
        return torch.cat([self.fields(batch).flatten(1), batch.numeric], 1)

    @contextlib.contextmanager
    def reads_once(self, untrained: Mapping[Role, torch.Tensor] | None = None) -> Iterator[None]:
        """Within it each categorical column (:meth:`column`) and each sequence (:meth:`sequence`,
        per row or per request) is embedded once, however many modules read it: the candidate
        item, for one, is a field, DIN's query and mining's target, and the user's clicks are a
        pooled field, DIN's history and mining's. The same values; one lookup, and one
        embedding backward (a dense gradient the size of the table), per column or sequence
        instead of one per read. Every read within it is of one batch; a sequence read per
        request is read once for each ``first`` tensor it is read at (the batch's
        :meth:`~prectr.data.dataset.Batch.requests`, or another selection of rows).
        ``untrained`` maps a categorical feature's role to a mask over the batch's rows: their
        embeddings of it are read detached, so no loss on those rows trains its table (the
        table's entries still learn from the other rows that hold the same ids)."""
        self._reads, self._untrained = {}, untrained or {}
        try:
            yield
        finally:
            self._reads, self._untrained = None, {}

    def _read_once(self, key: tuple, read: Callable[[], object], at: object = None) -> object:
        """``read()``, once per ``key`` within :meth:`reads_once`; ``at``, an object the key
        names by its ``id``, is held with the value so that the id cannot be reused meanwhile."""
        if self._reads is None:
            return read()
        if key not in self._reads:
            self._reads[key] = (at, read())
        return self._reads[key][1]

    def column(self, batch: Batch, index: int) -> torch.Tensor:
        """``(B, dim)`` embeddings of the categorical column ``index`` (of :attr:`categorical`)."""
        spec = self.categorical[index]

        def read() -> torch.Tensor:
            embedded = self.tables[spec.vocab](batch.categorical[:, index])
            untrained = self._untrained.get(spec.role)
            if untrained is None:
                return embedded
            return torch.where(untrained.unsqueeze(1), embedded.detach(), embedded)

        return self._read_once(("column", index), read)

    def sequence(
        self, batch: Batch, name: str, first: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L, dim)`` embeddings of a sequence feature and its ``(B, L)`` validity mask; of
        a request-level one at ``first``, the first row of each request, ``(R, L, dim)`` and
        ``(R, L)``."""

        def read() -> tuple[torch.Tensor, torch.Tensor]:
            spec = next(s for s in self.sequence_specs if s.name == name)
            ids = batch.sequences[name] if first is None else batch.sequences[name][first]
            return self.tables[spec.vocab](ids), ids != PAD

        return self._read_once(("sequence", name, id(first)), read, at=first)

    def fields(
        self, batch: Batch, requests: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``(B, n_fields, dim)``: each categorical field, then each pooled sequence
        mean-pooled (a request-level one once per request, given the batch's ``requests``)."""
        out = [self.column(batch, i) for i in range(len(self.categorical))]
        rows = batch.categorical.shape[0]
        first, owner = requests or (None, None)
        for s in self.pooled_specs:
            per_request = requests is not None and s.level == "request"
            emb, mask = self.sequence(batch, s.name, first if per_request else None)
            m = mask.unsqueeze(-1).float()
            pooled = (emb * m).sum(1) / m.sum(1).clamp(min=1.0)
            # index_select, not pooled[owner]: the backward of indexing with repeated rows adds
            # them in a thread-dependent order, and training would no longer resume exactly
            out.append(pooled.index_select(0, owner) if per_request else pooled.expand(rows, -1))
        return torch.stack(out, 1)


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers (Xavier-normal weights, zero biases) with ReLU (and dropout) between
    them; the last layer is linear."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(a, b)
        nn.init.xavier_normal_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)] if dropout else [nn.ReLU()]
    return nn.Sequential(*layers)
