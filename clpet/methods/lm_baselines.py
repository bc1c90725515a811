"""The baselines every language-model continual-learning table reports (docs/methods.md, "Language-model
task-incremental streams"), as the O-LoRA paper (Wang et al., EMNLP 2023 Findings, arXiv 2310.14152, Sec. 4.1)
defines them:

* ``zero-shot`` -- the pretrained model, never trained (what ``b_j`` measures, on every task).
* ``seq-ft`` -- full fine-tuning of every weight, task after task (SeqFT).
* ``seq-lora`` -- one LoRA trained through the whole stream (SeqLoRA).
* ``inc-lora`` -- a new LoRA per task; the earlier ones are frozen and stay live, so the model is the base plus
  the sum of every task's LoRA (IncLoRA; the same composition O-LoRA uses, without its orthogonality loss).
* ``multitask`` -- at task t, a fresh LoRA trained on the union of the training sets of tasks 0..t: the joint
  upper bound of each row (its cost grows with t).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from clpet.methods.lm_base import LMConfig, LMMethod, LoRAKeys
from clpet.registry import METHODS
from clpet.scenarios.base import Experience
from clpet.training import OptimConfig

LORA = "lora"


@dataclass
class ZeroShotConfig(LMConfig):
    name: str = "zero-shot"


@METHODS.register("zero-shot")
class ZeroShot(LMMethod):
    """The pretrained language model, never trained (each task scored as it comes)."""

    data_parallel = True

    Config = ZeroShotConfig

    def learn(self, experience: Experience) -> None:
        pass

    def count_trainable_parameters(self) -> int:
        return 0


@dataclass
class SeqFTConfig(LMConfig):
    name: str = "seq-ft"
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=2, batch_size=8, optimizer="adamw", lr=5e-5, weight_decay=0.0, max_grad_norm=1.0))


@METHODS.register("seq-ft")
class SeqFT(LMMethod):
    """Sequential full fine-tuning of the language model (every weight trains; checkpoints carry them all)."""

    data_parallel = True

    Config = SeqFTConfig
    trains_backbone = True

    def learn(self, experience: Experience) -> None:
        self.train_on(experience.train, experience, f"task {experience.task_name}")


@dataclass
class SeqLoRAConfig(LMConfig):
    name: str = "seq-lora"
    lora: LoRAKeys = field(default_factory=LoRAKeys)


@METHODS.register("seq-lora")
class SeqLoRA(LMMethod):
    """One LoRA (PEFT) trained through the whole stream."""

    data_parallel = True

    Config = SeqLoRAConfig

    def setup(self, backbone, scenario, ctx) -> None:
        super().setup(backbone, scenario, ctx)
        self.make_pets().add_set(LORA, self.cfg.lora.peft())
        self.pets.set_active(LORA)
        self.to(ctx.device)

    def learn(self, experience: Experience) -> None:
        self.pets.set_active(LORA)
        self.train_on(experience.train, experience, f"task {experience.task_name}")


@dataclass
class IncLoRAConfig(SeqLoRAConfig):
    name: str = "inc-lora"


def task_set(index: int) -> str:
    return f"task{index}"


@METHODS.register("inc-lora")
class IncLoRA(LMMethod):
    """A new LoRA per task, the earlier ones frozen; the model is the base plus the sum of every LoRA."""

    data_parallel = True

    Config = IncLoRAConfig

    def setup(self, backbone, scenario, ctx) -> None:
        super().setup(backbone, scenario, ctx)
        self.make_pets()

    def learn(self, experience: Experience) -> None:
        name = task_set(experience.index)
        for old in self.pets.names():
            self.pets.freeze(old)
        self.pets.add_set(name, self.cfg.lora.peft())
        self.backbone.to(self.ctx.device)
        self.pets.set_active(self.pets.names())  # old LoRAs act (frozen), the new one trains
        self.train_on(experience.train, experience, f"task {experience.task_name}")

    def count_trainable_parameters(self) -> int:
        """One task's LoRA (each task trains one)."""
        names = self.pets.names()
        return self.pets.num_trainable(names[-1]) if names else 0


@dataclass
class MultitaskConfig(SeqLoRAConfig):
    name: str = "multitask"


@METHODS.register("multitask")
class Multitask(SeqLoRA):
    """Joint upper bound: at task t a fresh LoRA trained on the union of the seen tasks' training sets."""

    Config = MultitaskConfig

    def learn(self, experience: Experience) -> None:
        self.pets.delete_set(LORA)  # from the pretrained start again
        self.pets.add_set(LORA, self.cfg.lora.peft())
        self.backbone.to(self.ctx.device)
        self.pets.set_active(LORA)
        self.train_on(self.scenario.seen_train(), experience, f"tasks 0..{experience.index}")
