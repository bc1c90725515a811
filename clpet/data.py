"""DataLoaders over ``SampleSet``s: the backbone's preprocessing runs in ``collate_fn`` (so in workers)."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clpet.scenarios.base import SampleSet


def length_order(samples: SampleSet) -> np.ndarray:
    """Inference order: texts by length (similar lengths share a batch: far less padding, same results),
    anything else as given."""
    if samples.modality == "text":
        return np.argsort([len(x) for x in samples.inputs], kind="stable")
    return np.arange(len(samples))


class _Indexed(Dataset):
    def __init__(self, samples: SampleSet) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Tuple[Any, int, int]:
        s = self.samples
        return s.inputs[i], int(s.targets[i]), int(s.ids[i])


class _Collate:
    """Picklable collate: ``(preprocess(inputs), targets LongTensor, ids LongTensor)``."""

    def __init__(self, preprocess: Callable[[Sequence[Any]], Any]) -> None:
        self.preprocess = preprocess

    def __call__(self, items: Sequence[Tuple[Any, int, int]]):
        inputs, targets, ids = zip(*items)
        return self.preprocess(list(inputs)), torch.tensor(targets, dtype=torch.long), torch.tensor(ids, dtype=torch.long)


def make_loader(
    samples: SampleSet,
    preprocess: Callable[[Sequence[Any]], Any],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    batches: Optional[Sequence[Sequence[int]]] = None,
    own_rng: bool = False,
) -> DataLoader:
    """A loader yielding ``(batch, targets, ids)``. Shuffling draws from its own generator seeded with
    ``seed``, so the sample order does not depend on what else consumed the global RNG. ``batches`` (lists of
    sample indices, e.g. a replay sampler's) fixes the batches instead of ``batch_size``/``shuffle``; with
    ``own_rng`` such a loader draws its workers' base seed from a generator seeded with ``seed``, as a shuffled
    loader does, instead of the global RNG (a rank's part of a shuffled epoch leaves the global RNG where a single
    process leaves it)."""
    if batches is not None:
        return DataLoader(_Indexed(samples), batch_sampler=[list(map(int, b)) for b in batches],
                          num_workers=num_workers, collate_fn=_Collate(preprocess), pin_memory=pin_memory,
                          persistent_workers=False,
                          generator=torch.Generator().manual_seed(int(seed)) if own_rng else None)
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(
        _Indexed(samples),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        collate_fn=_Collate(preprocess),
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=False,
    )
