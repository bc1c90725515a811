"""The PET kind interface: a kind turns (backbone structure, config) into a list of attachments without touching
the model; ``PetManager`` checks the whole list, then wraps the sites and adds one PET module per site.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Type

import torch
from torch import nn

from clpet.pet.sites import BlockSites, Structure
from clpet.pet.wrappers import PetWrapper


@dataclass
class Attach:
    """Wrap the module at logical ``path`` with ``wrapper(base, **wrapper_kwargs)`` (once, shared by every set)
    and give the set the module ``make(base)``."""

    path: str
    wrapper: Type[PetWrapper]
    make: Callable[[nn.Module], nn.Module]
    wrapper_kwargs: Dict[str, Any] = field(default_factory=dict)


class PetKind:
    """A registered PET kind (``PETS``): its config class and ``plan(structure, cfg) -> [Attach]``.

    ``plan`` must not change the model; it raises a one-line ValueError for an unsupported combination."""

    Config: type = object
    exclusive: bool = False  # True: at most one live set of this kind per site (prefix)

    @classmethod
    def plan(cls, structure: Structure, cfg: Any) -> List[Attach]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def check_supported(cls, structure: Structure) -> None:
        kind = cls.Config.KIND
        if kind in structure.unsupported:
            raise ValueError(f"{kind} cannot attach to the {structure.describe()}: {structure.unsupported[kind]}")


def nothing_matched(kind: str, structure: Structure, what: str) -> ValueError:
    return ValueError(f"{kind}: nothing matched ({what}) on the {structure.describe()}; "
                      f"roles here: {', '.join(structure.known_roles())}")


def scale_param(scale: Any) -> Any:
    """A learnable scalar (0-dim parameter, 1.0) for ``"learnable"``, else the fixed float."""
    return nn.Parameter(torch.tensor(1.0)) if scale == "learnable" else float(scale)


def kaiming_(weight: torch.Tensor) -> torch.Tensor:
    """nn.Linear's default weight init (Kaiming-uniform, a = sqrt 5), as LoRA's A and the adapters' down-projection."""
    return nn.init.kaiming_uniform_(weight, a=math.sqrt(5))


def out_channels(module: nn.Module) -> int:
    """Channels of a module's output: Linear, Conv2d, norms, timm PatchEmbed."""
    for attr in ("out_features", "out_channels", "num_features", "num_channels", "embed_dim"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    shape = getattr(module, "normalized_shape", None)
    if shape:
        return int(shape[-1])
    proj = getattr(module, "proj", None)
    if isinstance(proj, nn.Conv2d):
        return proj.out_channels
    raise ValueError(f"cannot tell the channels of {type(module).__name__}")


def in_channels(module: nn.Module) -> int:
    for attr in ("in_features", "in_channels"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot tell the input channels of {type(module).__name__}")


def expand_roles(block: BlockSites, targets: Sequence[str]) -> List[str]:
    """The roles of ``block`` named by ``targets``, a group (``pointwise``, BERT's ``qkv``) expanded to its members;
    targets the block lacks are skipped (``Structure.check_targets`` rejects names no block has)."""
    roles: List[str] = []
    for t in targets:
        for role in block.groups.get(t, (t,) if t in block.roles else ()):
            if role not in roles:
                roles.append(role)
    return roles
