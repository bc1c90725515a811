"""ConPET: continual parameter-efficient tuning (Song et al., "ConPET: Continual Parameter-Efficient Tuning for
Large Language Models", arXiv 2309.14763; docs/methods.md, "ConPET"). Reference code: Raincleared-Song/ConPET.

* ``conpet-static`` (Sec. 3.2): one LoRA and one classifier head trained through the stream with **dynamic
  replay** (``clpet.replay.dynamic_replay_batches``): from the second task on, every epoch has ``steps_per_epoch``
  batches whatever the number of tasks, each half current-task samples and half old ones (an old task drawn
  uniformly, then one of its samples). Old data is the full history (``memory: full``, ConPET's setting) or a
  per-class exemplar memory (``memory: kmeans``, the EMR baseline: the sample nearest to each K-means centroid of
  the class's head logits, the features the reference clusters). ``steps_per_epoch: null`` replays everything
  (a shuffled pass over current + old data: the cost-grows-with-tasks baseline).
* ``conpet-dynamic`` (Sec. 3.3): one LoRA + linear head per task (an expert) and a **selector**: its own LoRA and
  a head over task ids that grows by one per task. Per new task the selector trains first (task-id cross-entropy
  on the dynamic-replay batches), then the new expert (on the same kind of batches). Prediction: the selector's
  top-k tasks; the classes of unselected experts get the logit ``null_logit`` (-100), the selected experts' heads
  fill theirs, and the prediction is the argmax over every seen class (the softmax of the reference). In training
  the gold task replaces the last of the top-k slots when missing (teacher forcing). Old experts are frozen, so
  their logits are computed once per sample and cached (replay costs no extra forward through them), and the
  routing of a training sample is cached while the selector is frozen (the expert phase). The expert phase draws
  the same half-old batches as the reference; under top-1 routing with teacher forcing an old sample goes to its
  own frozen expert and adds a constant to the loss (no gradient), as there.

Where clpet differs from the reference code: the static head grows with the stream (the reference sizes it for
every class of every task, future ones inside the softmax, which class-incremental learning cannot know); routing
and cached outputs are computed in eval mode (the reference computes BERT routing with dropout on and caches it);
the new expert starts from a fresh LoRA (the reference's LLaMA path starts it from the freshly trained selector's
weights and optimizer moments, since both share one LoRA there).

This module holds the classification versions (heads on an encoder, with clpet's own PET library); the language-
model versions (``clpet.methods.conpet_lm``, PEFT LoRA, rank classification) run on task-incremental streams under
the same names (``for_protocol``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F

from clpet.heads import IncrementalLinear
from clpet.methods.base import Method, eval_mode
from clpet.methods.finetune import HeadClassifier
from clpet.methods.lm_base import LMConfig, peft_lora
from clpet.pet import LoRAConfig, PetManager
from clpet.pet.peft_sets import PeftSets
from clpet.protocols import CLASS_PROTOCOLS, Protocol
from clpet.registry import METHODS
from clpet.replay import dynamic_replay_batches, kmeans_exemplars
from clpet.scenarios.base import Experience, SampleSet
from clpet.training import OptimConfig, fit

MEMORIES = ("full", "kmeans")


@dataclass
class ConPETConfig(LMConfig):
    """ConPET's keys (``eval_samples_per_batch``: prompts scored together, language-model streams only)."""

    name: str = "conpet-static"
    rank: int = 4  # LoRA rank (reference: 4)
    alpha: float = 1.0  # LoRA scale alpha / rank (loralib's default alpha, as the reference)
    targets: Optional[List[str]] = None  # encoders: clpet PET targets (null: q, v); LMs: PEFT target_modules
    steps_per_epoch: Optional[int] = 25  # dynamic replay: batches per epoch from the 2nd task on; null: replay all
    replay_fraction: float = 0.5  # old samples per replay batch (reference: 4 of 8)
    memory: str = "full"  # full (every old training sample) | kmeans (exemplars_per_class per old class)
    exemplars_per_class: int = 20
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=3, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=0.01))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank <= 0 or not 0 < self.alpha < math.inf:
            raise ValueError(f"ConPET needs rank > 0 and a finite alpha > 0; got {self.rank}, {self.alpha}")
        if self.steps_per_epoch is not None and self.steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive or null; got {self.steps_per_epoch}")
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ValueError(f"replay_fraction must be in [0, 1); got {self.replay_fraction}")
        if self.memory not in MEMORIES:
            raise ValueError(f"unknown ConPET memory '{self.memory}'; valid: {', '.join(MEMORIES)}")
        if self.exemplars_per_class <= 0:
            raise ValueError(f"exemplars_per_class must be positive; got {self.exemplars_per_class}")
        if self.targets is not None and not list(self.targets):
            raise ValueError("targets is empty; use null for the default")


