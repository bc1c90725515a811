"""Evaluators: how the runner scores a method on one test set (docs/architecture.md, "Evaluation").

Importing this package registers every evaluator in ``clpet.registry.EVALUATORS``; a scenario names the one its
protocol uses (``Scenario.evaluation``): ``accuracy`` (class-incremental and few-shot CIL: argmax over the seen
classes) and, for language tasks, ``rank`` (rank classification) and ``generate`` (greedy generation scored with
the task's metric).
"""
from clpet.evaluation import accuracy, lm  # noqa: F401  (registration)
from clpet.evaluation.base import Evaluator, score_modes

__all__ = ["Evaluator", "score_modes"]
