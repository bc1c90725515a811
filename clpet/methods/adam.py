"""ADAM / APER — "Revisiting Class-Incremental Learning with Pre-Trained Models: Generalizability and
Adaptivity are All You Need" (Zhou et al., arXiv 2303.07338, IJCV 2024), Sec. 4.2 ("Adapt and Merge");
reference code zhoudw-zdw/RevisitingCIL (``models/aper_{adapter,ssf,vpt,finetune}.py``).

On the **first experience only**, a PET-equipped copy of the backbone is trained with a cosine head
(``CosineLinear``, learnable scale) and cross-entropy: SGD momentum 0.9, cosine LR to 0 over the epochs
(reference: lr 0.01, batch 48, weight decay 5e-4, 20 epochs for Adapter and SSF; VPT-deep 5 epochs lr 0.05 batch
16; full fine-tuning 5 epochs batch 128). Then both models are frozen and every sample is represented by
``concat[f_pretrained(x), f_adapted(x)]`` (2·D, ``construct_dual_branch_network``); the classifier rows are
class-mean prototypes of that feature with the test transform, for every experience including the first
(``replace_fc``), compared by cosine similarity as in SimpleCIL. Both halves are frozen after the first
experience, so their features are computed once per sample (feature cache).

PET variants: ``adapter`` (AdaptFormer parallel to the MLP: bottleneck 64, ReLU, dropout 0.1, scale 0.1, every
block; on CNNs a 1x1-conv bottleneck next to the pointwise convs), ``ssf``, ``vpt-deep``, ``vpt-shallow``
(5 prompt tokens) and ``finetune`` (a full copy of the backbone trained).

Schedule size matters: the reference schedule is sized for first experiences of thousands of images (CIFAR
B0Inc5: 2,500 images, about 1,000 SGD steps). On small first experiences (the offline ``wordnet`` and
``clipart`` streams: 130-220 samples, about 80-100 steps) it barely moves the features; ``adam_feature_shift``
is then about 1e-3 and ADAM predicts exactly as SimpleCIL does (``experiments/results/offline_cil.md``). For such
streams raise ``method.optim.epochs`` or ``method.optim.lr``, chosen on held-out data, not on the test split.
"""
from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from clpet.heads import CosineLinear, cosine_logits
from clpet.methods.base import Method, MethodConfig
from clpet.methods.simplecil import class_means
from clpet.pet import AdapterConfig, PetManager, SSFConfig, VPTConfig
from clpet.registry import METHODS
from clpet.scenarios.base import Experience, SampleSet
from clpet.training import OptimConfig, fit

ADAM_PETS = ("adapter", "ssf", "vpt-deep", "vpt-shallow", "finetune")
ADAPTED = "adapted"


@dataclass
class ADAMConfig(MethodConfig):
    name: str = "adam"
    pet: str = "adapter"  # adapter | ssf | vpt-deep | vpt-shallow | finetune
    bottleneck: int = 64  # adapter
    prompt_length: int = 5  # vpt
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=20, batch_size=48, optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, scheduler="cosine"))

    def __post_init__(self) -> None:
        if self.pet not in ADAM_PETS:
            raise ValueError(f"unknown ADAM pet '{self.pet}'; valid: {', '.join(ADAM_PETS)}")
        if self.bottleneck <= 0 or self.prompt_length <= 0:
            raise ValueError(f"ADAM bottleneck and prompt_length must be positive; got {self.bottleneck}, "
                             f"{self.prompt_length}")


def adam_pet_config(cfg: ADAMConfig, family: str) -> Any:
    if cfg.pet == "adapter":
        if family == "cnn":
            return AdapterConfig(placement="pointwise-parallel", bottleneck=cfg.bottleneck, activation="relu",
                                 dropout=0.1, scale=0.1)
        return AdapterConfig.aper(bottleneck=cfg.bottleneck)
    if cfg.pet == "ssf":
        return SSFConfig.aper()
    return VPTConfig.aper(length=cfg.prompt_length, deep=cfg.pet == "vpt-deep")


