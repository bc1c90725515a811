"""The standard FSCIL benchmarks (TOPIC, Tao et al. CVPR 2020, arXiv 2004.10956; CEC, Zhang et al. CVPR 2021,
icoz69/CEC-CVPR2021 ``dataloader/``): ``cifar100-fscil`` and ``mini-imagenet-fscil`` (60 base classes + 8 sessions
of 5-way 5-shot) and ``cub200-fscil`` (100 base classes + 10 sessions of 10-way 5-shot), natural class order.

Shots: the standard index files ``<index_dir>/session_<k>.txt`` (k = 1 for the base session, 2.. for the
incremental ones; the ``data/index_list/<cifar100|mini_imagenet|cub200>/`` folder of the CEC repository), checked
against the recorded checksums (``_checksums.py``). Line formats (CEC's readers):

- cifar100: one integer per line, a position in the CIFAR-100 training pickle;
- mini_imagenet: ``MINI-ImageNet/train/<wnid>/<file>.jpg``; the file name (4th path part) is looked up in
  ``miniimagenet/images/``;
- cub200: ``CUB_200_2011/images/<class folder>/<file>.jpg``, relative to the data root.

``index_dir`` defaults to the first of ``<data_root>/index_list/<key>`` and ``<data_root>/data/index_list/<key>``
that exists. ``shots_from=auto`` uses the files when found and otherwise draws the shots from ``data_seed``
(``fscil.sample_shots``); ``index`` requires them, ``sample`` ignores them. The base session takes every training
image of the base classes (``base_train=all``, what CEC's code does); ``base_train=index`` reads
``session_1.txt`` instead (the same images for all three standard lists). Test sets: every test image of every
class seen so far (CEC ``get_session_classes``).

Datasets on disk:

- CIFAR-100: torchvision's ``cifar-100-python/`` (see ``cifar100.py``), original fine-label ids.
- miniImageNet in CEC's layout: ``<data_root>/miniimagenet/images/<file>.jpg`` and
  ``<data_root>/miniimagenet/split/{train,test}.csv`` (header ``filename,label``; label = wnid; 500 train and 100 test
  images per class). Class ids follow the order in which wnids first appear in ``train.csv`` (CEC numbers each csv
  on its own; here test.csv is mapped through train.csv's wnids, the same when both list wnids in one order). The
  csvs are checked against CEC's copies (``data/index_list/mini_imagenet/{train,test}.csv``).
- CUB-200-2011 in its own layout: ``<data_root>/CUB_200_2011/{images.txt, image_class_labels.txt,
  train_test_split.txt, images/}`` (``classes.txt`` for names when present); label = class id - 1; the train split
  is ``is_training_image == 1``, in image-id order; sample ids are the image ids.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from clpet.protocols import Protocol
from clpet.registry import SCENARIOS
from clpet.scenarios import cifar100 as _cifar
from clpet.scenarios._checksums import verify_files
from clpet.scenarios.base import SampleSet, Scenario, ScenarioBuilder
from clpet.scenarios.common import as_config
from clpet.scenarios.fscil import FSCILConfig, finish_fscil, session_sizes

SHOTS_FROM = ("auto", "index", "sample")
BASE_TRAIN = ("all", "index")
CEC = "github.com/icoz69/CEC-CVPR2021"


@dataclass
class BenchmarkFSCILConfig(FSCILConfig):
    root: Optional[str] = None  # the dataset folder; default: looked for under the run's data_root
    index_dir: Optional[str] = None  # folder with session_1.txt ...; default <data_root>/index_list/<key>
    shots_from: str = "auto"  # auto (index files if found, else sampled) | index | sample
    base_train: str = "all"  # all (every training image of the base classes, CEC code) | index (session_1.txt)
    verify_checksums: bool = True
    default_backbone: str = "timm"


def _index_dir(cfg: BenchmarkFSCILConfig, data_root: Optional[str], key: str) -> Optional[str]:
    if cfg.index_dir:
        return os.path.expanduser(cfg.index_dir)
    bases = [b for b in (data_root, cfg.root) if b]
    for base in bases:
        for sub in (("index_list", key), ("data", "index_list", key)):
            path = os.path.join(os.path.expanduser(base), *sub)
            if os.path.isdir(path):
                return path
    return None


def read_index_files(
    cfg: BenchmarkFSCILConfig,
    data_root: Optional[str],
    key: str,
    n_sessions: int,
    to_id: Callable[[str], int],
) -> Tuple[Dict[int, List[int]], Dict[int, str], Dict[str, str]]:
    """(sample ids per session, file per session, checksum status per file) from the index files, or empty
    dicts when the shots are to be sampled. ``to_id`` maps one line to a training sample id (KeyError/ValueError
    when it does not resolve)."""
    if cfg.shots_from not in SHOTS_FROM:
        raise ValueError(f"unknown shots_from '{cfg.shots_from}'; valid: {', '.join(SHOTS_FROM)}")
    if cfg.base_train not in BASE_TRAIN:
        raise ValueError(f"unknown base_train '{cfg.base_train}'; valid: {', '.join(BASE_TRAIN)}")
    folder = _index_dir(cfg, data_root, key)
    wanted = ([0] if cfg.base_train == "index" else []) + ([] if cfg.shots_from == "sample" else list(range(1, n_sessions)))
    if not wanted:
        return {}, {}, {}
    shown = folder or os.path.join(data_root or "DATA_ROOT", "index_list", key)
    files = {s: os.path.join(shown, f"session_{s + 1}.txt") for s in wanted}
    absent = [p for p in files.values() if not os.path.isfile(p)]
    if len(absent) == len(files) and cfg.shots_from == "auto" and cfg.base_train == "all":
        return {}, {}, {}  # no index files: the shots are sampled with data_seed
    if absent:
        raise FileNotFoundError(
            f"FSCIL index file {absent[0]} not found; get data/index_list/{key}/ from {CEC} and pass "
            "scenario.index_dir=PATH, or use scenario.shots_from=sample (and base_train=all)"
        )
    status = verify_files(
        f"FSCIL index ({key})", f"fscil/{key}", [(os.path.basename(p), p) for p in files.values()],
        cfg.verify_checksums,
    )
    ids: Dict[int, List[int]] = {}
    for s, path in files.items():
        out = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(to_id(line.strip()))
                except (KeyError, ValueError, IndexError):
                    bad = line.strip()[:80]
                    raise ValueError(f"{path}:{lineno}: {bad!r} is not a training image of this dataset") from None
        ids[s] = out
    return ids, {s: files[s] for s in files}, status


def _n_sessions(cfg: BenchmarkFSCILConfig, n_classes: int) -> int:
    return len(session_sizes(n_classes, cfg.base_classes, cfg.ways, cfg.sessions))


# ---------------------------------------------------------------------------------------------- CIFAR-100


@SCENARIOS.register("cifar100-fscil")
class CIFAR100FSCIL(ScenarioBuilder):
    """CIFAR-100 FSCIL: 60 base classes + 8 sessions of 5-way 5-shot (TOPIC/CEC protocol)."""
    protocol = Protocol.FEW_SHOT_CLASS_INCREMENTAL

    @dataclass
    class Config(BenchmarkFSCILConfig):
        name: str = "cifar100-fscil"
        download: bool = False  # true: torchvision downloads CIFAR-100 when absent (needs network)
        base_classes: int = 60
        ways: int = 5
        shots: int = 5

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        folder = _cifar.find_or_download(cfg.root, data_root, cfg.download)
        train, test, names, status = _cifar.load_cifar100(folder, cfg.verify_checksums)
        n_train = len(train)

        def to_id(line: str) -> int:
            i = int(line)
            if not 0 <= i < n_train:
                raise ValueError(line)
            return i

        ids, sources, index_status = read_index_files(cfg, data_root, "cifar100", _n_sessions(cfg, len(names)), to_id)
        info = {"root": folder, "source": "cifar-100-python (torchvision format)",
                "split_checksums": {**status, **index_status}}
        return finish_fscil(cfg, "cifar100-fscil", train, test, names, seed, "cifar100", ids, sources, info)


# ---------------------------------------------------------------------------------------------- miniImageNet


def read_split_csv(path: str) -> List[Tuple[str, str]]:
    """(filename, wnid) rows of a miniImageNet split csv with header ``filename,label``."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise ValueError(f"{path}: expected the header 'filename,label'")
    out = []
    for lineno, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'filename,label', got {','.join(row)[:80]!r}")
        out.append((row[0].strip(), row[1].strip()))
    return out


