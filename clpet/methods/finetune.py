"""The two reference points every CL table needs (docs/methods.md, "Baselines").

* ``finetune`` — sequential fine-tuning: the backbone and a growing linear head are trained on each experience
  in turn with plain cross-entropy over all classes seen so far, no replay, no regularisation: the lower bound.
* ``joint`` — at experience t, one model is trained from the pre-trained start on the union of the training
  data of experiences 0..t and evaluated exactly like the others: the upper bound for every row of the
  accuracy matrix. Its cost grows with t, by design.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch
import torch.nn.functional as F

from clpet.heads import IncrementalLinear
from clpet.methods.base import Method, MethodConfig
from clpet.registry import METHODS
from clpet.scenarios.base import Experience, SampleSet
from clpet.training import OptimConfig, fit


class HeadClassifier:
    """Features -> ``self.head`` logits, cross-entropy over every seen class (finetune, joint, ConPET static)."""

    head: IncrementalLinear
    n_seen: int

    def logits(self, batch: Any) -> torch.Tensor:
        return self.head(self.backbone.features(batch).float())

    def predict(self, batch: Any) -> torch.Tensor:
        return self.logits(batch)[:, : self.n_seen]

    def loss_terms(self, batch: Any, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(self.logits(batch), targets)}


@dataclass
class FinetuneConfig(MethodConfig):
    name: str = "finetune"
    train_backbone: bool = True  # false: linear probe on frozen features (head only)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=3, batch_size=32, optimizer="adamw", lr=1e-4))
    head_lr_scale: float = 10.0  # the new head starts from scratch: a larger LR than the pre-trained body


@METHODS.register("finetune")
class Finetune(HeadClassifier, Method):
    """Sequential fine-tuning of backbone + growing head (the lower bound: forgets)."""

    data_parallel = True

    Config = FinetuneConfig

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.trains_backbone = bool(cfg.train_backbone)
        self.head: IncrementalLinear

    def setup(self, backbone, scenario, ctx) -> None:
        self.head = IncrementalLinear(backbone.feature_dim)
        super().setup(backbone, scenario, ctx)

    def param_groups(self) -> List[Dict[str, Any]]:
        body = [p for p in self.backbone.parameters() if p.requires_grad]
        head = list(self.head.parameters())
        groups = [{"params": head, "lr_scale": self.cfg.head_lr_scale}]
        if body:
            groups.append({"params": body, "lr_scale": 1.0})
        return groups

    def train_on(self, samples: SampleSet, seed: int, desc: str) -> None:
        fit(self, samples, self.cfg.optim, seed=seed, param_groups=self.param_groups(), desc=desc)

    def learn(self, experience: Experience) -> None:
        self.head.grow(experience.n_classes)
        self.n_seen = self.head.out_features
        self.train_on(experience.train, self.ctx.seed * 1000 + experience.index, f"exp {experience.index}")

    def extra_state(self) -> Dict[str, Any]:
        return {**super().extra_state(), "head_sizes": self.head.sizes}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        for n in state["head_sizes"][len(self.head.sizes):]:
            self.head.grow(int(n))


@dataclass
class JointConfig(FinetuneConfig):
    name: str = "joint"


@METHODS.register("joint")
class Joint(Finetune):
    """Joint training on all data seen so far, retrained from the pre-trained start each experience (upper bound)."""

    Config = JointConfig

    def setup(self, backbone, scenario, ctx) -> None:
        super().setup(backbone, scenario, ctx)
        self._start = {k: v.detach().clone() for k, v in self.backbone.state_dict().items()}

    def learn(self, experience: Experience) -> None:
        seen = self.scenario.experiences  # the seen-so-far view: experiences 0..t
        self.backbone.load_state_dict(self._start)
        self.head = IncrementalLinear(self.backbone.feature_dim).to(self.ctx.device)
        for e in seen:
            self.head.grow(e.n_classes)
        self.n_seen = self.head.out_features
        data = self.scenario.seen_train()
        self.train_on(data, self.ctx.seed * 1000 + experience.index, f"joint 0..{experience.index}")
