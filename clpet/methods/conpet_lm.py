"""ConPET on language models (task-incremental streams); ``clpet.methods.conpet`` describes the method and its
reference (Song et al., arXiv 2309.14763, Sec. 3.2-3.3).

* ``conpet-static``: a PEFT LoRA trained through the stream on the LM loss of the answer tokens, with ConPET's
  dynamic replay of the old tasks' (prompt, answer) pairs. Scored like every LM method.
* ``conpet-dynamic``: a PEFT LoRA expert per task (the LM head scores its label words: the expert's "head") and a
  selector (its own LoRA and a linear head over task ids on the prompt's mean last hidden state, one output more
  per task). Per task the selector trains first on dynamic-replay batches (task-id cross-entropy), then the new
  expert on ``steps_per_epoch`` batches of its own task per epoch (every task alike, the first included): under
  top-1 routing with teacher forcing an old sample goes to its own frozen expert and gives the new one no
  gradient (in the reference too), so the expert phase does not draw it. ``teacher_forcing`` and ``null_logit``
  therefore do nothing here (there are no class logits to fill). Scoring a sample: the selector's top-k tasks; each
  selected expert ranks its own task's label words; the highest-scoring label over the selected experts is the
  prediction, so a sample routed away from its task, or outscored by another task's label, is wrong (its row is
  ``-inf``, which the rank evaluator counts as a miss). Generation uses the selector's top-1 expert. Where the
  protocol gives the task id at evaluation, the sample goes to its own expert. A task not learnt yet (the next
  task, scored for FWT) is answered by each prompt's top-1 expert ranking that task's labels.

The replay memory is the full history (ConPET's setting); the K-means exemplar memory clusters classifier
logits, which a language model scored by rank classification does not have, so ``memory: kmeans`` is refused
here.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from clpet.heads import IncrementalLinear
from clpet.methods.base import eval_mode
from clpet.methods.conpet import SELECTOR, ConPETConfig, DynamicReplay, SelectorState, expert_set, route
from clpet.methods.lm_base import LMMethod, peft_lora
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
        self.make_heads(backbone.feature_dim)
        super().setup(backbone, scenario, ctx)
        self.make_pets()
        self.add_first_sets()
        self.to(ctx.device)

    def make_heads(self, dim: int) -> None:
        """None: the LM head scores the label words."""

    def add_first_sets(self) -> None:
        self.add_lora(self.SET)
        self.pets.set_active(self.SET)

    def add_lora(self, name: str) -> None:
        self.pets.add_set(name, peft_lora(self.cfg, self.backbone))

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


class ConPETDynamicLM(SelectorState, ConPETStaticLM):
    """A LoRA expert per task and a task selector over the prompt (language models)."""

    registry_name = "conpet-dynamic"

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.selector_head: IncrementalLinear
        self.phase = "expert"
        self.task = 0

    def make_heads(self, dim: int) -> None:
        self.selector_head = IncrementalLinear(dim)

    def add_first_sets(self) -> None:
        self.add_lora(SELECTOR)

    def n_tasks(self) -> int:
        return len(self.selector_head.sizes)

    def selector_logits(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        with self.pets.use(SELECTOR):
            return self.selector_head(self.backbone.features(batch).float())

    # -- training -----------------------------------------------------------------------------------------------
    def loss_terms(self, batch: Any, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.phase == SELECTOR:
            return {"selector_ce": F.cross_entropy(self.selector_logits(batch), targets)}
        return {"lm": self.backbone.lm_loss(batch)}

    def learn(self, experience: Experience) -> None:
        t = self.task = experience.index
        self.start_cost(experience)
        seed = self.ctx.seed * 1000 + t
        self.selector_head.grow(1)
        self.to(self.ctx.device)
        if t > 0:
            self.phase = SELECTOR
            self.pets.set_active(SELECTOR)  # live through the phase, so gradients reach it
            groups = [{"params": self.pets.parameters(SELECTOR) + list(self.selector_head.parameters())}]
            self.replay_fit(experience, seed, f"selector {t}", param_groups=groups,
                            relabel=lambda p, task: np.full(len(p), task, dtype=np.int64))
        self.phase = "expert"
        self.add_lora(expert_set(t))
        self.to(self.ctx.device)
        self.pets.set_active(expert_set(t))
        self.replay_fit(experience, seed + 500, f"expert {t}", replay=False, fixed_steps=True)
        self.pets.freeze(expert_set(t))
        self.pets.set_active(None)

    # -- scoring ------------------------------------------------------------------------------------------------
    def _routes(self, prompts: Sequence[str], task_id: Optional[int]) -> torch.Tensor:
        """(N, tasks) bool: the experts each prompt goes to (its own with a task id, else the selector's top-k)."""
        n = len(prompts)
        if task_id is not None and task_id >= self.n_tasks():
            task_id = None  # a task not learnt yet has no expert: the selector routes
        if task_id is not None or self.n_tasks() == 1:
            picked = torch.zeros((n, self.n_tasks()), dtype=torch.bool)
            picked[:, 0 if task_id is None else task_id] = True
            return picked
        return route(self.prompt_selector_logits(prompts), self.cfg.topk, None)

    def _top1(self, prompts: Sequence[str], task_id: Optional[int]) -> torch.Tensor:
        """(N, tasks) bool, one expert per prompt, for generation and unseen tasks: its own (task id given and
        learnt), else the selector's best."""
        if task_id is not None and task_id < self.n_tasks():
            top = torch.full((len(prompts),), task_id, dtype=torch.long)
        elif self.n_tasks() == 1:
            top = torch.zeros(len(prompts), dtype=torch.long)
        else:
            top = self.prompt_selector_logits(prompts).argmax(dim=1)
        return F.one_hot(top, self.n_tasks()).bool()

    def _under_experts(self, picked: torch.Tensor) -> Iterator[Tuple[int, List[int]]]:
        """For each expert some prompt of ``picked`` (N, tasks) goes to: (t, those prompts' indices), with t's
        adapter live (and autocast) while the caller scores them."""
        for t in picked.any(dim=0).nonzero().flatten().tolist():
            with self.pets.use(expert_set(t)), self.ctx.autocast():
                yield t, picked[:, t].nonzero().flatten().tolist()

    def prompt_selector_logits(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N, tasks) selector logits of prompts (eval mode), on the CPU."""
        with eval_mode(self):
            batch = self.backbone.preprocess([(p, "") for p in prompts], train=False)
            return self.selector_logits({k: v.to(self.ctx.device) for k, v in batch.items()}).float().cpu()

    def scoring_sets(self, experience: Experience, task_id: Optional[int]) -> Optional[Sequence[str]]:
        """Before the first task (the untrained model's b_j): the base model, no adapter."""
        return []

    @torch.inference_mode()
    def candidate_logprobs(self, samples: SampleSet, experience: Experience, task_id: Optional[int]) -> np.ndarray:
        """(N, labels): the sample's own expert's label scores where it was routed there and one of its labels
        beats every other selected expert's best label; ``-inf`` rows otherwise (a miss)."""
        if self.n_tasks() == 0:
            return super().candidate_logprobs(samples, experience, task_id)
        if experience.index >= self.n_tasks():
            return self._unseen_task_logprobs(samples, experience, task_id)
        tasks = self.scenario.experiences
        own = experience.index
        rows = []
        with eval_mode(self):
            for chunk in self._chunks(samples):
                prompts = [p for p, _ in chunk]
                picked = self._routes(prompts, task_id)
                best_other = torch.full((len(prompts),), -float("inf"))
                scores = torch.full((len(prompts), len(experience.task.label_words)), -float("inf"))
                for t, idx in self._under_experts(picked):
                    s = self.backbone.answer_logprobs([prompts[i] for i in idx], tasks[t].task.label_words)
                    if t == own:
                        scores[idx] = s.float()
                    else:
                        best_other[idx] = torch.maximum(best_other[idx], s.float().max(dim=1).values)
                beaten = scores.max(dim=1).values < best_other
                scores[beaten] = -float("inf")
                rows.append(scores.numpy())
        return np.concatenate(rows) if rows else np.zeros((0, len(experience.task.label_words)))

    @torch.inference_mode()
    def _unseen_task_logprobs(self, samples: SampleSet, experience: Experience, task_id: Optional[int]) -> np.ndarray:
        """A task without an expert yet (FWT's next task): each prompt's top-1 expert ranks the task's labels."""
        words = experience.task.label_words
        rows = []
        with eval_mode(self):
            for chunk in self._chunks(samples):
                prompts = [p for p, _ in chunk]
                scores = torch.zeros((len(prompts), len(words)))
                for _, idx in self._under_experts(self._top1(prompts, task_id)):
                    scores[idx] = self.backbone.answer_logprobs([prompts[i] for i in idx], words).float()
                rows.append(scores.numpy())
        return np.concatenate(rows) if rows else np.zeros((0, len(words)))

    @torch.inference_mode()
    def generate_set(self, samples: SampleSet, experience: Experience, task_id: Optional[int]) -> List[str]:
        if self.n_tasks() == 0:
            return super().generate_set(samples, experience, task_id)
        out: List[str] = []
        with eval_mode(self):
            for chunk in self._chunks(samples):
                prompts = [p for p, _ in chunk]
                answers = [""] * len(prompts)
                for _, idx in self._under_experts(self._top1(prompts, task_id)):
                    for i, a in zip(idx, self.backbone.generate([prompts[i] for i in idx])):
                        answers[i] = a
                out += answers
        return out

    @torch.inference_mode()
    def selector_accuracy(self) -> Dict[str, float]:
        """Top-1 task-id accuracy of the selector on every seen task's test set (all samples; mean over tasks)."""
        if self.n_tasks() < 2:
            return {}
        per_task, hits, total = [], 0, 0
        for e in self.scenario.experiences:
            prompts = [p for p, _ in e.test.inputs]
            correct = 0
            for i in range(0, len(prompts), self.cfg.eval_samples_per_batch):
                top1 = self.prompt_selector_logits(prompts[i: i + self.cfg.eval_samples_per_batch]).argmax(dim=1)
                correct += int((top1 == e.index).sum())
            per_task.append(correct / max(len(prompts), 1))
            hits, total = hits + correct, total + len(prompts)
        return {"selector_acc": round(100 * hits / max(total, 1), 4),
                "selector_avg_task_acc": round(100 * float(np.mean(per_task)), 4)}

    def count_trainable_parameters(self) -> int:
        last = self.pets.names()[-1]
        return (self.pets.num_trainable(SELECTOR) + sum(p.numel() for p in self.selector_head.parameters())
                + self.pets.num_trainable(last))

    def diagnostics(self, test: SampleSet) -> Dict[str, Any]:
        return {**self.cost_diagnostics(), **self.selector_accuracy()}
