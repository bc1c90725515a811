"""SSF (Lian et al., "Scaling & Shifting Your Features: A New Baseline for Efficient Model Tuning", NeurIPS 2022,
arXiv:2210.08823), as APER uses it (zhoudw-zdw/RevisitingCIL ``backbone/vit_ssf.py``): after each op a learnable
per-channel scale and shift, ``y * gamma + beta``.

Default sites: timm ViT — ``qkv`` (3·D channels), ``proj``, ``fc1``, ``fc2``, ``norm1``, ``norm2`` in every block,
plus ``patch_embed`` and ``final_norm`` (as the reference); BERT — ``q k v proj fc1 fc2 norm1 norm2`` and
``embed_norm``; CNN — every conv and norm in the blocks (``convs``, ``norms``; channel axis 1). Sites outside the
blocks (``patch_embed``, ``final_norm``, ``embed_norm``) are attached whenever they are among the targets,
whatever ``blocks`` says. ``init_std = 0`` is the identity at init; the reference draws N(1, 0.02) / N(0, 0.02).
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from clpet.pet.base import Attach, PetKind, expand_roles, nothing_matched, out_channels
from clpet.pet.config import SSFConfig
from clpet.pet.sites import Structure
from clpet.pet.wrappers import LayerWrapper
from clpet.registry import PETS

_DEFAULT_TARGETS = {
    "vit": ("qkv", "q", "k", "v", "proj", "fc1", "fc1_g", "fc1_x", "fc2", "norm1", "norm2",
            "patch_embed", "final_norm"),
    "bert": ("q", "k", "v", "proj", "fc1", "fc2", "norm1", "norm2", "embed_norm"),
    "cnn": ("convs", "norms"),
}


def channel_axis(module: nn.Module) -> int:
    """1 for NCHW ops (Conv2d, BatchNorm, GroupNorm, timm's LayerNorm2d), -1 for channels-last ones."""
    if isinstance(module, (nn.Conv2d, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
        return 1
    if type(module).__name__ in ("LayerNorm2d", "LayerNormAct2d"):
        return 1
    return -1


def _is_op(module: nn.Module) -> bool:
    """A single op SSF can follow: linear, conv, a norm layer (torch's, or timm's RmsNorm and the like)."""
    return isinstance(module, (nn.Linear, nn.Conv2d, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) \
        or hasattr(module, "normalized_shape")


class ScaleShift(nn.Module):
    """``(x, y) -> y * gamma + beta`` along channel ``axis``; hosted by ``LayerWrapper``."""

    def __init__(self, channels: int, axis: int, init_std: float = 0.0) -> None:
        super().__init__()
        self.axis = axis
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        if init_std > 0:
            nn.init.normal_(self.gamma, mean=1.0, std=init_std)
            nn.init.normal_(self.beta, std=init_std)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.gamma.to(y.dtype), self.beta.to(y.dtype)  # keep y's dtype under autocast
        if self.axis == -1:
            return y * gamma + beta  # (..., C)
        shape = [1] * y.dim()
        shape[self.axis] = -1
        return y * gamma.view(shape) + beta.view(shape)  # (B, C, H, W)


@PETS.register("ssf")
class SSF(PetKind):
    """Scale-and-shift of features after each op (qkv, proj, fc1, fc2, norms; convs and norms on CNNs)."""

    Config = SSFConfig

    @classmethod
    def plan(cls, structure: Structure, cfg: SSFConfig) -> List[Attach]:
        blocks = structure.block_indices(cfg.blocks, "ssf")
        if cfg.targets is None:
            known = set(structure.known_roles())
            targets = tuple(t for t in _DEFAULT_TARGETS[structure.family] if t in known)
        else:
            targets = cfg.targets
            structure.check_targets(targets, "ssf")
        paths = [structure.globals[t] for t in targets if t in structure.globals]
        for i in blocks:
            b = structure.blocks[i]
            for t in targets:
                if t in b.slices and t not in b.roles and cfg.targets is not None:
                    raise ValueError(f"ssf: target '{t}' is a slice of the fused {b.slices[t][0]}; use 'qkv'")
            paths += [b.roles[r] for r in expand_roles(b, targets)]
        attaches = []
        for path in dict.fromkeys(paths):
            module = structure.module(path)
            if path != structure.globals.get("patch_embed") and not _is_op(module):  # embeddings: (B, N, D) out
                raise ValueError(f"ssf: {path} is {type(module).__name__}; scale-and-shift goes after single ops "
                                 f"(linear, conv, norm, patch embedding)")
            if path == structure.globals.get("patch_embed"):  # tokens (B, N, D) whatever the embedding module
                make = lambda base: ScaleShift(structure.dim, -1, cfg.init_std)  # noqa: E731
            else:
                make = lambda base: ScaleShift(out_channels(base), channel_axis(base), cfg.init_std)  # noqa: E731
            attaches.append(Attach(path, LayerWrapper, make))
        if not attaches:
            raise nothing_matched("ssf", structure, f"targets {list(targets)} in blocks {blocks}")
        return attaches
