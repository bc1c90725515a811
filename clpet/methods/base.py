"""The Method contract and the hooks of the shared training loop (docs/architecture.md, "Methods").

A method is built from its config, then ``setup(backbone, scenario, ctx)``; the runner calls
``learn_experience(experience)`` and the evaluator scores it through ``predict_set``. Hooks return named loss
terms instead of mutating shared state; they map one-to-one onto Avalanche callbacks:
``on_experience_start`` -> ``before_training_exp``, ``before_epoch`` -> ``before_training_epoch``,
``loss_terms`` -> ``before_backward`` (the criterion), ``after_backward`` -> ``after_backward``,
``before_update`` -> ``before_update``, ``after_step`` -> ``after_update``,
``on_experience_end`` -> ``after_training_exp``.

What a method may see: ``self.scenario`` is a read-only view of the experiences seen so far
(``clpet.scenarios.base.SeenView``); the test sets of the stream are the runner's, never the method's.
What a checkpoint holds is declared, not guessed: every tensor of the method except those of the modules named by
``frozen_pretrained_modules()`` (the pretrained backbone, when the method does not train it), where PET tensors
are kept all the same; PET sets describe themselves (names, configs, live/frozen flags) in ``extra_state``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple, Type

import numpy as np
import torch
from torch import nn

from clpet.backbones.base import Backbone, batch_to
from clpet.context import RunContext
from clpet.data import length_order
from clpet.distributed import map_loader
from clpet.pet.keys import is_pet_key
from clpet.protocols import CLASS_PROTOCOLS, Protocol
from clpet.scenarios.base import Experience, SampleSet, Scenario, SeenView


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode for the block, its train/eval mode restored after (also on error)."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


class CheckpointMismatch(RuntimeError):
    """A checkpoint that does not fit the method it is loaded into; ``str()`` is one line naming the first key."""


@dataclass
class MethodConfig:
    """Keys every method YAML may set; a method's ``Config`` subclasses this and adds its own."""

    name: str = ""


