"""O-LoRA: orthogonal subspace learning for language-model continual learning (Wang et al., "Orthogonal Subspace
Learning for Language Model Continual Learning", EMNLP 2023 Findings, arXiv 2310.14152; docs/methods.md,
"O-LoRA"). Reference code: cmnfriend/O-LoRA (``src/uie_trainer_lora.py``).

A new PEFT LoRA per task (r 8, alpha 32, dropout 0.1 on PEFT's q/v targets), every earlier LoRA frozen and kept
live, so the model is the base plus the sum of all LoRAs and no task id is needed at inference (Sec. 3.2-3.3, the
composition of ``inc-lora``). Training task t adds to the answer cross-entropy (Sec. 3.3, Eq. 6-8)

    lambda_orth * sum over LoRA modules of sum_ij |(A_old A_new^T)_ij|   +   lambda_l2 * sum_p ||p||_2

where A_old stacks the A matrices of tasks 0..t-1 of one module (the reference concatenates them into one
``lora_A``; the entry-wise sum is the same) and p runs over the new LoRA's A and B. As in the reference code the
L2 term is the sum of Frobenius norms, not squared (the paper writes a squared norm; clpet follows the code that
produced the numbers), and lambda_l2 is 0 for the standard orders.

What clpet adds (O-LoRA issues #33 and #39): ``orthogonality: cosine`` replaces the raw sum with the per-module mean
of |cos| between old and new A rows, averaged over modules: bounded in [0, 1] whatever the model width (the raw
term reaches 1e3-1e4 on decoder LMs) and not lowered by shrinking the new LoRA towards zero (a collapsed LoRA makes
the raw term trivially 0). Every task logs the raw term at its first and last step and the new A's norm
(``olora_log`` in metrics.json), so an exploding or collapsed run is visible.

Where clpet differs from the reference: the regulariser is computed once per micro-batch and its gradient divided
by the accumulation steps like the cross-entropy's (the reference adds it undivided to every micro-batch).
"""
from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from clpet.methods.lm_base import LoRAKeys
from clpet.methods.lm_baselines import IncLoRA, IncLoRAConfig
from clpet.registry import METHODS
from clpet.scenarios.base import Experience
from clpet.training import OptimConfig

FORMS = ("sum", "cosine")
A_SUFFIX = "lora_A.weight"


@dataclass
class OLoRAConfig(IncLoRAConfig):
    name: str = "olora"
    lora: LoRAKeys = field(default_factory=lambda: LoRAKeys(rank=8, alpha=32.0, dropout=0.1))
    lambda_orth: Any = 0.5  # lambda_1: a number, or a list with one value per task (reference: 0.5, orders 1-3)
    lambda_l2: Any = 0.0  # lambda_2: a number or a per-task list (reference: 0 for orders 1-3)
    orthogonality: str = "sum"  # sum: the reference's sum |A_old A_new^T| | cosine: per-module mean |cos|
    task_epochs: Optional[List[int]] = None  # epochs per task (the long benchmark's MNLI: 2); null: optim.epochs
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=2, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=0.0, max_grad_norm=1.0))

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("lambda_orth", "lambda_l2"):
            values = getattr(self, key)
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < float("inf")
                                     for v in values):
                raise ValueError(f"{key} must be a finite number >= 0 or a non-empty list of them; got {values}")
        if self.task_epochs is not None and (not list(self.task_epochs) or min(self.task_epochs) <= 0):
            raise ValueError(f"task_epochs must be a non-empty list of positive epochs or null; got {self.task_epochs}")
        if self.orthogonality not in FORMS:
            raise ValueError(f"unknown orthogonality '{self.orthogonality}'; valid: {', '.join(FORMS)}")


def per_task(value: Any, task: int, key: str, n_tasks: int) -> float:
    """``value`` for task ``task``: the number itself, or the task's entry of a per-task list."""
    if not isinstance(value, (list, tuple)):
        return float(value)
    if len(value) != n_tasks:
        raise ValueError(f"method.{key} lists {len(value)} values for a stream of {n_tasks} tasks")
    return float(value[task])


