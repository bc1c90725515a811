"""Frozen-feature cache: a frozen backbone's test-transform features are computed once per sample.

DESIGN.md, "Performance principles": never compute the same thing twice. SimpleCIL/ADAM prototypes and the
evaluation of frozen parts read features from here. Keyed by ``(backbone.cache_key, split)`` and the sample
id, so every experience, every evaluation row and (with ``directory``) every later run reuses them.
"""
from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from clpet.backbones.base import batch_to
from clpet.data import make_loader
from clpet.scenarios.base import SampleSet

if TYPE_CHECKING:  # pragma: no cover
    from clpet.backbones.base import Backbone
    from clpet.context import RunContext


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

    def add(self, ids: np.ndarray, feats: torch.Tensor) -> None:
        base = len(self.index)
        for k, i in enumerate(ids.tolist()):
            self.index[i] = base + k
        self.chunks.append(feats)


class FeatureCache:
    """In-memory (and optionally on-disk) cache of frozen features, computed with the *test* transform."""

    def __init__(self, directory: Optional[str] = None) -> None:
        self.directory = directory
        self._stores: Dict[Tuple[str, str], _Store] = {}
        self.computed = 0  # samples passed through a backbone by this cache (for tests and benchmarks)

    def _file(self, key: Tuple[str, str]) -> str:
        digest = hashlib.sha1("|".join(key).encode()).hexdigest()[:20]
        return os.path.join(self.directory or "", f"features-{digest}.pt")

    def _store(self, key: Tuple[str, str], persist: bool) -> _Store:
        if key not in self._stores:
            store = _Store()
            if persist and os.path.exists(self._file(key)):
                saved = torch.load(self._file(key), map_location="cpu", weights_only=True)
                store.add(saved["ids"].numpy(), saved["features"])
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
        store_key = (key or backbone.cache_key, samples.split)
        persist = key is None and self.directory is not None
        forward = forward or backbone.features
        store = self._store(store_key, persist)
        missing = np.array([k for k, i in enumerate(samples.ids.tolist()) if i not in store.index], dtype=np.int64)
        if len(missing):
            if samples.modality == "text":  # similar lengths share a batch: far less padding, same features
                missing = missing[np.argsort([len(samples.inputs[k]) for k in missing], kind="stable")]
            todo = samples.subset(missing)
            loader = make_loader(
                todo, backbone.preprocess_fn(train=False), ctx.eval_batch_size,
                num_workers=ctx.num_workers, pin_memory=ctx.pin_memory,
            )
            was_training = backbone.training
            backbone.eval()
            out = []
            for batch, _, _ in tqdm(loader, desc=desc, disable=not ctx.progress, leave=False):
                with ctx.autocast():
                    out.append(forward(batch_to(batch, ctx.device)).float().cpu())
            backbone.train(was_training)
            store.add(todo.ids, torch.cat(out))
            self.computed += len(todo)
            if persist:
                from clpet.results import atomic_torch_save

                os.makedirs(self.directory, exist_ok=True)
                ids = torch.tensor(sorted(store.index, key=store.index.get), dtype=torch.long)
                atomic_torch_save({"ids": ids, "features": store.rows()}, self._file(store_key))
        rows = store.rows()
        index = torch.tensor([store.index[i] for i in samples.ids.tolist()], dtype=torch.long)
        return rows.index_select(0, index)
