"""Whether PyTorch runs eagerly or a graph is being captured (traced or exported)."""

from __future__ import annotations

import torch


def eager() -> bool:
    """Whether data-dependent shortcuts (packing pieces, encoding distinct rows once, reading
    histories once per request) may run: not while a graph is traced or exported, where shapes
    must not depend on values. Either way the result is the same."""
    return not (torch.jit.is_tracing() or torch.compiler.is_exporting())
