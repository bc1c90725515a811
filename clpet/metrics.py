"""Continual-learning metrics from the accuracy matrix, and deletion-cost bookkeeping.

Conventions (docs/methods.md, "Protocols and metrics"):

- ``correct[t, j]``: number of correct predictions on experience j's test set after learning experience t
  (0-based; NaN / ``None`` where not evaluated). ``counts[j]``: size of experience j's test set.
- ``R[t, j] = 100 * correct[t, j] / counts[j]`` (percent), the accuracy matrix.
- A run in progress has fewer rows than experiences: every function works on the rows done so far
  (rows may be given ragged, e.g. row t holding only columns 0..t; trailing all-NaN rows are dropped).
  ``T`` below is the number of rows done, so ``T - 1`` is the last row.

Scalar metrics return ``float`` or ``None`` when undefined (never NaN), so their output is JSON-safe.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

FORGETTING_DEFINITION = "chaudhry_max_minus_last"

ArrayLike = Any  # nested lists (None allowed) or numpy arrays (NaN allowed)


# ---------------------------------------------------------------------------------------------- helpers
def _as_matrix(rows: ArrayLike, n_cols: int | None = None) -> np.ndarray:
    """A float matrix with NaN where not evaluated; ragged rows are padded; trailing all-NaN rows dropped."""
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        mat = rows.astype(float, copy=True)
    else:
        rows = [list(r) for r in rows]
        width = max([len(r) for r in rows] + [n_cols or 0])
        mat = np.full((len(rows), width), np.nan)
        for t, r in enumerate(rows):
            mat[t, : len(r)] = [np.nan if v is None else float(v) for v in r]
    if n_cols is not None and mat.shape[1] < n_cols:
        mat = np.hstack([mat, np.full((mat.shape[0], n_cols - mat.shape[1]), np.nan)])
    done = [t for t in range(mat.shape[0]) if np.isfinite(mat[t]).any()]
    return mat[: (done[-1] + 1 if done else 0)]


def _opt(x: float) -> float | None:
    """``None`` for NaN/inf, else a plain float."""
    x = float(x)
    return x if math.isfinite(x) else None


def _mean_or_none(values: Sequence[float]) -> float | None:
    if len(values) == 0 or not np.all(np.isfinite(values)):
        return None
    return float(np.mean(values))


def _counts(counts: ArrayLike, n_cols: int) -> np.ndarray:
    c = np.asarray(counts, dtype=float).reshape(-1)
    if c.size < n_cols:
        raise ValueError(f"counts has {c.size} entries but the correct matrix has {n_cols} columns")
    if np.any(~np.isfinite(c)) or np.any(c <= 0):
        raise ValueError(f"counts must be positive test-set sizes, got {c.tolist()}")
    return c


# ---------------------------------------------------------------------------------------------- matrix
def accuracy_matrix(correct: ArrayLike, counts: ArrayLike) -> np.ndarray:
    """``R[t, j] = 100 * correct[t, j] / counts[j]`` in percent; NaN where not evaluated.

    Accuracy matrix of docs/methods.md ("accuracy on experience j's test set after learning experience t").
    Shape ``(rows done, number of experiences)``; ``counts`` fixes the number of columns.
    """
    c = np.asarray(counts, dtype=float).reshape(-1)
    mat = _as_matrix(correct, n_cols=c.size)
    c = _counts(c, mat.shape[1])
    if np.any(mat[np.isfinite(mat)] < 0) or np.any(mat > c[None, : mat.shape[1]]):
        raise ValueError("correct[t, j] must lie in [0, counts[j]]")
    return 100.0 * mat / c[None, : mat.shape[1]]


def _as_acc(R: ArrayLike) -> np.ndarray:
    return _as_matrix(R)


# ---------------------------------------------------------------------------------------------- A_t
def a_t(correct: ArrayLike, counts: ArrayLike) -> list[float | None]:
    """A_t for every row done: sample-weighted accuracy (percent) over the test samples of experiences j <= t.

    docs/methods.md "A_t": accuracy on the test samples of all classes seen after experience t,
    i.e. ``100 * sum_{j<=t} correct[t, j] / sum_{j<=t} counts[j]`` -- not the mean of ``R[t, :t+1]``.
    ``None`` for a row where some seen experience was not evaluated.
    """
    c = np.asarray(counts, dtype=float).reshape(-1)
    mat = _as_matrix(correct, n_cols=c.size)
    accuracy_matrix(mat, c)  # validates
    out: list[float | None] = []
    for t in range(mat.shape[0]):
        seen = mat[t, : t + 1]
        out.append(_opt(100.0 * seen.sum() / c[: t + 1].sum()) if np.isfinite(seen).all() else None)
    return out


def a_last(correct: ArrayLike, counts: ArrayLike) -> float | None:
    """A_last = A_T, the sample-weighted accuracy after the last experience done (docs/methods.md)."""
    values = a_t(correct, counts)
    return values[-1] if values else None


def a_avg(correct: ArrayLike, counts: ArrayLike) -> float | None:
    """A_avg = mean over t of A_t (docs/methods.md; the "average incremental accuracy" of iCaRL/SimpleCIL)."""
    values = a_t(correct, counts)
    return None if not values or any(v is None for v in values) else float(np.mean(values))


# ---------------------------------------------------------------------------------------------- R-based
def forgetting(R: ArrayLike) -> float | None:
    """Average forgetting (Chaudhry et al. 2018, "Riemannian Walk", Eq. for f_j^k), in percentage points.

    ``mean_{j < T-1} [ max_{j <= t < T-1} R[t, j] - R[T-1, j] ]`` with T-1 the last row done.
    The max runs over rows after experience j was learned (t >= j), so evaluations of j before it was
    learned (done for FWT) do not count. ``None`` with a single row. Not Avalanche's "first - last".
    """
    mat = _as_acc(R)
    last = mat.shape[0] - 1
    if last < 1:
        return None
    drops = []
    for j in range(last):
        history = mat[j:last, j]
        if not np.isfinite(history).any():
            return None
        drops.append(np.nanmax(history) - mat[last, j])
    return _mean_or_none(drops)


def bwt(R: ArrayLike) -> float | None:
    """Backward transfer (Lopez-Paz & Ranzato 2017, GEM, Eq. 3): ``mean_{j < T-1} R[T-1, j] - R[j, j]``.

    Negative values mean forgetting. ``None`` with a single row.
    """
    mat = _as_acc(R)
    last = mat.shape[0] - 1
    if last < 1:
        return None
    return _mean_or_none([mat[last, j] - mat[j, j] for j in range(last)])


def fwt(R: ArrayLike, baseline: Sequence[float] | None) -> float | None:
    """Forward transfer (Lopez-Paz & Ranzato 2017, GEM, Eq. 4): ``mean_{j >= 1} R[j-1, j] - b_j``.

    ``baseline[j]`` = b_j, the accuracy (percent) of the untrained model on experience j. Needs the
    upper diagonal ``R[j-1, j]`` (evaluation on the next experience); ``None`` when it or the baseline
    is missing, or when no pair exists yet.
    """
    if baseline is None:
        return None
    mat = _as_acc(R)
    b = np.asarray([np.nan if v is None else v for v in baseline], dtype=float)
    if b.size < mat.shape[1]:
        raise ValueError(f"baseline has {b.size} entries for {mat.shape[1]} experiences")
    pairs = [(j - 1, j) for j in range(1, min(mat.shape[0] + 1, mat.shape[1]))]
    if not pairs:
        return None
    return _mean_or_none([mat[i, j] - b[j] for i, j in pairs])


def plasticity(R: ArrayLike) -> float | None:
    """Plasticity: mean over j of ``R[j, j]``, accuracy on an experience right after learning it (docs/methods.md)."""
    mat = _as_acc(R)
    n = min(mat.shape)
    return _mean_or_none([mat[j, j] for j in range(n)]) if n else None


def average_task_accuracy(R: ArrayLike) -> float | None:
    """Mean of the last row over the experiences seen, ``mean_{j <= T-1} R[T-1, j]``.

    ConPET's "average accuracy" (and TRACE's OP), next to the sample-weighted "whole accuracy" = A_last.
    Future columns of the last row (FWT evaluations) are excluded.
    """
    mat = _as_acc(R)
    if mat.shape[0] == 0:
        return None
    last = mat.shape[0] - 1
    return _mean_or_none(list(mat[last, : last + 1]))


def matrix_to_rows(R: ArrayLike) -> list[list[float | None]]:
    """The matrix as JSON-safe nested lists: floats, ``None`` where not evaluated."""
    return [[_opt(v) for v in row] for row in _as_acc(R)]


def summarize(correct: ArrayLike, counts: ArrayLike, baseline: Sequence[float] | None = None) -> dict:
    """Every metric for the rows done so far, JSON-safe (floats and ``None``, no NaN).

    Keys: ``A_last, A_avg, A_t, forgetting, bwt, fwt, plasticity, avg_task_acc, acc_matrix,
    forgetting_definition, n_experiences_done, n_experiences``. ``baseline`` (percent per experience) is
    only needed for FWT.
    """
    R = accuracy_matrix(correct, counts)
    A = a_t(correct, counts)
    return {
        "A_last": A[-1] if A else None,
        "A_avg": None if not A or any(v is None for v in A) else float(np.mean(A)),
        "A_t": A,
        "forgetting": forgetting(R),
        "forgetting_definition": FORGETTING_DEFINITION,
        "bwt": bwt(R),
        "fwt": fwt(R, baseline),
        "plasticity": plasticity(R),
        "avg_task_acc": average_task_accuracy(R),
        "acc_matrix": matrix_to_rows(R),
        "n_experiences_done": int(R.shape[0]),
        "n_experiences": int(R.shape[1]),
    }


# ---------------------------------------------------------------------------------------------- deletions
@dataclass
class DeletionRecord:
    """Cost of serving one deletion request (docs/methods.md "Deletion cost"; S3T/SISA bookkeeping).

    ``retrained_samples_x_steps``: training work redone to remove the samples exactly (0 when S3T only
    falls back to a shorter prefix); ``full_retrain``: whether the request forced training from scratch;
    ``accuracy_after``: test accuracy (percent) of the served model after the request.
    """

    request: int
    n_samples: int
    retrained_samples_x_steps: float
    wall_time_s: float
    full_retrain: bool
    accuracy_after: float | None = None

    def to_dict(self) -> dict:
        """JSON-safe dict of the fields."""
        d = asdict(self)
        d["accuracy_after"] = None if self.accuracy_after is None else _opt(self.accuracy_after)
        return d


def summarize_deletions(records: Iterable[DeletionRecord]) -> dict:
    """Deletion-cost summary: requests served before the first full retrain (S3T's headline), totals, and the
    accuracy-vs-deletions curve. ``requests_before_full_retrain`` equals the number of requests when no
    request needed a full retrain."""
    recs = sorted(records, key=lambda r: r.request)
    first_full = next((i for i, r in enumerate(recs) if r.full_retrain), None)
    return {
        "n_requests": len(recs),
        "n_samples_deleted": int(sum(r.n_samples for r in recs)),
        "requests_before_full_retrain": len(recs) if first_full is None else first_full,
        "n_full_retrains": sum(1 for r in recs if r.full_retrain),
        "total_retrained_samples_x_steps": float(sum(r.retrained_samples_x_steps for r in recs)),
        "total_wall_time_s": float(sum(r.wall_time_s for r in recs)),
        "accuracy_curve": [None if r.accuracy_after is None else _opt(r.accuracy_after) for r in recs],
        "records": [r.to_dict() for r in recs],
    }


# ---------------------------------------------------------------------------------------------- FSCIL
FSCIL_DEFINITIONS = {
    "session_acc": "A_t: sample-weighted accuracy over the test samples of every class seen after session t",
    "base_acc": "R[t, 0]: accuracy on the base session's test samples after session t",
    "novel_acc": "sample-weighted accuracy over the test samples of sessions 1..t after session t (None at t = 0)",
    "harmonic_mean": "2 * base * novel / (base + novel) per session (None where novel is None or both are 0)",
    "performance_drop": "PD = A_0 - A_last, session accuracy after the base session minus after the last one",
}


def fscil_summary(correct: ArrayLike, counts: ArrayLike) -> dict:
    """FSCIL metrics (TOPIC, Tao et al. CVPR 2020, and the FSCIL papers after it) from the same ``correct`` /
    ``counts`` as :func:`summarize`, experience 0 being the base session and 1.. the incremental sessions.

    Keys: ``session_acc`` (A_t per session done, the number FSCIL tables list per session), ``base_acc``
    (``R[t, 0]``), ``novel_acc`` (sample-weighted over sessions 1..t; ``None`` at t = 0), ``harmonic_mean`` of
    base and novel, ``performance_drop`` (``A_0 - A_last``, percentage points; ``None`` until two sessions are
    done), ``A_last``, ``A_avg`` (mean session accuracy), ``n_sessions_done``, ``n_sessions`` and
    ``fscil_definitions``. JSON-safe: floats and ``None``, no NaN. Values are ``None`` for a session whose
    needed cells were not evaluated.
    """
    c = np.asarray(counts, dtype=float).reshape(-1)
    mat = _as_matrix(correct, n_cols=c.size)
    accuracy_matrix(mat, c)  # validates
    session = a_t(mat, c)
    base: list[float | None] = []
    novel: list[float | None] = []
    hm: list[float | None] = []
    for t in range(mat.shape[0]):
        b = _opt(100.0 * mat[t, 0] / c[0]) if np.isfinite(mat[t, 0]) else None
        nv: float | None = None
        if t > 0:
            seen = mat[t, 1 : t + 1]
            nv = _opt(100.0 * seen.sum() / c[1 : t + 1].sum()) if np.isfinite(seen).all() else None
        base.append(b)
        novel.append(nv)
        hm.append(None if b is None or nv is None or b + nv == 0 else 2.0 * b * nv / (b + nv))
    done = [v for v in session if v is not None]
    drop = None
    if len(session) >= 2 and session[0] is not None and session[-1] is not None:
        drop = float(session[0] - session[-1])
    return {
        "session_acc": session,
        "base_acc": base,
        "novel_acc": novel,
        "harmonic_mean": hm,
        "performance_drop": drop,
        "A_last": session[-1] if session else None,
        "A_avg": float(np.mean(done)) if done and len(done) == len(session) else None,
        "n_sessions_done": int(mat.shape[0]),
        "n_sessions": int(c.size),
        "fscil_definitions": dict(FSCIL_DEFINITIONS),
    }
