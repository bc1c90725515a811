"""Fashion-MNIST (images): 28x28 grey-scale Zalando article images in 10 classes, 60,000 train / 10,000 test.

Source: Debian ``dataset-fashion-mnist``, ``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,
labels-idx1}-ubyte.gz``, in the IDX format: a 4-byte magic number (two zero bytes, the element type 0x08 =
unsigned byte, the number of dimensions), one big-endian uint32 per dimension, then the data. Uncompressed
copies (no ``.gz``) are read too. Inputs are ``uint8`` arrays of shape (28, 28).
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from clpet.registry import SCENARIOS
from clpet.scenarios.base import SampleSet, Scenario, ScenarioBuilder, ScenarioConfig
from clpet.scenarios.common import as_config, finish_stream, resolve_root

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_HOW_TO_GET = "install it with: apt-get install dataset-fashion-mnist, or set scenario.root=PATH"


def read_idx(path: str) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) of unsigned bytes as a ``uint8`` array of its dimensions.
    A corrupt or short file raises ``ValueError`` with one line naming the file and what is wrong."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"corrupt IDX file {path}: {type(e).__name__}: {e}".replace("\n", " ")) from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise ValueError(
            f"corrupt IDX file {path}: magic number {data[:4].hex() or '(empty)'} is not 0x0000080N (unsigned bytes)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"corrupt IDX file {path}: {len(data)} bytes, shorter than its {header}-byte header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise ValueError(
            f"corrupt IDX file {path}: dimensions {dims} need {expected} data bytes, found {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(root: str, stem: str) -> str:
    for name in (f"{stem}.gz", stem):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"Fashion-MNIST file {os.path.join(root, stem)}.gz not found; {_HOW_TO_GET}")


def load_split(root: str, split: str) -> SampleSet:
    """The ``train`` or ``test`` split (files ``train-*`` / ``t10k-*``), all samples, original labels."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST {split} files in {root} disagree: images {images.shape}, labels {labels.shape}"
        )
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"Fashion-MNIST {split} labels in {root} go up to {labels.max()}, expected 0..9")
    # arrays stay views of one buffer until the caps picked the kept samples (then copied, see build)
    return SampleSet(images, labels, np.arange(len(labels)), "image", split)


@SCENARIOS.register("fashion-mnist")
class FashionMNIST(ScenarioBuilder):
    """Fashion-MNIST, 10 classes of 28x28 grey-scale article images (Debian dataset-fashion-mnist)."""

    @dataclass
    class Config(ScenarioConfig):
        name: str = "fashion-mnist"
        root: Optional[str] = None  # default /usr/share/datasets/fashion-mnist
        increment: int = 2
        max_train_per_class: Optional[int] = 200
        max_test_per_class: Optional[int] = 100
        default_backbone: str = "efficientnet-lite0"

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        root = resolve_root(cfg.root, data_root, DEFAULT_ROOT)
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"Fashion-MNIST not found at {root} (expected train-images-idx3-ubyte.gz and 3 more); {_HOW_TO_GET}"
            )
        train, test = load_split(root, "train"), load_split(root, "test")
        scenario = finish_stream(cfg, "fashion-mnist", train, test, CLASS_NAMES, seed, info={"root": root})
        for e in scenario.experiences:  # own copies: do not keep the 47 MB source buffers alive
            e.train.inputs = [np.array(x) for x in e.train.inputs]
            e.test.inputs = [np.array(x) for x in e.test.inputs]
        return scenario
