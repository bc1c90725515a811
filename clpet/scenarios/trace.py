"""``trace``: the TRACE benchmark for continual learning of LLMs (Wang et al., "TRACE: A Comprehensive Benchmark for
Continual Learning in Large Language Models", arXiv 2310.06762, Sec. 3), from ``data_root``.

Eight tasks, each generation with its own metric (Sec. 3.2 and the ``evaluations/eval_*.py`` of BeyonderXX/TRACE,
computed as ``clpet.evaluation.text_metrics`` describes):

=============  ==========================================  ========================
task           what                                        metric
=============  ==========================================  ========================
C-STANCE       Chinese stance detection (answer letter)    ``exact_match_cased``
FOMC           monetary-policy stance (answer letter)      ``exact_match_cased``
MeetingBank    meeting summarisation                       ``rouge_l_trace``
Py150          Python code completion                      ``code_similarity``
ScienceQA      multiple choice + reasoning                 ``choice_accuracy``
NumGLUE-cm     commonsense arithmetic (a number)           ``exact_match_cased``
NumGLUE-ds     domain-specific arithmetic (a number)       ``exact_match_cased``
20Minuten      German text simplification                  ``sari``
=============  ==========================================  ========================

Layout (TRACE's data release, ``data_path`` in its scripts), under ``data_root`` or ``scenario.root``, with or
without the ``LLM-CL_Benchmark`` folder level::

    LLM-CL_Benchmark/<task>/train.json   [{"prompt": ..., "answer": ...}, ...]
    LLM-CL_Benchmark/<task>/eval.json    (TRACE's validation split; not read by clpet yet)
    LLM-CL_Benchmark/<task>/test.json

The prompts carry their own instructions, so the template is the prompt itself. Order 1 is the order of TRACE's
scripts; any list of the task names is an order too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from clpet.protocols import Protocol
from clpet.registry import SCENARIOS
from clpet.scenarios.base import Scenario, ScenarioBuilder
from clpet.scenarios.common import as_config, resolve_root
from clpet.scenarios.tasks import TaskStreamConfig, TextTask, build_task_stream, pick_order, read_task_split

#: task -> the metric of TRACE's evaluation script for it
TRACE_TASKS: Dict[str, str] = {
    "C-STANCE": "exact_match_cased", "FOMC": "exact_match_cased", "MeetingBank": "rouge_l_trace",
    "Py150": "code_similarity", "ScienceQA": "choice_accuracy", "NumGLUE-cm": "exact_match_cased",
    "NumGLUE-ds": "exact_match_cased", "20Minuten": "sari",
}
TRACE_ORDERS = {1: ["C-STANCE", "FOMC", "MeetingBank", "Py150", "ScienceQA", "NumGLUE-cm", "NumGLUE-ds", "20Minuten"]}
FOLDER = "LLM-CL_Benchmark"


def benchmark_dir(root: Optional[str]) -> str:
    """The folder holding one sub-folder per task (``root/LLM-CL_Benchmark`` or ``root`` itself)."""
    if root is not None:
        for candidate in (os.path.join(root, FOLDER), root):
            if any(os.path.isdir(os.path.join(candidate, t)) for t in TRACE_TASKS):
                return candidate
    raise FileNotFoundError(f"trace: no TRACE task folders under {root or 'data_root (not set)'}; pass data_root=DIR "
                            f"holding {FOLDER}/<task>/{{train,test}}.json (rows with 'prompt' and 'answer'), tasks: "
                            f"{', '.join(TRACE_TASKS)}")


def load_trace_task(base: str, name: str, cfg: Any) -> tuple:
    task = TextTask(name=name, instruction="", template="{input}", metric=TRACE_TASKS[name],
                    source=os.path.join(base, name))
    splits = []
    for split in ("train", "test"):
        path = os.path.join(base, name, f"{split}.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"trace: no {path} (TRACE layout: {FOLDER}/<task>/{{train,eval,test}}.json)")
        splits.append(read_task_split(task, path, ["prompt", "answer"], split, cfg))
    return (task, *splits)


@SCENARIOS.register("trace")
class Trace(ScenarioBuilder):
    """TRACE's 8 generation tasks (C-STANCE ... 20Minuten), each with TRACE's metric, from its JSON layout."""

    protocol = Protocol.TASK_INCREMENTAL

    @dataclass
    class Config(TaskStreamConfig):
        name: str = "trace"
        root: Optional[str] = None
        order: Any = 1
        evaluation: str = "generate"
        default_backbone: str = "hf-causal-lm"

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        if cfg.evaluation != "generate":
            raise ValueError(f"trace: every task has free-form answers scored on generated text; evaluation must be "
                             f"'generate', got '{cfg.evaluation}'")
        base = benchmark_dir(resolve_root(cfg.root, data_root, None))
        order: List[str] = pick_order(list(TRACE_TASKS), cfg.order, TRACE_ORDERS, cfg.name)
        tasks = [load_trace_task(base, name, cfg) for name in order]
        return build_task_stream(cfg.name, tasks, cfg.evaluation, cfg.task_id_at_eval,
                                 info={"order": order, "root": base})
