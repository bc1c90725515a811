"""Scores of a generated answer against the reference, each in [0, 1]; ``METRICS`` maps the name a task gives.

Every metric is called ``metric(prediction, reference, source)``; ``source`` is the prompt the answer was generated
from (only SARI reads it). Packages that compute locally do the work wherever one exists (``evaluate.load`` would
fetch metric scripts from a hub at run time, which fails offline):

- ``exact_match``: equal after stripping and case folding (the O-LoRA / MIGU label metric).
- ``exact_match_cased``: equal after stripping, case kept (TRACE's ``caculate_accuracy`` compares the decoded
  strings as they are; clpet's generated text is stripped of surrounding whitespace, so only that differs).
- ``choice_accuracy``: the first characters are equal (TRACE's ScienceQA: the answer letter opens the output,
  the reasoning follows).
- ``rouge_l``: ROUGE-L F-measure of Google's ``rouge-score`` (lower-cased, punctuation-split tokens).
- ``rouge_l_trace``: ROUGE-L F of the ``rouge`` package (pltrdy, 1.0.1) that TRACE's MeetingBank score uses: case
  kept, whitespace tokens, sentences split at ".", summary-level union LCS, called with TRACE's argument order
  (``get_scores(reference, prediction)``). The two packages' numbers differ, so a table should say which it used.
- ``edit_similarity``: ``rapidfuzz.fuzz.ratio`` / 100 (normalised indel similarity).
- ``code_similarity``: TRACE's Py150 score: literal placeholders (``<NUM_LIT>``, ``<STR_LIT:x>``...) rewritten as
  TRACE's ``postprocess`` does, then fuzzywuzzy's ``fuzz.ratio`` as TRACE's environment computes it (fuzzywuzzy
  without python-Levenshtein: ``difflib.SequenceMatcher`` ratio, rounded to an integer percent), / 100.
- ``sari``: SARI (Xu et al., TACL 2016, "Optimizing Statistical Machine Translation for Text Simplification") with
  one reference, as the Hugging Face ``sari`` metric TRACE's 20Minuten score loads computes it
  (``clpet.evaluation.sari``; no package computes it offline).
- Empty predictions or references score 0, as TRACE's loops skip them while dividing by the whole set.
"""
from __future__ import annotations

import difflib
import functools
import re
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


def _blank(*texts: str) -> bool:
    return any(not t for t in texts)


def exact_match(prediction: str, reference: str, source: str = "") -> float:
    return float(prediction.strip().casefold() == reference.strip().casefold())


def exact_match_cased(prediction: str, reference: str, source: str = "") -> float:
    prediction, reference = prediction.strip(), reference.strip()
    return 0.0 if _blank(prediction, reference) else float(prediction == reference)


def choice_accuracy(prediction: str, reference: str, source: str = "") -> float:
    prediction, reference = prediction.strip(), reference.strip()
    return 0.0 if _blank(prediction, reference) else float(prediction[0] == reference[0])


def rouge_l(prediction: str, reference: str, source: str = "") -> float:
    return float(_rouge_l_scorer().score(reference, prediction)["rougeL"].fmeasure)


def rouge_l_trace(prediction: str, reference: str, source: str = "") -> float:
    from rouge import Rouge

    if _blank(prediction.strip(), reference.strip()):
        return 0.0
    try:
        return float(Rouge(metrics=["rouge-l"]).get_scores(reference, prediction, avg=True)["rouge-l"]["f"])
    except ValueError:  # the package refuses a text that is only sentence separators ("..."): nothing matches
        return 0.0


def edit_similarity(prediction: str, reference: str, source: str = "") -> float:
    from rapidfuzz import fuzz

    return float(fuzz.ratio(prediction, reference)) / 100.0


_LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def py150_literals(code: str) -> str:
    """TRACE's Py150 ``postprocess``: bare placeholders become ``0`` / empty, ``<KIND_LIT:value>`` its value."""
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    return _LITERAL.sub(lambda m: m.group(2), code)


def code_similarity(prediction: str, reference: str, source: str = "") -> float:
    prediction, reference = py150_literals(prediction), py150_literals(reference)
    if _blank(prediction, reference):
        return 0.0
    return int(round(100 * difflib.SequenceMatcher(None, prediction, reference).ratio())) / 100.0


def sari(prediction: str, reference: str, source: str = "") -> float:
    from clpet.evaluation.sari import sari_sentence

    return sari_sentence(source, prediction, [reference])


METRICS: Dict[str, Callable[[str, str, str], float]] = {
    "exact_match": exact_match, "exact_match_cased": exact_match_cased, "choice_accuracy": choice_accuracy,
    "rouge_l": rouge_l, "rouge_l_trace": rouge_l_trace, "edit_similarity": edit_similarity,
    "code_similarity": code_similarity, "sari": sari,
}
