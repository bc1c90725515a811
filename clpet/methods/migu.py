"""MIGU: magnitude-based gradient updating (Du et al., "Unlocking Continual Learning Abilities in Language Models",
arXiv 2406.17245, Sec. 3; docs/methods.md, "MIGU"). Reference code: wenyudu/MIGU (``src/uie_trainer_ft.py``,
``src/accelerate_local.py``).

From the second task on, a forward hook on every linear layer adds up the L1 magnitude of each output unit,
sum over batch and positions of |y|, over the micro-batches of one optimizer step. Before the step, each layer's
weight-gradient rows (its output units) whose magnitude is below that layer's ``threshold``-quantile
(``torch.quantile``, T = 0.7 keeps the top 30 %) are zeroed; the sums reset after every step. Biases, norms and
embeddings are never masked; the first task trains unmasked. Rehearsal-free and task-id-free.

* ``variant: full`` -- full fine-tuning (every weight trains), as the reference's main setting.
* ``variant: lora`` -- one PEFT LoRA through the stream; a LoRA layer's base-layer output magnitude masks the rows
  of its LoRA-B (the output side), the paper's LoRA variant.
* ``random_update: true`` -- the ablation: a random ``threshold`` fraction of each layer's rows is zeroed instead.

Where clpet differs from the reference code, and why: the magnitudes are accumulated in fp32 under no-grad (the
reference keeps them on the autograd graph, and under its bf16 DeepSpeed setting ``torch.quantile`` rejects the
bf16 sums); the hooks count training forwards only (not evaluation); masking acts on the gradients the optimizer
reads, before clipping (``before_update``; the reference masks the engine's low-precision gradients, which under
DeepSpeed's bf16 optimizer are copied to the fp32 ones before the mask); a linear layer whose weight is tied to an
embedding (the LM head of SmolLM2 or T5) is not masked, since its rows are the embedding's; the per-layer sums are
averaged across ranks only under ``torch.distributed`` with more than one process (the reference's ``all_reduce``
needs a process group); the reference's ``random_update`` only reaches LoRA layers, clpet's every target; its LoRA
path does not run as shipped (it is gated on another method name).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import torch
from torch import nn

from clpet import distributed
from clpet.methods.lm_base import LMConfig, LMMethod, LoRAKeys
from clpet.registry import METHODS
from clpet.scenarios.base import Experience
from clpet.training import OptimConfig

VARIANTS = ("full", "lora")
LORA = "lora"


@dataclass
class MIGUConfig(LMConfig):
    name: str = "migu"
    variant: str = "full"  # full: full fine-tuning | lora: one LoRA, LoRA-B rows masked
    threshold: float = 0.7  # T: rows below each layer's T-quantile of output magnitude get no update
    random_update: bool = False  # ablation: mask a random T-fraction of rows instead
    lora: LoRAKeys = field(default_factory=lambda: LoRAKeys(rank=8, alpha=32.0, dropout=0.1))  # variant lora
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=2, batch_size=8, optimizer="adamw", lr=1e-4, weight_decay=0.0, max_grad_norm=1.0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown MIGU variant '{self.variant}'; valid: {', '.join(VARIANTS)}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1); got {self.threshold}")


def magnitude_mask(magnitude: torch.Tensor, threshold: float) -> torch.Tensor:
    """(units,) bool: the units whose magnitude reaches the ``threshold``-quantile of the layer's (ties kept)."""
    return magnitude >= torch.quantile(magnitude.float(), threshold)


def random_mask(units: int, threshold: float, generator: torch.Generator) -> torch.Tensor:
    """(units,) bool: all but a random ``int(units * threshold)`` units (the ``random_update`` ablation)."""
    keep = torch.ones(units, dtype=torch.bool)
    keep[torch.randperm(units, generator=generator)[: int(units * threshold)]] = False
    return keep


def tied_to_embedding(model: nn.Module) -> set:
    """Ids of the weights that an embedding layer also owns (a tied LM head)."""
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


