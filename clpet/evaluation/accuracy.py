"""``accuracy``: the predicted label (argmax over every class seen so far) against the target; the
class-incremental and few-shot CIL evaluator."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from clpet.evaluation.base import Evaluator
from clpet.registry import EVALUATORS
from clpet.scenarios.base import Experience

if TYPE_CHECKING:  # pragma: no cover
    from clpet.methods.base import Method


@EVALUATORS.register("accuracy")
class Accuracy(Evaluator):
    """Classification accuracy: ``method.predict_set`` labels equal to the targets."""

    def score(self, method: "Method", experience: Experience, task_id: Optional[int]) -> float:
        preds = method.predict_set(experience.test, experience, task_id)
        return float(np.sum(preds == experience.test.targets))
