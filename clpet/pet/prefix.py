"""Prefix tuning with LAE's compensatory attention (Gao et al., "A Unified Continual Learning Framework with
General Parameter-Efficient Tuning", ICCV 2023, arXiv:2303.10070; reference code gqk/LAE
``libml/model/pet/prefix.py`` and ``libml/model/backbone/vit.py``).

Per block: ``length`` learnable key vectors and ``length`` value vectors of the attention width D (split over the
heads exactly as the keys are: (P, D) -> (H, P, D/H)), drawn U(0, 0.01), multiplied by a learnable key scale and
value scale (scalars, 1.0 at init), inserted after the class token (timm: after the class and register tokens;
BERT: after ``[CLS]``). They are appended to the keys/values after the qkv projection (and after timm's optional
``k_norm``), so they do not pass through W_k / W_v. The attention math is ``clpet.pet.ops.prefix_attention``.
Prefix tuning is not identity at init (the prefix takes attention mass), so only an inactive set leaves the
backbone unchanged. On a CNN it fails in one line.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from clpet.pet.base import Attach, PetKind
from clpet.pet.config import PrefixConfig
from clpet.pet.sites import Structure
from clpet.pet.wrappers import BertSelfAttentionWrapper, ViTAttentionWrapper
from clpet.registry import PETS


class PrefixTokens(nn.Module):
    """One block's prefix: ``key``, ``value`` (P, D) and their scales."""

    def __init__(self, dim: int, cfg: PrefixConfig) -> None:
        super().__init__()
        self.compensatory = cfg.compensatory
        self.key = nn.Parameter(torch.empty(cfg.length, dim).uniform_(cfg.init_low, cfg.init_high))
        self.value = nn.Parameter(torch.empty(cfg.length, dim).uniform_(cfg.init_low, cfg.init_high))
        self.key_scale = nn.Parameter(torch.tensor(1.0)) if cfg.key_scale == "learnable" else float(cfg.key_scale)
        self.value_scale = (nn.Parameter(torch.tensor(1.0)) if cfg.value_scale == "learnable"
                            else float(cfg.value_scale))

    def key_value(self, heads: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Scaled prefix keys and values per head: (1, H, P, D/H) each."""
        length, dim = self.key.shape
        key = (self.key * self.key_scale).view(length, heads, dim // heads).transpose(0, 1)  # (H, P, d)
        value = (self.value * self.value_scale).view(length, heads, dim // heads).transpose(0, 1)
        return key.unsqueeze(0), value.unsqueeze(0)

    def extra_repr(self) -> str:
        return f"length={self.key.shape[0]}, dim={self.key.shape[1]}, compensatory={self.compensatory}"


@PETS.register("prefix")
class Prefix(PetKind):
    """Prefix keys/values per block with LAE's compensatory attention (timm ViT attention, BERT self-attention)."""

    Config = PrefixConfig
    exclusive = True

    @classmethod
    def plan(cls, structure: Structure, cfg: PrefixConfig) -> List[Attach]:
        cls.check_supported(structure)
        attaches = []
        for i in structure.block_indices(cfg.blocks, "prefix"):
            b = structure.blocks[i]
            path = b.roles["attn"]
            if structure.family == "bert":
                attaches.append(Attach(path, BertSelfAttentionWrapper, lambda base: PrefixTokens(
                    base.num_attention_heads * base.attention_head_size, cfg), {"token_at": structure.token_at}))
                continue
            if not b.standard_attn:
                raise ValueError(f"prefix: {path} is {type(structure.module(path)).__name__}; prefix keys/values "
                                 f"attach to timm's standard Attention only")
            attaches.append(Attach(path, ViTAttentionWrapper, lambda base: PrefixTokens(
                base.num_heads * base.head_dim, cfg), {"token_at": structure.token_at}))
        return attaches
