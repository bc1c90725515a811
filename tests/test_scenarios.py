"""Scenario loaders on small data written by the tests in the real on-disk formats, plus the YAML configs and
(marked ``real``) the packaged Debian datasets."""
from __future__ import annotations

import dataclasses
import gzip
import os
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import clpet.scenarios
from clpet.registry import SCENARIOS
from clpet.scenarios.base import Scenario
from clpet.scenarios.clipart import OpenClipart
from clpet.scenarios.common import as_config, holdout_split
from clpet.scenarios.fashion_mnist import CLASS_NAMES as FASHION_NAMES
from clpet.scenarios.fashion_mnist import FashionMNIST, read_idx
from clpet.scenarios.image_folder import ImageFolder
from clpet.scenarios.synthetic import SyntheticBlobs
from clpet.scenarios.text_csv import TextCSV
from clpet.scenarios.wordnet import LEXNAMES, WordNetSupersenses, synset_text

try:
    from scenario_fixtures import (
        idx_bytes, symlink, text_rows, write_csv, write_fashion_mnist, write_idx_gz, write_image_tree, write_png,
        write_png_header_only, write_wordnet,
    )  # fmt: skip
except ImportError:  # tests/ imported as a package
    from tests.scenario_fixtures import (
        idx_bytes, symlink, text_rows, write_csv, write_fashion_mnist, write_idx_gz, write_image_tree, write_png,
        write_png_header_only, write_wordnet,
    )  # fmt: skip

REPO = Path(__file__).resolve().parents[1]
HELPER_MODULES = {"validation", "base", "common", "images"}  # clpet/scenarios modules that define no scenario

# ------------------------------------------------------------------ small datasets, one per loader

WORDNET_LEX = {0: 9, 2: 7, 5: 10, 16: 6, 18: 8, 38: 7, 44: 5}  # lex_filenum -> synsets


def make_wordnet(tmp: Path):
    write_wordnet(tmp / "wn", WORDNET_LEX)
    return WordNetSupersenses, {"root": str(tmp / "wn"), "increment": 2, "max_train_per_class": 4}, None


def make_clipart(tmp: Path):
    root = tmp / "png"
    for i, folder in enumerate(["animals", "animals/birds", "food/fruit", "office", "shapes/arrows"]):
        for k in range(6 + i):
            write_png(root / folder / f"img_{k:02d}.png", "RGBA" if k == 0 else "RGB", value=10 * i + k)
    return OpenClipart, {"root": str(root), "min_images_per_class": 5, "exclude": [], "increment": 2}, None


def make_fashion(tmp: Path):
    write_fashion_mnist(tmp / "fm")
    return FashionMNIST, {"root": str(tmp / "fm"), "max_train_per_class": 8, "max_test_per_class": 3}, None


def make_image_folder(tmp: Path):
    counts = {"cat": 5, "dog": 6, "eel": 4, "fox": 7, "gnu": 5}
    write_image_tree(tmp / "imgs" / "train", counts)
    write_image_tree(tmp / "imgs" / "test", {c: 2 for c in counts}, ext=".JPG")
    return ImageFolder, {}, str(tmp / "imgs")  # data given through the run's data_root


def make_text_csv(tmp: Path):
    write_csv(tmp / "t.csv", text_rows(["sport", "tech", "arts", "food", "news"], per_class=6))
    return TextCSV, {"increment": 2}, str(tmp / "t.csv")


def make_synthetic(tmp: Path):
    return SyntheticBlobs, {"n_classes": 6, "train_per_class": 10, "test_per_class": 4}, None


MAKERS = [make_wordnet, make_clipart, make_fashion, make_image_folder, make_text_csv, make_synthetic]


def build(maker, tmp: Path, seed: int = 0, **overrides) -> Scenario:
    cls, cfg, data_root = maker(tmp)
    return cls.build({**cfg, **overrides}, seed, data_root)


