"""LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685): ``y = W x + s B A x``,
A Kaiming-uniform (a = sqrt 5), B zero-initialised, so the update starts at exactly 0.

LAE's variant (arXiv:2303.10070; gqk/LAE ``libml/model/pet/lora.py``, ``KVLoRA``) puts one rank-5 pair on the K
slice and one on the V slice of the fused qkv projection (Q untouched), each with its own learnable scale:
``qkv(x) + [0, s_k B_k A_k x, s_v B_v A_v x]`` (``LoRAConfig.lae()``). The reference adds ``B A`` to the weight
before the matmul; adding ``B (A x)`` to the output is the same map and cheaper for rank 5. On BERT the separate
``key``/``value`` layers are wrapped; on CNNs the pointwise (1x1) convs get A and B as two 1x1 convs (the
channels-last ``Linear`` layers of ConvNeXt get two linears).

PEFT's ``LoraLayer`` covers the generic case but not the fused-qkv K/V slices with learnable per-slice scales,
and it cannot share a site with the block / attention wrappers of the other kinds, so the few lines are here.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from clpet.pet.base import (Attach, PetKind, expand_roles, in_channels, kaiming_, nothing_matched, out_channels,
                            scale_param)
from clpet.pet.config import LoRAConfig
from clpet.pet.sites import Structure
from clpet.pet.wrappers import LayerWrapper
from clpet.registry import PETS

_DEFAULT_TARGETS = {"vit": ("q", "v"), "bert": ("q", "v"), "cnn": ("pointwise",)}


class LowRank(nn.Module):
    """``s * B (A x)``: A (rank, in), B (out, rank); over the last dim, or the channels of NCHW (``conv``)."""

    def __init__(self, dim_in: int, dim_out: int, rank: int, scale: object, conv: bool = False) -> None:
        super().__init__()
        self.conv = conv
        self.A = nn.Parameter(kaiming_(torch.empty(rank, dim_in)))
        self.B = nn.Parameter(torch.zeros(dim_out, rank))
        self.scale = scale_param(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv:  # two 1x1 convolutions: (B, C_in, H, W) -> (B, r, H, W) -> (B, C_out, H, W)
            return F.conv2d(F.conv2d(x, self.A[:, :, None, None]), self.B[:, :, None, None]) * self.scale
        return F.linear(F.linear(x, self.A), self.B) * self.scale  # (..., in) -> (..., r) -> (..., out)


class LoRA(nn.Module):
    """The LoRA update of one layer, hosted by ``LayerWrapper``: ``(x, y) -> y + update``. ``parts`` maps a part
    name to its output channel range: one part ``all`` over the whole output, or ``q``/``k``/``v`` slices."""

    def __init__(self, dim_in: int, dim_out: int, cfg: LoRAConfig, parts: Dict[str, Tuple[int, int]],
                 conv: bool = False) -> None:
        super().__init__()
        self.bounds = dict(sorted(parts.items(), key=lambda kv: kv[1][0]))
        self.dim_out = dim_out
        for name, (start, end) in self.bounds.items():
            self.add_module(name, LowRank(dim_in, end - start, cfg.rank, cfg.effective_scale, conv))
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        if "all" in self.bounds:
            return y + self.all(x)
        pieces, pos = [], 0
        for name, (start, end) in self.bounds.items():  # slices of a fused projection, channels last
            if start > pos:
                pieces.append(y[..., pos:start])
            pieces.append(y[..., start:end] + getattr(self, name)(x))
            pos = end
        if pos < self.dim_out:
            pieces.append(y[..., pos:])
        return torch.cat(pieces, dim=-1)  # (..., dim_out)


@PETS.register("lora")
class LoRAKind(PetKind):
    """LoRA on linear layers / pointwise convs; LAE's variant on the K and V slices of a fused qkv."""

    Config = LoRAConfig

    @classmethod
    def plan(cls, structure: Structure, cfg: LoRAConfig) -> List[Attach]:
        blocks = structure.block_indices(cfg.blocks, "lora")
        targets = cfg.targets or _DEFAULT_TARGETS[structure.family]
        structure.check_targets(targets, "lora")
        attaches: List[Attach] = []
        for i in blocks:
            b = structure.blocks[i]
            slices: Dict[str, List[Tuple[str, int]]] = {}  # fused qkv path -> [(role, slice index)]
            for t in targets:
                if t in b.slices and t not in b.roles:
                    path, j = b.slices[t]
                    slices.setdefault(path, []).append((t, j))
            for path, parts in slices.items():
                if path in [a.path for a in attaches]:
                    raise ValueError(f"lora: targets overlap on {path} (the whole qkv and its q/k/v slices)")
                attaches.append(Attach(path, LayerWrapper, lambda base, p=tuple(parts): LoRA(
                    base.in_features, base.out_features, cfg, _slice_bounds(base.out_features, p))))
            for role in expand_roles(b, [t for t in targets if t in b.roles or t in b.groups]):
                path = b.roles[role]
                module = structure.module(path)
                conv = isinstance(module, nn.Conv2d)
                if not (isinstance(module, nn.Linear) or (conv and role in b.groups.get("pointwise", ()))):
                    raise ValueError(f"lora: target '{role}' ({path}, {type(module).__name__}) is not a linear layer "
                                     f"or pointwise conv")
                if path in [a.path for a in attaches]:
                    raise ValueError(f"lora: targets overlap on {path} (the whole qkv and its q/k/v slices)")
                attaches.append(Attach(path, LayerWrapper, lambda base, c=conv: LoRA(
                    in_channels(base), out_channels(base), cfg, {"all": (0, out_channels(base))}, conv=c)))
        if not attaches:
            raise nothing_matched("lora", structure, f"targets {list(targets)} in blocks {blocks}")
        return attaches


def _slice_bounds(dim_out: int, parts: Tuple[Tuple[str, int], ...]) -> Dict[str, Tuple[int, int]]:
    """Channel ranges of q/k/v in a fused (…, 3·D) projection: slice j is [j·D, (j+1)·D)."""
    width = dim_out // 3
    return {role: (j * width, (j + 1) * width) for role, j in parts}
