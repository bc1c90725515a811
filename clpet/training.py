"""The small shared training loop: epochs, optimizer, LR schedule, autocast, gradient accumulation and clipping,
progress bar, hooks (docs/architecture.md, "The training loop").

Methods describe *what* to optimise through hooks (``loss_terms``, ``before_epoch``, ``after_backward``,
``before_update``, ``after_step``); this loop owns *how*. Named loss terms are summed, and each is averaged per
epoch for the log. One optimizer step per ``grad_accum_steps`` micro-batches (the loss divided by that number,
the last incomplete group of an epoch stepped too); ``max_grad_norm`` clips the accumulated gradients after
``before_update``; with ``precision=fp16`` the loss is scaled (``torch.amp.GradScaler``) and the gradients are
unscaled before ``before_update`` and clipping, so gradient rules see true gradients. Under ``torch.distributed``
each rank trains on its part of every global batch and the gradients are averaged before each step
(``clpet.distributed``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import torch
from tqdm import tqdm

from clpet import distributed
from clpet.backbones.base import batch_to
from clpet.data import make_loader
from clpet.scenarios.base import SampleSet

if TYPE_CHECKING:  # pragma: no cover
    from clpet.methods.base import Method

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("constant", "cosine", "cosine-restarts")


@dataclass
class OptimConfig:
    """Optimisation keys shared by trained methods (embedded in their ``Config``)."""

    epochs: int = 1
    batch_size: int = 32
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "constant"  # constant | cosine (annealed to 0 over the epochs, stepped per epoch) | cosine-restarts
    # cosine-restarts (timm's CosineLRScheduler, stepped per epoch): a linear warmup from warmup_lr to lr over
    # warmup_epochs, then cosine cycles of cycle_epochs from lr down to min_lr, restarting
    warmup_epochs: int = 0
    warmup_lr: float = 0.0
    min_lr: float = 0.0
    cycle_epochs: int = 1
    drop_last: bool = False  # drop the last incomplete batch of an epoch (kept when it is the only one)
    grad_accum_steps: int = 1  # micro-batches per optimizer step (effective batch = batch_size * grad_accum_steps)
    max_grad_norm: Optional[float] = None  # clip the gradients' global L2 norm before each step (None = off)

    def __post_init__(self) -> None:
        check_optim(self)


def check_optim(cfg: OptimConfig) -> None:
    """Reject bad optimisation values before any work starts (one line each)."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{cfg.optimizer}'; valid: {', '.join(OPTIMIZERS)}")
    if cfg.scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler '{cfg.scheduler}'; valid: {', '.join(SCHEDULERS)}")
    if cfg.epochs < 0 or cfg.batch_size <= 0 or not 0 < cfg.lr < math.inf or not 0 <= cfg.weight_decay < math.inf:
        raise ValueError(
            f"bad optimisation values: epochs={cfg.epochs} batch_size={cfg.batch_size} lr={cfg.lr} "
            f"weight_decay={cfg.weight_decay} (need epochs>=0, batch_size>0, finite lr>0, finite weight_decay>=0)"
        )
    if not 0 <= cfg.momentum < 1:
        raise ValueError(f"momentum must be in [0, 1); got {cfg.momentum}")
    if cfg.warmup_epochs < 0 or cfg.cycle_epochs < 1 or not 0 <= cfg.warmup_lr < math.inf or not 0 <= cfg.min_lr < math.inf:
        raise ValueError(f"bad schedule values: warmup_epochs={cfg.warmup_epochs} cycle_epochs={cfg.cycle_epochs} "
                         f"warmup_lr={cfg.warmup_lr} min_lr={cfg.min_lr} (need warmup_epochs>=0, cycle_epochs>=1, "
                         "finite warmup_lr>=0 and min_lr>=0)")
    if cfg.scheduler == "cosine-restarts" and not (cfg.min_lr <= cfg.lr and cfg.warmup_lr <= cfg.lr):
        raise ValueError(f"cosine-restarts needs min_lr <= lr and warmup_lr <= lr; got min_lr={cfg.min_lr} "
                         f"warmup_lr={cfg.warmup_lr} lr={cfg.lr}")
    if cfg.grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be >= 1; got {cfg.grad_accum_steps}")
    if cfg.max_grad_norm is not None and not 0 < cfg.max_grad_norm < math.inf:
        raise ValueError(f"max_grad_norm must be a finite number > 0 or None; got {cfg.max_grad_norm}")


