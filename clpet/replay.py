"""Replay memories and samplers of the replay-based methods (I-LoRA, ConPET).

``ReservoirBuffer``: reservoir sampling (Vitter's algorithm R, as mammoth's and LLMCL's ``Buffer``): after n items
were offered, each is in the buffer with probability min(1, capacity / n), whatever the stream. Items are opaque
(token rows of the LM methods); the random draws come from the caller's generator, so a run is reproducible and
its buffer checkpointable (``state`` / ``load``). Written in clpet because the field's libraries hold it inside
their own trainers (Avalanche's ``ReservoirSamplingBuffer`` works on Avalanche datasets, mammoth's on tensors).

``dynamic_replay_batches``: ConPET's dynamic replay (Song et al., arXiv 2309.14763, Sec. 3.2; Raincleared-Song/
ConPET ``preprocess/custom_loader.py``): a fixed number of batches per epoch whatever the number of tasks, each
part current-task samples (distinct within the batch) and part old samples, each old sample drawn by picking an
old task uniformly, then one of its samples uniformly. ``kmeans_exemplars``: the EMR memory (nearest sample to
each K-means centroid of a class, scikit-learn's ``KMeans``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np


class ReservoirBuffer:
    """At most ``capacity`` items, each offered item kept with probability capacity / (items offered so far)."""

    def __init__(self, capacity: int) -> None:
        if int(capacity) <= 0:
            raise ValueError(f"buffer capacity must be positive; got {capacity}")
        self.capacity = int(capacity)
        self.items: List[Any] = []
        self.seen = 0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, items: Sequence[Any], rng: np.random.RandomState) -> None:
        for item in items:
            if len(self.items) < self.capacity:
                self.items.append(item)
            else:
                j = int(rng.randint(0, self.seen + 1))  # uniform over the seen + 1 items offered so far
                if j < self.capacity:
                    self.items[j] = item
            self.seen += 1

    def sample(self, k: int, rng: np.random.RandomState) -> List[Any]:
        """``min(k, len)`` distinct items, uniformly."""
        if not self.items:
            return []
        picks = rng.choice(len(self.items), size=min(int(k), len(self.items)), replace=False)
        return [self.items[i] for i in picks]

    def state(self) -> Dict[str, Any]:
        return {"capacity": self.capacity, "items": list(self.items), "seen": self.seen}

    def load(self, state: Dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"the saved buffer holds {state['capacity']} items, this one {self.capacity}")
        self.items, self.seen = list(state["items"]), int(state["seen"])


def dynamic_replay_batches(n_current: int, old_sizes: Sequence[int], steps: int, batch_size: int,
                           replay_fraction: float, rng: np.random.RandomState) -> List[List[int]]:
    """``steps`` batches of indices into [current samples, old task 0's, old task 1's, ...] (concatenated in
    that order): ``round(batch_size * replay_fraction)`` old samples per batch (none without old tasks), the rest
    current samples drawn without replacement within the batch (with replacement only if there are too few)."""
    if n_current <= 0 or steps <= 0 or batch_size <= 0:
        raise ValueError(f"need current samples, steps and batch size > 0; got {n_current}, {steps}, {batch_size}")
    offsets = np.cumsum([n_current, *old_sizes])[:-1]
    old = [(int(o), int(n)) for o, n in zip(offsets, old_sizes) if n > 0]
    n_old = int(round(batch_size * replay_fraction)) if old else 0
    n_new = batch_size - n_old
    batches = []
    for _ in range(steps):
        new = rng.choice(n_current, size=n_new, replace=n_new > n_current).tolist()
        tasks = rng.randint(0, len(old), size=n_old) if n_old else []
        replay = [old[t][0] + int(rng.randint(0, old[t][1])) for t in tasks]
        batches.append(new + replay)
    return batches


def kmeans_exemplars(features: np.ndarray, labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of the exemplars of each class: ``min(per_class, class size)`` K-means centroids of the class's
    features (``KMeans(random_state=seed)``), and for each the nearest sample (EMR, as ConPET's baseline picks
    them). Sorted; a sample is picked at most once per class."""
    from sklearn.cluster import KMeans

    if per_class <= 0:
        raise ValueError(f"exemplars per class must be positive; got {per_class}")
    keep: List[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(per_class, len(idx))
        if k == len(idx):
            keep += idx.tolist()
            continue
        distances = KMeans(n_clusters=k, random_state=seed, n_init=10).fit_transform(features[idx])  # (n, k)
        chosen: List[int] = []
        for j in range(k):
            order = np.argsort(distances[:, j], kind="stable")
            chosen.append(next(int(i) for i in order if int(i) not in chosen))
        keep += idx[chosen].tolist()
    return np.sort(np.asarray(keep, dtype=np.int64))
