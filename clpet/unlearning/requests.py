"""Deletion-request streams (``deletions`` in the run config): which training samples each request deletes.

``kind``:

* ``auto`` (default) -- ``uniform`` with an unlearning method (s3t, sisa, retrain), ``none`` with any other.
* ``none`` -- no requests (the run trains and evaluates only).
* ``uniform`` -- ``requests`` requests of ``size`` ids each, drawn uniformly without replacement from the samples
  not deleted yet, with ``seed``.
* ``bursty`` -- as uniform, but every ``burst_every``-th request deletes ``burst_size`` ids at once.
* ``skewed`` -- as uniform, but each id is drawn by first picking a slice with probability ``slice_probs[s]``
  (slices as the sharded method cuts the data: ``slice_assignment`` with its ``shards`` x ``slices`` -- taken
  from the method unless given, and refused when they differ -- and the run seed),
  then a sample of it: the setting S3T's ``matching`` sequences are built for.
* ``file`` -- ``file``: a text file, one request per line, sample ids separated by spaces or commas (blank lines
  and lines starting with ``#`` skipped).

The same ``deletions`` config gives the same ids for every method (the stream depends on the training ids and the
seed only), so S3T, SISA and retraining are compared on one stream. Ids are checked against the training set
before any work: an unknown id, or one deleted twice, fails with one line naming it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

KINDS = ("auto", "none", "uniform", "bursty", "skewed", "file")
#: separate random streams for the slicing of the data and the draw of deletion requests: with one seed for both
#: (the run seed and deletions.seed are both 0 by default), the first requests would be the first samples of the
#: slicing permutation -- slice 0 of every shard, the worst case for S3T and SISA
SLICING_STREAM, DELETION_STREAM = 0x5A1CE, 0xDE1E7E


@dataclass
class DeletionsConfig:
    kind: str = "auto"
    requests: int = 10
    size: int = 1
    burst_every: int = 5
    burst_size: int = 10
    file: Optional[str] = None
    seed: int = 0
    slice_probs: Optional[List[float]] = None  # skewed: deletion probability of each slice
    shards: Optional[int] = None  # skewed: the shards x slices the probabilities refer to (null: the method's)
    slices: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown deletions.kind '{self.kind}'; valid: {', '.join(KINDS)}")
        for key in ("requests", "size", "burst_every", "burst_size", "shards", "slices"):
            value = getattr(self, key)
            if value is not None and int(value) <= 0:
                raise ValueError(f"deletions.{key} must be positive; got {value}")
        if self.kind == "file" and not self.file:
            raise ValueError("deletions.kind=file needs deletions.file (one request of sample ids per line)")
        if self.kind != "file" and self.file:
            raise ValueError("deletions.file is read only with deletions.kind=file")
        if self.kind == "skewed":
            probs = list(self.slice_probs or [])
            if self.slices is not None and len(probs) != self.slices or any(not (0 <= p < float("inf")) for p in probs) or sum(probs) <= 0:
                raise ValueError(f"deletions.kind=skewed needs slice_probs: one finite value >= 0 per slice "
                                 f"({self.slices}), not all 0; got {self.slice_probs}")
        elif self.slice_probs is not None:
            raise ValueError("deletions.slice_probs is read only with deletions.kind=skewed")


def read_requests(path: str) -> List[List[int]]:
    """A request file: one request per line, ids separated by spaces or commas."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"deletion request file {path} does not exist")
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].replace(",", " ").strip()
            if not line:
                continue
            try:
                out.append([int(tok) for tok in line.split()])
            except ValueError:
                raise ValueError(f"{path}:{n}: sample ids must be integers; got {line[:60]!r}") from None
    if not out:
        raise ValueError(f"{path}: no deletion request in the file")
    return out


def slice_assignment(n: int, shards: int, slices: int, seed: int) -> tuple:
    """(shard, slice) of each of ``n`` samples: a permutation drawn with ``seed``, dealt round-robin to the shards,
    each shard's part cut into ``slices`` equal runs (sizes differ by at most one)."""
    if shards <= 0 or slices <= 0:
        raise ValueError(f"shards and slices must be positive; got {shards}, {slices}")
    if n < shards * slices:
        raise ValueError(f"{n} training samples cannot fill {shards} shards x {slices} slices")
    order = np.random.RandomState([seed, SLICING_STREAM]).permutation(n)
    shard = np.empty(n, dtype=np.int64)
    slc = np.empty(n, dtype=np.int64)
    for k in range(shards):
        members = order[k::shards]
        shard[members] = k
        slc[members] = np.arange(len(members)) * slices // len(members)
    return shard, slc


def make_requests(cfg: DeletionsConfig, train_ids: Sequence[int], run_seed: int = 0) -> List[List[int]]:
    """The stream's requests, checked against ``train_ids`` (unknown or repeated ids fail, naming them)."""
    if cfg.kind in ("none", "auto"):  # auto: resolved to uniform for unlearning methods by the runner
        return []
    if cfg.kind == "file":
        requests = read_requests(cfg.file)
    else:
        rng = np.random.RandomState([cfg.seed, DELETION_STREAM])
        ids = np.asarray(train_ids)
        if cfg.kind == "skewed":
            if cfg.shards is None or cfg.slices is None or len(cfg.slice_probs) != cfg.slices:
                raise ValueError(f"deletions: a skewed stream needs shards and slices (the method's) and one "
                                 f"slice_probs value per slice; got {cfg.shards}, {cfg.slices}, {cfg.slice_probs}")
            _, slc = slice_assignment(len(ids), cfg.shards, cfg.slices, run_seed)
            pools = [list(rng.permutation(ids[slc == s])) for s in range(cfg.slices)]
        else:
            pools = [list(rng.permutation(ids))]
        probs = np.asarray(cfg.slice_probs if cfg.kind == "skewed" else [1.0], dtype=np.float64)
        requests = []
        for r in range(cfg.requests):
            n = cfg.burst_size if cfg.kind == "bursty" and (r + 1) % cfg.burst_every == 0 else cfg.size
            request = []
            for _ in range(n):
                alive = np.asarray([len(p) > 0 for p in pools]) & (probs > 0)
                if not alive.any():
                    raise ValueError(f"deletions: request {r + 1} needs {n} samples, no sample is left to draw")
                w = np.where(alive, probs, 0.0)
                request.append(int(pools[int(rng.choice(len(pools), p=w / w.sum()))].pop(0)))
            requests.append(request)
    check_stream(requests, train_ids)
    return requests


def check_stream(requests: Sequence[Sequence[int]], train_ids: Sequence[int], deleted: Sequence[int] = ()) -> None:
    known = {int(i) for i in train_ids}
    seen = {int(i) for i in deleted}
    for r, ids in enumerate(requests, 1):
        unknown = [int(i) for i in ids if int(i) not in known]
        if unknown:
            raise ValueError(f"deletion request {r}: unknown sample id(s) {unknown[:10]}")
        again = [int(i) for i in ids if int(i) in seen]
        if again or len(set(ids)) != len(ids):
            raise ValueError(f"deletion request {r}: sample id(s) deleted twice: {again[:10] or list(ids)[:10]}")
        seen.update(int(i) for i in ids)
