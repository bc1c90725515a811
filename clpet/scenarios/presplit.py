"""The pre-split ``train/`` + ``test/`` folder datasets distributed with the SimpleCIL/APER code (Zhou et al.,
"Revisiting Class-Incremental Learning with Pre-Trained Models", arXiv 2303.07338; zhoudw-zdw/RevisitingCIL
``utils/data.py``): ImageNet-A (200 classes), CUB-200 (200), ObjectNet (200), OmniBenchmark (300), VTAB (50 =
5 domains x 10 classes).

On-disk format: ``<base>/train/<class>/<image>`` and ``<base>/test/<class>/<image>``, read exactly as torchvision's
``ImageFolder`` reads them in the reference (``torchvision.datasets.folder.find_classes`` + ``make_dataset``):
classes are the sorted sub-folder names, images any file with a torchvision image extension (.jpg .jpeg .png
.ppm .bmp .pgm .tif .tiff .webp, any case) at any depth, in sorted ``os.walk`` order; a class folder with no image
is an error. Both trees must hold the same classes. ``<base>`` is ``scenario.root``, else
``<data_root>/<folder>`` with the reference's folder names (``imagenet-a``, ``cub``, ``objectnet``,
``omnibenchmark``, ``vtab-cil/vtab`` or ``vtab``), else ``data_root`` itself. There are no split files: the split
is the folder layout. Inputs are file paths; ids are positions in the ``ImageFolder`` sample list.

Defaults follow the APER table (docs/methods.md): seed-1993 class order; B0Inc10, except OmniBenchmark B0Inc30; VTAB
unshuffled (``order=natural``). That VTAB's sorted folder names group the classes by domain (so B0Inc10 gives
one domain per experience) is an assumption about the distributed folder names, recorded in ``info``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, List, Optional, Sequence, Tuple

import numpy as np

from clpet.registry import SCENARIOS
from clpet.scenarios._paper import PaperConfig, finish_paper_stream, locate
from clpet.scenarios.base import SampleSet, Scenario, ScenarioBuilder
from clpet.scenarios.common import as_config

APER_README = "github.com/zhoudw-zdw/RevisitingCIL"


def scan_image_folder(root: str) -> Tuple[List[str], List[str], np.ndarray]:
    """(classes, paths, labels) of one tree, as ``torchvision.datasets.ImageFolder(root)`` lists them."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    classes, class_to_idx = find_classes(root)
    samples = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS)
    return classes, [p for p, _ in samples], np.asarray([y for _, y in samples], dtype=np.int64)


def load_presplit(base: str, what: str) -> Tuple[SampleSet, SampleSet, List[str]]:
    """(train, test, class names) of ``<base>/train`` and ``<base>/test``; one-line errors."""
    out = []
    for split in ("train", "test"):
        folder = os.path.join(base, split)
        try:
            out.append(scan_image_folder(folder))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{what}: {folder}: {' '.join(str(exc).split())}") from None
    (names, tr_paths, tr_y), (te_names, te_paths, te_y) = out
    if names != te_names:
        diff = sorted(set(names) ^ set(te_names))
        raise ValueError(
            f"{what}: {base}/train and {base}/test must hold the same classes; differing: {', '.join(diff[:10])}"
        )
    train = SampleSet(tr_paths, tr_y, np.arange(len(tr_paths)), "image", "train")
    test = SampleSet(te_paths, te_y, np.arange(len(te_paths)), "image", "test")
    return train, test, names


def _is_presplit(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test"))


class PreSplitFolders(ScenarioBuilder):
    """Base of the APER pre-split folder datasets; subclasses set the class attributes and ``Config``."""

    title: ClassVar[str] = ""
    folders: ClassVar[Sequence[str]] = ()
    n_reference_classes: ClassVar[int] = 0
    note: ClassVar[str] = ""

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        base = locate(
            cls.title, cfg.root, data_root, cls.folders, _is_presplit,
            expected=lambda p: f"{p}/train/<class>/*.jpg and {p}/test/<class>/*.jpg (the APER pre-split folders)",
            how_to_get=f"get the pre-split {cls.title} folders linked from the SimpleCIL/APER README ({APER_README}) "
            "and pass data_root=PATH",
        )
        train, test, names = load_presplit(base, cls.title)
        info = {
            "root": base, "source": f"APER pre-split folders ({APER_README})",
            "split_checksums": "no split files: the split is the train/ and test/ folder layout",
            "reference_n_classes": cls.n_reference_classes,
        }
        if len(names) != cls.n_reference_classes:
            info["warning"] = f"{len(names)} classes found, the reference has {cls.n_reference_classes}"
        if cls.note:
            info["note"] = cls.note
        return finish_paper_stream(cfg, cls.registry_name, cls.registry_name, train, test, names, seed, "aper", info)


@SCENARIOS.register("imagenet-a")
class ImageNetA(PreSplitFolders):
    """ImageNet-A, 200 classes of natural adversarial images (APER pre-split folders)."""

    title, folders, n_reference_classes = "ImageNet-A", ("imagenet-a",), 200

    @dataclass
    class Config(PaperConfig):
        name: str = "imagenet-a"
        increment: int = 10


@SCENARIOS.register("cub200")
class CUB200(PreSplitFolders):
    """CUB-200-2011 birds, 200 classes (APER pre-split folders)."""

    title, folders, n_reference_classes = "CUB-200", ("cub", "cub200"), 200

    @dataclass
    class Config(PaperConfig):
        name: str = "cub200"
        increment: int = 10


@SCENARIOS.register("objectnet")
class ObjectNet(PreSplitFolders):
    """ObjectNet, 200 classes of objects in unusual poses and places (APER pre-split folders)."""

    title, folders, n_reference_classes = "ObjectNet", ("objectnet",), 200

    @dataclass
    class Config(PaperConfig):
        name: str = "objectnet"
        increment: int = 10


@SCENARIOS.register("omnibenchmark")
class OmniBenchmark(PreSplitFolders):
    """OmniBenchmark, 300 classes across 21 semantic realms (APER pre-split folders)."""

    title, folders, n_reference_classes = "OmniBenchmark", ("omnibenchmark",), 300

    @dataclass
    class Config(PaperConfig):
        name: str = "omnibenchmark"
        increment: int = 30


@SCENARIOS.register("vtab")
class VTAB(PreSplitFolders):
    """VTAB, 5 domains x 10 classes, unshuffled (APER pre-split folders)."""

    title, folders, n_reference_classes = "VTAB", ("vtab-cil/vtab", "vtab"), 50
    note = "order=natural follows the sorted folder names; assumed to group the 10 classes of each domain"

    @dataclass
    class Config(PaperConfig):
        name: str = "vtab"
        order: Any = "natural"  # APER runs VTAB unshuffled
        increment: int = 10