@METHODS.register("migu")
class MIGU(LMMethod):
    """Sequential fine-tuning (full or one LoRA) whose updates are masked to each layer's most active units."""

    Config = MIGUConfig

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.trains_backbone = cfg.variant == "full"
        self.task = 0
        self.magnitudes: Dict[str, torch.Tensor] = {}
        self.targets: List[Tuple[str, nn.Module, nn.Parameter]] = []  # (name, hooked module, masked weight)
        self._hooks: List[Any] = []
        self._masked_rows = [0, 0]  # rows masked, rows seen (the masked fraction reported)

    def setup(self, backbone, scenario, ctx) -> None:
        super().setup(backbone, scenario, ctx)
        if self.cfg.variant == "lora":
            self.make_pets().add_set(LORA, self.cfg.lora.peft())
            self.pets.set_active(LORA)
            self.to(ctx.device)
        self.targets = self.find_targets()
        self._generator = torch.Generator().manual_seed(int(ctx.seed))
        for name, module, _ in self.targets:
            self._hooks.append(module.register_forward_hook(self._accumulate(name)))

    def find_targets(self) -> List[Tuple[str, nn.Module, nn.Parameter]]:
        """Full: every ``nn.Linear`` but those tied to an embedding, masking its own weight. LoRA: every PEFT LoRA
        layer of the set, hooked on its base layer, masking LoRA-B's rows."""
        model = self.backbone.model
        if self.cfg.variant == "lora":
            from peft.tuners.lora import LoraLayer

            return [(name, m.base_layer, m.lora_B[LORA].weight) for name, m in model.named_modules()
                    if isinstance(m, LoraLayer) and LORA in m.lora_B]
        tied = tied_to_embedding(model)
        return [(name, m, m.weight) for name, m in model.named_modules()
                if isinstance(m, nn.Linear) and id(m.weight) not in tied]

    def _accumulate(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if not (self.collecting and torch.is_grad_enabled()):
                return
            with torch.no_grad():
                y = output.detach().float().abs().reshape(-1, output.shape[-1]).sum(dim=0)
                self.magnitudes[name] = self.magnitudes[name] + y if name in self.magnitudes else y

        return hook

    @property
    def collecting(self) -> bool:
        return self.training and self.task > 0

    def learn(self, experience: Experience) -> None:
        self.task = experience.index
        self.magnitudes.clear()
        if self.pets is not None:
            self.pets.set_active(LORA)
        self.train_on(experience.train, experience, f"task {experience.task_name}")
        self.magnitudes.clear()

    def before_update(self) -> None:
        """Zero the gradient rows of each target below its magnitude quantile (from the second task on)."""
        if not self.collecting:
            return
        world = distributed.world_size()
        for name, _, weight in self.targets:
            if weight.grad is None or name not in self.magnitudes:
                continue
            if self.cfg.random_update:
                keep = random_mask(weight.shape[0], self.cfg.threshold, self._generator).to(weight.grad.device)
            else:
                magnitude = self.magnitudes[name]
                if world > 1:
                    torch.distributed.all_reduce(magnitude)  # SUM on every backend; the mean follows
                    magnitude = magnitude / world
                keep = magnitude_mask(magnitude, self.cfg.threshold)
            weight.grad.mul_(keep.unsqueeze(1).to(weight.grad.dtype))
            self._masked_rows[0] += int((~keep).sum())
            self._masked_rows[1] += int(keep.numel())
        self.magnitudes.clear()

    def count_trainable_parameters(self) -> int:
        if self.cfg.variant == "lora":
            return self.pets.num_trainable(LORA)
        return sum(p.numel() for p in self.backbone.parameters())

    def diagnostics(self, test) -> Dict[str, Any]:
        masked, seen = self._masked_rows
        return {"migu_masked_fraction": round(masked / seen, 6)} if seen else {}

    def extra_state(self) -> Dict[str, Any]:
        return {**super().extra_state(), "migu_masked_rows": list(self._masked_rows),
                "migu_generator": self._generator.get_state()}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        self._masked_rows = [int(v) for v in state["migu_masked_rows"]]
        self._generator.set_state(state["migu_generator"])
