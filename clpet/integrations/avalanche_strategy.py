"""clpet methods inside Avalanche's training loop: :class:`ClpetStrategy` (a ``SupervisedTemplate``) and
:class:`ClpetPlugin` (a ``SupervisedPlugin`` for methods that are add-ons to plain SGD training).

**How a clpet method trains in ``ClpetStrategy``.** The runner calls ``method.learn_experience(experience)``
(``on_experience_start``, ``learn``, ``on_experience_end``); so does the strategy, from ``_train_exp``, so each
method's own per-experience logic runs unchanged (LAE's offline copy, head growth and calibration, SimpleCIL's
prototypes, ...). While ``learn`` runs, the method's call to clpet's
shared loop ``clpet.training.fit`` is routed to :meth:`ClpetStrategy.fit`, which runs Avalanche's epoch and
iteration machinery (``training_epoch`` and every plugin callback) with clpet's optimisation semantics:

================================  =============================================================================
clpet (``training.fit``)          Avalanche (``ClpetStrategy``)
================================  =============================================================================
optimizer over trainable params   ``fit`` builds it with ``training.method_optimizer`` (``requires_grad`` only;
                                  Avalanche's ``make_optimizer`` would take every parameter: disabled)
LR schedule per epoch             set before ``before_training_epoch``
``before_epoch(epoch)``           ``before_training_epoch``
seeded shuffle ``(seed, epoch)``  one ``DataLoader`` per epoch over ``adapted_dataset``, same generator seed
``loss_terms(batch, targets)``    ``criterion()`` (their sum; each term averaged per epoch in the history)
``after_backward()``              ``after_backward``
``before_update()``               ``before_update``
``optimizer.step()``              ``optimizer_step`` (``before_update`` / ``after_update`` plugins around it)
``after_step()``                  ``after_update``
``predict(batch)``                ``forward()`` in eval: metrics read it at ``after_eval_forward``
length-ordered eval batches       ``make_eval_dataloader`` (texts by length, ``eval_batch_size``)
================================  =============================================================================

The routing sets the method's ``ctx.trainer`` for the duration of ``learn`` only (``clpet.training.fit`` hands
its calls to the trainer it finds there); a ``fit`` call for another model than the method falls through to
clpet's own loop. So on the same stream and seed the strategy computes what the runner computes: the same batches in the same
order, the same optimizer steps and hooks, the same evaluation batches (SimpleCIL and LAE give the runner's
accuracy matrix on CPU; see ``tests/test_avalanche.py``).

During training ``mb_output`` is the method's ``predict`` on the mini-batch (eval mode, no grad: one extra
forward, so training-phase metrics see real predictions; ``train_outputs=False`` skips it). The eval loss is
the cross-entropy of the prediction scores over classes seen so far (clpet methods predict scores, not losses).

Not supported: plugins that replace ``strategy.dataloader`` (replay plugins; clpet methods that replay hold
their own memory) or ``strategy.optimizer`` before training (the optimizer is built per ``fit`` call).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from clpet.integrations.avalanche_compat import require_avalanche

require_avalanche("clpet's Avalanche integration")

from avalanche.core import SupervisedPlugin  # noqa: E402
from avalanche.training.plugins.evaluation import default_evaluator  # noqa: E402
from avalanche.training.templates import SupervisedTemplate  # noqa: E402

from clpet import training  # noqa: E402
from clpet.backbones.base import batch_to  # noqa: E402
from clpet.data import length_order  # noqa: E402
from clpet.integrations.avalanche_data import avalanche_dataset  # noqa: E402
from clpet.methods.base import Method  # noqa: E402
from clpet.scenarios.base import Experience, SampleSet  # noqa: E402
from clpet.training import OptimConfig, ParamGroups, method_optimizer, set_epoch_lr  # noqa: E402



class SampleCollate:
    """Picklable collate: ``[x, y, (attributes...,) t]`` items -> ``[preprocess(xs), y LongTensor, t LongTensor]``
    (the backbone's preprocessing runs in the loader, as in clpet's own loaders)."""

    def __init__(self, preprocess: Any) -> None:
        self.preprocess = preprocess

    def __call__(self, items: Sequence[Sequence[Any]]) -> List[Any]:
        xs = [item[0] for item in items]
        ys = torch.tensor([int(item[1]) for item in items], dtype=torch.long)
        ts = torch.tensor([int(item[-1]) if len(item) > 2 else 0 for item in items], dtype=torch.long)
        return [self.preprocess(xs), ys, ts]


def progress(loader: DataLoader, desc: str, show: bool) -> Any:
    """The loader wrapped as clpet's loops wrap theirs (plain ``tqdm``, which opens no iterator of its own: the
    asyncio-capable ``tqdm.auto`` did, costing an extra DataLoader iterator, a generator draw and a second worker
    start per loop), so the strategy consumes random numbers exactly as the runner does."""
    return tqdm(loader, desc=desc, disable=not show, leave=False)


@contextmanager
def routed_fit(method: Method, trainer: Any) -> Iterator[None]:
    """Within the block, ``clpet.training.fit`` calls for ``method`` go to ``trainer`` (``method.ctx.trainer``);
    the previous trainer is restored on exit."""
    previous = method.ctx.trainer
    method.ctx.trainer = trainer
    try:
        yield
    finally:
        method.ctx.trainer = previous


def matching_samples(method: Method, experience: Any) -> Optional[SampleSet]:
    """The clpet ``SampleSet`` of ``method.stream`` that an Avalanche experience of the ``train`` / ``test``
    stream holds (same index, size and labels), or None."""
    scenario = method.stream
    stream = getattr(getattr(experience, "origin_stream", None), "name", None)
    index = getattr(experience, "current_experience", None)
    if scenario is None or stream not in ("train", "test") or index is None or not 0 <= index < len(scenario):
        return None
    samples = getattr(scenario[index], stream)
    targets = np.asarray([int(y) for y in experience.dataset.targets], dtype=np.int64)
    return samples if len(targets) == len(samples) and np.array_equal(targets, samples.targets) else None


def clpet_experience(method: Method, experience: Any) -> Experience:
    """The clpet experience a train-stream Avalanche experience stands for (one-line ``ValueError`` if none)."""
    if matching_samples(method, experience) is None or experience.origin_stream.name != "train":
        raise ValueError(
            "this Avalanche experience does not match the scenario the clpet method was set up with (same index, "
            "size and labels in the 'train' stream); train on as_avalanche_benchmark(method.stream) (an Avalanche "
            "benchmark: scenario = from_avalanche(benchmark), then set the method up on it and convert it back)"
        )
    return method.stream[experience.current_experience]


def _eval_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of prediction scores over the samples whose class has been seen (0 if none)."""
    seen = targets < scores.shape[1]
    if not bool(seen.any()):
        return torch.zeros((), device=scores.device)
    return F.cross_entropy(scores[seen].float(), targets[seen])


