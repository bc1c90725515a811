"""ImageNet-R (Hendrycks et al., "The Many Faces of Robustness", arXiv 2006.16241): 30,000 renditions (art,
cartoons, sketches, toys, ...) of 200 ImageNet classes, as the pre-trained-model CIL papers split it.

``split=`` picks one of the three train/test splits in use; each is a different set of images, so numbers are
comparable only within a split. Paths below are under ``<base>`` = ``scenario.root``, or ``<data_root>/imagenet-r``
(then ``data_root`` itself when that is the ImageNet-R folder).

- ``l2p`` (LAE's default; the split of the L2P JAX code): ``<base>/train_list.txt`` and ``<base>/val_list.txt``,
  one ``imagenet-r/<wnid>/<file>.jpg <label>`` per line (the path relative to ``<base>``), images in
  ``<base>/imagenet-r/<wnid>/`` (LAE README layout: ``data/imagenet-r/{imagenet-r/, train_list.txt,
  val_list.txt}``; gqk/LAE ``libml/data/imagenet_r.py``).
- ``coda-p`` (CODA-Prompt's split): ``<base>/imagenet-r_train.yaml`` and ``<base>/imagenet-r_test.yaml`` (copies
  of GT-RIPL/CODA-Prompt ``dataloaders/splits/``: ``data:`` a list of paths like ``data/imagenet-r/<wnid>/<file>``,
  ``targets:`` their labels), or LAE's conversion ``<base>/train_list_coda-p.txt`` / ``val_list_coda-p.txt`` in
  the ``l2p`` line format. Images as for ``l2p`` (``<base>/imagenet-r/<wnid>/``, or ``<base>/<wnid>/`` when
  ``<base>`` is the extracted ``imagenet-r.tar`` itself).
- ``aper`` (the pre-split folders distributed with the SimpleCIL/APER code, zhoudw-zdw/RevisitingCIL
  ``utils/data.py`` ``iImageNetR``): ``<base>/train/<wnid>/*.jpg`` and ``<base>/test/<wnid>/*.jpg``, read exactly
  as torchvision's ``ImageFolder`` (classes = sorted folder names).

A list path is resolved by what follows its last ``imagenet-r/`` (``<wnid>/<file>``, or ``train|test/<wnid>/<file>``
in forks that list the pre-split folders) under the image folder. Labels are the lists' own integers; class
names are the wnids. The list files are checked against the recorded checksums (``_checksums.py``: CODA-P's
yaml files are recorded; LAE's txt lists are not, and are reported as unverified).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from clpet.registry import SCENARIOS
from clpet.scenarios._checksums import verify_files
from clpet.scenarios._paper import PaperConfig, finish_paper_stream
from clpet.scenarios.base import SampleSet, Scenario, ScenarioBuilder
from clpet.scenarios.common import as_config
from clpet.scenarios.presplit import load_presplit

SPLITS = ("l2p", "coda-p", "aper")
_WNID = re.compile(r"^n\d{8}$")
_TAR = "imagenet-r.tar from https://github.com/hendrycks/imagenet-r"
_HOW = {
    "l2p": f"get {_TAR} and train_list.txt / val_list.txt from the LAE README (github.com/gqk/LAE), "
    "then pass data_root=PATH",
    "coda-p": f"get {_TAR} and dataloaders/splits/imagenet-r_{{train,test}}.yaml from github.com/GT-RIPL/CODA-Prompt, "
    "then pass data_root=PATH",
    "aper": "get the pre-split imagenet-r train/ and test/ folders linked from the SimpleCIL/APER README "
    "(github.com/zhoudw-zdw/RevisitingCIL), then pass data_root=PATH",
}
#: list files per split: (train, test, checksum group); the first pair present is used
LIST_FILES = {
    "l2p": [("train_list.txt", "val_list.txt", "imagenet-r/l2p")],
    "coda-p": [
        ("imagenet-r_train.yaml", "imagenet-r_test.yaml", "imagenet-r/coda-p"),
        ("train_list_coda-p.txt", "val_list_coda-p.txt", "imagenet-r/coda-p-lae"),
    ],
}


def _has_wnid_dirs(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return any(e.is_dir() and _WNID.match(e.name) for e in it)
    except OSError:
        return False


def image_folder(base: str) -> Optional[str]:
    """Where the ``<wnid>/`` folders are: ``<base>/imagenet-r`` (LAE layout) or ``<base>`` (the extracted tar)."""
    for path in (os.path.join(base, "imagenet-r"), base):
        if _has_wnid_dirs(path):
            return path
    return None


def parse_list_txt(path: str) -> Tuple[List[str], List[int]]:
    """``<path> <label>`` lines (LAE / L2P format); blank lines skipped."""
    paths: List[str] = []
    labels: List[int] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise ValueError(f"{path}:{lineno}: expected '<image path> <label>', got {line.strip()[:80]!r}")
            paths.append(parts[0])
            labels.append(int(parts[1]))
    return paths, labels


def parse_split_yaml(path: str) -> Tuple[List[str], List[int]]:
    """CODA-Prompt's split file: a mapping with ``data`` (paths) and ``targets`` (labels) of equal length."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=loader)
    except yaml.YAMLError as exc:
        raise ValueError(f"corrupt split file {path}: {one_line(exc)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list) or not isinstance(doc.get("targets"), list):
        raise ValueError(f"corrupt split file {path}: expected keys 'data' (list of paths) and 'targets' (list of labels)")
    if len(doc["data"]) != len(doc["targets"]):
        raise ValueError(f"corrupt split file {path}: {len(doc['data'])} paths but {len(doc['targets'])} targets")
    return [str(p) for p in doc["data"]], [int(t) for t in doc["targets"]]


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def resolve_listed(entry: str, images: str) -> str:
    """A list entry under the local image folder: what follows the last ``imagenet-r/`` (else the entry)."""
    entry = entry.replace("\\", "/")
    rel = entry.rsplit("imagenet-r/", 1)[-1] if "imagenet-r/" in entry else entry.lstrip("./")
    return os.path.join(images, *rel.split("/"))


def samples_from_lists(
    train_file: str, test_file: str, images: str
) -> Tuple[SampleSet, SampleSet, List[str]]:
    """Both list files as SampleSets over local paths, with the wnid of each label as its class name."""
    sets = []
    label_to_wnid: Dict[int, str] = {}
    for split, path in (("train", train_file), ("test", test_file)):
        entries, labels = parse_split_yaml(path) if path.endswith(".yaml") else parse_list_txt(path)
        files = [resolve_listed(e, images) for e in entries]
        absent = [f for f in files if not os.path.isfile(f)]
        if absent:
            raise FileNotFoundError(
                f"ImageNet-R: {len(absent)} of {len(files)} images listed in {path} are missing under {images} "
                f"(first: {absent[0]}); {_TAR}"
            )
        for f, y in zip(files, labels):
            wnid = os.path.basename(os.path.dirname(f))
            if label_to_wnid.setdefault(y, wnid) != wnid:
                raise ValueError(f"{path}: label {y} is used for both {label_to_wnid[y]} and {wnid}")
        sets.append(SampleSet(files, np.asarray(labels, dtype=np.int64), np.arange(len(files)), "image", split))
    n = len(label_to_wnid)
    if sorted(label_to_wnid) != list(range(n)):
        raise ValueError(f"{train_file}, {test_file}: labels must be 0..{n - 1}, got {sorted(label_to_wnid)[:5]}...")
    missing = sorted(set(range(n)) - set(sets[0].targets.tolist()))
    if missing:
        raise ValueError(f"{train_file}: classes {missing[:5]} have test images but no training image")
    return sets[0], sets[1], [label_to_wnid[i] for i in range(n)]


def _expected(split: str, base: str) -> str:
    if split == "aper":
        return f"{base}/train/<wnid>/*.jpg and {base}/test/<wnid>/*.jpg (split=aper)"
    options = " or ".join(f"{base}/{tr} + {te}" for tr, te, _ in LIST_FILES[split])
    return f"{options} with images in {base}/imagenet-r/<wnid>/*.jpg (split={split})"


def _base(cfg_root: Optional[str], data_root: Optional[str], split: str) -> str:
    if cfg_root:
        return os.path.expanduser(cfg_root)
    if not data_root:
        raise FileNotFoundError(
            "ImageNet-R needs data_root=PATH (or scenario.root=PATH): "
            f"expected {_expected(split, 'DATA_ROOT/imagenet-r')}; {_HOW[split]}"
        )
    base = os.path.join(os.path.expanduser(data_root), "imagenet-r")
    direct = os.path.expanduser(data_root)
    if not os.path.isdir(base) and (
        any(os.path.isfile(os.path.join(direct, tr)) for tr, _, _ in sum(LIST_FILES.values(), []))
        or os.path.isdir(os.path.join(direct, "train"))
    ):
        return direct  # data_root is the ImageNet-R folder itself
    return base


@SCENARIOS.register("imagenet-r")
class ImageNetR(ScenarioBuilder):
    """ImageNet-R, 200 classes of renditions; split=l2p (LAE) | coda-p | aper (SimpleCIL/APER folders)."""

    @dataclass
    class Config(PaperConfig):
        name: str = "imagenet-r"
        split: str = "l2p"  # l2p (L2P/LAE lists) | coda-p (CODA-Prompt lists) | aper (pre-split train/ test/ folders)
        order: Any = "lae1"  # LAE order 1 = natural
        init: int = 0
        increment: int = 20  # LAE's 10 x 20

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        if cfg.split not in SPLITS:
            raise ValueError(f"unknown ImageNet-R split '{cfg.split}'; valid: {', '.join(SPLITS)}")
        base = _base(cfg.root, data_root, cfg.split)
        info: Dict[str, Any] = {"root": base, "split": cfg.split}
        if cfg.split == "aper":
            if not (os.path.isdir(os.path.join(base, "train")) and os.path.isdir(os.path.join(base, "test"))):
                raise FileNotFoundError(f"ImageNet-R not found: expected {_expected('aper', base)}; {_HOW['aper']}")
            train, test, names = load_presplit(base, "ImageNet-R")
            info["split_checksums"] = "no split files: the split is the train/ and test/ folder layout"
            reference = "aper"
        else:
            pairs = [(tr, te, g) for tr, te, g in LIST_FILES[cfg.split]
                     if os.path.isfile(os.path.join(base, tr)) and os.path.isfile(os.path.join(base, te))]
            images = image_folder(base)
            if not pairs or images is None:
                raise FileNotFoundError(f"ImageNet-R not found: expected {_expected(cfg.split, base)}; {_HOW[cfg.split]}")
            tr, te, group = pairs[0]
            files = [(tr, os.path.join(base, tr)), (te, os.path.join(base, te))]
            info["split_checksums"] = verify_files(f"ImageNet-R split={cfg.split}", group, files, cfg.verify_checksums)
            train, test, names = samples_from_lists(files[0][1], files[1][1], images)
            info.update(images=images, split_files=[p for _, p in files])
            reference = "lae"
        return finish_paper_stream(cfg, "imagenet-r", "imagenet-r", train, test, names, seed, reference, info)
