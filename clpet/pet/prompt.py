"""Visual prompt tuning (Jia et al., "Visual Prompt Tuning", ECCV 2022, arXiv:2203.12119), as APER uses it
(Zhou et al., arXiv:2303.07338; zhoudw-zdw/RevisitingCIL ``convs/vpt.py``).

* shallow: ``length`` prompt tokens enter the sequence at the input of block 0 and leave after the last block;
* deep: every selected block gets its own new prompts, which enter before it and leave after it, so block i+1
  never sees block i's prompt outputs (they are replaced).

Prompts go after the class token (timm: after class and register tokens; BERT: after ``[CLS]``, where the layer's
attention mask is extended so they are visible and see every real token). APER's code appends them at the end
of the sequence instead; without position information inside the blocks the two are the same map. Removing them
after the last block keeps the final norm and the pooling on the backbone's own tokens. Prompts change
attention from the start, so VPT is not identity at init; an inactive set leaves the backbone unchanged.
"""
from __future__ import annotations

import math
from typing import List

import torch
from torch import nn

from clpet.pet.base import Attach, PetKind
from clpet.pet.config import VPTConfig
from clpet.pet.ops import insert_tokens, remove_tokens
from clpet.pet.sites import Structure
from clpet.pet.wrappers import BertLayerWrapper, ViTBlockWrapper
from clpet.registry import PETS


class PromptTokens(nn.Module):
    """One block's prompt tokens (``tokens``: (P, D)) if it ``enters`` them; ``leaves`` drops P tokens after the
    block. A shallow set's middle blocks hold a marker with neither (it only carries the tokens through)."""

    hook = "tokens"

    def __init__(self, dim: int, cfg: VPTConfig, fan_in: int, enters: bool, leaves: bool) -> None:
        super().__init__()
        self.length, self.enters, self.leaves = cfg.length, enters, leaves
        if enters:
            tokens = torch.zeros(cfg.length, dim)
            if cfg.init == "xavier":  # VPT: U(-v, v), v = sqrt(6 / (fan_in + D)), fan_in = 3 * patch^2 for a ViT
                bound = math.sqrt(6.0 / float(fan_in + dim))
                tokens.uniform_(-bound, bound)
            self.tokens = nn.Parameter(tokens)

    def enter(self, x: torch.Tensor, at: int) -> torch.Tensor:
        return insert_tokens(x, self.tokens, at) if self.enters else x  # (B, T, D) -> (B, T + P, D)

    def leave(self, x: torch.Tensor, at: int) -> torch.Tensor:
        return remove_tokens(x, at, self.length) if self.leaves else x  # (B, T + P, D) -> (B, T, D)

    def extra_repr(self) -> str:
        return f"length={self.length}, enters={self.enters}, leaves={self.leaves}"


@PETS.register("vpt")
class VPT(PetKind):
    """Visual prompt tuning, deep or shallow (timm ViTs with absolute position embeddings, BERT encoders)."""

    Config = VPTConfig

    @classmethod
    def plan(cls, structure: Structure, cfg: VPTConfig) -> List[Attach]:
        cls.check_supported(structure)
        n = len(structure.blocks)
        wrapper = BertLayerWrapper if structure.family == "bert" else ViTBlockWrapper
        kwargs = {"token_at": structure.token_at}
        dim, fan_in = structure.dim, structure.prompt_fan_in
        if cfg.deep:
            chosen = structure.block_indices(cfg.blocks, "vpt")
            plan = [(i, True, True) for i in chosen]
        elif structure.family == "bert":  # every layer extends its mask for the carried tokens
            plan = [(i, i == 0, i == n - 1) for i in range(n)]
        else:
            plan = [(0, True, n == 1)] + ([(n - 1, False, True)] if n > 1 else [])
        return [Attach(structure.blocks[i].path, wrapper,
                       lambda base, e=enters, l=leaves: PromptTokens(dim, cfg, fan_in, e, l),
                       kwargs if structure.family == "bert" else {**kwargs, "layout": structure.blocks[i].layout})
                for i, enters, leaves in plan]
