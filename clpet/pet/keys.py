"""Which state-dict keys are PET tensors (docs/architecture.md, "Checkpoints").

A key is a PET tensor when one of its dotted segments names a PET container: ``pets`` (the ``nn.ModuleDict`` of a
``clpet.pet.wrappers.PetWrapper``) or an adapter container of a PEFT tuner layer (``lora_A``, ``lora_B``, ...),
which the PEFT bridge adds with :func:`register_pet_segments` from PEFT's own ``adapter_layer_names``. The rule
reads module structure only, never tensor storage, so it holds after device and dtype moves.
"""
from __future__ import annotations

from typing import Iterable, Set

_SEGMENTS: Set[str] = {"pets"}


def register_pet_segments(names: Iterable[str]) -> None:
    """Add module names that hold PET tensors (PEFT tuner layers' ``adapter_layer_names``)."""
    _SEGMENTS.update(str(n) for n in names)


def is_pet_key(key: str) -> bool:
    """Whether a state-dict key lies inside a PET container."""
    return any(part in _SEGMENTS for part in key.split("."))