ParamGroups = List[Dict[str, Any]]
Batches = Callable[[int], List[List[int]]]  # epoch -> that epoch's batches (indices into the samples)


def build_optimizer(groups: ParamGroups, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Optimizer over the parameters with ``requires_grad`` only. Each group may carry ``lr_scale`` (its LR is
    ``lr_scale`` times the scheduled LR)."""
    groups = [
        {**g, "params": [p for p in g["params"] if p.requires_grad], "lr_scale": g.get("lr_scale", 1.0)}
        for g in groups
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("nothing to train: the method exposes no parameter with requires_grad=True")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def method_optimizer(method: "Method", cfg: OptimConfig, param_groups: Optional[ParamGroups] = None
                     ) -> torch.optim.Optimizer:
    """The optimizer a ``fit`` call trains with: over ``param_groups``, by default one group of
    ``method.trainable_parameters()`` (``requires_grad`` ones only)."""
    groups = param_groups if param_groups is not None else [{"params": list(method.trainable_parameters())}]
    return build_optimizer(groups, cfg)


def set_epoch_lr(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epoch: int) -> None:
    """Each group's LR for ``epoch``: the scheduled LR times the group's ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at_epoch(cfg, epoch) * group["lr_scale"]


def lr_at_epoch(cfg: OptimConfig, epoch: int) -> float:
    """Constant; cosine annealing to 0 over ``epochs`` (``CosineAnnealingLR(T_max=epochs)`` stepped per epoch,
    as the SimpleCIL/APER reference code schedules it); or ``cosine-restarts``: timm's ``CosineLRScheduler``
    (warmup prefix of ``warmup_epochs`` from ``warmup_lr``, cycles of ``cycle_epochs`` from ``lr`` to ``min_lr``)."""
    if cfg.scheduler == "cosine-restarts":
        return timm_cosine_lr(cfg.lr, cfg.min_lr, cfg.cycle_epochs, cfg.warmup_epochs, cfg.warmup_lr, epoch)
    if cfg.scheduler == "constant" or cfg.epochs <= 0:
        return cfg.lr
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * epoch / cfg.epochs))


def timm_cosine_lr(lr: float, min_lr: float, cycle: int, warmup: int, warmup_lr: float, epoch: int) -> float:
    """The LR timm's ``CosineLRScheduler`` sets at ``epoch`` (read off a one-parameter optimizer)."""
    from timm.scheduler import CosineLRScheduler

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = CosineLRScheduler(opt, t_initial=cycle, lr_min=min_lr, warmup_t=warmup, warmup_lr_init=warmup_lr,
                              warmup_prefix=True, cycle_limit=1 << 30, t_in_epochs=True)
    sched.step(epoch)
    return float(opt.param_groups[0]["lr"])


def fit(
    method: "Method",
    samples: SampleSet,
    cfg: OptimConfig,
    seed: int,
    param_groups: Optional[ParamGroups] = None,
    desc: str = "train",
    batches: Optional[Batches] = None,
) -> List[Dict[str, float]]:
    """Train ``method`` on ``samples`` for ``cfg.epochs`` epochs; returns per-epoch mean loss terms.

    The shuffle order of epoch e draws from a generator seeded with ``(seed, e)``, so an experience trains
    identically whether the run was resumed or not. ``param_groups`` defaults to one group of
    ``method.trainable_parameters()``; the optimizer is built over those with ``requires_grad`` only.

    ``batches(epoch)``, when given, returns the epoch's batches as lists of indices into ``samples`` (a replay
    sampler's fixed number of mixed batches, ConPET); otherwise each epoch is a shuffled pass.

    When ``method.ctx.trainer`` is set (another training loop hosting the method, e.g. the Avalanche strategy),
    the call goes to it with the same arguments; :func:`train_loop` is clpet's own loop.
    """
    trainer = method.ctx.trainer
    if trainer is not None:
        from clpet.methods.base import Method

        if batches is not None or type(method).on_batch is not Method.on_batch:
            raise ValueError(f"{type(method).__name__} draws its own batches or reads their sample ids, which the "
                             f"hosting training loop does not provide; run it with clpet's own loop")
        return trainer(method, samples, cfg, seed, param_groups, desc)
    return train_loop(method, samples, cfg, seed, param_groups, desc, batches)


