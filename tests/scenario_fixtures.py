"""Writers of small datasets in the real on-disk formats, for the scenario loader tests."""
from __future__ import annotations

import csv
import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image

# ---------------------------------------------------------------- WordNet (wndb(5WN))

LICENSE_LINES = [
    "  1 This software and database is being provided to you, the LICENSEE, by  ",
    "  2 Princeton University under the following license.  ",
    "  3   ",
]

#: which data file holds a lex_filenum, and the ss_type used there
_POS = {"adj": "a", "adv": "r", "noun": "n", "verb": "v"}


def _pos_of(lex: int) -> str:
    if lex in (0, 1, 44):
        return "adj"
    if lex == 2:
        return "adv"
    return "noun" if lex <= 28 else "verb"


def wndb_line(offset: int, lex: int, ss_type: str, words: Sequence[str], gloss: str, verb: bool = False) -> str:
    """One synset line: offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt pointers [frames] | gloss."""
    word_part = " ".join(f"{w} {i % 16:x}" for i, w in enumerate(words))
    pointers = "002 @ 00001740 n 0000 ~ 00002098 n 0000"
    frames = " 01 + 02 00" if verb else ""
    return f"{offset:08d} {lex:02d} {ss_type} {len(words):02x} {word_part} {pointers}{frames} | {gloss}  "


def write_wordnet(root: Path, per_lex: Dict[int, int]) -> Path:
    """data.{adj,adv,noun,verb} with ``per_lex[lex]`` synsets of each lexicographer file."""
    root.mkdir(parents=True, exist_ok=True)
    lines: Dict[str, List[str]] = {p: list(LICENSE_LINES) for p in _POS}
    offset = 1000
    for lex in sorted(per_lex):
        pos = _pos_of(lex)
        for k in range(per_lex[lex]):
            ss_type = "s" if pos == "adj" and k % 2 else _POS[pos]
            words = [f"word_{lex}_{k}", f"alt{k}(ip)" if pos == "adj" else f"alt{k}"]
            gloss = f'meaning {k} of lexfile {lex}; a second sense; "an example {k}"'
            lines[pos].append(wndb_line(offset, lex, ss_type, words, gloss, verb=pos == "verb"))
            offset += 200
    for pos, rows in lines.items():
        (root / f"data.{pos}").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


# ---------------------------------------------------------------- images


