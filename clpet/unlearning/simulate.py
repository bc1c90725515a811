"""Deletion simulator (S3T, arXiv 2406.16257, Sec. 5; the reference's ``src/deletion.py``): how many deletion
requests m shards of L slices serve before every shard has lost all its sequences (a full retrain).

Requests hit a (shard, slice) cell uniformly, with replacement, as in the reference. A sequence survives until a
request hits one of its slices; it then keeps its prefix before that slice and is dead when the prefix is empty.
A shard dies when all its sequences are dead. With sequences whose first slices are distinct, the count is a coupon
collector over the m*B first-slice cells among m*L: its expectation is m*L*H_{m*B} (H the harmonic number),
m*L*H_m for one sequence; SISA (any deletion in a shard forces it to retrain) gives m*H_m.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np


def harmonic(n: int) -> float:
    return float(np.sum(1.0 / np.arange(1, n + 1)))


def expected_deletions(n_shards: int, n_slices: int, budget: int) -> float:
    """m * L * H_{m*B}: the expected requests before a full retrain, sequences with distinct first slices."""
    return n_shards * n_slices * harmonic(n_shards * budget)


def expected_sisa_deletions(n_shards: int) -> float:
    return n_shards * harmonic(n_shards)


def deletions_until_retrain(sequences: Sequence[Sequence[int]], n_shards: int, n_slices: int,
                            rng: np.random.RandomState) -> int:
    """One simulated stream: requests (the last included) until every shard is dead."""
    alive = [[list(s) for s in sequences] for _ in range(n_shards)]
    count = 0
    while any(alive):
        count += 1
        cell = rng.randint(n_shards * n_slices)
        shard, slc = divmod(cell, n_slices)
        alive[shard] = [s[: s.index(slc)] if slc in s else s for s in alive[shard]]
        alive[shard] = [s for s in alive[shard] if s]
    return count


def simulate(sequences: Sequence[Sequence[int]], n_shards: int, n_slices: int, trials: int, seed: int) -> List[int]:
    rng = np.random.RandomState(seed)
    return [deletions_until_retrain(sequences, n_shards, n_slices, rng) for _ in range(trials)]
