"""The Evaluator contract: one test set in, the sum of per-sample scores out.

``score(method, experience, task_id)`` returns the sum over the test samples of a score in [0, 1] (1 = correct
for accuracy; a ROUGE-L or edit similarity for generation tasks), so the runner's matrix of sums divided by the
test-set sizes is the accuracy matrix R[t, j] for every protocol, and the sample-weighted A_t ("whole accuracy")
and the task averages come from the same numbers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

from clpet.scenarios.base import Experience

if TYPE_CHECKING:  # pragma: no cover
    from clpet.methods.base import Method


class Evaluator:
    """Base of every evaluator (registered in ``EVALUATORS`` under the name a scenario gives)."""

    def score(self, method: "Method", experience: Experience, task_id: Optional[int]) -> float:  # pragma: no cover
        raise NotImplementedError


def score_modes(method: "Method", evaluator: Evaluator, experiences: Sequence[Experience],
                task_ids: Sequence[Optional[int]]) -> Dict[str, Any]:
    """Each of ``method.prediction_modes`` scored on every test set of ``experiences``: percent over all their
    test samples, under ``<method name>_<mode>_acc`` (LAE's single experts, ADAM's feature halves)."""
    out: Dict[str, Any] = {}
    total = sum(len(e.test) for e in experiences)
    name = getattr(type(method), "registry_name", type(method).__name__.lower())
    for mode in method.prediction_modes:
        with method.prediction_mode(mode):
            hits = sum(evaluator.score(method, e, t) for e, t in zip(experiences, task_ids))
        out[f"{name}_{mode.replace('-', '_')}_acc"] = round(float(hits) / max(total, 1) * 100, 4)
    return out