@METHODS.register("adam")
class ADAM(Method):
    """ADAM/APER: adapt a PET copy on the first experience, then prototypes on [pretrained, adapted] features."""

    data_parallel = True

    Config = ADAMConfig
    #: APER's ablation (Sec. 5.3): the prototype classifier on each half of the feature alone
    prediction_modes = ("pretrained", "adapted")

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.register_buffer("prototypes", torch.zeros(0, 0))
        self.pets = None
        self.adapted_backbone = None  # pet=finetune: a full trained copy
        self.head = None

    def setup(self, backbone, scenario, ctx) -> None:
        super().setup(backbone, scenario, ctx)
        if self.cfg.pet == "finetune":
            self.adapted_backbone = copy.deepcopy(backbone).requires_grad_(True)
        else:
            self.pets = PetManager(backbone)
            self.pets.add_set(ADAPTED, adam_pet_config(self.cfg, self.pets.structure.family))
            self.pets.set_active(None)
        self.to(ctx.device)

    # -- the two branches -------------------------------------------------------------------------------------
    def adapted_features(self, batch: Any) -> torch.Tensor:
        if self.adapted_backbone is not None:
            return self.adapted_backbone.features(batch)
        with self.pets.use(ADAPTED):
            return self.backbone.features(batch)

    def merged_features(self, samples: SampleSet) -> torch.Tensor:
        """``concat[f_pretrained, f_adapted]`` (N, 2·D), each computed once per sample for the whole run."""
        cache, ctx = self.ctx.feature_cache, self.ctx
        pretrained = cache.features(self.backbone, samples, ctx)
        # the module that computes the adapted half is the one put in eval mode (the full copy for pet=finetune:
        # a freshly resumed method is in train mode, and its dropout must not act here)
        adapted_model = self.adapted_backbone if self.adapted_backbone is not None else self.backbone
        adapted = cache.features(adapted_model, samples, ctx, desc="adapted features",
                                 key=f"adam-{self.cfg.pet}-{id(self)}", forward=self.adapted_features)
        return torch.cat([pretrained, adapted], dim=1)

    # -- learning ---------------------------------------------------------------------------------------------
    def learn(self, experience: Experience) -> None:
        if experience.index == 0:
            self.adapt(experience)
        feats = self.merged_features(experience.train)
        protos = class_means(feats, torch.as_tensor(experience.train.targets), experience.classes).to(self.ctx.device)
        self.prototypes = protos if self.prototypes.numel() == 0 else torch.cat([self.prototypes, protos])
        self.n_seen = self.prototypes.shape[0]

    def adapt(self, experience: Experience) -> None:
        """First experience only: train the PET (or the full copy) with a cosine head, then freeze it."""
        self.head = CosineLinear(self.backbone.feature_dim, experience.n_classes).to(self.ctx.device)
        if self.pets is not None:
            self.pets.set_active(ADAPTED)
        fit(self, experience.train, self.cfg.optim, seed=self.ctx.seed * 1000, desc="adapt exp 0")
        if self.pets is not None:
            self.pets.freeze(ADAPTED)
            self.pets.set_active(None)
        else:
            self.adapted_backbone.requires_grad_(False)
        self.head = None  # only the prototypes classify from now on

    def loss_terms(self, batch: Any, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(self.head(self.adapted_features(batch).float()), targets)}

    # -- inference ------------------------------------------------------------------------------------------
    def _half(self) -> slice:
        """The columns of the merged feature the live prediction mode reads (both halves by default)."""
        d = self.backbone.feature_dim
        return {"pretrained": slice(0, d), "adapted": slice(d, 2 * d)}.get(self.mode, slice(0, 2 * d))

    def predict(self, batch: Any) -> torch.Tensor:
        with self.pets.use(None) if self.pets is not None else nullcontext():
            pretrained = self.backbone.features(batch)
        feats = torch.cat([pretrained, self.adapted_features(batch)], dim=1).float()
        half = self._half()
        return cosine_logits(feats[:, half], self.prototypes[:, half].float())

    @torch.inference_mode()
    def predict_set(self, samples: SampleSet, experience: Optional[Experience] = None,
                    task_id: Optional[int] = None) -> np.ndarray:
        """Prototype classification of the cached merged features; in prediction mode ``pretrained`` /
        ``adapted`` on that half alone (APER's ablation, Sec. 5.3: ``adam_pretrained_acc`` is SimpleCIL)."""
        feats = self.merged_features(samples).to(self.ctx.device)
        half = self._half()
        if half == slice(0, 2 * self.backbone.feature_dim):
            return cosine_logits(feats, self.prototypes).argmax(dim=1).cpu().numpy()
        return cosine_logits(feats[:, half].float(), self.prototypes[:, half].float()).argmax(dim=1).cpu().numpy()

    @torch.inference_mode()
    def diagnostics(self, test: SampleSet) -> Dict[str, Any]:
        """``adam_feature_shift``: the mean relative change ||f_adapted - f_pretrained|| / ||f_pretrained|| over the
        test samples the runner hands over -- how far the first-experience adaptation moved the features (near 0:
        the adapted half repeats the pretrained one and ADAM predicts what SimpleCIL predicts)."""
        feats = self.merged_features(test).to(self.ctx.device).float()
        d = self.backbone.feature_dim
        shift = (feats[:, d:] - feats[:, :d]).norm(dim=1) / feats[:, :d].norm(dim=1).clamp_min(1e-12)
        return {"adam_feature_shift": float(f"{float(shift.mean()):.6g}")}

    # -- state ------------------------------------------------------------------------------------------------
    def count_trainable_parameters(self) -> int:
        """Parameters trained on the first experience (PET set or full copy; the cosine head is discarded)."""
        if self.adapted_backbone is not None:
            return sum(p.numel() for p in self.adapted_backbone.parameters())
        return self.pets.num_trainable(ADAPTED)

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        """Prototypes sized for the saved classes; the adapted PET set's frozen/inactive flags come with its
        saved structure, the full copy (pet=finetune) is frozen again."""
        super().load_extra_state(state)
        self.prototypes = torch.zeros(self.n_seen, 2 * self.backbone.feature_dim, device=self.ctx.device)
        if self.adapted_backbone is not None:
            self.adapted_backbone.requires_grad_(False)