def train_loop(
    method: "Method",
    samples: SampleSet,
    cfg: OptimConfig,
    seed: int,
    param_groups: Optional[ParamGroups] = None,
    desc: str = "train",
    batches: Optional[Batches] = None,
) -> List[Dict[str, float]]:
    """clpet's training loop (what :func:`fit` runs when no other trainer is set)."""
    ctx = method.ctx
    optimizer = method_optimizer(method, cfg, param_groups)
    accum = cfg.grad_accum_steps
    scaler = torch.amp.GradScaler("cuda") if ctx.precision == "fp16" else None
    history: List[Dict[str, float]] = []
    preprocess = method.backbone.preprocess_fn(train=True)
    method.train()
    for epoch in range(cfg.epochs):
        set_epoch_lr(optimizer, cfg, epoch)
        method.before_epoch(epoch)
        epoch_seed, drop_last = seed * 1_000_003 + epoch, cfg.drop_last and len(samples) >= cfg.batch_size
        weights = None
        if distributed.active():  # this rank's part of each global batch (clpet.distributed)
            global_batches = (batches(epoch) if batches is not None else
                              distributed.global_shuffled_batches(len(samples), cfg.batch_size, epoch_seed, drop_last))
            local, weights = zip(*map(distributed.shard_batch, global_batches)) if global_batches else ((), ())
            loader = make_loader(samples, preprocess, cfg.batch_size, seed=epoch_seed, num_workers=ctx.num_workers,
                                 pin_memory=ctx.pin_memory, batches=list(local), own_rng=batches is None)
        else:
            loader = make_loader(
                samples, preprocess, cfg.batch_size, shuffle=True, seed=epoch_seed,
                num_workers=ctx.num_workers, pin_memory=ctx.pin_memory, drop_last=drop_last,
                batches=None if batches is None else batches(epoch),
            )
        sums: Dict[str, float] = {}
        n_batches = 0
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", disable=not ctx.progress, leave=False)
        n_total = len(loader)
        for i, (batch, targets, ids) in enumerate(bar):
            method.on_batch(ids)
            if i % accum == 0:  # a new optimizer step begins (its gradients stay readable until the next one)
                optimizer.zero_grad(set_to_none=True)
            batch, targets = batch_to(batch, ctx.device), targets.to(ctx.device)
            with ctx.autocast():
                terms = method.loss_terms(batch, targets)
            loss = sum(terms.values())
            micro = loss / accum if accum > 1 else loss
            if weights is not None:  # this rank's share of the global batch's mean loss
                micro = micro * weights[i]
            (scaler.scale(micro) if scaler is not None else micro).backward()
            method.after_backward()
            if (i + 1) % accum == 0 or i + 1 == n_total:
                update(optimizer, method, cfg, scaler)
                if ctx.tracker is not None:
                    ctx.tracker.log_step({**{k: float(v.detach()) for k, v in terms.items()},
                                          "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"]})
            n_batches += 1
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        history.append({name: total / max(n_batches, 1) for name, total in sums.items()})
    method.eval()
    distributed.sync_rng()  # ranks drew different amounts while training on their parts; one process: no-op
    return history


def update(optimizer: torch.optim.Optimizer, method: "Method", cfg: OptimConfig,
           scaler: Optional["torch.amp.GradScaler"] = None) -> None:
    """One optimizer step over the accumulated gradients: unscale (fp16), ``method.before_update()``, clip
    (``max_grad_norm``), step, ``method.after_step()`` (the gradients are zeroed when the next step begins, so
    ``after_step`` still reads them). Gradient rules act before clipping, so the clipped norm is the norm of the
    update applied (MIGU's reference masks before DeepSpeed clips inside its step)."""
    distributed.average_gradients(p for g in optimizer.param_groups for p in g["params"])  # one process: no-op
    if scaler is not None:
        scaler.unscale_(optimizer)
    method.before_update()
    if cfg.max_grad_norm is not None:
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    method.after_step()
