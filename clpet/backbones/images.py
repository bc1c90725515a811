"""Decoding raw image samples and the image transforms the backbones share.

A raw image sample is a file path (``str`` / ``os.PathLike``), a ``uint8`` numpy array of shape (H, W),
(H, W, 3) or (H, W, 4), or a ``PIL.Image``. :func:`load_image` turns any of them into an RGB ``PIL.Image``:
transparency (RGBA, LA, palette or grey images with a transparent colour) is composited on a **white**
background, because clip-art PNGs (OpenClipart) are drawn on a transparent canvas and would otherwise turn
into black silhouettes on black; grey images are replicated to three channels.

:class:`ImageTransform` is the plain ImageNet-style pipeline (test: resize the short side to
``size / crop_pct`` and centre-crop ``size``; train: ``RandomResizedCrop(size)`` and a horizontal flip), and
:class:`ImagePreprocess` is the picklable batch function (list of raw samples -> ``(B, 3, H, W)`` float tensor)
that DataLoader workers call; it holds transforms only, never model parameters.

:class:`DecodedImageCache` keeps a decoded copy of image *files* in memory, shrunk to what the transform needs
(issue "data pipeline speed"): big PNGs/JPEGs are decoded once per run instead of once per epoch and per
evaluation. Which copy a transform needs is read from its first operation by :func:`source_side`:

* ``Resize(s)`` (test transforms): the cached copy *is* that resize, made by the same torchvision call, so the
  transform's output is bit-identical to the uncached one.
* ``RandomResizedCrop(size, scale, ratio)`` (train transforms, torchvision or timm): the copy's short side is
  shrunk to ``ceil(size / sqrt(scale_min / ratio_max))``, the side at which even the smallest, most elongated
  crop of a square image still spans ``size`` source pixels; crops therefore see the same content at (almost)
  the same sharpness. The random crop boxes are drawn in the smaller copy's coordinates, so a cached run's
  augmentations are equally distributed but not the same draws as an uncached run's.

The cache stops adding entries once ``max_mb`` is reached (no eviction): a small dataset is held whole, a large
one partly. It lives in the process that preprocesses; with ``num_workers=0`` (clpet's default) that is the
main process for the whole run.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

WHITE = (255, 255, 255)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def to_rgb(img: Image.Image) -> Image.Image:
    """An RGB copy of ``img``; transparent pixels are composited on white, grey becomes 3-channel."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey (PNG): scale to 8 bits
        arr = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))  # mode L
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def _array_to_image(x: np.ndarray) -> Image.Image:
    if x.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8, got {x.dtype} with shape {x.shape}")
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[:, :, 0]
    if x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (3, 4)):
        return Image.fromarray(np.ascontiguousarray(x))  # uint8 (H, W) -> L, (H, W, 3) -> RGB, (H, W, 4) -> RGBA
    raise ValueError(f"image arrays must have shape (H, W), (H, W, 3) or (H, W, 4); got {x.shape}")


def load_image(x: Any) -> Image.Image:
    """Decode one raw image sample (path, uint8 array or PIL image) into an RGB ``PIL.Image``."""
    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file not found: {path}")
        with Image.open(path) as im:
            im.load()
            rgb = to_rgb(im)
            return im.copy() if rgb is im else rgb  # closing ``im`` frees its pixels
    if isinstance(x, np.ndarray):
        return to_rgb(_array_to_image(x))
    if isinstance(x, Image.Image):
        return to_rgb(x)
    raise TypeError(f"cannot decode an image from {type(x).__name__}; expected a path, a uint8 array or a PIL image")


_INTERPOLATION = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


class ImageTransform:
    """ImageNet-style transform of one RGB image to a normalised (3, size, size) tensor.

    Test: ``Resize(round(size / crop_pct))`` (short side) + ``CenterCrop(size)``; ``crop_pct=0.875`` gives the
    usual Resize(256) + CenterCrop(224). Train: ``RandomResizedCrop(size, scale)`` + ``RandomHorizontalFlip``.
    """

    def __init__(
        self,
        size: int,
        train: bool,
        mean: Tuple[float, float, float],
        std: Tuple[float, float, float],
        crop_pct: float = 0.875,
        interpolation: str = "bicubic",
        scale: Tuple[float, float] = (0.08, 1.0),
    ) -> None:
        self.size, self.train, self.mean, self.std = int(size), bool(train), tuple(mean), tuple(std)
        self.crop_pct, self.interpolation, self.scale = float(crop_pct), interpolation, tuple(scale)
        mode = _INTERPOLATION[interpolation]
        if train:
            head = [T.RandomResizedCrop(self.size, scale=self.scale, interpolation=mode), T.RandomHorizontalFlip()]
        else:
            head = [T.Resize(int(round(self.size / self.crop_pct)), interpolation=mode), T.CenterCrop(self.size)]
        self.transform = T.Compose(head + [T.ToTensor(), T.Normalize(self.mean, self.std)])

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.transform(img)

    def __repr__(self) -> str:
        kind = f"train, scale={self.scale}" if self.train else f"test, crop_pct={self.crop_pct}"
        return (f"ImageTransform({kind}, size={self.size}, "
                f"interpolation={self.interpolation}, mean={self.mean}, std={self.std})")