class ClpetStrategy(SupervisedTemplate):
    """Any clpet method as an Avalanche strategy: ``ClpetStrategy(method=m, evaluator=..., plugins=[...])``.

    ``method`` must be set up (``setup_method`` or the runner's way) on the clpet scenario whose experiences the
    benchmark holds (``as_avalanche_benchmark(method.stream)``). Batch sizes, epochs and the optimizer come
    from the method's config; ``eval_mb_size`` and ``device`` default to the method's run context.
    """

    def __init__(
        self,
        *,
        method: Method,
        plugins: Optional[Sequence[Any]] = None,
        evaluator: Any = default_evaluator,
        eval_every: int = -1,
        peval_mode: str = "epoch",
        eval_mb_size: Optional[int] = None,
        device: Optional[Any] = None,
        train_outputs: bool = True,
    ) -> None:
        if method.backbone is None:
            raise ValueError("the clpet method is not set up: call setup_method(...) (or method.setup) first")
        ctx = method.ctx
        super().__init__(
            model=method, optimizer=None, train_mb_size=1, train_epochs=0,
            eval_mb_size=eval_mb_size or ctx.eval_batch_size, device=device or ctx.device, plugins=plugins,
            evaluator=evaluator, eval_every=eval_every, peval_mode=peval_mode,
        )
        self.method = method
        self.train_outputs = train_outputs
        self._train_samples: Optional[SampleSet] = None
        self._epoch = 0
        self._term_sums: Dict[str, float] = {}
        self._n_batches = 0

    # -- training: learn() with fit routed into Avalanche's loop -----------------------------------------------
    def _train_exp(self, experience: Any, eval_streams: Any = None, **kwargs: Any) -> None:
        exp = clpet_experience(self.method, experience)
        self._train_samples = exp.train
        with routed_fit(self.method, self.fit):
            self.method.learn_experience(exp)

    def fit(
        self,
        method: Method,
        samples: SampleSet,
        cfg: OptimConfig,
        seed: int,
        param_groups: Optional[ParamGroups] = None,
        desc: str = "train",
    ) -> List[Dict[str, float]]:
        """``clpet.training.fit`` run by Avalanche's loop (same signature and result: per-epoch mean terms)."""
        if method is not self.method:  # another model trained by the method: clpet's own loop
            return training.train_loop(method, samples, cfg, seed, param_groups, desc)
        if cfg.grad_accum_steps != 1 or cfg.max_grad_norm is not None or method.ctx.precision == "fp16":
            raise ValueError("ClpetStrategy runs one optimizer step per mini-batch without clipping or fp16 loss "
                             "scaling (Avalanche's loop); use clpet's runner for grad_accum_steps, max_grad_norm "
                             "or precision=fp16")
        self.optimizer = method_optimizer(method, cfg, param_groups)
        self.train_epochs, self.train_mb_size = cfg.epochs, cfg.batch_size
        data = self.adapted_dataset if samples is self._train_samples else avalanche_dataset(samples)
        collate = SampleCollate(method.backbone.preprocess_fn(train=True))
        history: List[Dict[str, float]] = []
        method.train()
        for epoch in range(cfg.epochs):
            set_epoch_lr(self.optimizer, cfg, epoch)
            self._epoch, self._term_sums, self._n_batches = epoch, {}, 0
            loader = DataLoader(  # the loader clpet's make_loader builds, over the Avalanche dataset
                data, batch_size=cfg.batch_size, shuffle=True,
                generator=torch.Generator().manual_seed(int(seed * 1_000_003 + epoch)),
                num_workers=method.ctx.num_workers, collate_fn=collate, pin_memory=method.ctx.pin_memory,
                drop_last=cfg.drop_last and len(data) >= cfg.batch_size,
            )
            self.dataloader = progress(loader, f"{desc} epoch {epoch + 1}/{cfg.epochs}", method.ctx.progress)
            self._before_training_epoch()
            if self._stop_training:  # e.g. an early-stopping plugin
                self._stop_training = False
                break
            self.training_epoch()
            self._after_training_epoch()
            history.append({k: v / max(self._n_batches, 1) for k, v in self._term_sums.items()})
        method.eval()
        return history

    def _before_training_epoch(self, **kwargs: Any) -> None:
        self.method.before_epoch(self._epoch)
        super()._before_training_epoch(**kwargs)

    def _after_backward(self, **kwargs: Any) -> None:
        self.method.after_backward()
        super()._after_backward(**kwargs)

    def _before_update(self, **kwargs: Any) -> None:
        self.method.before_update()
        super()._before_update(**kwargs)

    def _after_update(self, **kwargs: Any) -> None:
        self.method.after_step()
        super()._after_update(**kwargs)

    def make_train_dataloader(self, **kwargs: Any) -> None:
        """Loaders are built by :meth:`fit`, one per epoch (seeded like clpet's); nothing to do per experience."""
        self.dataloader = []

    def make_optimizer(self, **kwargs: Any) -> None:
        """The optimizer is built by :meth:`fit` over the method's trainable parameters (its param groups)."""

    # -- the mini-batch ----------------------------------------------------------------------------------------
    def _unpack_minibatch(self) -> None:
        self.mbatch = [batch_to(part, self.device) for part in self.mbatch]

    def forward(self) -> Optional[torch.Tensor]:
        """Eval: ``method.predict`` (e.g. LAE's ensemble). Training: the same, no grad, in eval mode, so that
        training metrics see predictions without touching the update (``None`` if ``train_outputs=False``)."""
        ctx = self.method.ctx
        if not self.is_training:
            with ctx.autocast():
                return self.method.predict(self.mb_x)
        if not self.train_outputs:
            return None
        modes = {module: module.training for module in self.method.modules()}
        self.method.eval()
        try:
            with torch.no_grad(), ctx.autocast():
                return self.method.predict(self.mb_x)
        finally:
            for module, mode in modes.items():
                module.training = mode

    def criterion(self) -> torch.Tensor:
        """Training: the sum of ``method.loss_terms`` (each also averaged per epoch). Eval: see module doc."""
        if not self.is_training:
            return _eval_loss(self.mb_output, self.mb_y)
        with self.method.ctx.autocast():
            terms = self.method.loss_terms(self.mb_x, self.mb_y)
        for name, value in terms.items():
            self._term_sums[name] = self._term_sums.get(name, 0.0) + float(value.detach())
        self._n_batches += 1
        return sum(terms.values())

    # -- evaluation --------------------------------------------------------------------------------------------
    def make_eval_dataloader(self, num_workers: int = 0, **kwargs: Any) -> None:
        """Batches as ``method.predict_set`` makes them: ``eval_mb_size`` samples, texts ordered by length."""
        samples = matching_samples(self.method, self.experience)
        order = length_order(samples) if samples is not None else np.arange(len(self.adapted_dataset))
        ctx = self.method.ctx
        loader = DataLoader(
            self.adapted_dataset, batch_size=self.eval_mb_size, sampler=order.tolist(),
            collate_fn=SampleCollate(self.method.backbone.preprocess_fn(train=False)),
            num_workers=num_workers or ctx.num_workers, pin_memory=ctx.pin_memory,
        )
        self.dataloader = progress(loader, "eval", ctx.progress)