def orthogonality(old_a: Dict[str, torch.Tensor], new_a: Dict[str, torch.Tensor], form: str) -> torch.Tensor:
    """O-LoRA's orthogonality term over modules (keys). ``old_a[k]``: the stacked A rows of the old LoRAs of
    module k, (r_old, in); ``new_a[k]``: the new LoRA's A, (r, in). ``sum``: sum_k sum |old_a[k] new_a[k]^T|;
    ``cosine``: mean_k mean |cos(old row, new row)|. Computed in fp32 outside any autocast (the raw term reaches
    1e3-1e4 on LMs)."""
    terms = []
    with torch.autocast(device_type=next(iter(new_a.values())).device.type, enabled=False) if new_a else nullcontext():
        for key, new in new_a.items():
            terms.append(_term(old_a[key].to(new.device, torch.float32), new.float(), form))
    if not terms:
        return torch.zeros(())
    stacked = torch.stack(terms)
    return stacked.mean() if form == "cosine" else stacked.sum()


def _term(old: torch.Tensor, new: torch.Tensor, form: str) -> torch.Tensor:
    if form == "cosine":
        return (F.normalize(old, dim=1) @ F.normalize(new, dim=1).T).abs().mean()
    return (old @ new.T).abs().sum()


@METHODS.register("olora")
class OLoRA(IncLoRA):
    """IncLoRA's composition (a new LoRA per task, the old ones frozen and live) with the orthogonality loss."""

    data_parallel = False  # not checked under torch.distributed yet (IncLoRA's True is not inherited)

    Config = OLoRAConfig

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.log: List[Dict[str, Any]] = []
        self._old_a: Dict[str, torch.Tensor] = {}
        self._lambdas = (0.0, 0.0)  # (lambda_orth, lambda_l2) of the task being trained

    def new_a(self) -> Dict[str, torch.Tensor]:
        """The A matrices (trainable) of the newest LoRA, by module key."""
        return {k: p for k, p in self.pets.named_parameters(self.pets.names()[-1]) if k.endswith(A_SUFFIX)}

    def stack_old_a(self) -> Dict[str, torch.Tensor]:
        """Every old LoRA's A rows, stacked per module (they are frozen: computed once per task)."""
        old = self.pets.names()[:-1]
        if not old:
            return {}
        states = [self.pets.state_dict(n) for n in old]
        return {k: torch.cat([s[k] for s in states], dim=0).detach() for k in states[0] if k.endswith(A_SUFFIX)}

    def raw_orthogonality(self) -> torch.Tensor:
        return orthogonality(self._old_a, self.new_a(), self.cfg.orthogonality) if self._old_a else torch.zeros(())

    def loss_terms(self, batch: Any, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        terms = super().loss_terms(batch, targets)
        if self._old_a and self._lambdas[0] > 0:
            orth = self.raw_orthogonality()
            self._task_log.setdefault("orth_first", round(float(orth.detach()), 6))
            self._task_log["orth_last"] = round(float(orth.detach()), 6)
            terms["orth"] = self._lambdas[0] * orth
        if self._lambdas[1] > 0:
            new = self.pets.parameters(self.pets.names()[-1])
            terms["l2"] = self._lambdas[1] * torch.stack([p.float().norm() for p in new]).sum()
        return terms

    def setup(self, backbone, scenario, ctx) -> None:
        n = len(scenario)
        for key in ("lambda_orth", "lambda_l2", "task_epochs"):
            if getattr(self.cfg, key) is not None:  # a per-task list must fit the stream: fail before work
                per_task(getattr(self.cfg, key), 0, key, n)
        super().setup(backbone, scenario, ctx)

    def learn(self, experience: Experience) -> None:
        self._task_log: Dict[str, Any] = {"task": experience.index}
        super().learn(experience)  # adds and trains the new LoRA (``train_on``)
        with torch.no_grad():
            self._task_log["orth_end"] = round(float(self.raw_orthogonality()), 6)
            self._task_log["new_a_norm"] = round(float(torch.stack([a.float().norm() for a in self.new_a().values()])
                                                       .norm()), 6)
        self.log.append(self._task_log)

    def train_on(self, samples, experience, desc) -> None:
        self._old_a = self.stack_old_a()  # the new set exists now (IncLoRA.learn added it)
        t, n = experience.index, len(self.stream)
        self._lambdas = (per_task(self.cfg.lambda_orth, t, "lambda_orth", n), per_task(self.cfg.lambda_l2, t, "lambda_l2", n))
        optim = self.cfg.optim
        if self.cfg.task_epochs is not None:
            optim = dataclasses.replace(optim, epochs=int(per_task(self.cfg.task_epochs, t, "task_epochs", n)))
        super().train_on(samples, experience, desc, optim)

    def diagnostics(self, test) -> Dict[str, Any]:
        return {"olora_log": [dict(e) for e in self.log]}

    def extra_state(self) -> Dict[str, Any]:
        return {**super().extra_state(), "olora_log": [dict(e) for e in self.log]}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.log = [dict(e) for e in state["olora_log"]]