def _first_op(transform: Any) -> Any:
    inner = getattr(transform, "transform", transform)  # ImageTransform wraps a Compose
    ops = getattr(inner, "transforms", None)
    return ops[0] if ops else None


def source_side(transform: Any) -> Optional[Tuple[str, Any]]:
    """What a cached copy of an image must keep for ``transform``: ``("resize", op)`` when the transform starts
    with an integer short-side ``Resize`` (the copy is that resize), ``("shrink", side)`` when it starts with a
    random resized crop (the copy's short side is at most ``side``), ``None`` when it is neither (no caching)."""
    op = _first_op(transform)
    if isinstance(op, T.Resize):
        size = op.size
        if isinstance(size, int) or (isinstance(size, (list, tuple)) and len(size) == 1):
            if op.max_size is None:
                return ("resize", op)
        return None
    size, scale, ratio = (getattr(op, name, None) for name in ("size", "scale", "ratio"))
    if size is not None and scale is not None and ratio is not None:  # torchvision or timm RandomResizedCrop
        side = max(size) if isinstance(size, (list, tuple)) else int(size)
        return ("shrink", int(math.ceil(side / math.sqrt(float(min(scale)) / float(max(ratio))))))
    return None


class DecodedImageCache:
    """Decoded, transform-sized copies of image files, held in memory up to ``max_mb`` (see the module doc).

    Entries are keyed by path, file size and modification time, so a file changed on disk is decoded again."""

    def __init__(self, need: Tuple[str, Any], max_mb: float) -> None:
        self.need, self.max_bytes = need, int(max_mb * 2**20)
        self.bytes = 0
        self.entries: Dict[Tuple[str, int, int], np.ndarray] = {}

    def _shrunk(self, img: Image.Image) -> Image.Image:
        kind, arg = self.need
        if kind == "resize":
            return arg(img)  # the transform's own Resize: bit-identical to resizing the original
        w, h = img.size
        if min(w, h) <= arg:
            return img
        f = arg / min(w, h)
        return img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BICUBIC)  # PIL antialiases

    def load(self, path: str) -> Image.Image:
        """The cached copy of the image file ``path`` (decoded, shrunk and stored on first use)."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(f"image file not found: {path}") from None
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
        arr = self.entries.get(key)
        if arr is not None:
            return Image.fromarray(arr)
        img = self._shrunk(load_image(path))
        arr = np.asarray(img)
        if self.bytes + arr.nbytes <= self.max_bytes:
            self.entries[key] = arr
            self.bytes += arr.nbytes
        return img

    def __getstate__(self) -> dict:  # a worker started by pickling gets an empty cache, not a copy of this one
        return {"need": self.need, "max_bytes": self.max_bytes, "bytes": 0, "entries": {}}


class ImagePreprocess:
    """Picklable batch function: raw image samples -> ``(B, 3, H, W)`` float32 tensor.

    ``enable_cache(max_mb)`` keeps decoded copies of image files in memory (:class:`DecodedImageCache`) when the
    transform's first operation allows it; ``enable_cache(0)`` turns the cache off."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform
        self.cache: Optional[DecodedImageCache] = None

    def enable_cache(self, max_mb: float) -> bool:
        """Cache decoded image files up to ``max_mb`` MiB; returns whether this transform can be cached."""
        need = source_side(self.transform) if max_mb > 0 else None
        self.cache = DecodedImageCache(need, max_mb) if need is not None else None
        return self.cache is not None

    def _load(self, x: Any) -> Image.Image:
        if self.cache is not None and isinstance(x, (str, os.PathLike)):
            return self.cache.load(os.fspath(x))
        return load_image(x)

    def __call__(self, inputs: Sequence[Any]) -> torch.Tensor:
        if len(inputs) == 0:
            raise ValueError("cannot preprocess an empty batch of images")
        with one_torch_thread():
            return torch.stack([self.transform(self._load(x)) for x in inputs])  # (B, 3, H, W)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run per-image tensor ops on one intra-op thread, as DataLoader workers do. In the main process
    (``num_workers=0``) torch's thread pool otherwise fights over tiny per-image ops: 4-8x slower on 2 cores
    (experiments/bench/INPUT_PIPELINE.md)."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