def stream_signature(s: Scenario):
    """Everything a stream is made of, as comparable Python values."""
    out = [s.class_order, s.class_names]
    for e in s:
        for part in (e.train, e.test):
            inputs = [x.tobytes() if isinstance(x, np.ndarray) else x for x in part.inputs]
            out.append((e.classes, part.ids.tolist(), part.targets.tolist(), inputs))
    return out


def counts_per_class(targets: np.ndarray):
    return np.unique(targets, return_counts=True)[1]


# ------------------------------------------------------------------ properties every loader has


@pytest.mark.parametrize("maker", MAKERS, ids=lambda m: m.__name__[5:])
def test_same_seed_same_stream_and_seed_changes_order(maker, tmp_path):
    a, b = build(maker, tmp_path, seed=3), build(maker, tmp_path, seed=3)
    assert stream_signature(a) == stream_signature(b)
    assert a.fingerprint() == b.fingerprint()
    orders = {tuple(build(maker, tmp_path, seed=s).class_order) for s in range(4)}
    assert len(orders) > 1, "the class order must depend on the seed (order=seed)"


@pytest.mark.parametrize("maker", MAKERS, ids=lambda m: m.__name__[5:])
def test_experiences_are_contiguous_class_blocks(maker, tmp_path):
    s = build(maker, tmp_path, init=3, increment=1)
    sizes = [e.n_classes for e in s]
    assert sizes[0] == 3 and all(n == 1 for n in sizes[1:]) and sum(sizes) == s.n_classes
    start = 0
    for e in s:
        assert e.classes == list(range(start, start + e.n_classes))
        for part in (e.train, e.test):
            assert len(part) > 0
            assert set(part.targets.tolist()) == set(e.classes)
            assert part.modality == s.modality
        assert e.class_names == [s.class_names[c] for c in e.classes]
        start += e.n_classes
    assert sorted(s.class_order) == list(range(s.n_classes))


@pytest.mark.parametrize("maker", MAKERS, ids=lambda m: m.__name__[5:])
def test_caps_respected_and_drawn_with_data_seed(maker, tmp_path):
    capped = build(maker, tmp_path, max_train_per_class=3, max_test_per_class=1)
    for e in capped:
        assert counts_per_class(e.train.targets).max() <= 3
        assert counts_per_class(e.test.targets).max() <= 1
    other = build(maker, tmp_path, max_train_per_class=3, max_test_per_class=1, data_seed=7)
    train_ids = lambda s: sorted(i for e in s for i in e.train.ids.tolist())  # noqa: E731
    assert train_ids(capped) != train_ids(other)


@pytest.mark.parametrize("maker", MAKERS, ids=lambda m: m.__name__[5:])
def test_train_and_test_do_not_share_samples_when_split_from_one_source(maker, tmp_path):
    s = build(maker, tmp_path)
    for e in s:
        assert len(set(e.train.ids.tolist())) == len(e.train)
        assert len(set(e.test.ids.tolist())) == len(e.test)
    if maker in (make_wordnet, make_clipart, make_text_csv):  # held-out splits share the id space
        train = {i for e in s for i in e.train.ids.tolist()}
        test = {i for e in s for i in e.test.ids.tolist()}
        assert not train & test


def test_unknown_config_key_is_rejected():
    with pytest.raises(Exception, match="roott"):
        as_config(WordNetSupersenses.Config, {"roott": "/x"})


def test_holdout_split_is_per_class_disjoint_and_deterministic():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 1 + [3] * 2)
    tr, te = holdout_split(labels, 0.3, data_seed=5)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[te], minlength=4).tolist() == [3, 1, 0, 1]  # >= 1, but a singleton stays in train
    tr2, te2 = holdout_split(labels, 0.3, data_seed=5)
    assert tr.tolist() == tr2.tolist() and te.tolist() == te2.tolist()
    with pytest.raises(ValueError, match="test_fraction"):
        holdout_split(labels, 1.0, 0)


# ------------------------------------------------------------------ wordnet


def test_synset_text_format():
    gloss = '(usually followed by `to\') having the means; "able to swim"; "she was able"'
    expected = "able, capable of: (usually followed by `to') having the means"
    assert synset_text(["able", "capable_of(p)"], gloss) == expected
    assert synset_text(["hello"], '"hi there"; a greeting') == "hello"