def write_png(path: Path, mode: str = "RGB", size=(8, 8), value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
    rng = np.random.RandomState(value)
    arr = rng.randint(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(path)
    return path


def write_png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG signature + IHDR chunk claiming ``width x height`` (and nothing else): a stand-in for a huge PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    return path


def write_image_tree(root: Path, counts: Dict[str, int], ext: str = ".png") -> Path:
    """``root/<class>/img_<k><ext>`` with ``counts[class]`` images each (one nested in a subfolder)."""
    fmt = {".png": "PNG", ".jpg": "JPEG", ".JPG": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF"}[ext]
    for c, n in counts.items():
        for k in range(n):
            sub = root / c / ("nested" if k == 0 else "")
            sub.mkdir(parents=True, exist_ok=True)
            arr = np.full((6, 6, 3), (k * 17) % 256, dtype=np.uint8)
            Image.fromarray(arr, "RGB").save(sub / f"img_{k}{ext}", format=fmt)
    return root


# ---------------------------------------------------------------- IDX (MNIST format)


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx_gz(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(idx_bytes(array))
    return path


def write_fashion_mnist(root: Path, n_train: int = 12, n_test: int = 5, n_classes: int = 10) -> Path:
    """The four Fashion-MNIST files with ``n_train`` / ``n_test`` images per class, labels interleaved."""
    rng = np.random.RandomState(0)
    for prefix, per in (("train", n_train), ("t10k", n_test)):
        labels = np.tile(np.arange(n_classes), per).astype(np.uint8)
        images = rng.randint(0, 256, size=(len(labels), 28, 28)).astype(np.uint8)
        images[:, 0, 0] = labels  # lets a test check image/label alignment
        write_idx_gz(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_gz(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


# ---------------------------------------------------------------- CSV


def write_csv(path: Path, rows: Sequence[Sequence[object]], header: Sequence[str] = ("text", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def text_rows(labels: Sequence[object], per_class: int) -> List[List[object]]:
    """``per_class`` rows per label, interleaved, texts containing commas, quotes and a newline."""
    return [[f'sample {k}, of "{lab}"\nline two', lab] for k in range(per_class) for lab in labels]


def symlink(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def write_text_csv(root: Path, seed: int = 0) -> Path:
    """train.csv / test.csv of a 4-class word stream with texts of different lengths (so padding and the
    length-sorted evaluation are exercised)."""
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", 12), ("test", 6)):
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for c in range(4):
                for _ in range(per_class):
                    words = [f"w{c}x{rng.randint(4)}" for _ in range(3)]
                    words += [f"noise{rng.randint(8)}" for _ in range(rng.randint(0, 5))]
                    rng.shuffle(words)
                    w.writerow([" ".join(words), f"c{c}"])
    return root


def write_text_tasks(root: Path, seed: int = 0, free_form: bool = False) -> Path:
    """A ``text-tasks`` folder: ``tasks.yaml`` and two small tasks (one CSV, one JSON) whose answers follow from
    a word in the input, plus (``free_form``) a third task with free-form answers."""
    import json

    import yaml

    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    tasks = []
    specs = [("colour", ["red", "blue"], "csv"), ("size", ["big", "small", "tiny"], "json")]
    for name, words, fmt in specs:
        for split, n in (("train", 6), ("test", 3)):
            rows = [{"text": f"item {rng.randint(100)} is {w} {'!' * rng.randint(3)}", "label": w}
                    for w in words for _ in range(n)]
            path = root / f"{name}_{split}.{fmt}"
            if fmt == "csv":
                with open(path, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=["text", "label"])
                    w.writeheader()
                    w.writerows(rows)
            else:
                path.write_text(json.dumps(rows))
        tasks.append({"name": name, "instruction": f"Which {name}?", "train": f"{name}_train.{fmt}",
                      "test": f"{name}_test.{fmt}", "input_column": "text", "label_column": "label",
                      "label_words": words})
    if free_form:
        for split, n in (("train", 6), ("test", 3)):
            rows = [{"input": f"say {x}", "output": f"{x} {x}"} for x in ("ab", "cd", "ef")[:n]]
            (root / f"echo_{split}.json").write_text(json.dumps(rows))
        tasks.append({"name": "echo", "instruction": "Repeat twice.", "train": "echo_train.json",
                      "test": "echo_test.json", "metric": "edit_similarity"})
    (root / "tasks.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
    return root


def write_cl_benchmark(root: Path, tasks=("dbpedia", "amazon", "yahoo", "agnews"), per_label: int = 3) -> Path:
    """The O-LoRA / MIGU ``CL_Benchmark`` layout: ``<group>/<task>/{train,test,labels}.json``."""
    import json

    from clpet.scenarios.lm_benchmarks import BENCHMARK_TASKS

    for name in tasks:
        folder = root / "CL_Benchmark" / BENCHMARK_TASKS[name][0]
        folder.mkdir(parents=True, exist_ok=True)
        labels = [f"{name}-a", f"{name}-b"]
        (folder / "labels.json").write_text(json.dumps(labels))
        for split in ("train", "test", "dev"):
            rows = [{"label": lab, "sentence": f"Title: {lab} {i}\nText: about {lab}.\n"}
                    for lab in labels for i in range(per_label)]
            (folder / f"{split}.json").write_text(json.dumps(rows))
    return root


def write_trace(root: Path, tasks=None, n_train: int = 4, n_test: int = 3, nested: bool = True) -> Path:
    """TRACE's layout: ``LLM-CL_Benchmark/<task>/{train,eval,test}.json`` with ``prompt`` / ``answer`` rows (the
    folder level omitted when not ``nested``). Answers are short strings of each task's kind."""
    import json

    from clpet.scenarios.trace import FOLDER, TRACE_TASKS

    answers = {"C-STANCE": "A", "FOMC": "B", "MeetingBank": "The council approved the plan.",
               "Py150": "x = <NUM_LIT>", "ScienceQA": "C\nBecause it floats.", "NumGLUE-cm": "12",
               "NumGLUE-ds": "7", "20Minuten": "Der Hund schläft."}
    base = root / FOLDER if nested else root
    for name in tasks or TRACE_TASKS:
        (base / name).mkdir(parents=True, exist_ok=True)
        for split, n in (("train", n_train), ("eval", 2), ("test", n_test)):
            rows = [{"prompt": f"Task {name}, item {i}. Answer:", "answer": answers[name]} for i in range(n)]
            (base / name / f"{split}.json").write_text(json.dumps(rows, ensure_ascii=False))
    return root
