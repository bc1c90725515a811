"""OSFT: orthogonal-subspace full fine-tuning (Nayak et al., "Sculpting Subspaces: Constrained Full Fine-Tuning in
LLMs for Continual Learning", arXiv 2504.07097, Sec. 3; docs/methods.md, "OSFT"), on PEFT's OSF tuner.

Per task and target weight W = U S V^T: the top-k singular triplets are frozen (the directions earlier tasks rely
on), the remaining ones (U_low, S_low, V_low) train, and the gradients of U_low and V_low are projected orthogonal
to the frozen U_high, V_high (Sec. 3.2, Eq. 5-6). At the task's end the factors merge back into W, which the next
task decomposes again with a larger k. PEFT's ``OSFConfig`` (``rank_pattern``: k per module) does the SVD, the
factored forward and the projection (tensor hooks on U_low and V_low, so gradients reach the factors).

What clpet adds, the part PEFT lacks:

* the per-task schedule. ``rank_schedule: progressive`` (the authors' scripts): the first task fine-tunes the
  target weights fully (no frozen subspace), task t freezes ``min(t * progressive_step, 1)`` of each target's
  min(out, in) singular directions (at least 1, at most all but one); ``progressive_step: null`` = 1 / (number of
  tasks), so the last task of T freezes (T-1)/T (the authors' 15-task T5 script steps 0.07, their LLaMA runs 1/4).
* the paper's layer-importance rank (Sec. 3.3), ``rank_schedule: importance``: before task t >= 1, each target's
  importance I = mean over the previous task's real tokens of cos(x[:m], (Wx)[:m]) (m = min(out, in), the first m
  coordinates of input and output, as the authors' code compares them), clipped to [0, 1], and
  k = round(m * (r_min + I * (r_max - r_min))) with ``importance_range: [r_min, r_max]`` as fractions of m.

* ``reproject: true``: after every optimizer step U_low and V_low are projected back onto the orthogonal
  complement of the frozen directions (the projection PEFT's hooks apply to their gradients, applied to the
  factors). Gradient projection keeps the factors in the complement only for SGD: Adam rescales each coordinate
  of the projected gradient, so its step leaves the complement (on the tiny test model a quarter of the update's
  size falls on the frozen directions), and the frozen singular directions drift. ``false`` is PEFT's behaviour.

Only the target weights change; embeddings, norms and the LM head stay as they are (PEFT trains the OSF factors
only). Targets default to every linear layer but the output layer (PEFT's ``all-linear``).

Where clpet differs from the authors' code, and why: their forward copies the rebuilt weight in under ``no_grad``,
so no gradient reaches the factors and the target weights never change (what trains there is every other weight);
PEFT's implementation is the one followed here. Their top-k is a fraction of max(out, in), which freezes an MLP
matrix entirely from a fraction of 1/4 on; clpet (like PEFT) takes fractions of min(out, in). Their importance
counts padding tokens; clpet's does not.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from clpet.methods.lm_base import LMConfig, LMMethod
from clpet.registry import METHODS
from clpet.scenarios.base import Experience, SampleSet
from clpet.training import OptimConfig

SCHEDULES = ("progressive", "importance")
OSF_ADAPTER = "osft"


@dataclass
class OSFTConfig(LMConfig):
    name: str = "osft"
    targets: Optional[List[str]] = None  # PEFT target_modules (null: every linear layer but the output layer)
    rank_schedule: str = "progressive"  # progressive (the authors' scripts) | importance (the paper's rule)
    progressive_step: Optional[float] = None  # frozen fraction added per task (null: 1 / number of tasks)
    importance_range: List[float] = field(default_factory=lambda: [0.5, 1.0])  # [r_min, r_max], fractions of m
    importance_samples: int = 128  # previous-task samples the importance is measured on (the authors' 128)
    reproject: bool = True  # after each optimizer step, U_low and V_low back into the complement (see docstring)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=2, batch_size=8, optimizer="adamw", lr=5e-5, weight_decay=0.0, max_grad_norm=1.0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank_schedule not in SCHEDULES:
            raise ValueError(f"unknown rank_schedule '{self.rank_schedule}'; valid: {', '.join(SCHEDULES)}")
        if self.progressive_step is not None and not 0 < self.progressive_step <= 1:
            raise ValueError(f"progressive_step must be in (0, 1] or null; got {self.progressive_step}")
        lo, hi = (list(self.importance_range) + [None, None])[:2] if len(self.importance_range) == 2 else (None, None)
        if lo is None or not 0 <= lo <= hi <= 1:
            raise ValueError(f"importance_range must be [r_min, r_max] with 0 <= r_min <= r_max <= 1; got "
                             f"{list(self.importance_range)}")
        if self.importance_samples <= 0:
            raise ValueError(f"importance_samples must be positive; got {self.importance_samples}")
        if self.targets is not None and not list(self.targets):
            raise ValueError("targets is empty; use null for every linear layer")


def frozen_rank(fraction: float, min_dim: int) -> int:
    """Frozen singular directions for a frozen ``fraction`` of ``min_dim``: at least 1, at most all but one."""
    return int(min(max(round(fraction * min_dim), 1), min_dim - 1))


def importance_fraction(importance: float, r_min: float, r_max: float) -> float:
    """The paper's rule r = r_min + I (r_max - r_min), with I clipped to [0, 1]."""
    return r_min + float(np.clip(importance, 0.0, 1.0)) * (r_max - r_min)


