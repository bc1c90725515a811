"""ConPET on language models (task-incremental streams): ``conpet-static`` with a PEFT LoRA trained through the
stream on the LM loss of the answer tokens, with ConPET's dynamic replay of the old tasks' (prompt, answer) pairs
(``clpet.methods.conpet`` describes the method and its reference; Song et al., arXiv 2309.14763, Sec. 3.2).
Scored like every LM method (rank classification or generation, no task id).

The replay memory is the full history (ConPET's setting); the K-means exemplar memory clusters classifier
logits, which a language model scored by rank classification does not have, so ``memory: kmeans`` is refused
here.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from clpet.methods.conpet import ConPETConfig, DynamicReplay
from clpet.methods.lm_base import LMMethod, LoRAKeys
from clpet.protocols import Protocol
from clpet.scenarios.base import Experience, SampleSet


class ConPETStaticLM(DynamicReplay, LMMethod):
    """One LoRA through the task stream, dynamic replay of the old tasks (language models)."""

    Config = ConPETConfig
    protocols = (Protocol.TASK_INCREMENTAL,)
    registry_name = "conpet-static"
    SET = "conpet"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.cost: List[Dict[str, int]] = []
        self.exemplars: Dict[int, np.ndarray] = {}

    def setup(self, backbone, scenario, ctx) -> None:
        if self.cfg.memory != "full":
            raise ValueError(f"{self.cfg.name} on language tasks replays the full history (memory: full); "
                             f"memory '{self.cfg.memory}' clusters classifier logits, which rank scoring has none of")
        super().setup(backbone, scenario, ctx)
        lora = LoRAKeys(rank=self.cfg.rank, alpha=self.cfg.alpha, dropout=0.0, target_modules=self.cfg.targets).peft()
        lora["target_modules"] = self.backbone.resolve_target_modules(lora["target_modules"])
        self.make_pets().add_set(self.SET, lora)
        self.pets.set_active(self.SET)
        self.to(ctx.device)

    def learn(self, experience: Experience) -> None:
        self.start_cost(experience)
        self.pets.set_active(self.SET)
        self.replay_fit(experience, self.ctx.seed * 1000 + experience.index, f"task {experience.task_name}")

    def diagnostics(self, test: SampleSet) -> Dict[str, Any]:
        return self.cost_diagnostics()

    def extra_state(self) -> Dict[str, Any]:
        return {**super().extra_state(), **self.cost_state()}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.load_cost_state(state)
