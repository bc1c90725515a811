"""The decoded-image cache (issue "data pipeline speed"): exact on test transforms, bounded on train transforms,
decodes each file once, respects its budget and notices changed files."""
from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torchvision import transforms as T

from clpet.backbones import images
from clpet.backbones.images import DecodedImageCache, ImagePreprocess, ImageTransform, source_side
from clpet.config import ConfigError, compose, rewrite_overrides, validate

MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def write_png(path, w: int, h: int, seed: int, alpha: bool = True) -> str:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(h, w, 4 if alpha else 3), dtype=np.uint8)
    Image.fromarray(arr, "RGBA" if alpha else "RGB").save(path)
    return str(path)


@pytest.fixture
def pngs(tmp_path):
    # one larger than any cached side, one between, one smaller than the test resize
    return [write_png(tmp_path / f"{k}.png", w, h, k) for k, (w, h) in enumerate([(1300, 1000), (400, 300), (40, 50)])]


def count_decodes(monkeypatch) -> list:
    calls = []
    real = images.load_image

    def counting(x):
        calls.append(x)
        return real(x)

    monkeypatch.setattr(images, "load_image", counting)
    return calls


@pytest.mark.parametrize("make", [
    lambda: ImageTransform(64, False, *MEAN_STD, crop_pct=0.875, interpolation="bicubic"),
    lambda: timm.data.create_transform(input_size=(3, 64, 64), crop_pct=0.9, interpolation="bilinear",
                                       is_training=False),
], ids=["clpet-test", "timm-test"])
def test_test_transform_output_is_bit_identical_and_decoded_once(make, pngs, monkeypatch):
    plain, cached = ImagePreprocess(make()), ImagePreprocess(make())
    assert cached.enable_cache(64)
    assert cached.cache.need[0] == "resize"
    calls = count_decodes(monkeypatch)
    first = cached(pngs)
    again = cached(pngs)
    assert len(calls) == len(pngs)  # the second pass came from memory
    expected = plain(pngs)
    assert torch.equal(first, expected) and torch.equal(again, expected)


def test_train_transform_keeps_enough_pixels_for_the_smallest_crop(pngs):
    for op, size in [(T.RandomResizedCrop(224, scale=(0.08, 1.0)), 224),
                     (timm.data.create_transform(input_size=(3, 224, 224), is_training=True, scale=(0.05, 1.0)), 224)]:
        kind, side = source_side(T.Compose([op]) if isinstance(op, T.RandomResizedCrop) else op)
        scale_min = 0.08 if isinstance(op, T.RandomResizedCrop) else 0.05
        assert kind == "shrink" and side == math.ceil(size / math.sqrt(scale_min / (4 / 3)))
    pre = ImagePreprocess(ImageTransform(32, True, *MEAN_STD, scale=(0.5, 1.0)))
    assert pre.enable_cache(64)
    side = pre.cache.need[1]
    assert side == math.ceil(32 / math.sqrt(0.5 / (4 / 3)))  # 53
    out = pre(pngs)
    assert out.shape == (3, 3, 32, 32)
    stored = {os.path.basename(key[0]): arr for key, arr in pre.cache.entries.items()}
    assert stored["0.png"].shape[:2] == (side, round(1300 * side / 1000))  # shrunk to the bound, aspect kept
    assert stored["1.png"].shape[:2] == (side, round(400 * side / 300))
    assert stored["2.png"].shape[:2] == (50, 40)  # smaller than the bound: kept as decoded, never enlarged


def test_budget_stops_adding_but_output_is_unchanged(pngs, monkeypatch):
    tf = ImageTransform(64, False, *MEAN_STD)
    pre = ImagePreprocess(tf)
    pre.enable_cache(0.001)  # ~1 KiB: nothing fits
    calls = count_decodes(monkeypatch)
    out = pre(pngs)
    pre(pngs)
    assert pre.cache.entries == {} and pre.cache.bytes == 0
    assert len(calls) == 2 * len(pngs)
    assert torch.equal(out, ImagePreprocess(tf)(pngs))


def test_changed_file_is_decoded_again(tmp_path):
    path = write_png(tmp_path / "a.png", 100, 100, 0, alpha=False)
    pre = ImagePreprocess(ImageTransform(16, False, *MEAN_STD, crop_pct=1.0))
    pre.enable_cache(16)
    before = pre([path])
    write_png(path, 100, 100, 1, alpha=False)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse file systems
    after = pre([path])
    assert not torch.equal(before, after)
    assert torch.equal(after, ImagePreprocess(pre.transform)([path]))


def test_arrays_are_not_cached_and_off_switch(pngs):
    pre = ImagePreprocess(ImageTransform(16, False, *MEAN_STD))
    pre.enable_cache(16)
    pre([np.zeros((20, 20, 3), dtype=np.uint8)])
    assert pre.cache.entries == {}
    assert not pre.enable_cache(0) and pre.cache is None
    assert not ImagePreprocess(T.Compose([T.CenterCrop(8), T.ToTensor()])).enable_cache(16)  # no resize first


def test_pickled_cache_ships_empty(pngs):
    pre = ImagePreprocess(ImageTransform(16, False, *MEAN_STD))
    pre.enable_cache(16)
    pre(pngs)
    clone = pickle.loads(pickle.dumps(pre))
    assert pre.cache.entries and clone.cache.entries == {} and clone.cache.max_bytes == pre.cache.max_bytes


def test_image_backbones_enable_the_cache_and_config_checks_it():
    from clpet.registry import BACKBONES

    bb = BACKBONES.get("tiny-vit").from_config(BACKBONES.get("tiny-vit").Config())
    assert bb.enable_image_cache(8)
    assert isinstance(bb.preprocess_fn(False).cache, DecodedImageCache)
    text = BACKBONES.get("tiny-text").from_config(BACKBONES.get("tiny-text").Config())
    assert not text.enable_image_cache(8)
    assert validate(compose(rewrite_overrides(["scenario=synthetic"]))).run.image_cache_mb == 2048
    with pytest.raises(ConfigError, match="image_cache_mb must be >= 0"):
        validate(compose(rewrite_overrides(["scenario=synthetic", "image_cache_mb=-1"])))
