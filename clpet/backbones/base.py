"""The Backbone contract (docs/architecture.md): ``features(batch) -> Tensor[B, D]``, train/eval preprocessing, and named
attachment sites for PET modules. One interface for timm models, Hugging Face encoders and tiny test models.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn


class Backbone(nn.Module):
    """Base class of every backbone.

    Subclasses set ``feature_dim`` and ``modality`` and implement:

    * ``preprocess(inputs, train) -> batch``: turn a list of raw samples (``SampleSet.inputs`` entries) into
      a model-ready batch (a tensor, or a dict of tensors for tokenised text). ``train`` picks the training
      transform (augmentation) or the test transform. Must not read the model's parameters or state that changes
      during training: DataLoader workers call it.
    * ``features(batch) -> Tensor[B, D]``: the representation a classifier head reads (ViT class token after
      the final norm, pooled CNN feature, mean-pooled sentence embedding, ...).

    ``cache_key`` names the frozen function ``features`` computes (model + weights + preprocessing), so that
    frozen features can be cached across runs and methods.
    """

    feature_dim: int = 0
    modality: str = "vector"
    weight_path: Optional[str] = None  # the local weights file or folder loaded (provenance hashes it); None: random

    def preprocess(self, inputs: Sequence[Any], train: bool) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, batch: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, batch: Any) -> torch.Tensor:
        return self.features(batch)

    @property
    def cache_key(self) -> str:
        return type(self).__name__

    def sites(self) -> Dict[str, List[str]]:
        """Named attachment sites for PET modules: site role (``block``, ``qkv``, ``fc1``, ``pointwise``...) ->
        module paths, found from the model's structure by ``clpet.pet.sites``; {} when no PET can attach."""
        from clpet.pet.sites import site_names  # lazy: clpet.pet imports the registries

        return site_names(self)

    def enable_image_cache(self, max_mb: float) -> bool:
        """Keep decoded image files in memory up to ``max_mb`` MiB (image backbones; see
        ``clpet.backbones.images.DecodedImageCache``); returns whether any transform caches. Others: no-op."""
        return False

    def preprocess_fn(self, train: bool) -> Callable[[Sequence[Any]], Any]:
        """A picklable callable for DataLoader ``collate_fn`` use. The default wraps ``preprocess`` and so pickles
        the whole backbone into worker processes; subclasses should return a small parameter-free transform."""
        return _Preprocess(self, train)


class _Preprocess:
    def __init__(self, backbone: Backbone, train: bool) -> None:
        self.backbone = backbone
        self.train = train

    def __call__(self, inputs: Sequence[Any]) -> Any:
        return self.backbone.preprocess(inputs, self.train)


def batch_to(batch: Any, device: torch.device | str) -> Any:
    """Move a batch (tensor, or dict/list/tuple of tensors) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: batch_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(batch_to(v, device) for v in batch)
    return batch
