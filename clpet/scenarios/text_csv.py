"""Your own labelled texts from CSV, as a class-incremental stream.

Source: the run's ``data_root`` (or ``scenario.root``): a ``.csv`` file split per class by ``test_fraction``
(drawn with ``data_seed``), or a folder holding ``train.csv`` and ``test.csv``. The columns are ``text`` and
``label`` unless ``text_column`` / ``label_column`` say otherwise; a header row is required. Labels may be
strings or integers; the classes are the sorted distinct labels (numerically when every label is an integer).
Sample ids are row numbers (0 = first data row) in their file.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

from clpet.registry import SCENARIOS
from clpet.scenarios.base import SampleSet, Scenario, ScenarioBuilder, ScenarioConfig
from clpet.scenarios.common import as_config, finish_stream, holdout_split, resolve_root

_LAYOUT = "a .csv file with a header row, or a folder with train.csv and test.csv"


def read_csv(path: str, text_column: str, label_column: str) -> Tuple[List[str], List[str]]:
    """(texts, label strings) of a CSV file with a header row; one-line errors for missing columns/labels."""
    csv.field_size_limit(2**30)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for col in (text_column, label_column):
            if col not in columns:
                raise ValueError(f"{path} has no column '{col}'; columns found: {', '.join(columns) or '(none)'}")
        texts, labels = [], []
        for row in reader:
            label = (row[label_column] or "").strip()
            if not label:
                raise ValueError(f"{path} line {reader.line_num}: empty '{label_column}'")
            texts.append(row[text_column] or "")
            labels.append(label)
    if not texts:
        raise ValueError(f"{path} has no data rows")
    return texts, labels


def sorted_labels(labels: List[str]) -> List[str]:
    """Distinct labels, numerically sorted when all are integers, else as strings."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=lambda v: (int(v), v))
    except ValueError:
        return sorted(distinct)


@SCENARIOS.register("text-csv")
class TextCSV(ScenarioBuilder):
    """Your texts from a CSV file (or train.csv + test.csv), classes = distinct labels."""

    @dataclass
    class Config(ScenarioConfig):
        name: str = "text-csv"
        root: Optional[str] = None  # overrides the run's data_root: a .csv file or a folder
        text_column: str = "text"
        label_column: str = "label"
        test_fraction: float = 0.3  # used only for a single file
        increment: int = 2
        default_backbone: str = "minilm"

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        root = resolve_root(cfg.root, data_root, None)
        if root is None:
            raise FileNotFoundError(f"scenario text-csv needs data_root=PATH (or scenario.root=PATH): {_LAYOUT}")
        if os.path.isdir(root):
            files = [os.path.join(root, "train.csv"), os.path.join(root, "test.csv")]
            missing = [p for p in files if not os.path.isfile(p)]
            if missing:
                raise FileNotFoundError(f"{', '.join(missing)} not found; data_root must be {_LAYOUT}")
            tr_text, tr_lab = read_csv(files[0], cfg.text_column, cfg.label_column)
            te_text, te_lab = read_csv(files[1], cfg.text_column, cfg.label_column)
            names = sorted_labels(tr_lab)
            unseen = sorted(set(te_lab) - set(names))
            if unseen:
                raise ValueError(f"{files[1]} has labels absent from train.csv: {', '.join(unseen[:10])}")
            index = {name: i for i, name in enumerate(names)}
            train = SampleSet(tr_text, [index[v] for v in tr_lab], np.arange(len(tr_text)), "text", "train")
            test = SampleSet(te_text, [index[v] for v in te_lab], np.arange(len(te_text)), "text", "test")
        elif os.path.isfile(root):
            texts, labs = read_csv(root, cfg.text_column, cfg.label_column)
            names = sorted_labels(labs)
            index = {name: i for i, name in enumerate(names)}
            y = np.asarray([index[v] for v in labs], dtype=np.int64)
            tr, te = holdout_split(y, cfg.test_fraction, cfg.data_seed)
            ids = np.arange(len(texts))
            train = SampleSet([texts[i] for i in tr], y[tr], ids[tr], "text", "train")
            test = SampleSet([texts[i] for i in te], y[te], ids[te], "text", "test")
        else:
            raise FileNotFoundError(f"text CSV data {root} not found; data_root must be {_LAYOUT}")
        return finish_stream(cfg, "text-csv", train, test, names, seed, info={"root": root})
