"""Data parallelism inside one run on ``torch.distributed`` (``torchrun --nproc_per_node=N -m clpet run ...`` or
``accelerate launch -m clpet run ...``; both set ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR``).

What torch provides and clpet uses as is: the process group (``init_process_group``, gloo on CPU, NCCL on CUDA),
``all_reduce`` and ``all_gather_object``. What clpet adds, because its methods train through named loss terms and
hooks rather than one ``module(x)`` call that ``DistributedDataParallel`` could wrap:

- **Batches**: every rank draws the same global batches (the single-process shuffle, the same seed) and trains on
  its contiguous part of each (``np.array_split``: sizes differ by at most one), so the global batch and the number
  of optimizer steps are the config's whatever the world size (LAE's EMA horizon in steps is unchanged).
- **Gradients**: each rank's loss is weighted by its share of the global batch, and the accumulated gradients are
  summed across ranks before every optimizer step (``average_gradients``), which is the gradient of the global
  batch's mean loss -- what ``DistributedDataParallel``'s reducer computes, once per optimizer step, after the
  gradient accumulation. Parameters stay identical on every rank, so every hook (``before_update``, EMA in
  ``after_step``) sees the same values everywhere.
- **Inference**: feature extraction and evaluation split the list of batches across ranks (batch i on rank
  i mod N, so each batch is the one a single process would form) and exchange the results, so each frozen
  feature is computed once across ranks and every rank ends with all of them.
- **Writing**: only rank 0 writes the run folder, provenance, trackers and plots (``is_main``).
- **Lockstep** (``set_lockstep``, on when the backbone's weights are sharded, ``clpet.sharding``): every forward is
  then a collective, so the inference helpers give every rank the same number of calls, the ranks with fewer
  batches running their first batch again and dropping the result.

Not bit-identical to one process for trained methods: a rank's loss is a mean over a part of the batch, so the
sums that make the global gradient are added in another order (float rounding), and dropout draws differ per
rank. Frozen-feature methods (SimpleCIL) give the identical matrix.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple, TypeVar

import numpy as np
import torch

T = TypeVar("T")
R = TypeVar("R")


_LOCKSTEP = {"on": False}


def _dist():
    return torch.distributed


def set_lockstep(on: bool) -> None:
    """Whether every rank must run the same number of forwards (sharded weights: each forward gathers them)."""
    _LOCKSTEP["on"] = bool(on)


def lockstep() -> bool:
    return _LOCKSTEP["on"] and active()


def inference(fn: Callable[..., R]) -> Callable[..., R]:
    """``@torch.inference_mode()``, decided per call: ``torch.no_grad()`` instead while weights are sharded
    (lockstep), because FSDP gathers them into buffers that training reuses in place, which an inference tensor
    forbids."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        with torch.no_grad() if _LOCKSTEP["on"] else torch.inference_mode():
            return fn(*args, **kwargs)

    return wrapper


def active() -> bool:
    """Whether this process is one rank of a process group of more than one."""
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return _dist().get_world_size() if active() else 1


def rank() -> int:
    return _dist().get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes."""
    return rank() == 0


def launched() -> bool:
    """Started by torchrun / accelerate with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group the launcher describes (environment variables), once; returns this rank's device
    (``cuda:LOCAL_RANK`` when the run device is CUDA). A single process returns ``device`` unchanged."""
    if not launched():
        return device
    dist = _dist()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def shutdown() -> None:
    """Leave the process group (the end of a torchrun rank's run)."""
    set_lockstep(False)
    if _dist().is_available() and _dist().is_initialized():
        _dist().destroy_process_group()


def barrier() -> None:
    if active():
        _dist().barrier()


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (picklable); one process: ``obj``."""
    if not active():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def shard_batch(batch: Sequence[int]) -> Tuple[List[int], float]:
    """This rank's contiguous part of a global batch and the weight of its mean loss (its share of the batch
    times the world size: the sum over ranks of ``weight * mean`` divided by the world size is the global mean).
    A rank left without samples (a batch smaller than the world) runs the batch's first sample with weight 0, so
    that every rank makes the same collective calls."""
    parts = np.array_split(np.asarray(batch, dtype=np.int64), world_size())
    mine = parts[rank()]
    if len(mine) == 0:
        return [int(batch[0])], 0.0
    return mine.tolist(), len(mine) * world_size() / len(batch)


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum the (share-weighted) gradients across ranks and divide by the world size, in place, in one flat buffer
    per dtype. A parameter without a gradient on every rank keeps ``grad = None`` (the optimizer skips it, as in
    one process: a frozen PET's Adam state does not advance); one with a gradient on some rank only gets zeros
    elsewhere before the sum."""
    if not active():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    # on the parameters' device: NCCL reduces CUDA tensors only
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
    _dist().all_reduce(has)  # same list on every rank, so the same parameters are reduced everywhere
    live = [p for p, h in zip(params, has.tolist()) if h > 0]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for dtype in sorted({p.grad.dtype for p in live}, key=str):
        grads = [p.grad for p in live if p.grad.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in grads])
        _dist().all_reduce(flat)
        flat.div_(world_size())
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()


