"""LAE — "A Unified Continual Learning Framework with General Parameter-Efficient Tuning" (Gao et al., ICCV 2023,
arXiv 2303.10070); reference code gqk/LAE (``main.py``, ``libml/model/pet``).

Learning, Accumulation, Ensemble on a frozen backbone with one PET kind (Adapter, LoRA or Prefix):

* **Learning** (Sec. 3.2): cross-entropy on the *current experience's logits only*
  (``logits[:, n_old:]``, targets shifted by ``n_old``). Calibration: in every experience after the first, the
  online PETs are frozen for the first ``num_freeze_epochs`` epochs (only the new head trains), then PETs and
  head train together (reference: ``pre_train_epoch``).
* **Accumulation** (Sec. 3.3): the offline PET set is created at the start of experience 2 as a copy of the
  online set trained on experience 1; after *every optimizer step* from then on,
  ``off = 0.9999 * off + 0.0001 * on`` (reference: ``timm.utils.ModelEmaV2`` in ``post_train_step``).
  The EMA horizon is in optimizer steps, so batch size and epochs change the method.
* **Ensemble** (Sec. 3.4): predict with the online and with the offline PETs (the head is shared), softmax each,
  take the element-wise max, argmax (reference: ``eval_epoch``).

The head grows by one ``Linear(D, n_t)`` per experience, initialised N(0, 0.001²) with zero bias
(reference ``SimpleHead.weights_init``: ``normal_(std=0.001)``). Defaults follow the reference CIFAR-100 config
(Adam, constant LR 0.0028125, batch 24, 5 epochs, 3 freeze epochs, ``drop_last``); the reference optimizer holds
every parameter of the model, so the PETs sit in it while frozen and simply get no gradient.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from clpet.heads import IncrementalLinear
from clpet.methods.base import Method, MethodConfig
from clpet.pet import AdapterConfig, LoRAConfig, PetManager, PrefixConfig
from clpet.registry import METHODS
from clpet.scenarios.base import Experience
from clpet.training import OptimConfig, fit

PET_KINDS = ("adapter", "lora", "prefix")
ONLINE, OFFLINE = "online", "offline"


@dataclass
class LAEConfig(MethodConfig):
    name: str = "lae"
    pet: str = "adapter"  # adapter | lora | prefix
    blocks: List[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # PET blocks (reference: 0-4)
    bottleneck: int = 5  # adapter
    rank: int = 5  # lora
    prefix_length: int = 10  # prefix
    num_freeze_epochs: int = 3
    ema_decay: float = 0.9999
    head_init_std: float = 0.001
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=5, batch_size=24, optimizer="adam", lr=0.0028125, weight_decay=0.0, drop_last=True))

    def __post_init__(self) -> None:
        if self.pet not in PET_KINDS:
            raise ValueError(f"unknown LAE pet '{self.pet}'; valid: {', '.join(PET_KINDS)}")
        for key in ("bottleneck", "rank", "prefix_length"):
            if getattr(self, key) <= 0:
                raise ValueError(f"LAE {key} must be positive; got {getattr(self, key)}")
        if not 0.0 < self.head_init_std < float("inf"):
            raise ValueError(f"LAE head_init_std must be a finite number > 0; got {self.head_init_std}")
        if not list(self.blocks) or any(b < 0 for b in self.blocks) or len(set(self.blocks)) != len(self.blocks):
            raise ValueError(f"LAE blocks must be distinct non-negative block indices; got {list(self.blocks)}")
        if self.num_freeze_epochs < 0 or not 0.0 <= self.ema_decay < 1.0:  # 1: the offline expert never moves
            raise ValueError(f"need num_freeze_epochs >= 0 and 0 <= ema_decay < 1; got "
                             f"{self.num_freeze_epochs}, {self.ema_decay}")


def lae_pet_config(cfg: LAEConfig, family: str) -> Any:
    """The PET config of LAE's kind for a backbone family: the reference ViT kinds on transformers; on CNNs the
    adapter and LoRA go next to / onto the pointwise (1x1) convolutions, and a prefix has no attention to join."""
    blocks = tuple(cfg.blocks)
    if cfg.pet == "adapter":
        if family == "cnn":
            return AdapterConfig(placement="pointwise-parallel", bottleneck=cfg.bottleneck, activation="gelu",
                                 scale="learnable", blocks=blocks)
        return AdapterConfig.lae(bottleneck=cfg.bottleneck, blocks=blocks)
    if cfg.pet == "lora":
        if family == "cnn":
            return LoRAConfig(rank=cfg.rank, scale="learnable", targets=("pointwise",), blocks=blocks)
        return LoRAConfig.lae(rank=cfg.rank, blocks=blocks)
    return PrefixConfig.lae(length=cfg.prefix_length, blocks=blocks)


def max_softmax_ensemble(logits: List[torch.Tensor]) -> torch.Tensor:
    """LAE's ensemble (Sec. 3.4): the element-wise max over the experts' softmax outputs, (B, C)."""
    return torch.stack([x.softmax(dim=1) for x in logits], dim=-1).max(dim=-1).values


@METHODS.register("lae")
class LAE(Method):
    """LAE: online/offline PET experts (EMA after every step), current-task loss, max-softmax ensemble."""

    data_parallel = True

    Config = LAEConfig
    #: each expert alone (LAE's ablation); the default prediction is the ensemble
    prediction_modes = (ONLINE, OFFLINE)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.pets: Optional[PetManager] = None
        self.head: IncrementalLinear
        self.n_old = 0
        self.experience = 0

    def setup(self, backbone, scenario, ctx) -> None:
        self.head = IncrementalLinear(backbone.feature_dim, init_std=self.cfg.head_init_std)
        super().setup(backbone, scenario, ctx)
        self.pets = PetManager(backbone)  # freezes the backbone
        self.pets.add_set(ONLINE, lae_pet_config(self.cfg, self.pets.structure.family))
        self.pets.set_active(ONLINE)
        backbone.to(ctx.device)

    @property
    def has_offline(self) -> bool:
        return OFFLINE in self.pets

    # -- learning ---------------------------------------------------------------------------------------------
    def learn(self, experience: Experience) -> None:
        self.experience = experience.index
        if experience.index > 0 and not self.has_offline:
            self.pets.copy_set(ONLINE, OFFLINE)  # Accumulation starts from the expert of experience 1
            self.pets.freeze(OFFLINE)
        self.pets.set_active(ONLINE)
        self.pets.unfreeze(ONLINE)  # in the optimizer from the start, frozen by ``before_epoch`` when due
        self.n_old = self.head.out_features
        self.head.grow(experience.n_classes)
        self.n_seen = self.head.out_features
        fit(self, experience.train, self.cfg.optim, seed=self.ctx.seed * 1000 + experience.index,
            desc=f"exp {experience.index}")
        self.pets.unfreeze(ONLINE)

    def before_epoch(self, epoch: int) -> None:
        """Calibration: PETs frozen in the first ``num_freeze_epochs`` epochs of every experience after the first."""
        if self.experience > 0 and epoch < self.cfg.num_freeze_epochs:
            self.pets.freeze(ONLINE)
        else:
            self.pets.unfreeze(ONLINE)

    def logits(self, batch: Any) -> torch.Tensor:
        return self.head(self.backbone.features(batch).float())

    def loss_terms(self, batch: Any, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Cross-entropy over the current experience's classes only (old-class logits ignored)."""
        logits = self.logits(batch)[:, self.n_old:]
        return {"ce": F.cross_entropy(logits, targets - self.n_old)}

    def after_step(self) -> None:
        """Accumulation: EMA of the online PETs into the offline ones after every optimizer step."""
        if self.has_offline:
            self.pets.ema_update(OFFLINE, ONLINE, self.cfg.ema_decay)

    # -- inference ------------------------------------------------------------------------------------------
    def predict(self, batch: Any) -> torch.Tensor:
        """The max-softmax ensemble; in prediction mode ``online`` / ``offline`` that expert alone (the runner
        scores both after the last experience as ``lae_online_acc`` / ``lae_offline_acc``)."""
        if self.mode == ONLINE or not self.has_offline:
            return self.logits(batch).softmax(dim=1)
        with self.pets.use(OFFLINE):
            offline = self.logits(batch)
        if self.mode == OFFLINE:
            return offline.softmax(dim=1)
        return max_softmax_ensemble([self.logits(batch), offline])

    # -- state ------------------------------------------------------------------------------------------------
    def count_trainable_parameters(self) -> int:
        """Head + one PET set (the offline set is an EMA, never trained)."""
        return sum(p.numel() for p in self.head.parameters()) + self.pets.num_trainable(ONLINE)

    def extra_state(self) -> Dict[str, Any]:
        return {**super().extra_state(), "head_sizes": self.head.sizes, "experience": self.experience}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        """The PET sets (online, and offline once it exists) rebuild from their saved structure; the head regrows."""
        super().load_extra_state(state)
        for n in state["head_sizes"][len(self.head.sizes):]:
            self.head.grow(int(n))
        self.experience = int(state["experience"])
