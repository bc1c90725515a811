"""Your own images in ImageFolder layout (class = subfolder name), as a class-incremental stream.

Source: the run's ``data_root`` (or ``scenario.root``), either ``train/<class>/...`` and ``test/<class>/...``
with the same classes in both, or one ``<class>/...`` tree split per class by ``test_fraction`` (drawn with
``data_seed``). Images are files ending in .png .jpg .jpeg .bmp .webp .gif (any case), found at any depth
under a class folder. Classes are sorted by name. Inputs are file paths; decoding is the backbone's job.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

from clpet.registry import SCENARIOS
from clpet.scenarios.base import SampleSet, Scenario, ScenarioBuilder, ScenarioConfig
from clpet.scenarios.common import as_config, finish_stream, holdout_split, resolve_root
from clpet.scenarios.images import list_images

_LAYOUT = "root/train/<class>/*.jpg + root/test/<class>/*.jpg, or root/<class>/*.jpg split by test_fraction"


def scan_tree(root: str) -> Tuple[List[str], List[str], np.ndarray]:
    """(class names, image paths, original labels) of one ImageFolder tree; subfolders without images are
    not classes. Paths are in (class, path) order, so a sample's index is stable."""
    with os.scandir(root) as it:
        folders = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    names: List[str] = []
    paths: List[str] = []
    labels: List[int] = []
    for folder in folders:
        files = list_images(os.path.join(root, folder), recursive=True)
        if files:
            labels.extend([len(names)] * len(files))
            names.append(folder)
            paths.extend(files)
    if not names:
        raise FileNotFoundError(f"no images found in class folders under {root}; expected {_LAYOUT}")
    return names, paths, np.asarray(labels, dtype=np.int64)


@SCENARIOS.register("image-folder")
class ImageFolder(ScenarioBuilder):
    """Your images in ImageFolder layout (train/ + test/ trees, or one tree split by test_fraction)."""

    @dataclass
    class Config(ScenarioConfig):
        name: str = "image-folder"
        root: Optional[str] = None  # overrides the run's data_root
        test_fraction: float = 0.3  # used only for a single tree (no train/ and test/)
        increment: int = 2
        default_backbone: str = "efficientnet-lite0"

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        root = resolve_root(cfg.root, data_root, None)
        if root is None:
            raise FileNotFoundError(
                f"scenario image-folder needs data_root=PATH (or scenario.root=PATH); expected {_LAYOUT}"
            )
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root} not found; expected {_LAYOUT}")
        train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
        if os.path.isdir(train_dir) != os.path.isdir(test_dir):
            have, lack = (train_dir, test_dir) if os.path.isdir(train_dir) else (test_dir, train_dir)
            raise FileNotFoundError(f"found {have} but not {lack}; expected {_LAYOUT}")
        if os.path.isdir(train_dir):
            names, tr_paths, tr_y = scan_tree(train_dir)
            te_names, te_paths, te_y = scan_tree(test_dir)
            if te_names != names:
                diff = sorted(set(names) ^ set(te_names))
                raise ValueError(f"{train_dir} and {test_dir} must hold the same classes; differing: {', '.join(diff)}")
            train = SampleSet(tr_paths, tr_y, np.arange(len(tr_paths)), "image", "train")
            test = SampleSet(te_paths, te_y, np.arange(len(te_paths)), "image", "test")
            layout = "train/test"
        else:
            names, paths, y = scan_tree(root)
            tr, te = holdout_split(y, cfg.test_fraction, cfg.data_seed)
            ids = np.arange(len(paths))
            train = SampleSet([paths[i] for i in tr], y[tr], ids[tr], "image", "train")
            test = SampleSet([paths[i] for i in te], y[te], ids[te], "image", "test")
            layout = "single tree"
        return finish_stream(cfg, "image-folder", train, test, names, seed, info={"root": root, "layout": layout})
