"""LR: logistic regression over every feature."""

from __future__ import annotations

import torch
from torch import nn

from prectr.data.dataset import Batch
from prectr.models.registry import RankingModel, register
from prectr.modules.embeddings import FeatureEmbedding


class FirstOrderTerm(nn.Module):
    """``b + sum_f w[id_f] + w_num . standardise(x_num)``: a scalar weight per id (a
    :class:`FeatureEmbedding` of dimension 1; a sequence contributes the mean of its tokens'
    weights) and a linear term over the standardised numerics, every weight starting at zero.
    The logit of :class:`LR`, and DeepFM's first-order term."""

    def __init__(self, specs: list, vocab_sizes: dict[str, int]):
        super().__init__()
        self.weights = FeatureEmbedding(specs, vocab_sizes, dim=1)
        self.standardise = nn.BatchNorm1d(self.weights.n_numeric, affine=False)
        self.numeric = nn.Linear(self.weights.n_numeric, 1)
        for param in self.parameters():
            nn.init.zeros_(param)

    def forward(self, batch: Batch) -> torch.Tensor:
        numeric = self.numeric(self.standardise(batch.numeric)).squeeze(-1)
        return self.weights.fields(batch).sum((1, 2)) + numeric


@register("lr")
class LR(RankingModel):
    """Logistic regression, the classic CTR baseline (Richardson et al., WWW 2007; McMahan
    et al., KDD 2013): the logit is a :class:`FirstOrderTerm`.

    Numerics are standardised with running batch statistics, so that an uncentred numeric
    (``user_activity``) is not confounded with the bias, and every weight starts at zero: with
    random starts or raw numerics, Adam spends the first hundreds of steps shifting all weights
    to calibrate the bias, and the ranking they leave behind is noise.
    """

    def __init__(self, specs: list, vocab_sizes: dict[str, int]):
        super().__init__()
        self.linear = FirstOrderTerm(specs, vocab_sizes)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"logit": self.linear(batch)}
