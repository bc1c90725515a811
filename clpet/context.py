"""What a method gets from the runner besides its config: device, precision, seed, loaders' settings, feature
cache."""
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
    precision: str = "fp32"  # bf16 | fp16 | fp32: the autocast dtype of forward passes (resolve_precision)
    feature_cache: FeatureCache = field(default_factory=FeatureCache)
    log: Callable[[str], None] = print
    # another training loop hosting the method (Avalanche's ClpetStrategy): ``clpet.training.fit`` hands its
    # calls to it (same signature); None = clpet's own loop
    trainer: Optional[Callable[..., Any]] = None
    # experiment trackers (clpet.tracking.Tracker): every optimizer step's losses and LR go to it; None = off
    tracker: Optional[Any] = None

    def autocast(self) -> ContextManager:
        """Autocast to ``precision`` (bf16 or fp16) on the run device; fp32: a no-op."""
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

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


PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere. fp16 needs CUDA (the training loop scales its loss there)."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision '{name}'; valid: {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"precision=fp16 needs a CUDA device (device is {device}); use bf16 or fp32")
    return name