@dataclass
class ConPETDynamicConfig(ConPETConfig):
    name: str = "conpet-dynamic"
    topk: int = 1  # experts the selector picks per sample
    teacher_forcing: bool = True  # training: the gold task replaces the last top-k slot when missing
    null_logit: float = -100.0  # the logit of the classes of unselected experts

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.topk <= 0:
            raise ValueError(f"topk must be positive; got {self.topk}")
        if not math.isfinite(self.null_logit):
            raise ValueError(f"null_logit must be finite; got {self.null_logit}")


# ---------------------------------------------------------------------------------------------- dynamic replay
class DynamicReplay:
    """What both ConPET variants (and both families) share: the old-data pools and the replay batches."""

    cfg: ConPETConfig
    exemplars: Dict[int, np.ndarray]

    def old_pools(self) -> List[SampleSet]:
        """The old tasks' replay data: full training sets, or their exemplars (``memory: kmeans``)."""
        seen = self.scenario.experiences[:-1]
        if self.cfg.memory == "full":
            return [e.train for e in seen]
        return [e.train.subset(self.exemplars[e.index]) for e in seen]

    def replay_fit(self, experience: Experience, seed: int, desc: str, relabel: Optional[Callable] = None,
                   param_groups: Optional[List[Dict[str, Any]]] = None, replay: bool = True,
                   fixed_steps: bool = False) -> None:
        """Train on ``experience`` with dynamic replay of the old pools (a plain pass on the first task, as the
        reference). ``relabel(samples, task) -> targets`` replaces the targets (the selector learns task ids).
        ``replay=False``: current samples only; with ``fixed_steps`` in ``steps_per_epoch`` batches on every task,
        the first included."""
        pools = self.old_pools() if experience.index > 0 and replay else []
        parts = [experience.train, *pools]
        tasks = [experience.index, *range(len(pools))]
        if relabel is not None:
            parts = [SampleSet(p.inputs, relabel(p, t), p.ids, p.modality, p.split) for p, t in zip(parts, tasks)]
        union = SampleSet.concat(parts)
        self.batch_keys = [(t, int(i)) for p, t in zip(parts, tasks) for i in p.ids]  # sample key per union index
        union = SampleSet(union.inputs, union.targets, np.arange(len(union)), union.modality, union.split)
        sizes = [len(p) for p in pools]

        def replay_batches(epoch: int) -> List[List[int]]:
            rng = np.random.RandomState((seed * 1_000_003 + epoch) % 2**32)
            return dynamic_replay_batches(len(experience.train), sizes, self.cfg.steps_per_epoch,
                                          self.cfg.optim.batch_size, self.cfg.replay_fraction, rng)

        dynamic = (experience.index > 0 or fixed_steps) and self.cfg.steps_per_epoch is not None
        fit(self, union, self.cfg.optim, seed=seed, param_groups=param_groups, desc=desc,
            batches=replay_batches if dynamic else None)
        self.cost[-1]["train_time_s"] = round(time.perf_counter() - self._cost_start, 3)

    def on_batch(self, ids: torch.Tensor) -> None:
        self.current_keys = [self.batch_keys[int(i)] for i in ids]
        self.cost[-1]["forward_samples"] += len(ids)

    def after_step(self) -> None:
        self.cost[-1]["optimizer_steps"] += 1

    def select_exemplars(self, experience: Experience, features: Callable[[SampleSet], np.ndarray]) -> None:
        if self.cfg.memory == "kmeans":
            x = features(experience.train)
            self.exemplars[experience.index] = kmeans_exemplars(x, experience.train.targets,
                                                                self.cfg.exemplars_per_class, self.ctx.seed)

    def cost_state(self) -> Dict[str, Any]:
        return {"cost": [dict(c) for c in self.cost], "exemplars": {int(k): torch.as_tensor(v)
                                                                     for k, v in self.exemplars.items()}}

    def load_cost_state(self, state: Dict[str, Any]) -> None:
        self.cost = [dict(c) for c in state["cost"]]
        self.exemplars = {int(k): np.asarray(v) for k, v in state["exemplars"].items()}

    def start_cost(self, experience: Experience) -> None:
        """A new entry of ``train_cost``: optimizer steps, samples through the training step, and the training
        wall time (seconds, this machine's) of the task."""
        self._cost_start = time.perf_counter()
        self.cost.append({"task": experience.index, "optimizer_steps": 0, "forward_samples": 0, "train_time_s": 0.0})

    def cost_diagnostics(self) -> Dict[str, Any]:
        return {"train_cost": [dict(c) for c in self.cost]}


