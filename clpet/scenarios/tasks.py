"""Task-incremental language streams (docs/architecture.md, "Scenarios and experiences"): each experience is one
text task -- an instruction, inputs, answers -- turned into ``(prompt, answer)`` pairs for language models.

``TextTask`` describes a task: its name, instruction, the prompt template, its label words (classification tasks:
the answer is one of them and ``targets`` are their indices) or none (free-form answers, scored by ``metric``).
``build_task_stream`` makes the ``Scenario``; the loaders in ``lm_offline``, ``lm_benchmarks`` and the ``text-tasks``
builder below feed it. Checks on the data (missing columns, unknown labels, empty inputs) fail with one line
naming the file.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from clpet.evaluation.text_metrics import METRICS as GENERATION_METRICS
from clpet.protocols import Protocol
from clpet.registry import SCENARIOS
from clpet.scenarios.base import Experience, SampleSet, Scenario, ScenarioBuilder, cap_per_class
from clpet.scenarios.common import as_config, resolve_root

DEFAULT_TEMPLATE = "{instruction}\n{input}\nAnswer:"
EVALUATIONS = ("rank", "generate")


@dataclass
class TextTask:
    """One language task. ``label_words`` non-empty: a classification task (``rank`` evaluation picks one);
    empty: free-form answers (``generate`` only). ``metric`` scores generated answers."""

    name: str
    instruction: str
    label_words: List[str] = field(default_factory=list)
    template: str = DEFAULT_TEMPLATE
    metric: str = "exact_match"
    source: str = ""

    def __post_init__(self) -> None:
        if "{input}" not in self.template:
            raise ValueError(f"task '{self.name}': the template must contain {{input}}")
        if self.metric not in GENERATION_METRICS:
            raise ValueError(f"task '{self.name}': unknown metric '{self.metric}'; valid: {', '.join(GENERATION_METRICS)}")
        if len(set(self.label_words)) != len(self.label_words):
            raise ValueError(f"task '{self.name}': label words repeat: {self.label_words}")

    def prompt(self, text: str) -> str:
        return self.template.format(instruction=self.instruction, input=text)


def task_samples(task: TextTask, texts: Sequence[str], answers: Sequence[str], ids: Sequence[int], split: str,
                 where: str) -> SampleSet:
    """``(prompt, answer)`` samples; ``targets`` = the answer's index in the label words (-1 for free-form)."""
    texts = [str(t) for t in texts]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise ValueError(f"{where}: sample {empty[0]} has an empty input")
    if task.label_words:
        index = {w: i for i, w in enumerate(task.label_words)}
        unknown = sorted({a for a in answers if a not in index})
        if unknown:
            raise ValueError(f"{where}: label '{unknown[0]}' is not one of the task's labels {task.label_words}")
        targets = [index[a] for a in answers]
    else:
        targets = [-1] * len(texts)
    pairs = [(task.prompt(t), str(a)) for t, a in zip(texts, answers)]
    return SampleSet(pairs, np.asarray(targets, dtype=np.int64), np.asarray(ids, dtype=np.int64), "text", split)


def cap_task(samples: SampleSet, cap: Optional[int], data_seed: int) -> SampleSet:
    """At most ``cap`` samples per label (free-form tasks: ``cap`` samples), drawn with ``data_seed``."""
    if cap is None:
        return samples
    if cap <= 0:
        raise ValueError(f"per-label cap must be positive, got {cap}")
    if samples.targets.size and samples.targets.min() < 0:
        keep = np.sort(np.random.RandomState(data_seed).permutation(len(samples))[:cap])
        return samples.subset(keep)
    return cap_per_class(samples, cap, data_seed)


def build_task_stream(name: str, tasks: Sequence[Tuple[TextTask, SampleSet, SampleSet]], evaluation: str = "rank",
                      task_id_at_eval: bool = False, info: Optional[Dict[str, Any]] = None) -> Scenario:
    """A task-incremental ``Scenario``: experience t = task t. Global class ids number every task's labels in
    order (for bookkeeping; ``targets`` stay the task's own label indices)."""
    if evaluation not in EVALUATIONS:
        raise ValueError(f"unknown evaluation '{evaluation}'; valid: {', '.join(EVALUATIONS)}")
    experiences, class_names = [], []
    for t, (task, train, test) in enumerate(tasks):
        if evaluation == "rank" and not task.label_words:
            raise ValueError(f"task '{task.name}' has free-form answers: it needs evaluation=generate, not rank")
        if len(train) == 0 or len(test) == 0:
            raise ValueError(f"task '{task.name}' has {len(train)} training and {len(test)} test samples; need both")
        labels = task.label_words or ["<free-form>"]
        classes = list(range(len(class_names), len(class_names) + len(labels)))
        names = [f"{task.name}:{w}" for w in labels]
        class_names += names
        experiences.append(Experience(t, train, test, classes, names, task_id=t, task_name=task.name, task=task))
    return Scenario(name=name, experiences=experiences, class_order=list(range(len(class_names))),
                    class_names=class_names, modality="text", protocol=Protocol.TASK_INCREMENTAL, info=dict(info or {}),
                    task_id_at_eval=task_id_at_eval, evaluation=evaluation)