def _first_missing(paths: List[str]) -> Optional[str]:
    return next((p for p in paths if not os.path.isfile(p)), None)


@SCENARIOS.register("mini-imagenet-fscil")
class MiniImageNetFSCIL(ScenarioBuilder):
    """miniImageNet FSCIL: 60 base classes + 8 sessions of 5-way 5-shot (CEC layout)."""
    protocol = Protocol.FEW_SHOT_CLASS_INCREMENTAL

    @dataclass
    class Config(BenchmarkFSCILConfig):
        name: str = "mini-imagenet-fscil"
        base_classes: int = 60
        ways: int = 5
        shots: int = 5

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        how = f"get miniimagenet/ (images/ and split/) as linked from the CEC README ({CEC}) and pass data_root=PATH"
        candidates = [cfg.root] if cfg.root else ([os.path.join(data_root, "miniimagenet"), data_root] if data_root else [])
        base = next((os.path.expanduser(c) for c in candidates
                     if os.path.isfile(os.path.join(os.path.expanduser(c), "split", "train.csv"))), None)
        if base is None:
            where = os.path.expanduser(candidates[0]) if candidates else "DATA_ROOT/miniimagenet"
            raise FileNotFoundError(
                f"miniImageNet not found: expected {where}/split/train.csv, {where}/split/test.csv and "
                f"{where}/images/*.jpg; {how}"
            )
        csvs = [(n, os.path.join(base, "split", n)) for n in ("train.csv", "test.csv")]
        if not os.path.isfile(csvs[1][1]):
            raise FileNotFoundError(f"miniImageNet: {csvs[1][1]} not found; {how}")
        status = verify_files("miniImageNet split", "fscil/mini_imagenet", csvs, cfg.verify_checksums)
        images = os.path.join(base, "images")
        tr_rows, te_rows = read_split_csv(csvs[0][1]), read_split_csv(csvs[1][1])
        wnids: List[str] = []
        index: Dict[str, int] = {}
        for _, wnid in tr_rows:
            if wnid not in index:
                index[wnid] = len(wnids)
                wnids.append(wnid)
        unknown = sorted({w for _, w in te_rows} - set(index))
        if unknown:
            raise ValueError(f"{csvs[1][1]}: classes {unknown[:5]} do not appear in train.csv")
        sets = []
        for split, rows in (("train", tr_rows), ("test", te_rows)):
            paths = [os.path.join(images, name) for name, _ in rows]
            gone = _first_missing(paths)
            if gone:
                raise FileNotFoundError(f"miniImageNet: image {gone} listed in {split}.csv not found; {how}")
            sets.append(SampleSet(paths, np.asarray([index[w] for _, w in rows]), np.arange(len(rows)), "image", split))
        train, test = sets
        by_file = {name: i for i, (name, _) in enumerate(tr_rows)}

        def to_id(line: str) -> int:
            parts = line.replace("\\", "/").split("/")
            return by_file[parts[3] if len(parts) > 3 else parts[-1]]  # CEC: line.split('/')[3]

        ids, sources, index_status = read_index_files(cfg, data_root, "mini_imagenet", _n_sessions(cfg, len(wnids)), to_id)
        info = {"root": base, "source": "miniImageNet (CEC layout)", "split_checksums": {**status, **index_status}}
        return finish_fscil(cfg, "mini-imagenet-fscil", train, test, wnids, seed, "mini-imagenet", ids, sources, info)


