"""I-LoRA: interpolation-based LoRA with a dual-memory replay (Ren et al., "Analyzing and Reducing Catastrophic
Forgetting in Parameter Efficient Tuning", arXiv 2402.18865, Sec. 4; docs/methods.md, "I-LoRA").

Two PEFT LoRA adapters on one model: the *fast* learner, trained, and the *slow* learner, never trained by
gradient but moved towards the fast one after every optimizer step (the paper's parameter interpolation along the
low-loss valley between the two minima):

    slow <- a * slow + (1 - a) * fast,    a = min(1 - 1 / (step + 1), ema_alpha)

with ``step`` the optimizer steps taken on the current task (from 1; the reference's per-task ``global_step``) and
``ema_alpha`` 0.25 as in the reference code (which47/LLMCL ``method/ILORA.py``): with it the slow learner keeps a
quarter of itself per step. The paper describes the slow learner as this interpolation of the fast one without
fixing the coefficient in the text; expose ``ema_alpha`` to study it.

A reservoir buffer (``clpet.replay``, 500 samples) holds past training samples as token rows. From the second task
on each step is: a replayed batch of the current batch's size drawn from the buffer, then

    loss = (CE(current) + CE(replay)) / 2 + lambda * L_cons(replay),
    L_cons = mean over every hidden-state tensor (embedding output and each layer; the decoder's on T5), token and unit of
             (h_fast - max(h_fast, h_slow))^2 = relu(h_slow - h_fast)^2

(the reference's one-sided form: only fast activations below the slow learner's are pulled up; ``consistency:
mse`` is the plain (h_fast - h_slow)^2). The slow forward runs without gradient. The current batch enters the
buffer after its step. Inference uses the slow adapter; ``prediction_modes`` gives the fast one's accuracy.

Where clpet differs from the reference code, which has bugs: (1) the reference's EMA loop matches the slow
adapter's parameters by the fast adapter's names, so it never updates the slow adapter (it stays the base model;
its inference uses the fast one); clpet interpolates by tensor key (``PeftSets.ema_update``). (2) The reference
fills the buffer before the forward, so a replayed batch can hold the current batch; clpet samples first. (3) Its
first-task test compares a dataset name; clpet uses the experience index. (4) Its wrapper builds a second full
randomly initialised LLaMA whose head reaches the optimizer; clpet has one model. (5) Padding counts in its
consistency mean (no attention mask is passed); clpet averages over real tokens only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from clpet.backbones.base import batch_to
from clpet.methods.lm_base import LMConfig, LMMethod, LoRAKeys
from clpet.registry import METHODS
from clpet.replay import ReservoirBuffer
from clpet.scenarios.base import Experience
from clpet.training import OptimConfig

FAST, SLOW = "fast", "slow"
CONSISTENCY = ("max", "mse")


@dataclass
class ILoRAConfig(LMConfig):
    name: str = "ilora"
    lora: LoRAKeys = field(default_factory=lambda: LoRAKeys(rank=8, alpha=32.0, dropout=0.1,
                                                            target_modules=["attention"]))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=2, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=0.0, max_grad_norm=1.0))
    buffer_size: int = 500  # reservoir capacity (samples)
    ema_alpha: float = 0.25  # the cap of the slow learner's share a in the interpolation
    consistency_weight: float = 1.0  # lambda
    consistency: str = "max"  # max (the reference's one-sided form) | mse (plain MSE to the slow states)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.buffer_size <= 0:
            raise ValueError(f"buffer_size must be positive; got {self.buffer_size}")
        if not 0.0 <= self.ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha must be in [0, 1]; got {self.ema_alpha}")
        if not 0.0 <= self.consistency_weight < math.inf:
            raise ValueError(f"consistency_weight must be finite and >= 0; got {self.consistency_weight}")
        if self.consistency not in CONSISTENCY:
            raise ValueError(f"unknown consistency '{self.consistency}'; valid: {', '.join(CONSISTENCY)}")


def interpolation_weight(step: int, ema_alpha: float) -> float:
    """a = min(1 - 1 / (step + 1), ema_alpha): the slow learner's share after optimizer step ``step`` (from 1)."""
    return min(1.0 - 1.0 / (step + 1), ema_alpha)


