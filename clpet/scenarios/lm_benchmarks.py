"""The language-model continual-learning benchmarks, from ``data_root``: ``lm-standard`` (5 tasks, orders 1-3) and
``lm-long15`` (15 tasks, orders 4-6), in the ``CL_Benchmark`` JSON layout of the O-LoRA and MIGU code
(cmnfriend/O-LoRA, wenyudu/MIGU; Wang et al., "Orthogonal Subspace Learning for Language Model Continual Learning",
EMNLP 2023 Findings, arXiv 2310.14152).

Layout under ``data_root`` (or ``scenario.root``)::

    CL_Benchmark/<group>/<task>/train.json   [{"sentence": ..., "label": ...}, ...]
    CL_Benchmark/<group>/<task>/test.json
    CL_Benchmark/<group>/<task>/labels.json  ["label word", ...]

Answers are the label words, scored by exact match of the generated text (the papers' metric, ``evaluation:
generate``) or by rank classification over the label words (``evaluation: rank``). The instructions are clpet's
own short task descriptions (the papers prompt each task with an instruction naming the options).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from clpet.protocols import Protocol
from clpet.registry import SCENARIOS
from clpet.scenarios.base import Scenario, ScenarioBuilder
from clpet.scenarios.common import as_config, resolve_root
from clpet.scenarios.tasks import TaskStreamConfig, TextTask, build_task_stream, pick_order, read_task_split

#: task name -> (folder under CL_Benchmark, instruction)
BENCHMARK_TASKS: Dict[str, Tuple[str, str]] = {
    "dbpedia": ("TC/dbpedia", "What is the category of the entity this text describes?"),
    "amazon": ("SC/amazon", "What rating does this product review give?"),
    "yahoo": ("TC/yahoo", "What is the topic of this question and answer?"),
    "agnews": ("TC/agnews", "What is the topic of this news article?"),
    "yelp": ("SC/yelp", "What rating does this restaurant review give?"),
    "mnli": ("NLI/MNLI", "Does the premise entail the hypothesis?"),
    "cb": ("NLI/CB", "Does the premise entail the hypothesis?"),
    "wic": ("WiC/WiC", "Is the word used with the same meaning in both sentences?"),
    "copa": ("COPA/COPA", "Which alternative is the more plausible cause or effect?"),
    "qqp": ("QQP/QQP", "Do the two questions ask the same thing?"),
    "boolq": ("BoolQA/BoolQA", "Is the answer to the question yes or no, according to the passage?"),
    "rte": ("NLI/RTE", "Does the first sentence entail the second?"),
    "imdb": ("SC/IMDB", "What is the sentiment of this movie review?"),
    "sst-2": ("SC/SST-2", "What is the sentiment of this sentence?"),
    "multirc": ("MultiRC/MultiRC", "Is the answer correct for the question, according to the paragraph?"),
}
#: the orders of the papers (docs/methods.md, "Language-model task-incremental streams")
STANDARD_ORDERS = {1: ["dbpedia", "amazon", "yahoo", "agnews"], 2: ["dbpedia", "amazon", "agnews", "yahoo"],
                   3: ["yahoo", "amazon", "agnews", "dbpedia"]}
LONG_ORDERS = {
    4: ["mnli", "cb", "wic", "copa", "qqp", "boolq", "rte", "imdb", "yelp", "amazon", "sst-2", "dbpedia", "agnews",
        "multirc", "yahoo"],
    5: ["multirc", "boolq", "wic", "mnli", "cb", "copa", "qqp", "rte", "imdb", "sst-2", "dbpedia", "agnews", "yelp",
        "amazon", "yahoo"],
    6: ["yelp", "amazon", "mnli", "cb", "copa", "qqp", "rte", "imdb", "sst-2", "dbpedia", "agnews", "yahoo", "multirc",
        "boolq", "wic"],
}


def load_benchmark_task(root: str, name: str, cfg: Any) -> Tuple[TextTask, Any, Any]:
    folder, instruction = BENCHMARK_TASKS[name]
    base = os.path.join(root, "CL_Benchmark", folder)
    labels_path = os.path.join(base, "labels.json")
    if not os.path.isfile(labels_path):
        raise FileNotFoundError(f"lm benchmark: no {labels_path}; expected the CL_Benchmark JSON layout "
                                f"(CL_Benchmark/<group>/<task>/{{train,test,labels}}.json) under {root}")
    with open(labels_path, encoding="utf-8") as f:
        words = [str(w) for w in json.load(f)]
    task = TextTask(name=name, instruction=f"{instruction} Options: {', '.join(words)}.", label_words=words,
                    source=base)
    splits = []
    for split in ("train", "test"):
        path = os.path.join(base, f"{split}.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"lm benchmark: no {path} (CL_Benchmark layout: {split}.json per task)")
        splits.append(read_task_split(task, path, ["sentence", "label"], split, cfg))
    return (task, *splits)


class _Benchmark(ScenarioBuilder):
    protocol = Protocol.TASK_INCREMENTAL
    ORDERS: Dict[int, List[str]] = {}

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        root = resolve_root(cfg.root, data_root, None)
        if root is None or not os.path.isdir(os.path.join(root, "CL_Benchmark")):
            raise FileNotFoundError(f"{cfg.name}: no CL_Benchmark folder under {root or 'data_root (not set)'}; pass "
                                    f"data_root=DIR holding CL_Benchmark/<group>/<task>/{{train,test,labels}}.json "
                                    f"(the O-LoRA / MIGU data release)")
        order = pick_order(list(BENCHMARK_TASKS), cfg.order, cls.ORDERS, cfg.name)
        tasks = [load_benchmark_task(root, name, cfg) for name in order]
        return build_task_stream(cfg.name, tasks, cfg.evaluation, cfg.task_id_at_eval, info={"order": order})


@SCENARIOS.register("lm-standard")
class LMStandard(_Benchmark):
    """The standard LM CL benchmark (DBpedia, Amazon, Yahoo, AG News), orders 1-3, CL_Benchmark layout."""

    ORDERS = STANDARD_ORDERS

    @dataclass
    class Config(TaskStreamConfig):
        name: str = "lm-standard"
        root: Optional[str] = None
        order: Any = 1
        evaluation: str = "generate"
        default_backbone: str = "hf-seq2seq"


@SCENARIOS.register("lm-long15")
class LMLong15(_Benchmark):
    """The 15-task long sequence (orders 4-6), CL_Benchmark layout."""

    ORDERS = LONG_ORDERS

    @dataclass
    class Config(TaskStreamConfig):
        name: str = "lm-long15"
        root: Optional[str] = None
        order: Any = 4
        evaluation: str = "generate"
        default_backbone: str = "hf-seq2seq"
