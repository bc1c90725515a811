"""The base of the language-model methods (docs/architecture.md, "Methods"; docs/methods.md, "Language-model
task-incremental streams").

An ``LMMethod`` trains a language-model backbone (``clpet.backbones.lm``) on ``(prompt, answer)`` pairs with the
model's own causal-LM (or seq2seq) loss on the answer tokens, through clpet's shared training loop; its PET sets
are PEFT adapters (``clpet.pet.peft_sets.PeftSets``). For scoring it says which adapter sets are live
(``scoring_sets``: all of them by default, since the protocols of the papers hide the task id) and gives the
evaluators what they need: ``candidate_logprobs`` (rank classification) and ``generate_set`` (generation).
"""
from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from clpet.distributed import inference, map_batches
from clpet.methods.base import Method, MethodConfig, eval_mode
from clpet.pet.peft_sets import PeftSets
from clpet.protocols import Protocol
from clpet.scenarios.base import Experience, SampleSet
from clpet.training import OptimConfig, fit


@dataclass
class LoRAKeys:
    """The LoRA of the LM baselines (PEFT ``LoraConfig``); ``target_modules=None`` = PEFT's default for the model
    family (q/v projections of LLaMA and T5, as O-LoRA puts its LoRAs)."""

    rank: int = 8
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: Optional[List[str]] = None

    def __post_init__(self) -> None:
        if self.rank <= 0 or not 0 < self.alpha < math.inf or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"need lora rank > 0, finite alpha > 0 and 0 <= dropout < 1; got {self.rank}, "
                             f"{self.alpha}, {self.dropout}")
        if self.target_modules is not None and not list(self.target_modules):
            raise ValueError("lora.target_modules is empty; use null for PEFT's default modules")

    def peft(self) -> Dict[str, Any]:
        return {"kind": "lora", "r": int(self.rank), "lora_alpha": float(self.alpha), "lora_dropout": float(self.dropout),
                "target_modules": None if self.target_modules is None else [str(m) for m in self.target_modules]}


def peft_lora(cfg: Any, backbone: Any, layers: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """A PEFT LoRA set config from a method config's ``rank``, ``alpha`` and ``targets`` (``attention`` resolved
    by the backbone), no dropout (as ConPET's and S3T's loralib-style LoRAs); ``layers``: only those layers
    (PEFT's ``layers_to_transform``)."""
    lora = LoRAKeys(rank=cfg.rank, alpha=cfg.alpha, dropout=0.0, target_modules=cfg.targets).peft()
    lora["target_modules"] = backbone.resolve_target_modules(lora["target_modules"])
    return lora if layers is None else {**lora, "layers_to_transform": sorted(int(b) for b in layers)}


@dataclass
class LMConfig(MethodConfig):
    """Keys of every LM method."""

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=2, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=0.0, max_grad_norm=1.0))
    eval_samples_per_batch: int = 16  # prompts scored together (each with all its candidate answers)

    def __post_init__(self) -> None:
        if self.eval_samples_per_batch <= 0:
            raise ValueError(f"eval_samples_per_batch must be positive; got {self.eval_samples_per_batch}")


class LMMethod(Method):
    """Base of the LM methods: language-model loss, scoring with the live adapters, PEFT sets in ``self.pets``."""

    protocols = (Protocol.TASK_INCREMENTAL,)

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.pets: Optional[PeftSets] = None

    def setup(self, backbone, scenario, ctx) -> None:
        if not getattr(backbone, "is_language_model", False):
            raise ValueError(f"method '{self.cfg.name}' needs a language-model backbone (smollm2, hf-causal-lm, "
                             f"hf-seq2seq, tiny-llama, tiny-t5); got {type(backbone).__name__}")
        super().setup(backbone, scenario, ctx)

    def make_pets(self) -> PeftSets:
        self.pets = PeftSets(self.backbone.model)
        return self.pets

    # -- training -----------------------------------------------------------------------------------------------
    def loss_terms(self, batch: Any, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The answer tokens' cross-entropy (the model's own loss; prompt and padding masked)."""
        return {"lm": self.backbone.lm_loss(batch)}

    def train_on(self, samples: SampleSet, experience: Experience, desc: str, optim: Optional[OptimConfig] = None) -> None:
        """Train on ``samples`` with ``optim`` (default: the method's), seeded by the run seed and the task."""
        fit(self, samples, optim or self.cfg.optim, seed=self.ctx.seed * 1000 + experience.index, desc=desc)

    # -- scoring ------------------------------------------------------------------------------------------------
    def scoring_sets(self, experience: Experience, task_id: Optional[int]) -> Optional[Sequence[str]]:
        """The PEFT sets live while scoring ``experience`` (``task_id`` is None unless the protocol gives it):
        every set by default (task-id-free); None when the method has no adapters."""
        return self.pets.names() if self.pets is not None else None

    @contextmanager
    def scoring(self, experience: Experience, task_id: Optional[int]) -> Iterator[None]:
        sets = self.scoring_sets(experience, task_id)
        with eval_mode(self), self.pets.use(sets) if self.pets is not None else nullcontext():
            yield

    def _chunks(self, samples: SampleSet) -> Iterator[List[Any]]:
        step = self.cfg.eval_samples_per_batch
        for i in range(0, len(samples), step):
            yield list(samples.inputs[i: i + step])

    @inference
    def candidate_logprobs(self, samples: SampleSet, experience: Experience, task_id: Optional[int]) -> np.ndarray:
        """(N, labels): each label word's summed log-probability after each prompt (rank classification)."""
        words = experience.task.label_words
        def chunk_logprobs(chunk: List[Any]) -> np.ndarray:
            with self.ctx.autocast():
                return self.backbone.answer_logprobs([p for p, _ in chunk], words).numpy()

        with self.scoring(experience, task_id):  # under torch.distributed each rank scores its share of the chunks
            out = map_batches(list(self._chunks(samples)), chunk_logprobs)
        return np.concatenate(out) if out else np.zeros((0, len(words)))

    @inference
    def generate_set(self, samples: SampleSet, experience: Experience, task_id: Optional[int]) -> List[str]:
        """Greedy answers for every prompt of ``samples``."""
        def chunk_answers(chunk: List[Any]) -> List[str]:
            with self.ctx.autocast():
                return self.backbone.generate([p for p, _ in chunk])

        with self.scoring(experience, task_id):  # under torch.distributed each rank answers its share of the chunks
            return [a for answers in map_batches(list(self._chunks(samples)), chunk_answers) for a in answers]

    @inference
    def predict_set(self, samples: SampleSet, experience: Optional[Experience] = None,
                    task_id: Optional[int] = None) -> np.ndarray:
        """The rank-classification label index of every sample (-1 where the method predicts none of the task's)."""
        if experience is None or experience.task is None:
            raise ValueError(f"{type(self).__name__} scores language tasks: predict_set needs the sample's experience")
        from clpet.evaluation.lm import rank_predictions

        return rank_predictions(self.candidate_logprobs(samples, experience, task_id))

    def predict(self, batch: Any) -> torch.Tensor:  # pragma: no cover - LM methods are scored per set
        raise NotImplementedError("LM methods are scored with candidate_logprobs / generate_set")