class Method(nn.Module):
    """Base of every continual-learning method. Subclasses register with ``@METHODS.register(name)``."""

    Config = MethodConfig
    #: the protocols the method supports; a scenario of another protocol is refused before any work
    protocols: Tuple[Protocol, ...] = CLASS_PROTOCOLS
    #: whether training changes the pretrained backbone weights (then checkpoints carry them)
    trains_backbone: bool = False
    #: named prediction modes besides the default one (e.g. LAE's single experts); after the last experience the
    #: runner scores each on every test set and records ``<method>_<mode>_acc``
    prediction_modes: Tuple[str, ...] = ()
    #: whether the method runs data-parallel under ``torch.distributed`` (``clpet.distributed``): it trains through
    #: the shared loop with a per-batch mean loss and keeps no per-batch state of its own (no replay buffer, no
    #: sample-id cache), so the ranks' parameters stay identical; other methods are refused under torchrun
    data_parallel: bool = False

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone: Optional[Backbone] = None
        self.scenario: Optional[SeenView] = None
        self.stream: Optional[Scenario] = None
        self.ctx = RunContext()
        self.n_seen = 0  # classes seen so far: predict returns logits over these
        self.mode: Optional[str] = None  # the live prediction mode (None = the method's own prediction)

    # -- lifecycle -----------------------------------------------------------------------------------------
    @classmethod
    def for_protocol(cls, protocol: Protocol) -> Type["Method"]:
        """The class that runs this method on ``protocol``: itself, unless one registered name covers protocols
        whose implementations differ (ConPET on classification heads and on language models)."""
        return cls

    def setup(self, backbone: Backbone, scenario: Scenario, ctx: RunContext) -> None:
        """Attach the backbone (frozen unless the method trains it), the seen-so-far view of ``scenario`` and
        the run context.

        ``self.stream`` keeps the whole stream for the loops that host a method (the runner, the Avalanche
        strategy) to find experiences by index; a method's own logic reads ``self.scenario`` only."""
        self.backbone = backbone
        self.stream = scenario
        self.scenario = SeenView(scenario)
        self.ctx = ctx
        backbone.requires_grad_(self.trains_backbone)
        self.to(ctx.device)

    def learn(self, experience: Experience) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def learn_experience(self, experience: Experience) -> None:
        """What the runner (and the Avalanche strategy) call per experience: the seen-so-far view advances to
        ``experience``, then ``on_experience_start``, ``learn``, ``on_experience_end``."""
        if self.scenario is not None and self.scenario.current < experience.index:
            self.scenario.advance(experience.index)
        self.on_experience_start(experience)
        self.learn(experience)
        self.on_experience_end(experience)

    def predict(self, batch: Any) -> torch.Tensor:  # pragma: no cover - abstract
        """Logits ``(B, n_seen)`` over every class seen so far (no task id in class-incremental)."""
        raise NotImplementedError

    @contextmanager
    def prediction_mode(self, mode: Optional[str]) -> Iterator[None]:
        """``with method.prediction_mode("online"): ...`` -- predict in one of ``prediction_modes`` for the block."""
        if mode is not None and mode not in self.prediction_modes:
            valid = ", ".join(self.prediction_modes) or "none"
            raise ValueError(f"{type(self).__name__} has no prediction mode '{mode}'; valid: {valid}")
        previous, self.mode = self.mode, mode
        try:
            yield
        finally:
            self.mode = previous

    @torch.inference_mode()
    def predict_set(self, samples: SampleSet, experience: Optional[Experience] = None,
                    task_id: Optional[int] = None) -> np.ndarray:
        """Predicted labels for a whole test set; batched, no-grad, eval mode, autocast per ``ctx.precision``.

        ``experience`` is the experience the set belongs to (its task description, for language tasks);
        ``task_id`` is given only where the protocol gives the task id at evaluation, else None. Class-incremental
        methods ignore both."""
        order = length_order(samples)

        def batch_predictions(batch: Any) -> torch.Tensor:
            with self.ctx.autocast():
                return self.predict(batch_to(batch, self.ctx.device)).argmax(dim=1).cpu()

        with eval_mode(self):  # under torch.distributed each rank predicts its share of the batches
            preds = map_loader(samples.subset(order), self.backbone.preprocess_fn(train=False),
                               self.ctx.eval_batch_size, batch_predictions, num_workers=self.ctx.num_workers,
                               pin_memory=self.ctx.pin_memory, progress=self.ctx.progress, desc="eval")
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

    def on_batch(self, ids: torch.Tensor) -> None:
        """Before each training batch's loss: the ids of its samples (``SampleSet.ids``), for methods that key
        caches by sample (ConPET's frozen experts)."""

    def after_step(self) -> None:
        pass

    def on_experience_end(self, experience: Experience) -> None:
        pass

    def after_backward(self) -> None:
        """After each backward pass (every micro-batch under gradient accumulation): gradient rules that act
        on one micro-batch's gradients."""

    def before_update(self) -> None:
        """Once per optimizer step, after the gradients are accumulated and before clipping and the update:
        where gradient masking (MIGU) acts."""

    def diagnostics(self, test: SampleSet) -> Dict[str, Any]:
        """Method-specific numbers for ``metrics.json`` after the last experience, computed on ``test`` (the
        union of every test set, handed over by the runner); default: nothing. Accuracies of single parts of a
        method belong in ``prediction_modes`` instead, which the runner scores."""
        return {}

    # -- parameters and state ------------------------------------------------------------------------------
    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def count_trainable_parameters(self) -> int:
        """Parameters the method trains (reported as ``trainable_params`` in metrics.json)."""
        return sum(p.numel() for p in self.trainable_parameters())

    def frozen_pretrained_modules(self) -> Tuple[str, ...]:
        """Attribute names of submodules whose own tensors are pretrained and never changed by the method: the
        checkpoint leaves them out (they come from the weights file) except the PET tensors inside them.
        Default: the backbone, unless the method trains it."""
        return () if self.trains_backbone else ("backbone",)

    def _is_frozen_pretrained(self, key: str) -> bool:
        return any(key.startswith(f"{m}.") for m in self.frozen_pretrained_modules()) and not is_pet_key(key)

    def checkpoint_state_dict(self) -> Dict[str, torch.Tensor]:
        """The tensors a checkpoint holds: every entry of ``state_dict()`` except the frozen pretrained ones
        (``frozen_pretrained_modules``), so checkpoints stay small and the decision does not depend on where
        tensors live (device, dtype, storage)."""
        return {k: v for k, v in self.state_dict().items() if not self._is_frozen_pretrained(k)}

    def load_checkpoint_state_dict(self, saved: Dict[str, torch.Tensor]) -> None:
        """Load what ``checkpoint_state_dict`` saved into this (rebuilt) method; ``CheckpointMismatch`` (one line,
        naming the first differing key) unless the keys and shapes are exactly the ones this method holds."""
        own = self.checkpoint_state_dict()
        missing = [k for k in own if k not in saved]
        unexpected = [k for k in saved if k not in own]
        if missing or unexpected:
            first = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
            raise CheckpointMismatch(f"the checkpoint does not fit method {type(self).__name__}: {first} "
                                     f"({len(missing)} missing, {len(unexpected)} unexpected key(s))")
        for key, tensor in own.items():
            if tuple(tensor.shape) != tuple(saved[key].shape):
                raise CheckpointMismatch(f"the checkpoint does not fit method {type(self).__name__}: '{key}' has "
                                         f"shape {tuple(saved[key].shape)}, the method has {tuple(tensor.shape)}")
        result = nn.Module.load_state_dict(self, saved, strict=False)
        if result.unexpected_keys:  # a saved tensor found no home: never silently dropped
            raise CheckpointMismatch(f"checkpoint key '{result.unexpected_keys[0]}' was not loaded into "
                                     f"{type(self).__name__}")

    def pet_systems(self) -> Dict[str, Any]:
        """The method's PET-set holders (``PetManager``, the PEFT bridge), by attribute name."""
        return {name: value for name, value in vars(self).items() if hasattr(value, "export_structure")}

    def extra_state(self) -> Dict[str, Any]:
        """Method state that is not an ``nn.Module`` tensor (checkpointed next to the tensors): ``n_seen`` and
        the structure of every PET system (set names, configs, live and frozen flags)."""
        return {"n_seen": self.n_seen,
                "pet_structure": {name: pets.export_structure() for name, pets in self.pet_systems().items()}}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        """Restore non-tensor state; called *before* the tensors are loaded so structure (PET sets, grown heads)
        exists. PET sets are rebuilt from their saved structure; subclasses add their own (heads)."""
        self.n_seen = int(state["n_seen"])
        systems = self.pet_systems()
        for name, structure in state.get("pet_structure", {}).items():
            if name not in systems:
                raise CheckpointMismatch(f"the checkpoint has PET sets in '{name}', which {type(self).__name__} "
                                         f"does not hold")
            systems[name].import_structure(structure)
