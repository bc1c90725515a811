"""What the paper-scale loaders share: class orders and split names of the pre-trained-model CIL papers, where
a dataset is looked for, the reference preprocessing, and the last step of every loader (caps, order, split).

Class orders (``order=``):

- ``seed1993`` — ``np.random.seed(1993); np.random.permutation(n_classes)``, as SimpleCIL/APER
  (zhoudw-zdw/RevisitingCIL ``utils/data_manager.py``, ``shuffle=true, seed=1993``); any ``seed<N>`` works, and
  ``seed`` uses the run's seed.
- ``natural`` — class ids in the dataset's own order.
- ``lae1`` / ``lae2`` / ``lae3`` — the three orders of LAE (gqk/LAE ``config/base/<dataset>_order{1,2,3}.yaml``,
  commit 1680e49): order 1 sets ``class_order: null``, i.e. the natural order, and orders 2 and 3 list an explicit
  permutation, copied below (for CIFAR-100 and ImageNet-R, the datasets LAE has orders for). The reference also
  runs order N with ``seed_everything: N``; that is the run's seed here (``seed=N``), not part of the order, and
  is recorded in ``scenario.info['reference_run_seed']``. ``lae1`` is the natural order for any dataset.
- an explicit list of all class ids.

Split names (``split_name=``): ``B<init>Inc<increment>`` as in the APER tables ("B0 Inc10": the first experience
has ``increment`` classes too), or LAE's ``<tasks>x<classes>`` ("10x20" = 10 experiences of 20 classes, which
must cover every class). When set, ``split_name`` wins over ``init``/``increment``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from clpet.scenarios.base import (
    SampleSet, Scenario, ScenarioConfig, build_class_incremental, cap_per_class, resolve_class_order,
)  # fmt: skip

#: LAE orders 2 and 3 per dataset (order 1 is the natural order), from gqk/LAE config/base/*_order{2,3}.yaml
LAE_ORDERS: Dict[str, Dict[int, List[int]]] = {
    "cifar100": {
        2: [
            23, 8, 11, 7, 48, 13, 1, 91, 94, 54, 16, 63, 52, 41, 80, 2, 47, 87, 78, 66, 19, 6, 24, 10, 59, 30, 22,
            29, 83, 37, 93, 81, 43, 99, 86, 28, 34, 88, 44, 14, 84, 70, 4, 20, 15, 21, 31, 76, 57, 67, 73, 50, 69,
            25, 98, 46, 96, 0, 72, 35, 58, 92, 3, 95, 56, 90, 26, 40, 55, 89, 75, 71, 60, 42, 9, 82, 39, 18, 77, 68,
            32, 79, 12, 85, 36, 17, 64, 27, 74, 45, 61, 38, 51, 62, 65, 33, 5, 53, 97, 49
        ],
        3: [
            53, 37, 65, 51, 4, 20, 38, 9, 10, 81, 44, 36, 84, 50, 96, 90, 66, 16, 80, 33, 24, 52, 91, 99, 64, 5, 58,
            76, 39, 79, 23, 94, 30, 73, 25, 47, 31, 45, 19, 87, 42, 68, 95, 21, 7, 67, 46, 82, 11, 6, 41, 86, 88,
            70, 18, 78, 71, 59, 43, 61, 22, 14, 35, 93, 56, 28, 98, 54, 27, 89, 1, 69, 74, 2, 85, 40, 13, 75, 29,
            34, 92, 0, 77, 55, 49, 3, 62, 12, 26, 48, 83, 60, 57, 63, 15, 32, 8, 97, 72, 17
        ],
    },
    "imagenet-r": {
        2: [
            131, 181, 22, 172, 144, 92, 97, 187, 58, 93, 6, 70, 106, 68, 153, 168, 179, 199, 29, 46, 9, 142, 134,
            88, 193, 110, 26, 32, 117, 112, 17, 39, 166, 13, 94, 138, 109, 147, 51, 101, 59, 188, 116, 5, 170, 99,
            100, 167, 180, 146, 65, 1, 104, 43, 38, 184, 123, 171, 137, 162, 71, 44, 95, 174, 12, 7, 54, 152, 21,
            47, 28, 176, 34, 2, 132, 118, 42, 189, 150, 14, 165, 41, 192, 45, 82, 128, 63, 57, 197, 160, 53, 75,
            108, 135, 121, 159, 183, 67, 169, 50, 87, 69, 89, 196, 115, 19, 148, 96, 86, 11, 8, 60, 33, 173, 78, 4,
            119, 105, 182, 127, 177, 30, 186, 40, 49, 178, 76, 157, 161, 73, 164, 151, 31, 74, 191, 27, 125, 198,
            81, 20, 155, 114, 139, 36, 61, 56, 145, 48, 16, 83, 62, 85, 126, 0, 102, 23, 3, 140, 15, 195, 133, 113,
            190, 141, 52, 163, 156, 80, 111, 90, 175, 143, 120, 84, 18, 25, 79, 37, 154, 136, 64, 158, 24, 185, 72,
            35, 129, 55, 149, 91, 122, 77, 103, 124, 130, 66, 10, 107, 194, 98
        ],
        3: [
            33, 146, 79, 19, 23, 131, 12, 187, 174, 32, 86, 123, 109, 171, 42, 170, 179, 31, 36, 10, 180, 9, 121,
            27, 57, 157, 96, 163, 160, 41, 43, 18, 169, 154, 119, 159, 15, 17, 63, 28, 76, 183, 4, 168, 80, 104,
            161, 156, 37, 35, 11, 40, 14, 192, 134, 38, 94, 102, 113, 105, 111, 67, 87, 83, 91, 188, 89, 116, 52,
            101, 167, 198, 139, 46, 61, 164, 54, 175, 71, 191, 196, 92, 49, 181, 140, 144, 125, 199, 177, 45, 73,
            130, 186, 51, 136, 70, 69, 149, 98, 1, 29, 64, 132, 21, 82, 118, 153, 147, 78, 143, 90, 39, 152, 60, 3,
            137, 133, 148, 50, 107, 66, 20, 184, 13, 197, 84, 182, 22, 95, 93, 44, 176, 103, 62, 122, 8, 100, 150,
            127, 72, 77, 48, 129, 165, 128, 85, 194, 75, 47, 25, 142, 106, 172, 74, 117, 162, 158, 88, 59, 141, 193,
            112, 56, 135, 173, 108, 55, 189, 2, 138, 190, 6, 5, 185, 81, 26, 151, 58, 68, 114, 178, 0, 155, 110, 99,
            7, 124, 24, 53, 97, 166, 120, 115, 126, 30, 65, 16, 195, 145, 34
        ],
    },
}

#: what the reference code fed the backbone (no mean/std normalisation in either). The transform itself is the
#: backbone's/method's job; scenarios record the reference so a run can say which one it matched.
REFERENCE_TRANSFORMS: Dict[str, Dict[str, Any]] = {
    "aper": {
        "train": "RandomResizedCrop(224, scale=(0.05, 1.0), ratio=(3/4, 4/3), bilinear) + RandomHorizontalFlip + ToTensor",
        "test": "Resize(256, bicubic) + CenterCrop(224) + ToTensor",
        "normalize": False,
        "backbone": "timm vit_base_patch16_224.augreg_in21k",
        "source": "zhoudw-zdw/RevisitingCIL utils/data.py build_transform",
    },
    "lae": {
        "train": "RandomResizedCrop(224, scale=(0.08, 1.0), bilinear) + RandomHorizontalFlip + ToTensor",
        "test": "Resize(256, bilinear) + CenterCrop(224) + ToTensor",
        "normalize": False,
        "backbone": "timm vit_base_patch16_224.orig_in21k",
        "source": "gqk/LAE libml/data/transform.py build_imagenet_transform(norm=False)",
    },
}

_B_INC = re.compile(r"^B(\d+)\s*Inc(\d+)$", re.IGNORECASE)
_T_X_C = re.compile(r"^(\d+)\s*[x×]\s*(\d+)$")


def resolve_order(order: Any, n_classes: int, seed: int, dataset: str) -> Tuple[List[int], str]:
    """(class order, its name for ``info``). ``dataset`` keys the LAE orders (``cifar100``, ``imagenet-r``)."""
    if isinstance(order, str) and order.lower().startswith("lae"):
        k = order[3:]
        if k not in ("1", "2", "3"):
            raise ValueError(f"unknown LAE order '{order}'; valid: lae1, lae2, lae3")
        if k == "1":
            return list(range(n_classes)), "lae1 (natural)"
        table = LAE_ORDERS.get(dataset, {})
        if int(k) not in table:
            have = ", ".join(sorted(LAE_ORDERS))
            raise ValueError(
                f"LAE has no order {k} for {dataset} (only {have}); use order=lae1, seed1993, natural or a list"
            )
        listed = table[int(k)]
        if len(listed) != n_classes:
            raise ValueError(
                f"LAE order {k} of {dataset} covers {len(listed)} classes but the data has {n_classes}; "
                "is the dataset complete?"
            )
        return list(listed), f"lae{k}"
    resolved = resolve_class_order(n_classes, order, seed)
    if isinstance(order, str):
        return resolved, order if order != "seed" else f"seed (run seed {seed})"
    return resolved, "explicit list"


def parse_split_name(name: str, n_classes: int) -> Tuple[int, int]:
    """``"B0Inc10"`` -> (0, 10); ``"B50Inc10"`` -> (50, 10); ``"10x20"`` -> (0, 20) if 10 * 20 == n_classes."""
    text = str(name).replace(" ", "")
    m = _B_INC.match(text)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = _T_X_C.match(text)
    if m:
        tasks, per = int(m.group(1)), int(m.group(2))
        if tasks * per != n_classes:
            raise ValueError(f"split_name '{name}' = {tasks} x {per} = {tasks * per} classes, but the data has {n_classes}")
        return 0, per
    raise ValueError(
        f"unknown split_name '{name}'; use B<init>Inc<increment> (e.g. B0Inc10) or <tasks>x<classes> (e.g. 10x20)"
    )


def split_label(init: int, increment: int, n_classes: int) -> str:
    """The split's name: ``B0Inc10``, ``B50Inc10``; LAE's ``10x10`` form is added when it divides evenly."""
    label = f"B{init}Inc{increment}"
    if init == 0 and n_classes % increment == 0:
        label += f" ({n_classes // increment}x{increment})"
    return label


@dataclass
class PaperConfig(ScenarioConfig):
    """Keys shared by the paper-scale class-incremental scenarios."""

    root: Optional[str] = None  # the dataset's own folder; default: looked for under the run's data_root
    order: Any = "seed1993"  # seed1993 | natural | lae1|lae2|lae3 | seed | seed<N> | explicit list
    split_name: Optional[str] = None  # e.g. B0Inc5, B0Inc10, 10x20; wins over init/increment when set
    verify_checksums: bool = True  # compare split files with the recorded checksums
    default_backbone: str = "timm"


def finish_paper_stream(
    cfg: PaperConfig,
    name: str,
    dataset: str,
    train: SampleSet,
    test: SampleSet,
    class_names: Sequence[str],
    seed: int,
    reference: str,
    info: Optional[Dict[str, Any]] = None,
) -> Scenario:
    """Caps (drawn with ``data_seed``), class order, split name and the class-incremental split; ``info`` gets the
    split and order names and the reference transform (``reference`` = ``aper`` or ``lae``)."""
    n = len(class_names)
    init, increment = (cfg.init, cfg.increment) if cfg.split_name is None else parse_split_name(cfg.split_name, n)
    order, order_name = resolve_order(cfg.order, n, seed, dataset)
    train = cap_per_class(train, cfg.max_train_per_class, cfg.data_seed)
    test = cap_per_class(test, cfg.max_test_per_class, cfg.data_seed)
    info = dict(info or {})
    info.update(
        n_classes=n, n_train=len(train), n_test=len(test), split_name=split_label(init, increment, n),
        class_order_name=order_name, reference_transform=dict(REFERENCE_TRANSFORMS[reference]),
    )
    if isinstance(cfg.order, str) and cfg.order.lower() in ("lae1", "lae2", "lae3"):
        info["reference_run_seed"] = int(cfg.order[3:])
    return build_class_incremental(
        cfg.name or name, train, test, list(class_names), order=order, init=init, increment=increment, seed=seed, info=info
    )


def locate(
    what: str,
    scenario_root: Optional[str],
    data_root: Optional[str],
    folders: Sequence[str],
    looks_right: Callable[[str], bool],
    expected: Callable[[str], str],
    how_to_get: str,
) -> str:
    """The dataset's folder: ``scenario.root`` if given, else the first of ``<data_root>/<folder>`` (then
    ``data_root`` itself) where ``looks_right``. Otherwise ``FileNotFoundError``, one line: what was expected
    where (``expected(path)`` for the first candidate), and where to get the data."""
    if scenario_root:
        candidates = [os.path.expanduser(scenario_root)]
    elif data_root:
        base = os.path.expanduser(data_root)
        candidates = [os.path.join(base, f) for f in folders] + [base]
    else:
        raise FileNotFoundError(
            f"{what} needs data_root=PATH (or scenario.root=PATH): "
            f"expected {expected(os.path.join('DATA_ROOT', folders[0]))}; {how_to_get}"
        )
    for path in candidates:
        if os.path.isdir(path) and looks_right(path):
            return path
    raise FileNotFoundError(f"{what} not found: expected {expected(candidates[0])}; {how_to_get}")
