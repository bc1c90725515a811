"""SARI, the text-simplification score (Xu et al., "Optimizing Statistical Machine Translation for Text
Simplification", TACL 2016, Sec. 4.1): the mean over n = 1..4 of the add F1, the keep F1 and the delete precision of
the output's n-grams against the source and the references.

Written in clpet because no package computes it offline: the Hugging Face ``sari`` metric (which TRACE's 20Minuten
score loads with ``load_metric("sari")``) is a script fetched from a hub at run time, and EASSE is not on PyPI.
This follows that metric's definition, which is tensor2tensor's variant of the authors' script: 0/0 counts as 1
(an output equal to its reference scores full marks), keep recall divides by the total count of the n-grams the
references keep (the fix of cocoxu/simplification issue 6), and every sentence is lower-cased and tokenised with
sacrebleu's 13a tokenizer first. ``tests/test_trace.py`` checks it against the metric's documented values and
``experiments/fidelity/trace_metrics.py`` against the metric script itself.
"""
from __future__ import annotations

import functools
from collections import Counter
from typing import Any, List, Sequence, Tuple


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def normalise(sentence: str) -> str:
    """Lower-cased and 13a-tokenised, as the reference metric does before counting n-grams."""
    return _tokenizer()(sentence.lower())


def ngrams(tokens: Sequence[str], n: int) -> List[str]:
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def sari_ngram(source: Sequence[str], output: Sequence[str], references: Sequence[Sequence[str]]
               ) -> Tuple[float, float, float]:
    """(keep F1, delete precision, add F1) for one n-gram order. Source and output counts are weighted by the
    number of references, so a reference count of k against m references reads as the fraction k / m."""
    m = len(references)
    src = Counter({g: c * m for g, c in Counter(source).items()})
    out = Counter({g: c * m for g, c in Counter(output).items()})
    ref = Counter(g for r in references for g in r)

    kept = src & out
    kept_good = kept & ref
    kept_by_refs = src & ref
    keep_p = sum(kept_good[g] / kept[g] for g in kept_good) / len(kept) if kept else 1.0
    keep_r = sum(kept_good.values()) / sum(kept_by_refs.values()) if kept_by_refs else 1.0

    deleted = src - out
    deleted_good = deleted - ref
    del_p = sum(deleted_good[g] / deleted[g] for g in deleted_good) / len(deleted) if deleted else 1.0

    added = set(out) - set(src)
    added_good = added & set(ref)
    added_by_refs = set(ref) - set(src)
    add_p = len(added_good) / len(added) if added else 1.0
    add_r = len(added_good) / len(added_by_refs) if added_by_refs else 1.0
    return _f1(keep_p, keep_r), del_p, _f1(add_p, add_r)


def sari_sentence(source: str, prediction: str, references: Sequence[str]) -> float:
    """SARI of one output in [0, 1] (the reference metric reports the mean over sentences times 100)."""
    words = [normalise(s).split(" ") for s in (source, prediction)]
    refs = [normalise(r).split(" ") for r in references]
    parts = [sari_ngram(ngrams(words[0], n), ngrams(words[1], n), [ngrams(r, n) for r in refs]) for n in (1, 2, 3, 4)]
    keep, delete, add = (sum(p[i] for p in parts) / 4 for i in range(3))
    return (keep + delete + add) / 3