def consistency_loss(fast: Sequence[torch.Tensor], slow: Sequence[torch.Tensor], mask: torch.Tensor,
                     form: str = "max") -> torch.Tensor:
    """Mean over the hidden-state tensors, the tokens where ``mask`` is 1 and the units of
    (h_fast - max(h_fast, h_slow))^2 (``max``) or (h_fast - h_slow)^2 (``mse``); ``slow`` carries no gradient."""
    weight = mask.unsqueeze(-1).to(fast[0].dtype)
    total = fast[0].new_zeros(())
    for f, s in zip(fast, slow):
        s = s.detach()
        target = torch.maximum(f, s) if form == "max" else s
        total = total + (((f - target) ** 2) * weight).sum()
    count = weight.sum() * fast[0].shape[-1] * len(fast)
    return total / count.clamp_min(1.0)


@METHODS.register("ilora")
class ILoRA(LMMethod):
    """Fast and slow LoRA on one LM, reservoir replay with a one-sided hidden-state consistency, the slow
    adapter interpolated towards the fast one after every step; scored with the slow adapter."""

    Config = ILoRAConfig
    prediction_modes = ("fast",)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.buffer = ReservoirBuffer(cfg.buffer_size)
        self.task_steps = 0  # optimizer steps on the current task (the interpolation's step)
        self._rng = np.random.RandomState(0)
        self._replay_on = False

    def setup(self, backbone, scenario, ctx) -> None:
        super().setup(backbone, scenario, ctx)
        lora = self.cfg.lora.peft()
        lora["target_modules"] = self.backbone.resolve_target_modules(lora["target_modules"])
        pets = self.make_pets()
        pets.add_set(FAST, lora)
        pets.copy_set(FAST, SLOW)  # the slow learner starts where the fast one does (both the base model)
        pets.freeze(SLOW)
        pets.set_active(FAST)
        self.to(ctx.device)

    # -- training -----------------------------------------------------------------------------------------------
    def learn(self, experience: Experience) -> None:
        self.task_steps = 0
        self._replay_on = experience.index > 0 and len(self.buffer) > 0
        self._rng = np.random.RandomState((self.ctx.seed * 1_000_003 + experience.index) % 2**32)
        self.pets.set_active(FAST)
        self.train_on(experience.train, experience, f"task {experience.task_name}")

    def _forward(self, batch: Dict[str, torch.Tensor], hidden: bool) -> Any:
        return self.backbone.model(**batch, output_hidden_states=hidden)

    def _token_mask(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The real tokens of the hidden states: the decoder's answer positions (seq2seq) or the attention mask."""
        return (batch["labels"] != -100).long() if self.backbone.seq2seq else batch["attention_mask"]

    def loss_terms(self, batch: Any, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        collate = self.backbone.preprocess_fn(train=True)
        terms: Dict[str, torch.Tensor] = {}
        replay_rows = self.buffer.sample(batch["input_ids"].shape[0], self._rng) if self._replay_on else []
        current = self._forward(batch, hidden=False).loss
        if replay_rows:
            replay = batch_to(collate.join_rows(replay_rows), self.ctx.device)
            fast_out = self._forward(replay, hidden=True)
            with torch.no_grad(), self.pets.use(SLOW):
                slow_states = self.backbone.output_states(self._forward(replay, hidden=True))
            terms["lm"] = 0.5 * (current + fast_out.loss)
            terms["consistency"] = self.cfg.consistency_weight * consistency_loss(
                self.backbone.output_states(fast_out), slow_states, self._token_mask(replay), self.cfg.consistency)
        else:
            terms["lm"] = current
        self.buffer.add(collate.split_rows(batch), self._rng)  # after the step's replay draw
        return terms

    def after_step(self) -> None:
        self.task_steps += 1
        self.pets.ema_update(SLOW, FAST, interpolation_weight(self.task_steps, self.cfg.ema_alpha))

    # -- scoring ------------------------------------------------------------------------------------------------
    def scoring_sets(self, experience: Experience, task_id: Optional[int]) -> Optional[Sequence[str]]:
        return [FAST] if self.mode == "fast" else [SLOW]

    def count_trainable_parameters(self) -> int:
        """The fast adapter (the slow one is interpolated, not trained)."""
        return self.pets.num_trainable(FAST)

    # -- state --------------------------------------------------------------------------------------------------
    def extra_state(self) -> Dict[str, Any]:
        return {**super().extra_state(), "buffer": self.buffer.state()}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.buffer.load(state["buffer"])
