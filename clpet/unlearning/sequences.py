"""Slice orders of S3T (Chowdhury et al., "Towards Scalable Exact Machine Unlearning Using Parameter-Efficient
Fine-Tuning", arXiv 2406.16257, Sec. 4; reference code brcsomnath/S3T, ``src/sequence_selection.py``).

A sequence is a permutation of a shard's L slices: the order in which layer-sliced training adds them. A shard
trained on B sequences survives a deletion as long as one sequence's first slice is intact, so good sequences start
with different slices and put likely-deleted slices late:

* ``cyclic``: the first B right-rotations of (0, ..., L-1) (every slice first exactly once when B = L).
* ``matching``: the reference's bipartite selection. Start with the L one-slice sequences (each slice first once);
  L-1 times, score every (sequence, next slice) pair by ``sequence_score`` of the extended prefix and extend every
  sequence at once by a maximum-weight assignment (``scipy.optimize.linear_sum_assignment``), a slice never twice in
  a sequence. The result is a Latin square (every slice at every position once), so which B rows are kept decides
  where the likely slices go: clpet keeps the B rows of highest score (likely slices latest); the reference keeps
  the first B rows, the ones starting with slices 0..B-1, whatever their scores.
* ``random``: B distinct uniformly random permutations.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

SELECTIONS = ("cyclic", "matching", "random")


def cyclic_sequences(n_slices: int, budget: int) -> List[List[int]]:
    """The first ``budget`` right-rotations of (0, ..., L-1): [0..L-1], [L-1, 0, ...], [L-2, L-1, 0, ...], ..."""
    _check(n_slices, budget)
    base = list(range(n_slices))
    return [base[n_slices - r:] + base[: n_slices - r] if r else base for r in range(budget)]


def sequence_score(probs: Sequence[float], horizon: int = 100) -> float:
    """The reference's score of a slice prefix with deletion probabilities ``probs`` (in prefix order):
    sum over n of n * (1 - c_n)^horizon, c_n the cumulative deletion probability of the first n slices -- long
    prefixes of rarely deleted slices score high."""
    c = np.cumsum(np.asarray(probs, dtype=np.float64))
    n = np.arange(1, len(c) + 1)
    return float((n * np.clip(1.0 - c, 0.0, 1.0) ** horizon).sum())


def matching_sequences(deletion_probs: Sequence[float], budget: int) -> List[List[int]]:
    """B sequences by repeated maximum-weight bipartite matching of sequences to next slices (see module)."""
    from scipy.optimize import linear_sum_assignment

    p = np.asarray(deletion_probs, dtype=np.float64)
    n = len(p)
    _check(n, budget)
    if (p < 0).any() or not np.isfinite(p).all() or p.sum() <= 0:
        raise ValueError(f"deletion probabilities must be finite, >= 0 and not all 0; got {list(p)}")
    p = p / p.sum()
    seqs = [[s] for s in range(n)]
    for _ in range(n - 1):
        cost = np.full((n, n), -1e18)
        for i, seq in enumerate(seqs):
            for j in range(n):
                if j not in seq:
                    cost[i, j] = sequence_score(p[seq + [j]])
        rows, cols = linear_sum_assignment(cost, maximize=True)
        for i, j in zip(rows, cols):
            seqs[i].append(int(j))
    scores = [sequence_score(p[seq]) for seq in seqs]
    ranked = sorted(range(n), key=lambda i: (-scores[i], i))  # stable: equal scores keep the first-slice order
    return [seqs[i] for i in ranked[:budget]]


def random_sequences(n_slices: int, budget: int, rng: np.random.RandomState) -> List[List[int]]:
    """``budget`` distinct uniformly random permutations of the slices."""
    _check(n_slices, budget)
    import math

    if budget > math.factorial(n_slices):
        raise ValueError(f"{budget} distinct sequences of {n_slices} slices do not exist")
    out: List[List[int]] = []
    while len(out) < budget:
        seq = [int(s) for s in rng.permutation(n_slices)]
        if seq not in out:
            out.append(seq)
    return out


def make_sequences(selection: str, n_slices: int, budget: int, seed: int,
                   deletion_probs: Optional[Sequence[float]] = None) -> List[List[int]]:
    if selection == "cyclic":
        return cyclic_sequences(n_slices, budget)
    if selection == "matching":
        probs = deletion_probs if deletion_probs is not None else [1.0] * n_slices
        if len(probs) != n_slices:
            raise ValueError(f"deletion_probs lists {len(probs)} values for {n_slices} slices")
        return matching_sequences(probs, budget)
    if selection == "random":
        return random_sequences(n_slices, budget, np.random.RandomState(seed))
    raise ValueError(f"unknown sequence selection '{selection}'; valid: {', '.join(SELECTIONS)}")


def _check(n_slices: int, budget: int) -> None:
    if n_slices <= 0 or budget <= 0:
        raise ValueError(f"need slices > 0 and sequences > 0; got {n_slices}, {budget}")
    if budget > n_slices:
        raise ValueError(f"{budget} sequences of {n_slices} slices: at most one sequence per first slice "
                         f"(sequences <= slices)")
