"""What a method gets from the runner besides its config: device, seed, loaders' settings, feature cache."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Optional

import torch

from clpet.features import FeatureCache


@dataclass
class RunContext:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    num_workers: int = 0
    eval_batch_size: int = 128
    progress: bool = True
    amp: bool = True  # bf16 autocast, used on CUDA only
    feature_cache: FeatureCache = field(default_factory=FeatureCache)
    log: Callable[[str], None] = print
    # another training loop hosting the method (Avalanche's ClpetStrategy): ``clpet.training.fit`` hands its
    # calls to it (same signature); None = clpet's own loop
    trainer: Optional[Callable[..., Any]] = None

    def autocast(self) -> ContextManager:
        """bf16 autocast on CUDA (DESIGN.md, "Performance principles"); a no-op on CPU."""
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU. ``cuda`` without a GPU fails with one line."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name} asked for, but no CUDA device is available; use device=cpu or device=auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device '{name}'; valid: auto, cpu, cuda, cuda:N")
    return torch.device(name)