# ---------------------------------------------------------------------------------------------- CUB-200-2011

CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt")


def _read_pairs(path: str) -> Dict[int, str]:
    """``<id> <value>`` lines of a CUB metadata file (value may contain no space)."""
    out: Dict[int, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise ValueError(f"{path}:{lineno}: expected '<id> <value>', got {line.strip()[:80]!r}")
            key = int(parts[0])
            if key in out:
                raise ValueError(f"{path}:{lineno}: id {key} appears twice")
            out[key] = parts[1]
    return out


def load_cub(folder: str) -> Tuple[SampleSet, SampleSet, List[str], Dict[str, int]]:
    """(train, test, class names, relative image path -> id) of a ``CUB_200_2011`` folder (ids = image ids)."""
    images, labels, is_train = (_read_pairs(os.path.join(folder, f)) for f in CUB_FILES)
    if set(images) != set(labels) or set(images) != set(is_train):
        raise ValueError(f"CUB-200-2011 metadata in {folder} disagree: {', '.join(CUB_FILES)} list different image ids")
    n_classes = max(int(c) for c in labels.values())
    names = [""] * n_classes
    classes_txt = os.path.join(folder, "classes.txt")
    if os.path.isfile(classes_txt):
        for k, v in _read_pairs(classes_txt).items():
            if 1 <= k <= n_classes:
                names[k - 1] = v
    for i, rel in images.items():  # fall back on the image folder name (e.g. 001.Black_footed_Albatross)
        c = int(labels[i]) - 1
        names[c] = names[c] or rel.split("/")[0]
    sets = []
    for split, flag in (("train", "1"), ("test", "0")):
        keys = [k for k in sorted(images) if is_train[k] == flag]
        paths = [os.path.join(folder, "images", images[k]) for k in keys]
        gone = _first_missing(paths)
        if gone:
            raise FileNotFoundError(f"CUB-200-2011: image {gone} listed in images.txt not found")
        y = np.asarray([int(labels[k]) - 1 for k in keys], dtype=np.int64)
        sets.append(SampleSet(paths, y, np.asarray(keys, dtype=np.int64), "image", split))
    rel_to_id = {rel: k for k, rel in images.items()}
    return sets[0], sets[1], names, rel_to_id


@SCENARIOS.register("cub200-fscil")
class CUB200FSCIL(ScenarioBuilder):
    """CUB-200-2011 FSCIL: 100 base classes + 10 sessions of 10-way 5-shot (CUB_200_2011 layout)."""
    protocol = Protocol.FEW_SHOT_CLASS_INCREMENTAL

    @dataclass
    class Config(BenchmarkFSCILConfig):
        name: str = "cub200-fscil"
        base_classes: int = 100
        ways: int = 10
        shots: int = 5

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        how = ("get CUB_200_2011.tgz (Caltech-UCSD Birds-200-2011, data.caltech.edu) and pass data_root=PATH "
               "(the folder holding CUB_200_2011/)")
        roots = [cfg.root] if cfg.root else ([data_root, os.path.join(data_root, "cub200")] if data_root else [])
        folders = []
        for r in roots:
            r = os.path.expanduser(r)
            folders += [r] if os.path.basename(os.path.normpath(r)) == "CUB_200_2011" else [os.path.join(r, "CUB_200_2011")]
        folder = next((f for f in folders if all(os.path.isfile(os.path.join(f, n)) for n in CUB_FILES)), None)
        if folder is None:
            where = folders[0] if folders else "DATA_ROOT/CUB_200_2011"
            raise FileNotFoundError(
                f"CUB-200-2011 not found: expected {where}/{{{','.join(CUB_FILES)}}} and {where}/images/; {how}"
            )
        train, test, names, rel_to_id = load_cub(folder)
        train_ids = set(train.ids.tolist())

        def to_id(line: str) -> int:
            rel = line.replace("\\", "/").split("images/", 1)[-1]
            i = rel_to_id[rel]
            if i not in train_ids:
                raise ValueError(line)
            return i

        ids, sources, index_status = read_index_files(cfg, data_root, "cub200", _n_sessions(cfg, len(names)), to_id)
        info = {"root": folder, "source": "CUB-200-2011", "split_checksums": index_status}
        return finish_fscil(cfg, "cub200-fscil", train, test, names, seed, "cub200", ids, sources, info)
