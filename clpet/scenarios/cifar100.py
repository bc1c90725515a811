"""CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009): 100 classes of 32x32
colour images, 500 train / 100 test each, as the pre-trained-model CIL papers use it (SimpleCIL/APER B0Inc5 with
the seed-1993 order; LAE 10x10 with its orders 1-3).

Source: torchvision's on-disk format, ``<root>/cifar-100-python/{train,test,meta}``: Python pickles (read with
``encoding='latin1'``) holding ``data`` (uint8, N x 3072, channel-major: reshape (N, 3, 32, 32), then HWC),
``fine_labels`` (0..99) and, in ``meta``, ``fine_label_names``. The files are checked against the md5 values
torchvision records. ``<root>`` is ``scenario.root``, else the run's ``data_root`` or ``<data_root>/cifar100`` (the
LAE layout); a path that is itself the ``cifar-100-python`` folder works too. When the files are absent and
``download=true``, torchvision downloads them if the machine is online; offline, one line says where to put them.
Inputs are ``uint8`` arrays of shape (32, 32, 3), views of one buffer; ids are positions in the pickle.
"""
from __future__ import annotations

import os
import pickle
import socket
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from clpet.registry import SCENARIOS
from clpet.scenarios._checksums import verify_files
from clpet.scenarios._paper import PaperConfig, finish_paper_stream
from clpet.scenarios.base import SampleSet, Scenario, ScenarioBuilder
from clpet.scenarios.common import as_config

FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
_HOW = (
    f"get {URL} (torchvision.datasets.CIFAR100 downloads it when online with scenario.download=true) "
    "and pass data_root=PATH"
)


def _online(host: str = "www.cs.toronto.edu", timeout: float = 3.0) -> bool:
    """Whether the CIFAR host answers at all (so an offline machine fails at once instead of in urllib). Behind
    an HTTP(S) proxy the direct probe says nothing: then the download is simply tried."""
    if any(os.environ.get(k) for k in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")):
        return True
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def candidate_folders(scenario_root: Optional[str], data_root: Optional[str]) -> List[str]:
    """Where ``cifar-100-python`` may be, in order; the first is where a download goes."""
    roots = [scenario_root] if scenario_root else ([data_root, os.path.join(data_root, "cifar100")] if data_root else [])
    out = []
    for r in roots:
        r = os.path.expanduser(str(r))
        out.append(r if os.path.basename(os.path.normpath(r)) == FOLDER else os.path.join(r, FOLDER))
    return out


def _complete(folder: str) -> bool:
    return all(os.path.isfile(os.path.join(folder, f)) for f in FILES)


def find_or_download(scenario_root: Optional[str], data_root: Optional[str], download: bool) -> str:
    """The ``cifar-100-python`` folder holding train/test/meta; downloads through torchvision when allowed and
    online; otherwise ``FileNotFoundError`` with one line."""
    folders = candidate_folders(scenario_root, data_root)
    if not folders:
        raise FileNotFoundError(f"CIFAR-100 needs data_root=PATH (the folder holding {FOLDER}/); {_HOW}")
    for folder in folders:
        if _complete(folder):
            return folder
    target = folders[0]
    lacking = ", ".join(f for f in FILES if not os.path.isfile(os.path.join(target, f)))
    where = f"{target}/{{train,test,meta}} (missing {lacking})"
    if not download:
        raise FileNotFoundError(f"CIFAR-100 not found: expected {where}; {_HOW} (scenario.download=false)")
    if not _online():
        raise FileNotFoundError(f"CIFAR-100 not found: expected {where}, and this machine is offline; {_HOW}")
    try:
        from torchvision.datasets import CIFAR100

        for train in (True, False):
            CIFAR100(os.path.dirname(target), train=train, download=True)
    except Exception as exc:  # urllib / tarfile / integrity errors: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FileNotFoundError(f"CIFAR-100 not found at {target} and the download failed ({first}); {_HOW}") from None
    return target


def read_pickle(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"corrupt CIFAR-100 file {path}: {type(exc).__name__}: {exc}".replace("\n", " ")) from None
    if not isinstance(obj, dict):
        raise ValueError(f"corrupt CIFAR-100 file {path}: expected a dict, got {type(obj).__name__}")
    return obj


def load_split(folder: str, split: str) -> SampleSet:
    """``train`` or ``test``: all images (uint8 HWC views of one buffer) with their fine labels."""
    path = os.path.join(folder, split)
    entry = read_pickle(path)
    try:
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry["fine_labels"], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"corrupt CIFAR-100 file {path}: no key {exc} (expected 'data' and 'fine_labels')") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(
            f"corrupt CIFAR-100 file {path}: data {data.shape} and {len(labels)} labels, expected (N, 3072) and N"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 99):
        raise ValueError(f"corrupt CIFAR-100 file {path}: labels outside 0..99")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3), as torchvision
    return SampleSet(images, labels, np.arange(len(labels)), "image", split)


def load_cifar100(folder: str, verify: bool) -> Tuple[SampleSet, SampleSet, List[str], Dict[str, str]]:
    """(train, test, the 100 fine label names, checksum status per file) of a ``cifar-100-python`` folder."""
    status = verify_files("CIFAR-100", "cifar100", [(f, os.path.join(folder, f)) for f in FILES], enabled=verify)
    meta_path = os.path.join(folder, "meta")
    names = read_pickle(meta_path).get("fine_label_names")
    if not isinstance(names, list) or len(names) != 100:
        raise ValueError(f"corrupt CIFAR-100 file {meta_path}: 'fine_label_names' must list 100 names")
    return load_split(folder, "train"), load_split(folder, "test"), [str(n) for n in names], status


@SCENARIOS.register("cifar100")
class CIFAR100(ScenarioBuilder):
    """CIFAR-100, 100 classes of 32x32 images (torchvision format; downloads when online)."""

    @dataclass
    class Config(PaperConfig):
        name: str = "cifar100"
        download: bool = False  # true: fetch through torchvision when absent (needs network; off by default)
        order: Any = "seed1993"
        init: int = 0
        increment: int = 5  # B0Inc5, the APER table's CIFAR setting

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        folder = find_or_download(cfg.root, data_root, cfg.download)
        train, test, names, status = load_cifar100(folder, cfg.verify_checksums)
        reference = "lae" if str(cfg.order).lower().startswith("lae") else "aper"
        info = {"root": folder, "source": "cifar-100-python (torchvision format)", "split_checksums": status}
        return finish_paper_stream(cfg, "cifar100", "cifar100", train, test, names, seed, reference, info)
