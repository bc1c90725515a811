"""Scores of a generated answer against the reference, each in [0, 1].

``exact_match``: equal after stripping and case folding (the O-LoRA / MIGU label metric). ``rouge_l``: the ROUGE-L
F-measure of Google's ``rouge-score`` package (the ROUGE-1.5.5 reimplementation TRACE's MeetingBank uses).
``edit_similarity``: ``rapidfuzz.fuzz.ratio`` / 100, the normalised indel similarity that ``fuzzywuzzy``'s
``fuzz.ratio`` computes in TRACE's Py150 evaluation (BeyonderXX/TRACE ``metrics.py``). Both packages compute
locally; ``evaluate.load`` would fetch metric scripts from a hub at run time.
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Dict


@functools.lru_cache(maxsize=1)
def _rouge_l_scorer() -> Any:
    """rouge-score's ROUGE-L scorer. Importing it imports ``absl.logging``, whose handler keeps the ``sys.stderr``
    of that moment; where that was a temporary stream (a test harness's capture, Hydra's job redirection), flushing
    the handler at exit fails on the closed stream. The handler is pointed at the process's real stderr."""
    from rouge_score import rouge_scorer

    try:
        from absl import logging as absl_logging

        absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__
    except (ImportError, AttributeError):  # another absl version: nothing to mend
        pass
    return rouge_scorer.RougeScorer(["rougeL"])


def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip().casefold() == reference.strip().casefold())


def rouge_l(prediction: str, reference: str) -> float:
    return float(_rouge_l_scorer().score(reference, prediction)["rougeL"].fmeasure)


def edit_similarity(prediction: str, reference: str) -> float:
    from rapidfuzz import fuzz

    return float(fuzz.ratio(prediction, reference)) / 100.0


METRICS: Dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match, "rouge_l": rouge_l, "edit_similarity": edit_similarity,
}