def input_output_cosine(x: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(sum of cos(x[:m], (W x)[:m]) over the real tokens, their number); x (..., in), mask (...) of 0/1."""
    y = torch.nn.functional.linear(x.float(), weight.float())
    m = min(weight.shape)
    cos = torch.nn.functional.cosine_similarity(x.float()[..., :m], y[..., :m], dim=-1)
    keep = mask.to(cos.dtype)
    return torch.stack([(cos * keep).sum(), keep.sum()])


@torch.no_grad()
def reproject_factors(model: nn.Module) -> None:
    """Every OSF layer's U_low and V_low projected onto the orthogonal complement of its frozen U_high / V_high,
    the projection PEFT's gradient hooks use (through U_low_init / V_low_init where they span the complement)."""
    from peft.tuners.osf.layer import OSFLayer

    for layer in model.modules():
        if not isinstance(layer, OSFLayer) or OSF_ADAPTER not in layer.osf_svd_params:
            continue
        params = layer.osf_svd_params[OSF_ADAPTER]
        u, v = params["U_low"], params["V_low"]
        if OSF_ADAPTER in layer._osf_U_high:
            high = layer._osf_U_high[OSF_ADAPTER]
            u.sub_(high @ (high.T @ u))
        else:
            init = layer._osf_U_low_init[OSF_ADAPTER]
            u.copy_(init @ (init.T @ u))
        if OSF_ADAPTER in layer._osf_V_high:
            high = layer._osf_V_high[OSF_ADAPTER]
            v.sub_((v @ high.T) @ high)
        else:
            init = layer._osf_V_low_init[OSF_ADAPTER]
            v.copy_((v @ init.T) @ init)


@METHODS.register("osft")
class OSFT(LMMethod):
    """Full fine-tuning of the target weights within the subspace orthogonal to their top singular directions."""

    Config = OSFTConfig
    trains_backbone = True

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.log: List[Dict[str, Any]] = []
        object.__setattr__(self, "_peft", None)  # the OSF-wrapped model while a task trains (not a submodule)

    def setup(self, backbone, scenario, ctx) -> None:
        super().setup(backbone, scenario, ctx)
        backbone.requires_grad_(False)  # only the targets train, within each task
        self.target_names = self.find_targets()
        if not self.target_names:
            raise ValueError(f"osft: no linear layer matches targets {self.cfg.targets}")

    def find_targets(self) -> List[str]:
        """Names of the target linear layers (``targets``, or every linear layer but the LM head)."""
        model = self.backbone.model
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        names = []
        for name, m in model.named_modules():
            if not isinstance(m, nn.Linear) or m is out or min(m.weight.shape) < 2:  # rank 1: nothing to split
                continue
            leaf = name.rsplit(".", 1)[-1]
            if self.cfg.targets is None or leaf in self.cfg.targets or name in self.cfg.targets:
                names.append(name)
        return names

    # -- the schedule -------------------------------------------------------------------------------------------
    def frozen_fraction(self, task: int) -> float:
        step = self.cfg.progressive_step or 1.0 / len(self.stream)
        return min(task * step, 1.0)

    def frozen_ranks(self, task: int) -> Dict[str, int]:
        """Frozen rank k per target for ``task`` (>= 1)."""
        modules = dict(self.backbone.model.named_modules())
        dims = {n: min(modules[n].weight.shape) for n in self.target_names}
        if self.cfg.rank_schedule == "progressive":
            return {n: frozen_rank(self.frozen_fraction(task), d) for n, d in dims.items()}
        importance = self.importance(self.scenario.experiences[task - 1].train)
        lo, hi = self.cfg.importance_range
        self._last_importance = importance
        return {n: frozen_rank(importance_fraction(importance[n], lo, hi), d) for n, d in dims.items()}

    @torch.no_grad()
    def importance(self, samples: SampleSet) -> Dict[str, float]:
        """Each target's mean input/output cosine over the real tokens of (up to ``importance_samples`` of)
        ``samples`` (Sec. 3.3)."""
        from clpet.backbones.base import batch_to
        from clpet.data import make_loader
        from clpet.methods.base import eval_mode

        modules = dict(self.backbone.model.named_modules())
        sums = {n: torch.zeros(2) for n in self.target_names}
        state = {"mask": None}

        def hook(name):
            def record(module, inputs, output):
                x = inputs[0]
                mask = state["mask"] if state["mask"] is not None and state["mask"].shape == x.shape[:-1] \
                    else torch.ones(x.shape[:-1], device=x.device)
                sums[name] += input_output_cosine(x, module.weight, mask).cpu()
            return record

        handles = [modules[n].register_forward_hook(hook(n)) for n in self.target_names]
        subset = samples.subset(np.arange(min(len(samples), self.cfg.importance_samples)))
        try:
            with eval_mode(self):
                for batch, _, _ in make_loader(subset, self.backbone.preprocess_fn(train=False), self.cfg.optim.batch_size):
                    batch = batch_to(batch, self.ctx.device)
                    state["mask"] = batch["attention_mask"]  # decoder layers of seq2seq see other lengths: all count
                    self.backbone.model(**batch)
        finally:
            for h in handles:
                h.remove()
        return {n: float(s[0] / s[1].clamp_min(1.0)) for n, s in sums.items()}

    # -- training -----------------------------------------------------------------------------------------------
    def learn(self, experience: Experience) -> None:
        t = experience.index
        entry: Dict[str, Any] = {"task": t}
        if t == 0 or (self.cfg.rank_schedule == "progressive" and self.frozen_fraction(t) == 0):
            self.train_targets_fully(experience)
            entry["frozen_fraction"] = 0.0
        else:
            start = time.perf_counter()
            ranks = self.frozen_ranks(t)
            peft_model = self.wrap(ranks)
            entry["svd_time_s"] = round(time.perf_counter() - start, 3)
            modules = dict(self.backbone.model.named_modules())
            entry["frozen_fraction"] = round(float(np.mean([ranks[n] / min(modules[n].weight.shape)
                                                            for n in self.target_names])), 4)
            if self.cfg.rank_schedule == "importance":
                entry["importance_mean"] = round(float(np.mean(list(self._last_importance.values()))), 4)
            object.__setattr__(self, "_peft", peft_model)
            try:
                self.train_on(experience.train, experience, f"task {experience.task_name}")
            finally:
                object.__setattr__(self, "_peft", None)
            self.backbone.model = peft_model.merge_and_unload()
            self.backbone.model.requires_grad_(False)
        self.log.append(entry)

    def train_targets_fully(self, experience: Experience) -> None:
        modules = dict(self.backbone.model.named_modules())
        for n in self.target_names:
            modules[n].weight.requires_grad_(True)
        self.train_on(experience.train, experience, f"task {experience.task_name}")
        self.backbone.model.requires_grad_(False)

    def wrap(self, ranks: Dict[str, int]) -> Any:
        """The model under PEFT's OSF tuner with frozen rank ``ranks[name]`` per target."""
        from peft import OSFConfig, get_peft_model

        pattern = {f"^{re.escape(n)}$": int(k) for n, k in ranks.items()}
        cfg = OSFConfig(target_modules=list(self.target_names), rank_pattern=pattern)
        with torch.inference_mode(False):
            model = get_peft_model(self.backbone.model, cfg, adapter_name=OSF_ADAPTER)
        model.to(self.ctx.device)
        return model

    def after_step(self) -> None:
        if self._peft is not None and self.cfg.reproject:
            reproject_factors(self._peft)

    def count_trainable_parameters(self) -> int:
        modules = dict(self.backbone.model.named_modules())
        return sum(modules[n].weight.numel() for n in self.target_names)

    def diagnostics(self, test) -> Dict[str, Any]:
        return {"osft_log": [dict(e) for e in self.log]}

    def extra_state(self) -> Dict[str, Any]:
        return {**super().extra_state(), "osft_log": [dict(e) for e in self.log]}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.log = [dict(e) for e in state["osft_log"]]
