"""OpenClipart topic classification (images): classify a clip-art PNG into the topic folder it is filed in
(``animals/birds``, ``food/fruit``, ``signs_and_symbols/map_symbols``, ...).

Source: Debian ``openclipart-png``, ``/usr/share/openclipart/png/<topic>[/<subtopic>...]/*.png``. A class is a
folder (its path relative to the root) counting only the PNGs directly in it and not symbolic links (the
package files 1221 images a second time in other folders through links: kept, they would be the same image
under two labels); folders listed in ``exclude``
(and everything below them) are left out, as are images over ``max_megapixels`` (size read from the PNG
header, nothing decoded) and unreadable files. Folders keeping at least ``min_images_per_class`` images are
the classes. There is no test split: a per-class held-out fraction is drawn with ``data_seed``.
Inputs are file paths; decoding is the backbone's job.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from clpet.registry import SCENARIOS
from clpet.scenarios.base import SampleSet, Scenario, ScenarioBuilder, ScenarioConfig
from clpet.scenarios.common import as_config, finish_stream, holdout_split, resolve_root
from clpet.scenarios.images import image_size, list_images

DEFAULT_ROOT = "/usr/share/openclipart/png"

#: folders left out by default, with why (see scenarios/clipart.yaml)
DEFAULT_EXCLUDE = [
    "computer/icons/etiquette-theme",  # desktop icon themes: the same actions redrawn per theme, so the
    "computer/icons/flat-theme",  # "class" is a drawing style, and flat-theme/action alone has 528 icons
    "computer/icons/lemon-theme",
    "recreation/games/cards",  # one deck of 54 cards in four styles: near-duplicates across classes
    "shapes/stars",  # 1378 procedurally generated star polygons (near-duplicates)
    "signs_and_symbols/flags/africa",  # flags grouped by continent: not visible in the image
    "signs_and_symbols/flags/america",
    "signs_and_symbols/flags/asia",
    "signs_and_symbols/flags/europe",
    "signs_and_symbols/flags/oceania",
    "unsorted",  # no topic
]


def _excluded(rel: str, exclude: Sequence[str]) -> bool:
    return any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exclude)


def scan_classes(
    root: str, exclude: Sequence[str], min_images: int, max_megapixels: float
) -> Tuple[List[str], List[List[str]]]:
    """(class names, usable image paths per class), both sorted; see the module docstring for the rules."""
    names: List[str] = []
    files: List[List[str]] = []
    limit = max_megapixels * 1e6
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        if rel == "." or _excluded(rel, exclude):
            continue
        usable = []
        for path in list_images(dirpath, extensions=(".png",), symlinks=False):
            size = image_size(path)
            if size is not None and size[0] * size[1] <= limit:
                usable.append(path)
        if len(usable) >= min_images:
            names.append(rel)
            files.append(usable)
    order = sorted(range(len(names)), key=lambda i: names[i])  # os.walk is top-down: sort by full path
    return [names[i] for i in order], [files[i] for i in order]


@SCENARIOS.register("clipart")
class OpenClipart(ScenarioBuilder):
    """OpenClipart topic folders as classes (images, Debian openclipart-png)."""

    @dataclass
    class Config(ScenarioConfig):
        name: str = "clipart"
        root: Optional[str] = None  # default /usr/share/openclipart/png
        exclude: List[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))  # folders (and below) left out
        min_images_per_class: int = 30  # usable PNGs directly in a folder for it to be a class
        max_megapixels: float = 40.0  # larger images are skipped (some are 600 MP vector renderings)
        test_fraction: float = 0.3  # held out per class, drawn with data_seed
        increment: int = 5
        max_train_per_class: Optional[int] = 40
        max_test_per_class: Optional[int] = 20
        default_backbone: str = "efficientnet-lite0"

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        train, test, names, info = load_clipart(cfg, data_root)
        return finish_stream(cfg, "clipart", train, test, names, seed, info=info)


def load_clipart(cfg: Any, data_root: Optional[str]) -> Tuple[SampleSet, SampleSet, List[str], Dict[str, Any]]:
    """(train, test, class names, info) of the OpenClipart classes: a per-class held-out split drawn with
    ``cfg.data_seed``; ``cfg`` needs ``root``, ``exclude``, ``min_images_per_class``, ``max_megapixels``,
    ``test_fraction`` (the ``clipart`` and ``clipart-fscil`` scenarios share it)."""
    root = resolve_root(cfg.root, data_root, DEFAULT_ROOT)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"OpenClipart PNGs not found at {root} (expected <topic>/<subtopic>/*.png folders); "
            "install them with: apt-get install openclipart-png, or set scenario.root=PATH"
        )
    names, files = scan_classes(root, list(cfg.exclude), cfg.min_images_per_class, cfg.max_megapixels)
    if not names:
        raise ValueError(
            f"no folder under {root} has at least min_images_per_class={cfg.min_images_per_class} usable PNGs"
        )
    paths = [p for group in files for p in group]
    labels = np.repeat(np.arange(len(names)), [len(g) for g in files])
    ids = np.arange(len(paths), dtype=np.int64)  # position in the sorted (folder, file) list
    tr, te = holdout_split(labels, cfg.test_fraction, cfg.data_seed)
    train = SampleSet([paths[i] for i in tr], labels[tr], ids[tr], "image", "train")
    test = SampleSet([paths[i] for i in te], labels[te], ids[te], "image", "test")
    return train, test, names, {"root": root, "source": "openclipart-png"}
