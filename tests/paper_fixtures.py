"""Writers of small datasets in the exact on-disk formats of the paper-scale loaders (tests only): CIFAR-100's
python pickles, ImageNet-R with its L2P/LAE and CODA-P list files, the APER pre-split folders, miniImageNet and
CUB-200-2011 in the FSCIL code's layouts, and CEC-style session index files."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import yaml
from PIL import Image


def write_jpeg(path: Path, value: int = 0, size: Tuple[int, int] = (6, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value % 256, dtype=np.uint8), "RGB").save(path, format="JPEG")
    return path


# ---------------------------------------------------------------------------------------------- CIFAR-100


def write_cifar100(root: Path, n_train: int = 3, n_test: int = 1, n_classes: int = 100) -> Path:
    """``root/cifar-100-python/{train,test,meta}`` as torchvision's pickles: ``data`` (N, 3072) uint8 channel-major,
    ``fine_labels``; labels interleaved (sample i has class i % n_classes); pixel (0, 0) red = the label."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for split, per in (("train", n_train), ("test", n_test)):
        labels = np.tile(np.arange(n_classes), per)
        data = rng.randint(0, 256, size=(len(labels), 3072)).astype(np.uint8)
        data[:, 0] = labels  # channel 0, row 0, column 0
        entry = {
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
            "batch_label": f"{split} batch",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": data,
        }
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {"fine_label_names": [f"class_{i:03d}" for i in range(n_classes)],
            "coarse_label_names": [f"super_{i}" for i in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


# ---------------------------------------------------------------------------------------------- ImageNet-R


def wnids(n: int) -> List[str]:
    return [f"n{10000000 + 7 * i:08d}" for i in range(n)]


def write_imagenet_r_images(images: Path, n_classes: int = 200, per_class: int = 3) -> Dict[str, List[str]]:
    """``images/<wnid>/<style>_<k>.jpg``; returns wnid -> file names."""
    out = {}
    styles = ["art", "cartoon", "sketch", "toy"]
    for c, w in enumerate(wnids(n_classes)):
        names = [f"{styles[k % 4]}_{k}.jpg" for k in range(per_class)]
        for k, name in enumerate(names):
            write_jpeg(images / w / name, value=c + k)
        out[w] = names
    return out


def split_entries(files: Dict[str, List[str]], test_per_class: int = 1):
    """(train, test) lists of (wnid, file, label): the last ``test_per_class`` files of each class go to test."""
    train, test = [], []
    for label, w in enumerate(sorted(files)):
        names = files[w]
        train += [(w, f, label) for f in names[: len(names) - test_per_class]]
        test += [(w, f, label) for f in names[len(names) - test_per_class :]]
    return train, test


def write_lae_lists(base: Path, train, test, names=("train_list.txt", "val_list.txt")) -> Tuple[Path, Path]:
    """LAE / L2P list files: ``imagenet-r/<wnid>/<file> <label>`` per line."""
    paths = []
    for name, rows in zip(names, (train, test)):
        p = base / name
        p.write_text("".join(f"imagenet-r/{w}/{f} {y}\n" for w, f, y in rows))
        paths.append(p)
    return paths[0], paths[1]


def write_coda_yaml(base: Path, train, test) -> Tuple[Path, Path]:
    """CODA-Prompt split files: ``data`` (paths ``data/imagenet-r/<wnid>/<file>``) and ``targets``."""
    paths = []
    for name, rows in (("imagenet-r_train.yaml", train), ("imagenet-r_test.yaml", test)):
        doc = {"data": [f"data/imagenet-r/{w}/{f}" for w, f, _ in rows], "targets": [y for _, _, y in rows]}
        p = base / name
        p.write_text(yaml.safe_dump(doc))
        paths.append(p)
    return paths[0], paths[1]


def write_imagenet_r(data_root: Path, n_classes: int = 200, per_class: int = 3, layout: str = "lae") -> Path:
    """An ImageNet-R tree with the LAE layout ``data_root/imagenet-r/{imagenet-r/<wnid>/, train_list.txt,
    val_list.txt}``; returns ``data_root/imagenet-r``."""
    base = data_root / "imagenet-r"
    files = write_imagenet_r_images(base / "imagenet-r", n_classes, per_class)
    train, test = split_entries(files)
    write_lae_lists(base, train, test)
    return base


# ---------------------------------------------------------------------------------------------- APER folders


def write_presplit(base: Path, classes: Sequence[str], n_train: int = 2, n_test: int = 1, ext: str = ".jpg") -> Path:
    """``base/train/<class>/*`` and ``base/test/<class>/*`` (one train image nested in a subfolder)."""
    for c, name in enumerate(classes):
        for k in range(n_train):
            sub = base / "train" / name / ("nested" if k == 0 and n_train > 1 else "")
            write_jpeg(sub / f"{name}_{k}{ext}", value=c)
        for k in range(n_test):
            write_jpeg(base / "test" / name / f"{name}_t{k}{ext}", value=c)
    return base


# ---------------------------------------------------------------------------------------------- FSCIL layouts


def write_index_files(folder: Path, sessions: Dict[int, Sequence[str]]) -> Path:
    """``folder/session_<k>.txt``, one entry per line (CEC's index_list format)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, lines in sessions.items():
        (folder / f"session_{k}.txt").write_text("".join(f"{x}\n" for x in lines))
    return folder


def write_mini_imagenet(data_root: Path, n_classes: int = 20, n_train: int = 7, n_test: int = 2) -> Path:
    """CEC's layout: ``miniimagenet/images/<wnid><8 digits>.jpg`` and ``miniimagenet/split/{train,test}.csv``."""
    base = data_root / "miniimagenet"
    rows = {"train": [], "test": []}
    for c, w in enumerate(wnids(n_classes)):
        for k in range(n_train + n_test):
            name = f"{w}{k + 1:08d}.jpg"
            write_jpeg(base / "images" / name, value=c)
            rows["train" if k < n_train else "test"].append((name, w))
    (base / "split").mkdir(parents=True, exist_ok=True)
    for split, r in rows.items():
        (base / "split" / f"{split}.csv").write_text("filename,label\n" + "".join(f"{n},{w}\n" for n, w in r))
    return base


def write_cub(data_root: Path, n_classes: int = 20, n_train: int = 7, n_test: int = 2) -> Path:
    """``CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, images/}`` with
    train and test images interleaved in image-id order."""
    base = data_root / "CUB_200_2011"
    images, labels, split, classes = [], [], [], []
    i = 0
    for c in range(n_classes):
        folder = f"{c + 1:03d}.Bird_{c}"
        classes.append(f"{c + 1} {folder}")
        for k in range(n_train + n_test):
            i += 1
            rel = f"{folder}/Bird_{c}_{k:04d}_{1000 + i}.jpg"
            write_jpeg(base / "images" / rel, value=c)
            images.append(f"{i} {rel}")
            labels.append(f"{i} {c + 1}")
            split.append(f"{i} {0 if k % 3 == 2 and k // 3 < n_test else 1}")
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("classes.txt", classes)):
        (base / name).write_text("\n".join(lines) + "\n")
    return base