def test_wordnet_parses_wndb_files(tmp_path):
    root = write_wordnet(tmp_path / "wn", WORDNET_LEX)
    with open(root / "data.noun", "a", encoding="utf-8") as f:  # a synset with 10 (0x0a) words
        words = " ".join(f"w{i} 0" for i in range(10))
        f.write(f"09999999 05 n 0a {words} 000 | ten words; \"example\"\n")
    s = WordNetSupersenses.build({"root": str(root), "test_fraction": 0.3, "increment": 3}, 0, None)
    assert sorted(s.class_names) == sorted(LEXNAMES[i] for i in WORDNET_LEX)
    assert s.modality == "text" and s.info["n_classes"] == len(WORDNET_LEX)
    texts = [t for e in s for part in (e.train, e.test) for t in part.inputs]
    assert len(texts) == sum(WORDNET_LEX.values()) + 1
    assert "w0, w1, w2, w3, w4, w5, w6, w7, w8, w9: ten words" in texts
    assert any(t.startswith("word 44 0, alt0: meaning 0 of lexfile 44") for t in texts)  # adj marker dropped
    assert not any("example" in t or "second sense" in t for t in texts)
    for e in s:  # names follow the remapped labels
        for t, y in zip(e.train.inputs, e.train.targets):
            lex = int(t.split()[1]) if t.startswith("word ") else 5  # "word <lex> <k>, ..."
            assert s.class_names[y] == LEXNAMES[lex]


def test_wordnet_test_split_is_a_held_out_fraction(tmp_path):
    write_wordnet(tmp_path / "wn", {3: 10, 4: 20})
    s = WordNetSupersenses.build({"root": str(tmp_path / "wn"), "increment": 2, "max_train_per_class": None}, 0, None)
    (e,) = s.experiences
    names = {c: s.class_names[c] for c in e.classes}
    got = {names[c]: int(n) for c, n in zip(*np.unique(e.test.targets, return_counts=True))}
    assert got == {"noun.Tops": 3, "noun.act": 6}


def test_root_precedence_scenario_root_over_data_root(tmp_path):
    write_wordnet(tmp_path / "a", {3: 4, 4: 4})
    write_wordnet(tmp_path / "b", {3: 4, 5: 4})
    cfg = {"increment": 2}
    assert WordNetSupersenses.build({**cfg, "root": str(tmp_path / "a")}, 0, str(tmp_path / "b")).info["root"] == str(
        tmp_path / "a"
    )
    from_data_root = WordNetSupersenses.build(cfg, 0, str(tmp_path / "b"))
    assert sorted(from_data_root.class_names) == ["noun.Tops", "noun.animal"]


# ------------------------------------------------------------------ clipart


def test_clipart_classes_and_image_filters(tmp_path):
    root = tmp_path / "png"
    for k in range(4):
        write_png(root / "animals" / f"a{k}.png", "RGBA" if k == 0 else "RGB", value=k)
        write_png(root / "food" / "fruit" / f"f{k}.png", "LA" if k == 0 else "L", value=k)
        write_png(root / "unsorted" / f"u{k}.png", value=k)  # excluded folder
    write_png(root / "food" / "fruit" / "deep" / "only_one.png")  # too few images: not a class
    (root / "food" / "fruit" / "broken.png").write_bytes(b"not a png at all")  # unreadable: skipped
    write_png_header_only(root / "animals" / "huge.png", 10_000, 5_000)  # 50 MP: skipped
    (root / "animals" / "notes.txt").write_text("not an image")
    symlink(root / "animals" / "a1.png", root / "food" / "fruit" / "linked.png")  # a link: not counted
    cfg = {"root": str(root), "min_images_per_class": 4, "exclude": ["unsorted"], "increment": 1, "order": "natural"}
    s = OpenClipart.build(cfg, 0, None)
    assert s.class_names == ["animals", "food/fruit"] and s.modality == "image"
    paths = sorted(p for e in s for part in (e.train, e.test) for p in part.inputs)
    assert all(isinstance(p, str) and os.path.isfile(p) for p in paths)
    names = [os.path.relpath(p, root) for p in paths]
    assert names == ["animals/a0.png", "animals/a1.png", "animals/a2.png", "animals/a3.png"] + [
        f"food/fruit/f{k}.png" for k in range(4)
    ]
    everything = OpenClipart.build({**cfg, "exclude": []}, 0, None)
    assert everything.class_names == ["animals", "food/fruit", "unsorted"]
    with pytest.raises(ValueError, match="min_images_per_class=5"):  # huge.png and the link do not count
        OpenClipart.build({**cfg, "min_images_per_class": 5}, 0, None)
    # the exclude list applies to the folder and everything below it
    sub = OpenClipart.build({**cfg, "exclude": ["food", "unsorted"]}, 0, None)
    assert sub.class_names == ["animals"]
    lenient = OpenClipart.build({**cfg, "max_megapixels": 60.0, "min_images_per_class": 5}, 0, None)
    assert lenient.class_names == ["animals"]  # huge.png counts once allowed


