"""Paper-scale class-incremental loaders (CIFAR-100, ImageNet-R with its three splits, the APER pre-split folder
datasets) on small trees written here in each dataset's exact on-disk format; class orders, split names,
checksums of split files, and the one-line errors for missing data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import clpet.scenarios  # noqa: F401  (registers everything)
from clpet.cli import main
from clpet.registry import SCENARIOS
from clpet.scenarios import _checksums, cifar100 as cifar_mod
from clpet.scenarios._paper import LAE_ORDERS, parse_split_name, resolve_order
from clpet.scenarios.cifar100 import CIFAR100
from clpet.scenarios.imagenet_r import ImageNetR
from clpet.scenarios.presplit import scan_image_folder

try:
    from paper_fixtures import (
        split_entries, wnids, write_cifar100, write_coda_yaml, write_imagenet_r, write_imagenet_r_images,
        write_lae_lists, write_presplit,
    )  # fmt: skip
except ImportError:  # tests/ imported as a package
    from tests.paper_fixtures import (
        split_entries, wnids, write_cifar100, write_coda_yaml, write_imagenet_r, write_imagenet_r_images,
        write_lae_lists, write_presplit,
    )  # fmt: skip

SEED1993_FIRST_TEN = [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]  # docs/methods.md


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


def blocks(s):
    return [e.classes for e in s]


# ------------------------------------------------------------------------------------------ class orders


def test_seed1993_order_of_100_classes_starts_as_in_simplecil():
    order, name = resolve_order("seed1993", 100, seed=7, dataset="cifar100")
    assert order[:10] == SEED1993_FIRST_TEN and name == "seed1993"
    assert sorted(order) == list(range(100))


def test_lae_orders():
    assert resolve_order("lae1", 100, 0, "cifar100")[0] == list(range(100))  # natural, for any dataset
    assert resolve_order("lae1", 50, 0, "vtab")[0] == list(range(50))
    for dataset, n in (("cifar100", 100), ("imagenet-r", 200)):
        for k in (2, 3):
            order = resolve_order(f"lae{k}", n, 0, dataset)[0]
            assert order == LAE_ORDERS[dataset][k] and sorted(order) == list(range(n))
    assert LAE_ORDERS["cifar100"][2][:5] == [23, 8, 11, 7, 48]  # gqk/LAE config/base/cifar100_order2.yaml
    assert LAE_ORDERS["imagenet-r"][3][:5] == [33, 146, 79, 19, 23]  # .../imagenet-r_order3.yaml
    with pytest.raises(ValueError, match="LAE has no order 2 for imagenet-a"):
        resolve_order("lae2", 200, 0, "imagenet-a")
    with pytest.raises(ValueError, match="covers 100 classes but the data has 10"):
        resolve_order("lae2", 10, 0, "cifar100")
    with pytest.raises(ValueError, match="lae1, lae2, lae3"):
        resolve_order("lae4", 100, 0, "cifar100")


@pytest.mark.parametrize(
    "name, n, expected", [("B0Inc5", 100, (0, 5)), ("B0 Inc10", 100, (0, 10)), ("b50inc10", 100, (50, 10)),
                          ("10x20", 200, (0, 20)), ("10x10", 100, (0, 10))],
)
def test_split_names(name, n, expected):
    assert parse_split_name(name, n) == expected


def test_bad_split_names():
    with pytest.raises(ValueError, match="10 x 20 = 200 classes, but the data has 100"):
        parse_split_name("10x20", 100)
    with pytest.raises(ValueError, match="B<init>Inc<increment>"):
        parse_split_name("inc10", 100)


# ------------------------------------------------------------------------------------------ CIFAR-100


@pytest.fixture
def cifar_root(tmp_path):
    write_cifar100(tmp_path / "data")
    return str(tmp_path / "data")


def test_cifar100_reads_torchvision_pickles_with_seed1993_order(cifar_root):
    s = CIFAR100.build({"verify_checksums": False}, 0, cifar_root)
    assert s.class_order[:10] == SEED1993_FIRST_TEN
    assert len(s) == 20 and all(e.n_classes == 5 for e in s)  # default B0Inc5
    assert s.info["split_name"] == "B0Inc5 (20x5)" and s.info["class_order_name"] == "seed1993"
    assert s.class_names[0] == "class_068"
    assert sum(len(e.train) for e in s) == 300 and sum(len(e.test) for e in s) == 100
    for e in s:
        for part in (e.train, e.test):
            for x, y, i in zip(part.inputs, part.targets, part.ids):
                assert x.dtype == np.uint8 and x.shape == (32, 32, 3)
                assert x[0, 0, 0] == s.class_order[y] == i % 100  # HWC, aligned with labels and source ids
    assert s.info["reference_transform"]["test"].startswith("Resize(256, bicubic)")
    assert s.info["reference_transform"]["normalize"] is False


@pytest.mark.parametrize("split_name, sizes", [("B0Inc5", [5] * 20), ("B0Inc10", [10] * 10), ("B0Inc20", [20] * 5),
                                               ("B50Inc10", [50] + [10] * 5), ("10x10", [10] * 10)])
def test_split_names_give_the_right_class_blocks(cifar_root, split_name, sizes):
    s = CIFAR100.build({"verify_checksums": False, "split_name": split_name}, 0, cifar_root)
    assert [e.n_classes for e in s] == sizes
    start = 0
    for e, size in zip(s, sizes):
        assert e.classes == list(range(start, start + size))
        assert set(e.train.targets.tolist()) == set(e.classes) == set(e.test.targets.tolist())
        # the block holds the original classes at these positions of the seed-1993 order
        assert sorted(x[0, 0, 0] for x in e.train.inputs) == sorted(
            c for c in s.class_order[start : start + size] for _ in range(3)
        )
        start += size


def test_cifar100_init_increment_without_split_name(cifar_root):
    s = CIFAR100.build({"verify_checksums": False, "init": 40, "increment": 20, "order": "natural"}, 0, cifar_root)
    assert [e.n_classes for e in s] == [40, 20, 20, 20] and s.class_order == list(range(100))


def test_cifar100_lae_order_records_reference_seed(cifar_root):
    s = CIFAR100.build({"verify_checksums": False, "order": "lae2", "split_name": "10x10"}, 0, cifar_root)
    assert s.class_order == LAE_ORDERS["cifar100"][2] and s.info["reference_run_seed"] == 2
    assert s.info["reference_transform"]["source"].startswith("gqk/LAE")


def test_cifar100_md5_checked_and_mismatch_names_the_file(cifar_root):
    with pytest.raises(ValueError) as info:
        CIFAR100.build({}, 0, cifar_root)  # the written pickles are not the real ones
    msg = one_line(info)
    assert os.path.join("cifar-100-python", "train") in msg and "md5" in msg and "verify_checksums=false" in msg


def test_cifar100_lae_layout_and_folder_itself(tmp_path):
    write_cifar100(tmp_path / "d" / "cifar100")  # LAE: <root>/cifar100/cifar-100-python
    s = CIFAR100.build({"verify_checksums": False}, 0, str(tmp_path / "d"))
    assert s.info["root"].endswith(os.path.join("cifar100", "cifar-100-python"))
    s2 = CIFAR100.build({"verify_checksums": False, "root": s.info["root"]}, 0, None)
    assert s2.fingerprint() == s.fingerprint()


def test_cifar100_missing_offline_one_line(tmp_path, monkeypatch):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as info:
        CIFAR100.build({"download": False}, 0, missing)
    msg = one_line(info)
    assert os.path.join(missing, "cifar-100-python") in msg and "download" in msg and "cifar-100-python.tar.gz" in msg
    monkeypatch.setattr(cifar_mod, "_online", lambda *a, **k: False)
    with pytest.raises(FileNotFoundError) as info:
        CIFAR100.build({}, 0, missing)
    assert "offline" in one_line(info)


def test_cifar100_downloads_through_torchvision_when_online(tmp_path, monkeypatch):
    calls = []

    class FakeTorchvisionCIFAR100:  # stands in for the network: writes the files where torchvision would
        def __init__(self, root, train=True, download=False):
            calls.append((root, train, download))
            write_cifar100(Path(root))

    import torchvision.datasets

    monkeypatch.setattr(cifar_mod, "_online", lambda *a, **k: True)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeTorchvisionCIFAR100)
    s = CIFAR100.build({"verify_checksums": False, "download": True}, 0, str(tmp_path / "dl"))
    assert calls and calls[0] == (str(tmp_path / "dl"), True, True) and s.n_classes == 100

    class Failing:
        def __init__(self, *a, **k):
            raise RuntimeError("HTTP Error 503: Service Unavailable\nmore lines")

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", Failing)
    with pytest.raises(FileNotFoundError) as info:
        CIFAR100.build({"download": True}, 0, str(tmp_path / "dl2"))
    assert "download failed (HTTP Error 503" in one_line(info)


# ------------------------------------------------------------------------------------------ ImageNet-R


@pytest.fixture(scope="module")
def imr_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imr")
    write_imagenet_r(root, n_classes=200, per_class=3)
    return root


def test_imagenet_r_l2p_lists_lae_layout_10x20(imr_root):
    s = ImageNetR.build({}, 0, str(imr_root))  # defaults: split=l2p, order=lae1, increment=20
    assert s.n_classes == 200 and len(s) == 10 and all(e.n_classes == 20 for e in s)
    assert s.class_order == list(range(200)) and s.class_names == wnids(200)
    assert s.info["split_name"] == "B0Inc20 (10x20)" and s.info["reference_run_seed"] == 1
    assert sum(len(e.train) for e in s) == 400 and sum(len(e.test) for e in s) == 200
    for e in s:
        for p, y in zip(e.train.inputs, e.train.targets):
            assert os.path.isfile(p) and os.path.basename(os.path.dirname(p)) == s.class_names[y]
    statuses = set(s.info["split_checksums"].values())
    assert statuses == {_checksums.UNVERIFIED}  # LAE's lists have no recorded checksum
    assert s.info["reference_transform"]["source"].startswith("gqk/LAE")


@pytest.mark.parametrize("order", ["lae2", "lae3"])
def test_imagenet_r_lae_orders(imr_root, order):
    s = ImageNetR.build({"order": order}, 0, str(imr_root))
    assert s.class_order == LAE_ORDERS["imagenet-r"][int(order[-1])]
    assert set(s[0].train.targets.tolist()) == set(range(20))
    assert {wnids(200).index(n) for n in s[0].class_names} == set(s.class_order[:20])  # original ids of block 0


def test_imagenet_r_aper_split_and_seed1993(tmp_path):
    base = tmp_path / "imagenet-r"
    write_presplit(base, wnids(20), n_train=2, n_test=1)
    s = ImageNetR.build({"split": "aper", "order": "seed1993", "split_name": "B0Inc5"}, 0, str(tmp_path))
    assert s.n_classes == 20 and [e.n_classes for e in s] == [5, 5, 5, 5]
    assert s.class_order == [int(c) for c in np.random.RandomState(1993).permutation(20)]
    assert all("/test/" in p for e in s for p in e.test.inputs)
    assert s.info["reference_transform"]["source"].startswith("zhoudw-zdw/RevisitingCIL")


def _small_imr(tmp_path, n=10):
    base = tmp_path / "imagenet-r"
    files = write_imagenet_r_images(base / "imagenet-r", n, per_class=3)
    return base, split_entries(files)


def test_imagenet_r_coda_p_yaml_checked_against_recorded_checksum(tmp_path):
    base, (train, test) = _small_imr(tmp_path)
    write_coda_yaml(base, train, test)
    with pytest.raises(ValueError) as info:  # a generated file is not CODA-P's
        ImageNetR.build({"split": "coda-p", "increment": 5}, 0, str(tmp_path))
    msg = one_line(info)
    assert str(base / "imagenet-r_train.yaml") in msg and "GT-RIPL/CODA-Prompt" in msg
    s = ImageNetR.build({"split": "coda-p", "increment": 5, "verify_checksums": False}, 0, str(tmp_path))
    assert s.n_classes == 10 and sum(len(e.train) for e in s) == 20
    assert set(s.info["split_checksums"].values()) == {_checksums.NOT_CHECKED}


def test_imagenet_r_coda_p_lae_txt_variant(tmp_path):
    base, (train, test) = _small_imr(tmp_path)
    write_lae_lists(base, train, test, names=("train_list_coda-p.txt", "val_list_coda-p.txt"))
    s = ImageNetR.build({"split": "coda-p", "increment": 5}, 0, str(tmp_path))
    assert [os.path.basename(p) for p in s.info["split_files"]] == ["train_list_coda-p.txt", "val_list_coda-p.txt"]


def test_imagenet_r_corrupted_split_file_is_named(tmp_path, monkeypatch):
    base, (train, test) = _small_imr(tmp_path)
    tr, te = write_lae_lists(base, train, test)
    recorded = {  # inject the checksums of the intact files, then corrupt one
        "imagenet-r/l2p": _checksums.ReferenceFiles(
            "the LAE README", {p.name: "sha256:" + _checksums.file_digest(str(p)) for p in (tr, te)}
        )
    }
    monkeypatch.setattr(_checksums, "RECORDED", {**_checksums.RECORDED, **recorded})
    s = ImageNetR.build({"increment": 5}, 0, str(tmp_path))
    assert set(s.info["split_checksums"].values()) == {_checksums.VERIFIED}
    lines = te.read_text().splitlines()
    te.write_text("\n".join(lines[:-1]) + "\n")  # one test image dropped
    with pytest.raises(ValueError) as info:
        ImageNetR.build({"increment": 5}, 0, str(tmp_path))
    msg = one_line(info)
    assert str(te) in msg and str(tr) not in msg and "sha256" in msg


def test_imagenet_r_listed_image_missing_and_bad_lines(tmp_path):
    base, (train, test) = _small_imr(tmp_path)
    tr, te = write_lae_lists(base, train, test)
    os.remove(base / "imagenet-r" / train[0][0] / train[0][1])
    with pytest.raises(FileNotFoundError) as info:
        ImageNetR.build({"increment": 5}, 0, str(tmp_path))
    assert "1 of 20 images listed in" in one_line(info) and str(tr) in str(info.value)
    tr.write_text("imagenet-r/n1/x.jpg\n")
    with pytest.raises(ValueError, match=r"train_list.txt:1: expected '<image path> <label>'"):
        ImageNetR.build({"increment": 5}, 0, str(tmp_path))


@pytest.mark.parametrize("split, hint", [("l2p", "train_list.txt"), ("coda-p", "imagenet-r_train.yaml"),
                                         ("aper", "/train/<wnid>/*.jpg")])
def test_imagenet_r_missing_one_line(tmp_path, split, hint):
    missing = str(tmp_path / "nonexistent")
    with pytest.raises(FileNotFoundError) as info:
        ImageNetR.build({"split": split}, 0, missing)
    msg = one_line(info)
    assert os.path.join(missing, "imagenet-r") in msg and hint in msg and "data_root=PATH" in msg
    with pytest.raises(FileNotFoundError) as info:
        ImageNetR.build({"split": split}, 0, None)
    assert "needs data_root=PATH" in one_line(info)


def test_clpet_run_imagenet_r_nonexistent_fails_at_once_with_one_line(capsys):
    assert main(["run", "scenario=imagenet-r", "data_root=/nonexistent", "progress=false", "plots=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "/nonexistent/imagenet-r/train_list.txt" in err and "hendrycks/imagenet-r" in err


# ------------------------------------------------------------------------------------------ APER pre-split folders

PRESPLIT = [  # name, folder under data_root (the reference's), default increment, default order
    ("imagenet-a", "imagenet-a", 10, "seed1993"),
    ("cub200", "cub", 10, "seed1993"),
    ("objectnet", "objectnet", 10, "seed1993"),
    ("omnibenchmark", "omnibenchmark", 30, "seed1993"),
    ("vtab", "vtab-cil/vtab", 10, "natural"),
]


@pytest.mark.parametrize("name, folder, increment, order", PRESPLIT, ids=[p[0] for p in PRESPLIT])
def test_presplit_folder_datasets(tmp_path, name, folder, increment, order):
    classes = [f"{k:02d}_{name}_class" for k in range(12, 0, -1)]  # written in reverse: sorted on reading
    write_presplit(tmp_path / folder, classes, n_train=2, n_test=1, ext=".JPEG")
    cls = SCENARIOS.get(name)
    cfg = cls.Config()
    assert cfg.increment == increment and cfg.order == order
    s = cls.build({"increment": 4}, 0, str(tmp_path))
    assert sorted(s.class_names) == sorted(classes) and [e.n_classes for e in s] == [4, 4, 4]
    seed1993 = [int(c) for c in np.random.RandomState(1993).permutation(12)]
    expected_order = list(range(12)) if order == "natural" else seed1993
    assert s.class_order == expected_order
    assert sum(len(e.train) for e in s) == 24 and sum(len(e.test) for e in s) == 12
    assert "warning" in s.info  # 12 classes, not the reference's count
    for e in s:
        for p, y in zip(e.train.inputs, e.train.targets):
            assert os.path.basename(p).startswith(s.class_names[y])


def test_presplit_scan_matches_torchvision_image_folder(tmp_path):
    from torchvision.datasets import ImageFolder

    root = write_presplit(tmp_path / "x", ["b", "a", "c"], n_train=3, n_test=1) / "train"
    (root / "a" / "notes.txt").write_text("not an image")
    names, paths, labels = scan_image_folder(str(root))
    ref = ImageFolder(str(root))
    assert names == ref.classes and [(p, int(y)) for p, y in zip(paths, labels)] == ref.samples


def test_presplit_class_mismatch_and_empty_class(tmp_path):
    base = write_presplit(tmp_path / "imagenet-a", ["a", "b"])
    write_presplit(tmp_path / "other", ["c"])
    os.rename(tmp_path / "other" / "test" / "c", base / "test" / "c")
    with pytest.raises(ValueError) as info:
        SCENARIOS.get("imagenet-a").build({}, 0, str(tmp_path))
    assert "differing: c" in one_line(info)
    (base / "test" / "c" / "c_t0.jpg").unlink()
    (base / "train" / "c").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        SCENARIOS.get("imagenet-a").build({}, 0, str(tmp_path))
    assert "no valid file for the classes c" in one_line(info)


@pytest.mark.parametrize("name, folder", [(p[0], p[1]) for p in PRESPLIT])
def test_presplit_missing_one_line(tmp_path, name, folder):
    with pytest.raises(FileNotFoundError) as info:
        SCENARIOS.get(name).build({}, 0, str(tmp_path / "nonexistent"))
    msg = one_line(info)
    assert os.path.join(str(tmp_path / "nonexistent"), folder, "train") in msg and "RevisitingCIL" in msg


def test_presplit_data_root_is_the_dataset_folder(tmp_path):
    write_presplit(tmp_path / "vtab_here", ["x", "y"])
    s = SCENARIOS.get("vtab").build({"increment": 1}, 0, str(tmp_path / "vtab_here"))
    assert s.class_names == ["x", "y"]


# ------------------------------------------------------------------------------------------ registry and list


def test_clpet_list_shows_every_paper_scenario(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("cifar100", "imagenet-r", "imagenet-a", "cub200", "objectnet", "omnibenchmark", "vtab",
                 "cifar100-fscil", "mini-imagenet-fscil", "cub200-fscil", "clipart-fscil", "wordnet-fscil"):
        assert f"  {name} " in out
