"""Language-task evaluators: ``rank`` (rank classification) and ``generate`` (greedy generation + the task's metric).

The method supplies the model state to score with (its live adapters for the task, or the task-free composition
when the protocol hides the task id) through ``candidate_logprobs`` and ``generate_set``
(``clpet.methods.lm_base.LMMethod``); the evaluator only turns them into per-sample scores.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from clpet.evaluation.base import Evaluator
from clpet.evaluation.text_metrics import METRICS
from clpet.registry import EVALUATORS
from clpet.scenarios.base import Experience

if TYPE_CHECKING:  # pragma: no cover
    from clpet.methods.base import Method


def _needs_lm(method: "Method", what: str) -> None:
    if not hasattr(method, what):
        raise ValueError(f"method {type(method).__name__} cannot be scored on language tasks (it has no {what})")


@EVALUATORS.register("rank")
class RankClassification(Evaluator):
    """The label word with the highest summed log-probability after the prompt, against the gold label. A row
    with no finite score is a miss: the method predicted outside this task's labels (ConPET's routing)."""

    def score(self, method: "Method", experience: Experience, task_id: Optional[int]) -> float:
        _needs_lm(method, "candidate_logprobs")
        scores = method.candidate_logprobs(experience.test, experience, task_id)  # (N, labels)
        return float(np.sum(rank_predictions(scores) == experience.test.targets))


def rank_predictions(scores: np.ndarray) -> np.ndarray:
    """The argmax label of each row of ``scores``; -1 where no score is finite (no label of the task predicted)."""
    if scores.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.where(np.isfinite(scores).any(axis=1), scores.argmax(axis=1), -1)


@EVALUATORS.register("generate")
class Generation(Evaluator):
    """Greedy generation scored with the task's metric (``clpet.evaluation.text_metrics.METRICS``); the prompt is
    the source a metric such as SARI compares against."""

    def score(self, method: "Method", experience: Experience, task_id: Optional[int]) -> float:
        _needs_lm(method, "generate_set")
        metric = METRICS[experience.task.metric]
        outputs = method.generate_set(experience.test, experience, task_id)
        return float(sum(metric(out, answer, prompt) for out, (prompt, answer) in zip(outputs, experience.test.inputs)))
