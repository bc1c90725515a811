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

import torch
from torch import nn

from clpet import distributed


def requested(flag: bool) -> bool:
    """``shard_backbone=true``, or ``accelerate launch --use_fsdp`` (which sets ``ACCELERATE_USE_FSDP``); only the
    on/off choice is read from accelerate's FSDP settings: clpet shards per transformer block, fully."""
    return bool(flag) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")


def check(method: Any, backbone: Any) -> None:
    """One ``ValueError`` line unless this run can shard its backbone: more than one process, a decoder-only
    language model with named transformer blocks, an LM method that trains adapters only and runs data-parallel.
    Encoder-decoder models are refused: their encoder is called on its own (``get_encoder()``, also inside
    ``generate``), which skips the root's gather, so the shared embedding would stay sharded."""
    from clpet.methods.lm_base import LMMethod

    asked = "shard_backbone=true (or accelerate launch --use_fsdp)"
    if not distributed.launched():
        raise ValueError(f"{asked} shards the model across the ranks of torchrun / accelerate launch; this is one "
                         f"process")
    if not getattr(backbone, "is_language_model", False) or not isinstance(method, LMMethod):
        raise ValueError(f"{asked} is for the language-model methods on language-model backbones; got method "
                         f"'{method.cfg.name}' on {type(backbone).__name__}")
    if backbone.seq2seq:
        raise ValueError(f"{asked}: encoder-decoder models ({type(backbone.model).__name__}) are not sharded; use a "
                         f"decoder-only model or run unsharded")
    if method.trains_backbone:
        raise ValueError(f"method '{method.cfg.name}' trains the backbone's own weights; {asked} shards frozen "
                         f"weights only (use an adapter method, e.g. seq-lora)")
    if not block_classes(backbone.model):
        raise ValueError(f"{asked}: {type(backbone.model).__name__} names no transformer blocks (_no_split_modules)")


def block_classes(model: nn.Module) -> List[str]:
    """The transformer block classes of a Hugging Face model (``_no_split_modules``) that occur in it."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return sorted({type(m).__name__ for m in model.modules() if type(m).__name__ in names})


def shard_frozen_weights(model: nn.Module) -> Dict[str, Any]:
    """FSDP2-shard every frozen parameter of ``model`` across the process group, block by block, then the rest at
    the root; trainable parameters are left whole (``ignored_params``). Returns what was sharded:
    ``blocks``, ``frozen`` (elements sharded in all), ``per_rank`` (the elements each rank keeps of them)."""
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
    held = sum(p.to_local().numel() for p in model.parameters() if hasattr(p, "to_local"))
    per_rank: List[Any] = [None] * distributed.world_size()
    torch.distributed.all_gather_object(per_rank, held)
    distributed.set_lockstep(True)
    return {"blocks": len(blocks), "frozen": frozen, "per_rank": [int(n) for n in per_rank]}


def describe(info: Dict[str, Any]) -> str:
    held = ", ".join(f"{n:,}" for n in info["per_rank"])
    return (f"shard_backbone: {info['frozen']:,} frozen weights sharded over {len(info['per_rank'])} ranks in "
            f"{info['blocks']} blocks + root; the ranks hold {held}")

