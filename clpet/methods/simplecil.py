"""SimpleCIL — "Revisiting Class-Incremental Learning with Pre-Trained Models: Generalizability and
Adaptivity are All You Need" (Zhou et al., arXiv 2303.07338, IJCV 2024), Sec. 4.1; reference code
zhoudw-zdw/RevisitingCIL (``models/simplecil.py``, ``replace_fc``).

Frozen backbone, no training. After each experience the classifier row of every new class is the mean
embedding of that class's training samples, computed with the *test-time* transform; prediction is the cosine
similarity between the normalised feature and the normalised rows (argmax).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch

from clpet.heads import cosine_logits
from clpet.methods.base import Method, MethodConfig
from clpet.registry import METHODS
from clpet.scenarios.base import Experience, SampleSet


def class_means(features: torch.Tensor, targets: torch.Tensor, classes: list) -> torch.Tensor:
    """Prototype of each class in ``classes``: the mean of its rows of ``features`` (C, D)."""
    rows = []
    for c in classes:
        mask = targets == c
        if not bool(mask.any()):
            raise ValueError(f"class {c} has no training sample: cannot compute its prototype")
        rows.append(features[mask].mean(dim=0))
    return torch.stack(rows)


@dataclass
class SimpleCILConfig(MethodConfig):
    name: str = "simplecil"


@METHODS.register("simplecil")
class SimpleCIL(Method):
    """SimpleCIL: class-mean prototypes of a frozen pre-trained backbone, cosine classifier (no training)."""

    data_parallel = True

    Config = SimpleCILConfig

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.register_buffer("prototypes", torch.zeros(0, 0))

    def embed(self, samples: SampleSet) -> torch.Tensor:
        """Frozen test-transform features (cached: computed once per sample for the whole run)."""
        return self.ctx.feature_cache.features(self.backbone, samples, self.ctx)

    def learn(self, experience: Experience) -> None:
        feats = self.embed(experience.train)
        protos = class_means(feats, torch.as_tensor(experience.train.targets), experience.classes)
        if self.prototypes.numel() == 0:
            self.prototypes = protos.to(self.ctx.device)
        else:
            self.prototypes = torch.cat([self.prototypes, protos.to(self.ctx.device)])
        self.n_seen = self.prototypes.shape[0]

    def predict(self, batch: Any) -> torch.Tensor:
        return cosine_logits(self.backbone.features(batch).float(), self.prototypes)

    @torch.inference_mode()
    def predict_set(self, samples: SampleSet, experience: Optional[Experience] = None,
                    task_id: Optional[int] = None) -> np.ndarray:
        feats = self.embed(samples).to(self.ctx.device)
        return cosine_logits(feats, self.prototypes).argmax(dim=1).cpu().numpy()

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.prototypes = torch.zeros(self.n_seen, self.backbone.feature_dim, device=self.ctx.device)
