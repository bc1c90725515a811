"""Input-pipeline speed: images/s of decoding + transforms alone (clpet's DataLoader over a ``SampleSet``, the
backbone's own picklable preprocessing in the workers, pinned memory on GPU) against the backbone's forward
throughput on this machine, so one sees whether the data keeps up with the model (issue 4, part 3).

    .venv/bin/python experiments/bench/bench_input_pipeline.py [--source photos|clipart] [--n 256]
        [--backbone vit|efficientnet-lite0] [--batch 32] [--workers 0,2] [--device auto]

Sources: ``photos`` writes ``--n`` JPEGs of 500x375 (the typical size of ImageNet-R / CUB photos; random smooth
content) to a temporary folder; ``clipart`` takes ``--n`` real PNGs of the packaged OpenClipart stream.
Pipelines timed (each a full pass over the n images, after one warm-up batch):

- ``train``: decode + RandomResizedCrop + flip + ToTensor (+ normalisation), the training transform;
- ``test``: decode + Resize + CenterCrop + ToTensor, the evaluation / frozen-feature transform;
- ``train / test, decoded-image cache``: the same transforms with clpet's in-memory decoded-image cache
  (``image_cache_mb``, ``clpet.backbones.images.DecodedImageCache``), timed on a second pass after a first pass
  filled it: what every epoch after the first and every later evaluation of a small dataset costs;
- ``test, 0 workers, 1 torch thread``: the main-process pipeline with torch's intra-op threads set to 1 around
  the preprocessing (DataLoader workers run with 1 thread; the main process otherwise runs per-image tensor ops
  on the full thread pool).

Forward: ``backbone.features`` on preprocessed batches, inference mode (bf16 autocast on GPU), weights random
(``vit`` = timm ``vit_base_patch16_224`` with ``pretrained=false``: throughput does not depend on the weights) or
the packaged EfficientNet-Lite0. The ratio pipeline / forward > 1 means the data keeps up.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from typing import Any, List

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def photo_files(folder: str, n: int) -> List[str]:
    """``n`` JPEGs of 500x375 with smooth random content (a realistic decode cost), quality 90."""
    from PIL import Image

    rng = np.random.RandomState(0)
    out = []
    for i in range(n):
        small = rng.randint(0, 256, size=(12, 16, 3)).astype(np.uint8)
        img = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
        path = os.path.join(folder, f"img_{i:05d}.jpg")
        img.save(path, quality=90)
        out.append(path)
    return out


def clipart_files(n: int) -> List[str]:
    import clpet.scenarios  # noqa: F401
    from clpet.registry import SCENARIOS

    s = SCENARIOS.get("clipart").build(None, 0, None)
    paths = [p for e in s for p in e.train.inputs]
    return paths[:n]


def build_backbone(name: str):
    from clpet.registry import BACKBONES
    import clpet.backbones  # noqa: F401

    if name == "vit":
        cls = BACKBONES.get("timm")
        return cls.from_config(cls.Config(model="vit_base_patch16_224", pretrained=False, normalize=False))
    cls = BACKBONES.get(name)
    return cls.from_config(cls.Config())


def with_cache(preprocess, paths: List[str], batch: int, pin: bool, max_mb: float = 4096):
    """A copy of ``preprocess`` with the decoded-image cache on, filled by one untimed pass over ``paths``."""
    import copy

    cached = copy.deepcopy(preprocess)
    if not cached.enable_cache(max_mb):
        raise SystemExit(f"this backbone's transform {preprocess.transform!r} cannot be cached")
    tic = time.perf_counter()
    pipeline_rate(paths, cached, batch, 0, pin)
    return cached, time.perf_counter() - tic


class OneThread:
    """The preprocessing with torch's intra-op threads set to 1 for the call (what DataLoader workers do). In the
    main process (``num_workers=0``) torch's thread pool otherwise fights over tiny per-image tensor ops."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def __call__(self, inputs):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.fn(inputs)
        finally:
            torch.set_num_threads(before)


def pipeline_rate(inputs: List[Any], preprocess, batch: int, workers: int, pin: bool) -> float:
    """Images/s of one pass of clpet's loader over ``inputs`` (after one warm-up batch, which also starts the
    workers)."""
    from clpet.data import make_loader
    from clpet.scenarios.base import SampleSet

    modality_inputs = list(inputs)
    samples = SampleSet(modality_inputs, np.zeros(len(inputs)), np.arange(len(inputs)), "image")
    loader = make_loader(samples, preprocess, batch_size=batch, num_workers=workers, pin_memory=pin)
    it = iter(loader)
    first = next(it)[0]
    n = 0
    tic = time.perf_counter()
    for x, _, _ in it:
        n += x.shape[0]
    elapsed = time.perf_counter() - tic
    del first
    return n / elapsed if elapsed > 0 else float("nan")


@torch.inference_mode()
def forward_rate(backbone, batch: int, device: torch.device, steps: int) -> float:
    backbone.to(device).eval()
    size = getattr(backbone, "data_config", {}).get("input_size", (3, 224, 224))
    x = torch.rand(batch, *size, device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    with amp:
        backbone.features(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        for _ in range(steps):
            backbone.features(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - tic)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", choices=["photos", "clipart"], default="photos")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--backbone", default="vit",
                    help="vit (timm vit_base_patch16_224, random weights) or a clpet backbone name")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    ap.add_argument("--forward-steps", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ns = ap.parse_args()

    device = torch.device("cuda" if ns.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if ns.device == "auto" else ns.device))
    pin = device.type == "cuda"
    backbone = build_backbone(ns.backbone)
    train_pre, test_pre = backbone.preprocess_fn(True), backbone.preprocess_fn(False)
    with tempfile.TemporaryDirectory() as tmp:
        paths = photo_files(tmp, ns.n) if ns.source == "photos" else clipart_files(ns.n)
        cached_train, fill_s = with_cache(train_pre, paths, ns.batch, pin)
        cached_test, _ = with_cache(test_pre, paths, ns.batch, pin)
        rows = []
        for w in [int(x) for x in ns.workers.split(",")]:
            rate = lambda inputs, pre: pipeline_rate(inputs, pre, ns.batch, w, pin)  # noqa: E731
            rows.append((f"train (decode + RandomResizedCrop), {w} workers", rate(paths, train_pre)))
            rows.append((f"test (decode + Resize + CenterCrop), {w} workers", rate(paths, test_pre)))
            rows.append((f"train, decoded-image cache, {w} workers", rate(paths, cached_train)))
            rows.append((f"test, decoded-image cache, {w} workers", rate(paths, cached_test)))
            if w == 0:
                rows.append(("test, 0 workers, 1 torch thread while preprocessing",
                             pipeline_rate(paths, OneThread(test_pre), ns.batch, 0, pin)))
        fwd = forward_rate(backbone, ns.batch, device, ns.forward_steps)

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, device {device}"
          f"{' (' + torch.cuda.get_device_name(0) + ')' if device.type == 'cuda' else ''}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), python {sys.version.split()[0]}")
    print(f"source: {ns.source}, {ns.n} images; backbone {ns.backbone} ({type(backbone).__name__}); batch {ns.batch}; "
          f"the first (filling) pass of the train cache took {fill_s:.2f}s ({ns.n / fill_s:.0f} images/s)")
    print()
    print("| pipeline | images/s | pipeline / forward |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.0f} | {rate / fwd:.2f} |")
    print(f"| backbone forward ({ns.backbone}, {device.type}) | {fwd:.0f} | 1.00 |")


if __name__ == "__main__":
    main()