# ------------------------------------------------------------------ fashion-mnist


def test_fashion_mnist_reads_idx_gz(tmp_path):
    write_fashion_mnist(tmp_path / "fm", n_train=6, n_test=2)
    s = FashionMNIST.build({"root": str(tmp_path / "fm"), "max_train_per_class": None, "order": "natural"}, 0, None)
    assert s.class_names == list(FASHION_NAMES) and len(s) == 5
    assert sum(len(e.train) for e in s) == 60 and sum(len(e.test) for e in s) == 20
    for e in s:
        assert e.train.split == "train" and e.test.split == "test"
        for part in (e.train, e.test):
            for x, y, i in zip(part.inputs, part.targets, part.ids):
                assert x.dtype == np.uint8 and x.shape == (28, 28)
                assert x[0, 0] == y  # images stay aligned with labels (natural order: remap is identity)
                assert i % 10 == y  # ids are source positions (labels were written interleaved)


def test_read_idx_roundtrip_and_uncompressed(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx_gz(tmp_path / "a.gz", arr)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    assert np.array_equal(read_idx(str(tmp_path / "a.gz")), arr)
    assert np.array_equal(read_idx(str(tmp_path / "a")), arr)


def _one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


@pytest.mark.parametrize(
    "content, match",
    [
        (idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5], "need 2352 data bytes, found 2347"),
        (b"\x00\x00\x0d\x03" + bytes(20), "magic number"),
        (b"", "magic number"),
        ("not-gzip", "BadGzipFile"),
        ("truncated-gzip", "EOFError"),
    ],
)
def test_read_idx_corrupt_file_one_line_error(tmp_path, content, match):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    if content == "not-gzip":
        path.write_bytes(idx_bytes(np.zeros((2, 2), np.uint8)))
    elif content == "truncated-gzip":
        path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))[:-30])
    else:
        path.write_bytes(gzip.compress(content))
    with pytest.raises(ValueError) as info:
        read_idx(str(path))
    msg = _one_line_error(info)
    assert str(path) in msg and match in msg