@dataclass
class TaskStreamConfig:
    """Keys every task-incremental scenario has."""

    name: str = ""
    max_train_per_label: Optional[int] = None  # per label of each task (free-form tasks: per task), data_seed draws
    max_test_per_label: Optional[int] = None
    data_seed: int = 0
    val_fraction: float = 0.0  # > 0: evaluate on a per-label validation split of the training data, not test
    evaluation: str = "rank"  # rank (rank classification) | generate (greedy generation + the task's metric)
    task_id_at_eval: bool = False  # whether the method is told the task id at evaluation
    default_backbone: str = "smollm2"
    default_method: str = "seq-lora"  # what `clpet run scenario=<this>` runs when no method= is given

    def __post_init__(self) -> None:
        if self.evaluation not in EVALUATIONS:
            raise ValueError(f"unknown evaluation '{self.evaluation}'; valid: {', '.join(EVALUATIONS)}")
        for key in ("max_train_per_label", "max_test_per_label"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"{key} must be positive or null; got {value}")


def pick_order(names: Sequence[str], order: Any, orders: Dict[int, List[str]], who: str) -> List[str]:
    """A task order: an order id of ``orders`` or an explicit list of task names (a permutation of a subset)."""
    if isinstance(order, int) and not isinstance(order, bool):
        if order not in orders:
            raise ValueError(f"{who}: unknown order {order}; valid: {', '.join(map(str, sorted(orders)))} or a list")
        return list(orders[order])
    chosen = [str(n) for n in order]
    unknown = [n for n in chosen if n not in names]
    if unknown or len(set(chosen)) != len(chosen) or not chosen:
        raise ValueError(f"{who}: the order must list distinct tasks of {', '.join(names)}; got {chosen}")
    return chosen


# ------------------------------------------------------------------------------------------ text-tasks
def read_rows(path: str) -> List[Dict[str, Any]]:
    """Rows of a ``.csv`` (header row) or ``.json`` (a list of objects, or JSON lines) file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"task file not found: {path}")
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: expected a list of objects (or JSON lines)")
    return rows


def columns(rows: List[Dict[str, Any]], keys: Sequence[str], path: str) -> List[List[Any]]:
    if not rows:
        raise ValueError(f"{path}: no rows")
    missing = [k for k in keys if k not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing column '{missing[0]}' (columns: {', '.join(map(str, rows[0]))})")
    return [[r.get(k) for r in rows] for k in keys]


def read_task_split(task: TextTask, path: str, keys: Sequence[str], split: str, cfg: TaskStreamConfig) -> SampleSet:
    """One split of a task from a CSV/JSON file: the input and answer columns ``keys``, capped per ``cfg``."""
    texts, answers = columns(read_rows(path), keys, path)
    samples = task_samples(task, texts, [str(a) for a in answers], range(len(texts)), split, path)
    return cap_task(samples, cfg.max_train_per_label if split == "train" else cfg.max_test_per_label, cfg.data_seed)


@SCENARIOS.register("text-tasks")
class TextTasks(ScenarioBuilder):
    """Your own task sequence: a folder of per-task train/test files (CSV or JSON) and a ``tasks.yaml``."""

    protocol = Protocol.TASK_INCREMENTAL

    @dataclass
    class Config(TaskStreamConfig):
        name: str = "text-tasks"
        root: Optional[str] = None  # the folder (default: data_root)
        spec: str = "tasks.yaml"  # inside root

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        root = resolve_root(cfg.root, data_root, None)
        if root is None:
            raise FileNotFoundError("text-tasks: pass data_root=DIR (a folder with tasks.yaml and the task files)")
        spec_path = os.path.join(root, cfg.spec)
        if not os.path.isfile(spec_path):
            raise FileNotFoundError(f"text-tasks: no {cfg.spec} in {root} (it lists the tasks: name, instruction, "
                                    f"train, test, input_column, label_column, label_words)")
        with open(spec_path, encoding="utf-8") as f:
            spec = yaml.safe_load(f) or {}
        entries = spec.get("tasks") if isinstance(spec, dict) else None
        if not entries:
            raise ValueError(f"{spec_path}: needs a non-empty 'tasks:' list")
        tasks = []
        for k, e in enumerate(entries):
            known = {"name", "instruction", "train", "test", "input_column", "label_column", "label_words",
                     "template", "metric"}
            unknown = sorted(set(e) - known)
            if unknown:
                raise ValueError(f"{spec_path}: task {k} has unknown key '{unknown[0]}'; valid: {', '.join(sorted(known))}")
            task = TextTask(name=str(e["name"]), instruction=str(e.get("instruction", "")),
                            label_words=[str(w) for w in e.get("label_words") or []],
                            template=str(e.get("template", DEFAULT_TEMPLATE)), metric=str(e.get("metric", "exact_match")))
            splits = []
            for split in ("train", "test"):
                keys = [e.get("input_column", "input"), e.get("label_column", "output")]
                splits.append(read_task_split(task, os.path.join(root, str(e[split])), keys, split, cfg))
            tasks.append((task, *splits))
        return build_task_stream("text-tasks", tasks, cfg.evaluation, cfg.task_id_at_eval, info={"root": root})