def sync_rng() -> None:
    """Every rank continues from rank 0's RNG states (torch, CUDA, NumPy, Python). A rank's share of a batch draws
    a different number of random values (dropout, augmentation retries), so after training the global RNGs
    differ; the next head or PET a method creates must be initialised identically everywhere."""
    if not active():
        return
    from clpet.results import rng_state, set_rng_state

    set_rng_state(broadcast(rng_state()))


def map_batches(batches: Sequence[T], fn: Callable[[T], R]) -> List[R]:
    """``[fn(b) for b in batches]``, with batch i computed on rank i mod N and the results exchanged, so every
    rank returns the whole list in order. Results must be picklable (tensors on the CPU, arrays, strings)."""
    if not active():
        return [fn(b) for b in batches]
    mine = _my_batches(len(batches))
    results = {i: fn(batches[i]) for i in mine}
    for _ in range(_padding(len(batches), len(mine))):
        fn(batches[0])  # lockstep: a forward every rank takes part in; its result is not used
    return _exchange(results, len(batches))


def _my_batches(n: int) -> List[int]:
    """This rank's batch indices: i mod N."""
    return [i for i in range(n) if i % world_size() == rank()]


def _padding(n: int, mine: int) -> int:
    """Calls this rank adds under lockstep so that every rank makes ceil(n / N) of them (0 when there are none)."""
    return (-(-n // world_size()) - mine) if lockstep() and n else 0


def _exchange(local: Dict[int, R], n: int) -> List[R]:
    """Every rank's ``{batch index: result}`` merged, as the list of the ``n`` results in order, on every rank."""
    parts: List[Any] = [None] * world_size()
    _dist().all_gather_object(parts, local)
    merged = {i: r for part in parts for i, r in part.items()}
    return [merged[i] for i in range(n)]


def map_loader(samples: Any, preprocess: Callable[[Sequence[Any]], Any], batch_size: int,
               fn: Callable[[Any], R], num_workers: int = 0, pin_memory: bool = False,
               progress: bool = False, desc: str = "") -> List[R]:
    """``fn(batch)`` for every batch of an unshuffled pass over ``samples`` (``clpet.data.make_loader``'s batches),
    in order; under ``torch.distributed`` each rank loads and computes only its batches (i mod N) and the results
    are exchanged (``map_batches``), so every rank returns them all."""
    from tqdm import tqdm

    from clpet.data import make_loader

    if not active():
        loader = make_loader(samples, preprocess, batch_size, num_workers=num_workers, pin_memory=pin_memory)
        return [fn(batch) for batch, _, _ in tqdm(loader, desc=desc, disable=not progress, leave=False)]
    n = len(samples)
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    mine = _my_batches(len(batches))
    padded = mine + [0] * _padding(len(batches), len(mine))  # lockstep: the first batch again, its result dropped
    # built on every rank, even one without batches: iterating it draws the global RNG once, as one process does
    loader = make_loader(samples, preprocess, batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         batches=[batches[i] for i in padded])
    # iterated in full on every rank (a list, not a lazy zip), so even a rank without batches makes the iterator
    outputs = [fn(batch) for batch, _, _ in tqdm(loader, desc=desc, disable=not progress, leave=False)]
    return _exchange(dict(zip(mine, outputs)), len(batches))


def global_shuffled_batches(n: int, batch_size: int, seed: int, drop_last: bool) -> List[List[int]]:
    """The batches of one shuffled epoch exactly as ``clpet.data.make_loader(shuffle=True, seed=seed)`` forms them
    in a single process: a DataLoader over ``range(n)`` with the same generator consumes it the same way."""
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(int(seed))
    loader = DataLoader(range(n), batch_size=batch_size, shuffle=True, generator=generator, drop_last=drop_last,
                        collate_fn=list)
    return [list(map(int, b)) for b in loader]