def test_fashion_mnist_corrupt_file_fails_build(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm")
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(ValueError) as info:
        FashionMNIST.build({"root": str(root)}, 0, None)
    assert "t10k-labels-idx1-ubyte.gz" in _one_line_error(info)


# ------------------------------------------------------------------ image-folder


def test_image_folder_single_tree_split(tmp_path):
    write_image_tree(tmp_path / "one", {"b_cls": 4, "a_cls": 5}, ext=".jpeg")
    (tmp_path / "one" / "a_cls" / "readme.md").write_text("ignored")
    (tmp_path / "one" / "empty").mkdir()  # no images: not a class
    s = ImageFolder.build({"order": "natural", "test_fraction": 0.25}, 0, str(tmp_path / "one"))
    assert s.class_names == ["a_cls", "b_cls"] and s.info["layout"] == "single tree"
    (e,) = s.experiences
    assert len(e.train) + len(e.test) == 9 and counts_per_class(e.test.targets).tolist() == [1, 1]
    assert all(p.endswith(".jpeg") for p in e.train.inputs)


def test_image_folder_train_test_trees(tmp_path):
    s = build(make_image_folder, tmp_path, order="natural", increment=5)
    assert s.class_names == ["cat", "dog", "eel", "fox", "gnu"] and s.info["layout"] == "train/test"
    (e,) = s.experiences
    assert len(e.train) == 27 and len(e.test) == 10
    assert all("/test/" in p and p.endswith(".JPG") for p in e.test.inputs)  # upper-case extension accepted


def test_image_folder_class_mismatch_and_missing_half(tmp_path):
    write_image_tree(tmp_path / "d" / "train", {"a": 2, "b": 2})
    with pytest.raises(FileNotFoundError) as info:
        ImageFolder.build({}, 0, str(tmp_path / "d"))
    assert "test" in _one_line_error(info)
    write_image_tree(tmp_path / "d" / "test", {"a": 1, "c": 1})
    with pytest.raises(ValueError) as info:
        ImageFolder.build({}, 0, str(tmp_path / "d"))
    assert "b, c" in _one_line_error(info)


# ------------------------------------------------------------------ text-csv


def test_text_csv_single_file_integer_labels_sorted_numerically(tmp_path):
    path = write_csv(tmp_path / "d.csv", text_rows([10, 2, 1], per_class=4))
    s = TextCSV.build({"order": "natural", "increment": 3}, 0, str(path))
    assert s.class_names == ["1", "2", "10"] and s.modality == "text"
    (e,) = s.experiences
    assert len(e.train) + len(e.test) == 12
    assert all(t.startswith("sample") and "\nline two" in t for t in e.train.inputs)


def test_text_csv_folder_and_custom_columns(tmp_path):
    header = ("id", "body", "topic")
    write_csv(tmp_path / "d" / "train.csv", [[i, f"t{i}", lab] for i, lab in enumerate("abcabc")], header)
    write_csv(tmp_path / "d" / "test.csv", [[i, f"s{i}", lab] for i, lab in enumerate("cba")], header)
    cfg = {"text_column": "body", "label_column": "topic", "order": "natural", "increment": 3}
    (e,) = TextCSV.build(cfg, 0, str(tmp_path / "d")).experiences
    assert e.train.inputs == ["t0", "t1", "t2", "t3", "t4", "t5"] and e.train.targets.tolist() == [0, 1, 2, 0, 1, 2]
    assert e.test.inputs == ["s0", "s1", "s2"] and e.test.targets.tolist() == [2, 1, 0]
    assert e.test.ids.tolist() == [0, 1, 2]


def test_text_csv_errors(tmp_path):
    path = write_csv(tmp_path / "d.csv", [["x", "y"]], header=("sentence", "label"))
    with pytest.raises(ValueError) as info:
        TextCSV.build({}, 0, str(path))
    assert "no column 'text'" in _one_line_error(info) and "sentence, label" in str(info.value)
    write_csv(tmp_path / "f" / "train.csv", [["x", "a"], ["y", "b"]])
    write_csv(tmp_path / "f" / "test.csv", [["x", "a"], ["z", "zz"]])
    with pytest.raises(ValueError, match="absent from train.csv: zz"):
        TextCSV.build({}, 0, str(tmp_path / "f"))


# ------------------------------------------------------------------ synthetic


def test_synthetic_vectors():
    s = SyntheticBlobs.build({"n_classes": 4, "dim": 5, "train_per_class": 7, "test_per_class": 3}, 0, None)
    x = s[0].train.inputs[0]
    assert s.modality == "vector" and x.dtype == np.float32 and x.shape == (5,)
    assert sum(len(e.train) for e in s) == 28 and sum(len(e.test) for e in s) == 12
    cfg = {"n_classes": 4, "dim": 5, "train_per_class": 7, "test_per_class": 3, "data_seed": 1}
    other = SyntheticBlobs.build(cfg, 0, None)
    assert not np.array_equal(x, other[0].train.inputs[0])


# ------------------------------------------------------------------ one-line errors for missing data


@pytest.mark.parametrize(
    "cls, hint",
    [
        (WordNetSupersenses, "apt-get install wordnet-base"),
        (OpenClipart, "apt-get install openclipart-png"),
        (FashionMNIST, "apt-get install dataset-fashion-mnist"),
        (ImageFolder, "expected root/train/<class>"),
        (TextCSV, "train.csv and test.csv"),
    ],
)
def test_missing_data_one_line_error(cls, hint, tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as info:
        cls.build({"root": missing}, 0, None)
    msg = _one_line_error(info)
    assert missing in msg and hint in msg


@pytest.mark.parametrize("cls", [ImageFolder, TextCSV])
def test_user_data_scenarios_require_data_root(cls):
    with pytest.raises(FileNotFoundError) as info:
        cls.build({}, 0, None)
    assert "data_root=PATH" in _one_line_error(info)


def test_fashion_mnist_missing_one_file(tmp_path):
    root = write_fashion_mnist(tmp_path / "fm")
    (root / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        FashionMNIST.build({}, 0, str(root))
    assert "train-labels-idx1-ubyte" in _one_line_error(info)


# ------------------------------------------------------------------ YAMLs and registration


YAMLS = sorted((REPO / "scenarios").glob("*.yaml"))


def test_there_is_a_yaml_per_scenario():
    ours = {n for n in SCENARIOS.names() if SCENARIOS.get(n).__module__.startswith("clpet.scenarios.")}
    assert {OmegaConf.load(p).name for p in YAMLS} >= ours


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_yaml_keys_are_accepted_by_its_config(path):
    raw = OmegaConf.load(path)
    assert raw.name == path.stem, "a scenario YAML is named after its registry name"
    cls = SCENARIOS.get(raw.name)
    merged = OmegaConf.merge(OmegaConf.structured(cls.Config), raw)
    assert isinstance(OmegaConf.to_object(merged), cls.Config)
    assert path.read_text().startswith("#"), "each scenario YAML starts with a header comment"
    assert set(raw.keys()) <= {f.name for f in dataclasses.fields(cls.Config)}


def test_every_scenario_module_registers_and_is_imported_by_the_package():
    # in a fresh interpreter: this test file imports the modules itself
    code = (
        "import clpet.scenarios, sys; from clpet.registry import SCENARIOS; "
        "print(' '.join(sorted({SCENARIOS.get(n).__module__ for n in SCENARIOS.names()})))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    registered_by = set(out.stdout.split())
    for info in pkgutil.iter_modules(clpet.scenarios.__path__):
        if info.name in HELPER_MODULES or info.name.startswith("_"):
            continue
        module = f"clpet.scenarios.{info.name}"
        assert module in registered_by, f"{module} registers no scenario, or clpet.scenarios does not import it"


# ------------------------------------------------------------------ the packaged Debian datasets


@pytest.mark.real
@pytest.mark.parametrize(
    "name, root, n_classes, n_experiences",
    [
        ("wordnet", "/usr/share/wordnet", 45, 5),
        ("clipart", "/usr/share/openclipart/png", 34, 7),
        ("fashion-mnist", "/usr/share/datasets/fashion-mnist", 10, 5),
    ],
)
def test_real_packaged_datasets(name, root, n_classes, n_experiences):
    if not os.path.isdir(root):
        pytest.skip(f"{root} not installed")
    cls = SCENARIOS.get(name)
    start = time.perf_counter()
    s = cls.build(None, 0, None)
    elapsed = time.perf_counter() - start
    assert s.n_classes == n_classes and len(s) == n_experiences
    cfg = cls.Config()
    for e in s:
        assert counts_per_class(e.train.targets).max() <= cfg.max_train_per_class
        assert counts_per_class(e.test.targets).max() <= cfg.max_test_per_class
        assert len(np.unique(e.test.targets)) == e.n_classes  # every class has test samples
    assert cls.build(None, 0, None).fingerprint() == s.fingerprint()
    assert elapsed < 30, f"{name} took {elapsed:.1f}s to build"
