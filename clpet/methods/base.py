"""The Method contract (DESIGN.md) and the hooks the shared training loop calls.

A method is built from its config, then ``setup(backbone, scenario, ctx)``; the runner calls
``learn(experience)`` and evaluates through ``predict_set``. Hooks return named loss terms instead of mutating
shared state (STYLE.md, "Methods"); they map one-to-one onto Avalanche callbacks:
``on_experience_start`` -> ``before_training_exp``, ``before_epoch`` -> ``before_training_epoch``,
``loss_terms`` -> ``before_backward`` (the criterion), ``after_step`` -> ``after_update``,
``on_experience_end`` -> ``after_training_exp``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from clpet.backbones.base import Backbone, batch_to
from clpet.context import RunContext
from clpet.data import length_order, make_loader
from clpet.scenarios.base import Experience, SampleSet, Scenario


@dataclass
class MethodConfig:
    """Keys every method YAML may set; a method's ``Config`` subclasses this and adds its own."""

    name: str = ""


class Method(nn.Module):
    """Base of every continual-learning method. Subclasses register with ``@METHODS.register(name)``."""

    Config = MethodConfig
    #: whether training changes the pretrained backbone weights (then checkpoints carry them)
    trains_backbone: bool = False

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone: Optional[Backbone] = None
        self.scenario: Optional[Scenario] = None
        self.ctx = RunContext()
        self.n_seen = 0  # classes seen so far: predict returns logits over these
        self._pretrained_ptrs: set = set()

    # -- lifecycle -----------------------------------------------------------------------------------------
    def setup(self, backbone: Backbone, scenario: Scenario, ctx: RunContext) -> None:
        """Attach the backbone (frozen unless the method trains it) and the run context."""
        self.backbone = backbone
        self.scenario = scenario
        self.ctx = ctx
        backbone.requires_grad_(self.trains_backbone)
        self.to(ctx.device)
        # the pretrained tensors, by storage: PET wrappers later move them to new module paths
        self._pretrained_ptrs = {t.data_ptr() for t in backbone.state_dict().values()}

    def learn(self, experience: Experience) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def learn_experience(self, experience: Experience) -> None:
        """What the runner (and the Avalanche strategy) call per experience: ``on_experience_start``,
        ``learn``, ``on_experience_end``."""
        self.on_experience_start(experience)
        self.learn(experience)
        self.on_experience_end(experience)

    def predict(self, batch: Any) -> torch.Tensor:  # pragma: no cover - abstract
        """Logits ``(B, n_seen)`` over every class seen so far (no task id in class-incremental)."""
        raise NotImplementedError

    @torch.inference_mode()
    def predict_set(self, samples: SampleSet) -> np.ndarray:
        """Predicted labels for a whole test set; batched, no-grad, eval mode, bf16 autocast on CUDA."""
        was_training = self.training
        self.eval()
        order = length_order(samples)
        loader = make_loader(
            samples.subset(order), self.backbone.preprocess_fn(train=False), self.ctx.eval_batch_size,
            num_workers=self.ctx.num_workers, pin_memory=self.ctx.pin_memory,
        )
        preds = []
        for batch, _, _ in tqdm(loader, desc="eval", disable=not self.ctx.progress, leave=False):
            with self.ctx.autocast():
                preds.append(self.predict(batch_to(batch, self.ctx.device)).argmax(dim=1).cpu())
        self.train(was_training)
        out = np.zeros(len(samples), dtype=np.int64)
        if preds:
            out[order] = torch.cat(preds).numpy()
        return out

    def train(self, mode: bool = True) -> "Method":
        """Train/eval mode; a frozen backbone's BatchNorm layers always stay in eval mode, so training PETs or a
        head never moves the pretrained running statistics (the backbone stays the function it was)."""
        super().train(mode)
        if mode and self.backbone is not None and not self.trains_backbone:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # -- hooks of the shared training loop (no-ops by default) ----------------------------------------------
    def on_experience_start(self, experience: Experience) -> None:
        pass

    def before_epoch(self, epoch: int) -> None:
        pass

    def loss_terms(self, batch: Any, targets: torch.Tensor) -> Dict[str, torch.Tensor]:  # pragma: no cover
        """Named loss terms for one batch; the loop sums them, backpropagates and logs each."""
        raise NotImplementedError

    def after_step(self) -> None:
        pass

    def on_experience_end(self, experience: Experience) -> None:
        pass

    def report(self) -> Dict[str, Any]:
        """Method-specific numbers for ``metrics.json`` after the last experience (e.g. LAE's online/offline
        accuracies). Evaluates through ``self.scenario``'s test sets if it needs to; default: nothing."""
        return {}

    # -- parameters and state ------------------------------------------------------------------------------
    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def count_trainable_parameters(self) -> int:
        """Parameters the method trains (reported as ``trainable_params`` in metrics.json)."""
        return sum(p.numel() for p in self.trainable_parameters())

    def _pretrained_keys(self, sd: Dict[str, Any]) -> set:
        return {k for k, v in sd.items() if isinstance(v, torch.Tensor) and v.data_ptr() in self._pretrained_ptrs}

    def state_dict(self, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        """Every tensor of the method except the pretrained backbone weights it never changes (those come
        from the backbone's own weights file), so checkpoints stay small."""
        sd = super().state_dict(*args, **kwargs)
        if not self.trains_backbone:
            for key in self._pretrained_keys(sd):
                del sd[key]
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any], strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        frozen = set() if self.trains_backbone else self._pretrained_keys(super().state_dict())
        missing = [k for k in result.missing_keys if k not in frozen]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"method state does not match: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
        return result

    def extra_state(self) -> Dict[str, Any]:
        """Method state that is not an ``nn.Module`` tensor (checkpointed next to ``state_dict``)."""
        return {"n_seen": self.n_seen}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        """Restore non-tensor state; called *before* ``load_state_dict`` so structure (grown heads) exists."""
        self.n_seen = int(state["n_seen"])
