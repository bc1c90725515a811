"""Frozen-feature cache: a frozen backbone's test-transform features are computed once per sample.

docs/architecture.md, "Performance principles": never compute the same thing twice. SimpleCIL/ADAM prototypes and the
evaluation of frozen parts read features from here. Keyed by ``backbone.cache_key`` and a digest of each
sample's raw input, so every experience, every evaluation row and (with ``directory``) every later run on the
same data reuses them.
"""
from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import numpy as np
import torch
from clpet.backbones.base import batch_to
from clpet.data import length_order
from clpet.distributed import broadcast, is_main, map_loader
from clpet.scenarios.base import SampleSet

if TYPE_CHECKING:  # pragma: no cover
    from clpet.backbones.base import Backbone
    from clpet.context import RunContext


def content_keys(samples: SampleSet) -> np.ndarray:
    """A 64-bit digest of each sample's raw input (text, array bytes, or image path + size + mtime), so cached
    features are found by *what* the sample is: no collision between datasets whose ids overlap, and reuse
    across scenarios built from the same source. Computed once per SampleSet."""
    cached = samples.__dict__.get("_content_keys")
    if cached is not None:
        return cached

    def digest(x: Any) -> bytes:
        if isinstance(x, str):
            if samples.modality == "image":
                st = os.stat(x)
                x = f"path:{os.path.abspath(x)}:{st.st_size}:{st.st_mtime_ns}"
            return hashlib.blake2b(x.encode("utf-8"), digest_size=8).digest()
        arr = np.ascontiguousarray(x)
        return hashlib.blake2b(arr.tobytes() + str((arr.dtype, arr.shape)).encode(), digest_size=8).digest()

    keys = np.frombuffer(b"".join(digest(x) for x in samples.inputs), dtype=np.int64).copy()
    samples.__dict__["_content_keys"] = keys
    return keys


class _Store:
    def __init__(self) -> None:
        self.index: Dict[int, int] = {}
        self.chunks: list = []
        self._flat: Optional[torch.Tensor] = None

    def rows(self) -> torch.Tensor:
        if self._flat is None or self._flat.shape[0] != len(self.index):
            self._flat = torch.cat(self.chunks) if self.chunks else torch.empty(0)
            self.chunks = [self._flat]
        return self._flat

    def add(self, keys: np.ndarray, feats: torch.Tensor) -> None:
        base = len(self.index)
        for k, i in enumerate(keys.tolist()):
            self.index[i] = base + k
        self.chunks.append(feats)


class FeatureCache:
    """In-memory (and optionally on-disk) cache of frozen features, computed with the *test* transform."""

    def __init__(self, directory: Optional[str] = None) -> None:
        self.directory = directory
        self._stores: Dict[str, _Store] = {}
        self.computed = 0  # samples this process passed through a backbone (for tests and benchmarks)

    def _file(self, key: str) -> str:
        digest = hashlib.sha1(key.encode()).hexdigest()[:20]
        return os.path.join(self.directory or "", f"features-{digest}.pt")

    def _store(self, key: str, persist: bool) -> _Store:
        if key not in self._stores:
            store = _Store()
            if persist:  # under torch.distributed rank 0 reads the file and every rank gets the same store
                saved = None
                if is_main() and os.path.exists(self._file(key)):
                    saved = torch.load(self._file(key), map_location="cpu", weights_only=True)
                saved = broadcast(saved)
                if saved is not None:
                    store.add(saved["keys"].numpy(), saved["features"])
            self._stores[key] = store
        return self._stores[key]

    @torch.inference_mode()
    def features(
        self,
        backbone: "Backbone",
        samples: SampleSet,
        ctx: "RunContext",
        desc: str = "features",
        key: Optional[str] = None,
        forward: Optional[Callable[[Any], torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Features of ``samples`` (rows in the order of ``samples``), float32 on CPU, shape (N, D).

        ``forward`` (default ``backbone.features``) computes them from a test-transform batch; a method that
        caches features of its own frozen model (e.g. ADAM's adapted backbone) passes it with its own ``key``.
        Such keyed features stay in memory only: they belong to one run, not to the pretrained weights."""
        store_key = key or backbone.cache_key
        persist = key is None and self.directory is not None
        forward = forward or backbone.features
        store = self._store(store_key, persist)
        keys = content_keys(samples)
        missing = np.array(sorted({k: i for i, k in enumerate(keys.tolist()) if k not in store.index}.values()),
                           dtype=np.int64)  # first occurrence of each key not cached yet
        if len(missing):
            todo = samples.subset(missing)
            todo = todo.subset(length_order(todo))  # texts: similar lengths share a batch, far less padding
            was_training = backbone.training
            backbone.eval()

            def batch_features(batch: Any) -> torch.Tensor:
                with ctx.autocast():
                    rows = forward(batch_to(batch, ctx.device)).float().cpu()
                self.computed += rows.shape[0]  # passed through the backbone by this process
                return rows

            # under torch.distributed each rank computes its share of the batches: once per sample across ranks
            out = map_loader(todo, backbone.preprocess_fn(train=False), ctx.eval_batch_size, batch_features,
                             num_workers=ctx.num_workers, pin_memory=ctx.pin_memory, progress=ctx.progress, desc=desc)
            backbone.train(was_training)
            store.add(content_keys(todo), torch.cat(out))
            if persist and is_main():  # one writer of the shared feature file
                from clpet.results import atomic_torch_save

                os.makedirs(self.directory, exist_ok=True)
                saved_keys = torch.tensor(sorted(store.index, key=store.index.get), dtype=torch.long)
                atomic_torch_save({"keys": saved_keys, "features": store.rows()}, self._file(store_key))
        rows = store.rows()
        index = torch.tensor([store.index[k] for k in keys.tolist()], dtype=torch.long)
        return rows.index_select(0, index)