def batch_rows(batch: Any, rows: torch.Tensor) -> Any:
    """The rows ``rows`` of a collated batch (a tensor or a mapping of tensors)."""
    if isinstance(batch, torch.Tensor):
        return batch[rows]
    return {k: v[rows] for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------- static
@METHODS.register("conpet-static")
class ConPETStatic(DynamicReplay, HeadClassifier, Method):
    """One LoRA + a growing head trained through the stream with dynamic replay (classification backbones)."""

    Config = ConPETConfig
    protocols = CLASS_PROTOCOLS + (Protocol.TASK_INCREMENTAL,)
    SET = "conpet"

    @classmethod
    def for_protocol(cls, protocol: Protocol) -> Type[Method]:
        if protocol == Protocol.TASK_INCREMENTAL:
            from clpet.methods.conpet_lm import ConPETStaticLM

            return ConPETStaticLM
        return cls

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.pets: Optional[PetManager] = None
        self.head: IncrementalLinear
        self.cost: List[Dict[str, int]] = []
        self.exemplars: Dict[int, np.ndarray] = {}

    def lora(self) -> Any:
        """The LoRA of one set: clpet's ``LoRAConfig`` on encoders; a PEFT LoRA mapping on a language model."""
        if isinstance(self.pets, PeftSets):
            return peft_lora(self.cfg, self.backbone)
        return LoRAConfig(rank=self.cfg.rank, alpha=self.cfg.alpha,
                          targets=None if self.cfg.targets is None else tuple(self.cfg.targets))

    def setup(self, backbone, scenario, ctx) -> None:
        """Heads on ``backbone.features``. On a language model (SmolLM2, ``hf-causal-lm``, ...) the features are
        the mean last hidden state of the text and the LoRAs are PEFT adapters (``PeftSets``), as the reference's
        LLaMA path puts LoRA on the LM and a linear head on its hidden state."""
        self.make_heads(backbone.feature_dim)
        super().setup(backbone, scenario, ctx)
        self.pets = PeftSets(backbone.model) if getattr(backbone, "is_language_model", False) else PetManager(backbone)
        self.add_first_sets()
        self.to(ctx.device)

    def make_heads(self, dim: int) -> None:
        self.head = IncrementalLinear(dim)

    def add_first_sets(self) -> None:
        """The PET sets that exist from the start: the one LoRA, live."""
        self.pets.add_set(self.SET, self.lora())
        self.pets.set_active(self.SET)

    def learn(self, experience: Experience) -> None:
        self.start_cost(experience)
        self.head.grow(experience.n_classes)
        self.head.to(self.ctx.device)
        self.n_seen = self.head.out_features
        self.replay_fit(experience, self.ctx.seed * 1000 + experience.index, f"exp {experience.index}")
        self.select_exemplars(experience, self.logit_features)

    @torch.inference_mode()
    def logit_features(self, samples: SampleSet) -> np.ndarray:
        """The head's logits of every sample (what the EMR baseline clusters)."""
        from clpet.backbones.base import batch_to
        from clpet.data import make_loader

        out = []
        with eval_mode(self):
            for batch, _, _ in make_loader(samples, self.backbone.preprocess_fn(train=False), self.ctx.eval_batch_size):
                out.append(self.logits(batch_to(batch, self.ctx.device)).float().cpu())
        return torch.cat(out).numpy()

    def diagnostics(self, test: SampleSet) -> Dict[str, Any]:
        return self.cost_diagnostics()

    def extra_state(self) -> Dict[str, Any]:
        return {**super().extra_state(), "head_sizes": self.head.sizes, **self.cost_state()}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        for n in state["head_sizes"][len(self.head.sizes):]:
            self.head.grow(int(n))
        self.load_cost_state(state)


# ---------------------------------------------------------------------------------------------- dynamic
def expert_set(t: int) -> str:
    return f"expert{t}"


SELECTOR = "selector"


def route(selector_logits: torch.Tensor, k: int, gold: Optional[torch.Tensor]) -> torch.Tensor:
    """(B, tasks) bool: the top-k tasks of each row; with ``gold`` (teacher forcing) the gold task replaces the
    last of the k slots where it is missing."""
    k = min(k, selector_logits.shape[1])
    top = selector_logits.topk(k, dim=1).indices
    if gold is not None:
        missing = ~(top == gold.unsqueeze(1)).any(dim=1)
        top[missing, -1] = gold[missing]
    picked = torch.zeros_like(selector_logits, dtype=torch.bool)
    picked.scatter_(1, top, True)
    return picked


class SelectorState:
    """Checkpointed state of dynamic ConPET beyond the PET sets: the selector head's size and the current task."""

    selector_head: IncrementalLinear
    task: int

    def extra_state(self) -> Dict[str, Any]:
        return {**super().extra_state(), "selector_sizes": self.selector_head.sizes, "task": self.task}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        for n in state["selector_sizes"][len(self.selector_head.sizes):]:
            self.selector_head.grow(int(n))
        self.task = int(state["task"])


@METHODS.register("conpet-dynamic")
class ConPETDynamic(SelectorState, ConPETStatic):
    """A LoRA expert + head per task and a selector routing each sample to its top-k experts."""

    Config = ConPETDynamicConfig

    @classmethod
    def for_protocol(cls, protocol: Protocol) -> Type[Method]:
        if protocol == Protocol.TASK_INCREMENTAL:
            from clpet.methods.conpet_lm import ConPETDynamicLM

            return ConPETDynamicLM
        return cls

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.selector_head: IncrementalLinear
        self.phase = "expert"
        self.task = 0
        self._route_cache: Dict[Tuple[int, int], torch.Tensor] = {}
        self._expert_cache: Dict[Tuple[int, int, int], torch.Tensor] = {}

    def make_heads(self, dim: int) -> None:
        self.head = IncrementalLinear(dim)  # expert heads: heads[t] is expert t's
        self.selector_head = IncrementalLinear(dim)  # one output per task

    def add_first_sets(self) -> None:
        """The selector's LoRA (experts come one per task)."""
        self.pets.add_set(SELECTOR, self.lora())

    # -- the parts ----------------------------------------------------------------------------------------------
    def _features(self, batch: Any, name: str) -> torch.Tensor:
        with self.pets.use(name):
            return self.backbone.features(batch).float()

    def selector_logits(self, batch: Any) -> torch.Tensor:
        return self.selector_head(self._features(batch, SELECTOR))

    def class_slices(self) -> List[slice]:
        edges = np.cumsum([0, *self.head.sizes])
        return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

    def task_of_class(self, classes: torch.Tensor) -> torch.Tensor:
        edges = torch.as_tensor(np.cumsum(self.head.sizes), device=classes.device)
        return torch.bucketize(classes, edges, right=True)

    def combine(self, batch: Any, picked: torch.Tensor, keys: Optional[Sequence[Tuple[int, int]]]) -> torch.Tensor:
        """Logits over every seen class (fp32, under any autocast): ``null_logit`` except the classes of each row's
        picked experts. The current expert (training) runs with gradient; frozen experts' outputs come from the
        cache when ``keys`` name the samples."""
        n_rows = picked.shape[0]
        out = torch.full((n_rows, self.n_seen), self.cfg.null_logit, device=picked.device)
        for t, cols in enumerate(self.class_slices()):
            rows = picked[:, t].nonzero().flatten()
            if rows.numel() == 0:
                continue
            trainable = self.training and self.phase == "expert" and t == self.task
            if trainable:
                out[rows, cols] = self.head.heads[t](self._features(batch_rows(batch, rows), expert_set(t))).float()
            else:
                out[rows, cols] = self._frozen_expert(batch, rows, t, keys)
        return out

    @torch.no_grad()
    def _frozen_expert(self, batch: Any, rows: torch.Tensor, t: int, keys) -> torch.Tensor:
        if keys is None:
            with eval_mode(self):
                return self.head.heads[t](self._features(batch_rows(batch, rows), expert_set(t))).float()
        missing = [int(r) for r in rows if (t, *keys[int(r)]) not in self._expert_cache]
        if missing:
            with eval_mode(self):
                idx = torch.as_tensor(missing, device=rows.device)
                values = self.head.heads[t](self._features(batch_rows(batch, idx), expert_set(t)))
            for r, v in zip(missing, values):
                self._expert_cache[(t, *keys[r])] = v.detach().float()  # fp32 whatever the autocast dtype
        return torch.stack([self._expert_cache[(t, *keys[int(r)])] for r in rows])

    @torch.no_grad()
    def _cached_routing(self, batch: Any, keys: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """Selector logits of training samples, computed once per sample while the selector is frozen."""
        missing = [i for i, k in enumerate(keys) if k not in self._route_cache]
        if missing:
            with eval_mode(self):
                idx = torch.as_tensor(missing, device=self.ctx.device)
                values = self.selector_logits(batch_rows(batch, idx))
            for i, v in zip(missing, values):
                self._route_cache[keys[i]] = v.detach()
        return torch.stack([self._route_cache[k] for k in keys])

    # -- training -----------------------------------------------------------------------------------------------
    def loss_terms(self, batch: Any, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        if self.phase == SELECTOR:
            return {"selector_ce": F.cross_entropy(self.selector_logits(batch), targets)}
        if self.task == 0:
            picked = torch.ones((targets.shape[0], 1), dtype=torch.bool, device=targets.device)
        else:
            gold = self.task_of_class(targets) if self.cfg.teacher_forcing else None
            picked = route(self._cached_routing(batch, self.current_keys), self.cfg.topk, gold)
        return {"ce": F.cross_entropy(self.combine(batch, picked, self.current_keys), targets)}

    def learn(self, experience: Experience) -> None:
        t = self.task = experience.index
        self.start_cost(experience)
        self._route_cache.clear()
        seed = self.ctx.seed * 1000 + t
        self.selector_head.grow(1)
        self.head.grow(experience.n_classes)
        self.to(self.ctx.device)
        self.n_seen = self.head.out_features
        if t > 0:  # the selector: task ids of current and replayed samples
            self.phase = SELECTOR
            self.pets.set_active(SELECTOR)  # live through the phase, so gradients reach it (``use`` restores it)
            groups = [{"params": self.pets.parameters(SELECTOR) + list(self.selector_head.parameters())}]
            self.replay_fit(experience, seed, f"selector {t}", param_groups=groups,
                            relabel=lambda p, task: np.full(len(p), task, dtype=np.int64))
        self.phase = "expert"
        self.pets.add_set(expert_set(t), self.lora())
        self.to(self.ctx.device)
        self.pets.set_active(expert_set(t))
        groups = [{"params": self.pets.parameters(expert_set(t)) + list(self.head.heads[t].parameters())}]
        self.replay_fit(experience, seed + 500, f"expert {t}", param_groups=groups)
        self.pets.freeze(expert_set(t))
        self.pets.set_active(None)
        self.select_exemplars(experience, self.logit_features)

    def logits(self, batch: Any) -> torch.Tensor:
        if self.task == 0 or len(self.head.sizes) == 1:
            picked = torch.ones((self._rows(batch), 1), dtype=torch.bool, device=self.ctx.device)
        else:
            picked = route(self.selector_logits(batch), self.cfg.topk, None)
        return self.combine(batch, picked, None)

    def _rows(self, batch: Any) -> int:
        return int((batch if isinstance(batch, torch.Tensor) else next(iter(batch.values()))).shape[0])

    def predict(self, batch: Any) -> torch.Tensor:
        return self.logits(batch)

    # -- reports ------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def selector_accuracy(self, test: SampleSet) -> Dict[str, float]:
        """The selector's top-1 task-id accuracy on ``test``: over all samples and averaged over tasks."""
        from clpet.backbones.base import batch_to
        from clpet.data import make_loader

        if len(self.head.sizes) < 2:
            return {}
        hits, tasks = [], []
        with eval_mode(self):
            for batch, targets, _ in make_loader(test, self.backbone.preprocess_fn(train=False), self.ctx.eval_batch_size):
                gold = self.task_of_class(targets.to(self.ctx.device))
                pred = self.selector_logits(batch_to(batch, self.ctx.device)).argmax(dim=1)
                hits.append((pred == gold).cpu())
                tasks.append(gold.cpu())
        hit, task = torch.cat(hits).float(), torch.cat(tasks)
        per_task = [float(hit[task == j].mean()) for j in task.unique()]
        return {"selector_acc": round(100 * float(hit.mean()), 4),
                "selector_avg_task_acc": round(100 * float(np.mean(per_task)), 4)}

    def count_trainable_parameters(self) -> int:
        """Selector + one expert (each task trains those)."""
        last = self.pets.names()[-1]
        return (self.pets.num_trainable(SELECTOR) + sum(p.numel() for p in self.selector_head.parameters())
                + self.pets.num_trainable(last) + sum(p.numel() for p in self.head.heads[-1].parameters()))

    def diagnostics(self, test: SampleSet) -> Dict[str, Any]:
        return {**self.cost_diagnostics(), **self.selector_accuracy(test)}
