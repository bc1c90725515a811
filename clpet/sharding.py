"""Sharding a language model's frozen weights across the ranks of a data-parallel run (``shard_backbone=true``
under ``torchrun``, or ``accelerate launch --use_fsdp``): for a model that does not fit on one GPU beside its
activations.

What torch provides and clpet uses as is: FSDP2's ``torch.distributed.fsdp.fully_shard`` (ZeRO-3 sharding: each
rank keeps 1/N of every sharded parameter; a module's parameters are all-gathered just before its forward and
freed after it, again for the backward). It is applied to every transformer block (the model's
``_no_split_modules`` classes, the blocks accelerate's transformer auto-wrap policy picks) and then to the whole
model (embeddings, final norm, LM head).

What clpet decides: only the **frozen pretrained weights** are sharded; the trainable parameters (the PEFT
adapters, added before or after sharding) stay whole on every rank and are averaged across ranks by
``clpet.distributed.average_gradients`` as in plain data parallelism. So the optimizer, the hooks that read
parameters (EMA, gradient rules) and the checkpoint (which holds only the adapters) are unchanged, and the numbers
equal those of the same data-parallel run without sharding: the gathered weights are the exact pretrained values.
Methods that train the backbone's own weights (``seq-ft``) are refused: their parameters would need FSDP's
sharded optimizer and checkpoint, which clpet does not wire up.

Every forward under FSDP is a collective, so ranks must run the same number of forwards: the evaluation pads the
ranks with fewer batches (``clpet.distributed.map_batches``) and greedy generation runs with ``synced_gpus``.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

from torch import nn

from clpet import distributed


def requested(flag: bool) -> bool:
    """``shard_backbone=true``, or ``accelerate launch --use_fsdp`` (which sets ``ACCELERATE_USE_FSDP``); only the
    on/off choice is read from accelerate's FSDP settings: clpet shards per transformer block, fully."""
    return bool(flag) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")


def check(method: Any, backbone: Any) -> None:
    """One ``ValueError`` line unless this run can shard its backbone: more than one process, a language model
    with named transformer blocks, a method that trains adapters only and runs data-parallel."""
    if not distributed.launched():
        raise ValueError("shard_backbone=true shards the model across the ranks of torchrun / accelerate launch; "
                         "this is one process")
    if not getattr(backbone, "is_language_model", False):
        raise ValueError(f"shard_backbone=true is for language-model backbones; got {type(backbone).__name__}")
    if method.trains_backbone:
        raise ValueError(f"method '{method.cfg.name}' trains the backbone's own weights; shard_backbone=true shards "
                         f"frozen weights only (use an adapter method, e.g. seq-lora)")
    if not block_classes(backbone.model):
        raise ValueError(f"shard_backbone=true: {type(backbone.model).__name__} names no transformer blocks "
                         f"(_no_split_modules)")


def block_classes(model: nn.Module) -> List[str]:
    """The transformer block classes of a Hugging Face model (``_no_split_modules``) that occur in it."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return sorted({type(m).__name__ for m in model.modules() if type(m).__name__ in names})


def shard_frozen_weights(model: nn.Module) -> Dict[str, int]:
    """FSDP2-shard every frozen parameter of ``model`` across the process group, block by block, then the rest at
    the root; trainable parameters are left whole (``ignored_params``). Returns what was sharded:
    ``blocks``, ``frozen`` (elements sharded in all), ``per_rank`` (elements this rank keeps of them)."""
    from torch.distributed.fsdp import fully_shard

    trainable = {p for p in model.parameters() if p.requires_grad}
    names = set(block_classes(model))
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    for block in blocks:
        fully_shard(block, ignored_params=trainable, reshard_after_forward=True)
    # the root too (FSDP's default keeps it gathered after a forward): otherwise rank 0 alone, writing the
    # checkpoint (state_dict reshards), would change the root's state, and the ranks' next gathers would differ
    fully_shard(model, ignored_params=trainable, reshard_after_forward=True)
    per_rank = sum(p.to_local().numel() for p in model.parameters() if hasattr(p, "to_local"))
    distributed.set_lockstep(True)
    return {"blocks": len(blocks), "frozen": frozen, "per_rank": per_rank}


def describe(info: Dict[str, int]) -> str:
    world = distributed.world_size()
    return (f"shard_backbone: {info['frozen']:,} frozen weights sharded over {world} ranks in {info['blocks']} blocks "
            f"+ root; this rank holds {info['per_rank']:,}")


def sharded(model: nn.Module) -> bool:
    """Whether ``model`` holds FSDP-sharded parameters (DTensors)."""
    return any(hasattr(p, "to_local") for p in model.parameters())

