"""Bottleneck adapters in three placements.

* LAE (Gao et al., "A Unified Continual Learning Framework with General Parameter-Efficient Tuning", ICCV 2023,
  arXiv:2303.10070; reference code gqk/LAE ``libml/model/pet/adapter.py``, mode ``parallel`` on ``attn``):
  ``x = x + attn(norm1(x)) + s * up(GELU(down(norm1(x))))``, bottleneck 5, up zero-initialised, s a learnable
  scalar. (The reference adds the adapter inside the attention's drop-path; with drop-path 0 and no LayerScale,
  LAE's setting, the two are the same.)
* AdaptFormer (Chen et al., arXiv:2205.13535) as APER uses it (Zhou et al., "Revisiting Class-Incremental Learning
  with Pre-Trained Models", arXiv:2303.07338; zhoudw-zdw/RevisitingCIL ``backbone/vit_adapter.py``,
  ``ffn_option="parallel"``): ``x = x + mlp(norm2(x)) + 0.1 * up(dropout(ReLU(down(x))))``, bottleneck 64,
  the adapter fed the post-attention residual stream ``x`` (not ``norm2(x)``), as in AdaptFormer's code.
* CNNs (``pointwise-parallel``): a 1x1-conv bottleneck next to each pointwise conv,
  ``y = conv(x) + s * up(act(down(x)))`` (``Linear`` layers for ConvNeXt's channels-last MLP).

On BERT (post-norm) the adapter sits parallel to the sub-layer, fed the sub-layer's residual input and added
before its LayerNorm: ``LayerNorm(x + SelfAttnOut(x) + s * A(x))`` for ``attn-parallel`` and
``LayerNorm(h + FFN(h) + s * A(h))``, h the attention output, for ``mlp-parallel``. timm's post-norm blocks
(``ResPostBlock``) likewise, but there the norm is on the branch only: ``x + norm1(attn(x)) + s * A(x)``.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from clpet.pet.base import (Attach, PetKind, expand_roles, in_channels, kaiming_, nothing_matched, out_channels,
                            scale_param)
from clpet.pet.config import AdapterConfig
from clpet.pet.sites import Structure
from clpet.pet.wrappers import BertResidualWrapper, LayerWrapper, ViTBlockWrapper
from clpet.registry import PETS

_ACT = {"gelu": nn.GELU, "relu": nn.ReLU}


class Bottleneck(nn.Module):
    """``s * up(dropout(act(down(u))))`` over the last dim (``conv=False``) or channels of NCHW (``conv=True``).

    ``hook`` tells the hosting wrapper where it goes: ``attn`` / ``mlp`` (timm block), ``residual`` (BERT)."""

    def __init__(self, dim_in: int, dim_out: int, cfg: AdapterConfig, hook: str, conv: bool = False) -> None:
        super().__init__()
        self.hook = hook
        if conv:
            self.down = nn.Conv2d(dim_in, cfg.bottleneck, kernel_size=1)
            self.up = nn.Conv2d(cfg.bottleneck, dim_out, kernel_size=1)
        else:
            self.down = nn.Linear(dim_in, cfg.bottleneck)
            self.up = nn.Linear(cfg.bottleneck, dim_out)
        self.act = _ACT[cfg.activation]()
        self.drop = nn.Dropout(cfg.dropout)
        self.scale = scale_param(cfg.scale)
        kaiming_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # init="zero-up": the adapter starts at exactly 0
        nn.init.zeros_(self.up.bias)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.up(self.drop(self.act(self.down(u)))) * self.scale

    def extra_repr(self) -> str:
        learnable = isinstance(self.scale, nn.Parameter)
        return f"hook={self.hook}, scale={'learnable' if learnable else self.scale}"


class PointwiseAdapter(Bottleneck):
    """A bottleneck beside a pointwise conv / channels-last Linear, hosted by ``LayerWrapper``:
    ``(x, y) -> y + A(x)``."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return y + super().forward(x)


@PETS.register("adapter")
class Adapter(PetKind):
    """Bottleneck adapters: LAE (parallel to attention), AdaptFormer/APER (parallel to the MLP), CNN 1x1 convs."""

    Config = AdapterConfig

    @classmethod
    def plan(cls, structure: Structure, cfg: AdapterConfig) -> List[Attach]:
        blocks = structure.block_indices(cfg.blocks, "adapter")
        if structure.family == "cnn":
            return cls._plan_cnn(structure, cfg, blocks)
        if cfg.placement == "pointwise-parallel":
            raise ValueError(f"adapter: placement 'pointwise-parallel' is for CNNs; on the {structure.describe()} "
                             f"use 'attn-parallel' or 'mlp-parallel'")
        hook = "attn" if cfg.placement == "attn-parallel" else "mlp"
        dim = structure.dim
        attaches = []
        for i in blocks:
            b = structure.blocks[i]
            if structure.family == "bert":
                path = b.roles["attn_out" if hook == "attn" else "mlp_out"]
                attaches.append(Attach(path, BertResidualWrapper, lambda base: Bottleneck(dim, dim, cfg, "residual")))
                continue
            if b.layout not in ("pre", "post"):
                raise ValueError(f"adapter: placement '{cfg.placement}' needs a pre- or post-norm timm block "
                                 f"(Block, ResPostBlock, RelPosBlock, EvaBlock...); {b.path} is {b.cls}")
            attaches.append(Attach(b.path, ViTBlockWrapper, lambda base, h=hook: Bottleneck(dim, dim, cfg, h),
                                   {"token_at": structure.token_at, "layout": b.layout}))
        return attaches

    @classmethod
    def _plan_cnn(cls, structure: Structure, cfg: AdapterConfig, blocks: List[int]) -> List[Attach]:
        if cfg.placement != "pointwise-parallel":
            raise ValueError(f"adapter: placement '{cfg.placement}' needs a transformer; on the "
                             f"{structure.describe()} use placement='pointwise-parallel'")
        targets = cfg.targets or ("pointwise",)
        structure.check_targets(targets, "adapter")
        attaches = []
        for i in blocks:
            b = structure.blocks[i]
            for role in expand_roles(b, targets):
                module = structure.module(b.roles[role])
                if not isinstance(module, (nn.Conv2d, nn.Linear)) or role not in b.groups.get("pointwise", ()):
                    raise ValueError(f"adapter: {b.roles[role]} ({type(module).__name__}) is not a pointwise "
                                     f"conv; pointwise-parallel adapters go next to 1x1 convs only")
                attaches.append(Attach(b.roles[role], LayerWrapper, lambda base: PointwiseAdapter(
                    in_channels(base), out_channels(base), cfg, "pointwise", conv=isinstance(base, nn.Conv2d))))
        if not attaches:
            raise nothing_matched("adapter", structure, f"targets {list(targets)} in blocks {blocks}")
        return attaches

