"""Knowledge distillation from a relevance teacher: match its grade distribution, softened by a
temperature (Hinton et al. 2015), and optionally its hidden state through a projection.

The hidden state is matched standardised (:func:`standardise_states`): a language model's state
has a few dimensions of very large, nearly constant activations (SmolLM2's reach 137 where the
typical one is below 1), and a raw MSE spends its gradient on them; under gradient clipping that
also starves the KL term. Standardised, every dimension counts alike and a constant one not
at all.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def distill_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher / T) || softmax(student / T)), times T^2 so the
    gradient keeps its scale whatever the temperature."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.kl_div(
        F.log_softmax(student_logits / temperature, -1),
        F.log_softmax(teacher_logits.detach() / temperature, -1),
        log_target=True,
        reduction="batchmean",
    ) * (temperature**2)


def hidden_mse(projected: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the projected student state and the teacher's hidden state."""
    if projected.shape != teacher_hidden.shape:
        raise ValueError(f"projected student state {tuple(projected.shape)} and teacher hidden "
                         f"state {tuple(teacher_hidden.shape)} differ in shape")  # fmt: skip
    return F.mse_loss(projected, teacher_hidden.detach())


def standardise_states(hidden: np.ndarray) -> np.ndarray:
    """Teacher hidden states ``(n, h)`` with each dimension shifted to mean 0 and scaled to
    variance 1 over the rows (a dimension constant over the rows becomes 0)."""
    hidden = hidden.astype(np.float32)
    std = hidden.std(0)
    scale = np.divide(1.0, std, out=np.zeros_like(std), where=std > 1e-6)
    return (hidden - hidden.mean(0)) * scale
