"""WordNet 3.0 supersense classification (text): classify a synset's lemmas + gloss into its lexicographer
file, one of the 45 supersenses (noun.animal, verb.motion, adj.all, ...).

Source: Debian ``wordnet-base``, ``/usr/share/wordnet/data.{adj,adv,noun,verb}``, in the wndb(5WN) format:
``synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt ... | gloss``, with ``w_cnt``
in hexadecimal and the license header on lines that start with two spaces. Labels are the ``lex_filenum``
(0..44), named as in lexnames(5WN); classes are the lexicographer files that have synsets (all 45 in
WordNet 3.0), in ``lex_filenum`` order. WordNet has no test split: a per-class held-out fraction is drawn with
``data_seed``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from clpet.registry import SCENARIOS
from clpet.scenarios.base import SampleSet, Scenario, ScenarioBuilder, ScenarioConfig
from clpet.scenarios.common import as_config, finish_stream, holdout_split, resolve_root

DEFAULT_ROOT = "/usr/share/wordnet"
#: the data files, in the order their synsets get ids
DATA_FILES = ("data.adj", "data.adv", "data.noun", "data.verb")

#: lexicographer file names by ``lex_filenum``, from lexnames(5WN)
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip

_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # syntactic marker on adjectives, e.g. "galore(ip)"
_QUOTED = re.compile(r'"[^"]*"')


def synset_text(lemmas: List[str], gloss: str) -> str:
    """``"lemma1, lemma2: first gloss"``: underscores become spaces; the first gloss is the gloss up to the
    first ';' without quoted examples (lemmas alone if nothing is left)."""
    words = ", ".join(_ADJ_MARKER.sub("", w).replace("_", " ") for w in lemmas)
    first = " ".join(_QUOTED.sub("", gloss.split(";", 1)[0]).split())
    return f"{words}: {first}" if first else words


def parse_data_file(path: str) -> Tuple[List[str], List[int]]:
    """(texts, lex_filenums) of the synsets of one wndb ``data.*`` file, in file order."""
    texts: List[str] = []
    labels: List[int] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("  ") or not line.strip():
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            try:
                lex = int(fields[1])
                n_words = int(fields[3], 16)
                lemmas = fields[4 : 4 + 2 * n_words : 2]
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{lineno}: not a wndb(5WN) synset line: {line[:60]!r}") from None
            if not 0 <= lex < len(LEXNAMES) or len(lemmas) != n_words:
                raise ValueError(f"{path}:{lineno}: not a wndb(5WN) synset line: {line[:60]!r}")
            texts.append(synset_text(lemmas, gloss.strip()))
            labels.append(lex)
    return texts, labels


@SCENARIOS.register("wordnet")
class WordNetSupersenses(ScenarioBuilder):
    """WordNet 3.0 supersense classification: 45 lexicographer-file classes (text, Debian wordnet-base)."""

    @dataclass
    class Config(ScenarioConfig):
        name: str = "wordnet"
        root: Optional[str] = None  # folder with data.{adj,adv,noun,verb}; default /usr/share/wordnet
        test_fraction: float = 0.3  # held out per class (at least 1 synset), drawn with data_seed
        increment: int = 9
        max_train_per_class: Optional[int] = 24
        max_test_per_class: Optional[int] = 16
        default_backbone: str = "minilm"

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        train, test, names, info = load_wordnet(cfg, data_root)
        return finish_stream(cfg, "wordnet", train, test, names, seed, info=info)


def load_wordnet(cfg: Any, data_root: Optional[str]) -> Tuple[SampleSet, SampleSet, List[str], Dict[str, Any]]:
    """(train, test, class names, info) of the supersense task: a per-class held-out split drawn with
    ``cfg.data_seed``; ``cfg`` needs ``root`` and ``test_fraction`` (``wordnet`` and ``wordnet-fscil`` share it)."""
    root = resolve_root(cfg.root, data_root, DEFAULT_ROOT)
    missing = [f for f in DATA_FILES if not os.path.isfile(os.path.join(root, f))]
    if missing:
        raise FileNotFoundError(
            f"WordNet data not found at {root} (missing {', '.join(missing)}); "
            "install it with: apt-get install wordnet-base, or set scenario.root=PATH"
        )
    texts: List[str] = []
    labels: List[int] = []
    for name in DATA_FILES:
        file_texts, file_labels = parse_data_file(os.path.join(root, name))
        texts.extend(file_texts)
        labels.extend(file_labels)
    lex = np.asarray(labels, dtype=np.int64)
    ids = np.arange(len(lex), dtype=np.int64)  # position in (file, offset) order: stable across runs
    present = np.unique(lex)  # all 45 in WordNet 3.0; fewer only in a partial copy
    y = np.searchsorted(present, lex)
    class_names = [LEXNAMES[i] for i in present]
    tr, te = holdout_split(y, cfg.test_fraction, cfg.data_seed)
    train = SampleSet([texts[i] for i in tr], y[tr], ids[tr], "text", "train")
    test = SampleSet([texts[i] for i in te], y[te], ids[te], "text", "test")
    return train, test, class_names, {"root": root, "source": "wordnet-base"}
