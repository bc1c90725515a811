"""Classifier heads that grow with the stream."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
import torch.nn.functional as F


class IncrementalLinear(nn.Module):
    """One ``Linear(D, n_t)`` per experience; logits are their concatenation (LAE and most PET-CIL code).

    ``init_std=None`` keeps PyTorch's default init; a float draws weights from N(0, init_std) with zero bias
    (LAE initialises new heads this way).
    """

    def __init__(self, in_dim: int, init_std: Optional[float] = None) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.init_std = init_std
        self.heads = nn.ModuleList()
        # where the module lives, even before its first head (``.to(device)`` moves it; not in the state dict)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    @property
    def sizes(self) -> List[int]:
        return [h.out_features for h in self.heads]

    @property
    def out_features(self) -> int:
        return sum(self.sizes)

    def grow(self, n_new: int) -> nn.Linear:
        """A new head, on the module's device and dtype (also for the first head, grown after the module moved)."""
        head = nn.Linear(self.in_dim, n_new)
        if self.init_std is not None:
            nn.init.normal_(head.weight, std=self.init_std)
            nn.init.zeros_(head.bias)
        head = head.to(device=self._anchor.device, dtype=self._anchor.dtype)
        self.heads.append(head)
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([h(x) for h in self.heads], dim=1)


def cosine_logits(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between L2-normalised features (B, D) and rows of ``weights`` (C, D) -> (B, C).
    The classifier of SimpleCIL/APER (``CosineLinear`` in the reference code, sigma = 1 at inference)."""
    return F.normalize(features, dim=1) @ F.normalize(weights, dim=1).t()


class CosineLinear(nn.Module):
    """Cosine classifier with a learnable scale: ``sigma * cos(x, w_c)`` (the ``CosineLinear`` head APER trains
    its first-session adapter with; weights U(-1/sqrt(D), 1/sqrt(D)), sigma initialised to 1)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / in_dim**0.5
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim).uniform_(-bound, bound))
        self.sigma = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigma * cosine_logits(x, self.weight)