class ClpetPlugin(SupervisedPlugin):
    """A clpet method's hooks in any ``SupervisedTemplate``, for methods that are add-ons to plain SGD training
    (the strategy owns model, data, optimizer and criterion; the method adds per-experience state, per-epoch
    and per-step behaviour and extra loss terms):

    ``on_experience_start`` -> ``before_training_exp``, ``before_epoch`` -> ``before_training_epoch`` (the epoch
    index within the experience), ``loss_terms`` -> ``before_backward`` (added to ``strategy.loss``; only if the
    method defines them), ``after_step`` -> ``after_update``, ``on_experience_end`` -> ``after_training_exp``,
    and with ``predictions=True`` ``predict`` -> ``after_eval_forward`` (replaces ``strategy.mb_output``).
    Experience t is ``method.stream[t]`` when the method was set up on a scenario, else ``None``.
    """

    def __init__(self, method: Method, *, predictions: bool = False) -> None:
        super().__init__()
        self.method = method
        self.predictions = predictions
        self._has_loss = type(method).loss_terms is not Method.loss_terms

    def _experience(self, strategy: Any) -> Optional[Experience]:
        scenario, index = self.method.stream, strategy.experience.current_experience
        return scenario[index] if scenario is not None and 0 <= index < len(scenario) else None

    def before_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.method.on_experience_start(self._experience(strategy))

    def before_training_epoch(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.method.before_epoch(strategy.clock.train_exp_epochs)

    def before_backward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        if self._has_loss:
            terms = self.method.loss_terms(strategy.mb_x, strategy.mb_y)
            strategy.loss = strategy.loss + sum(terms.values())

    def after_backward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.method.after_backward()

    def before_update(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.method.before_update()

    def after_update(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.method.after_step()

    def after_training_exp(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        self.method.on_experience_end(self._experience(strategy))

    def after_eval_forward(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        if self.predictions:
            strategy.mb_output = self.method.predict(strategy.mb_x)
