"""Figures for runs and comparisons: accuracy-matrix heatmap, A_t curves, stability-plasticity scatter,
forgetting bars.

Uses matplotlib's object-oriented API on an Agg canvas (no pyplot, no display, the global backend is left
alone), and writes every PNG atomically (rendered to memory, then ``atomic_write_bytes``).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from clpet.metrics import matrix_to_rows
from clpet.results import RunFolder, atomic_write_bytes, load_metrics

DPI = 120


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return atomic_write_bytes(path, buf.getvalue())


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.asarray([np.nan if v is None else float(v) for v in values], dtype=float)


def plot_acc_matrix(R: Any, path: str | os.PathLike, title: str = "accuracy matrix R[t, j] (%)") -> Path:
    """Heatmap of the accuracy matrix (percent, 0-100 colour scale), cells annotated, unevaluated cells blank.

    ``R``: array with NaN or rows with ``None`` (ragged allowed). Rows: after learning experience t;
    columns: evaluated on experience j.
    """
    rows = matrix_to_rows(R)
    n_rows = max(len(rows), 1)
    n_cols = max((len(r) for r in rows), default=1)
    mat = np.full((n_rows, n_cols), np.nan)
    for t, r in enumerate(rows):
        mat[t, : len(r)] = _floats(r)
    side = min(max(4.0, 0.55 * max(n_rows, n_cols) + 2.0), 16.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    if max(n_rows, n_cols) <= 30:
        size = max(5, 10 - max(n_rows, n_cols) // 4)
        for (t, j), v in np.ndenumerate(mat):
            if np.isfinite(v):
                ax.text(j, t, f"{v:.1f}", ha="center", va="center", fontsize=size,
                        color="black" if v > 60 else "white")
    ax.set_xlabel("evaluated on experience j")
    ax.set_ylabel("after learning experience t")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    return _save(fig, path)


def plot_accuracy_curve(
    curves: Mapping[str, Sequence[float | None]],
    path: str | os.PathLike,
    xlabel: str = "experience",
    ylabel: str = "A_t (%)",
    title: str | None = None,
    std: Mapping[str, Sequence[float | None]] | None = None,
) -> Path:
    """One line with markers per label (x = experience index t, 0-based); with ``std[label]`` a shaded
    mean +- std band. Serves a single run and overlaid comparisons alike."""
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    for label, values in curves.items():
        y = _floats(values)
        x = np.arange(len(y))
        (line,) = ax.plot(x, y, marker="o", markersize=4, label=str(label))
        if std is not None and label in std:
            s = np.nan_to_num(_floats(std[label])[: len(y)], nan=0.0)
            ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_stability_plasticity(
    points: Mapping[str, tuple[float | None, float | None]],
    path: str | os.PathLike,
    title: str | None = "stability vs plasticity",
    errors: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> Path:
    """Scatter of forgetting (x; lower = more stable) against plasticity (y; higher = learns better), one
    labelled point per label; ``errors[label] = (forgetting std, plasticity std)`` adds error bars.
    Points with a missing coordinate are left out."""
    fig = _figure(6.0, 4.6)
    ax = fig.add_subplot()
    for label, (f, p) in points.items():
        if f is None or p is None or not (np.isfinite(f) and np.isfinite(p)):
            continue
        xerr, yerr = (errors or {}).get(label, (None, None))
        ax.errorbar([f], [p], xerr=None if xerr is None else [xerr], yerr=None if yerr is None else [yerr],
                    fmt="o", capsize=3)
        ax.annotate(str(label), (f, p), textcoords="offset points", xytext=(5, 5), fontsize="small")
    ax.set_xlabel("forgetting (percentage points, lower is better)")
    ax.set_ylabel("plasticity: mean R[j, j] (%)")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_forgetting_bars(
    values: Mapping[str, float | None],
    path: str | os.PathLike,
    errors: Mapping[str, float | None] | None = None,
    ylabel: str = "forgetting (percentage points)",
    title: str | None = None,
) -> Path:
    """Bar per label (missing values drawn as empty bars), optional std error bars."""
    labels = [str(k) for k in values]
    y = np.nan_to_num(_floats(list(values.values())), nan=0.0)
    err = None if errors is None else np.nan_to_num(_floats([errors.get(k) for k in values]), nan=0.0)
    fig = _figure(max(4.0, 0.8 * len(labels) + 2.0), 4.2)
    ax = fig.add_subplot()
    ax.bar(np.arange(len(labels)), y, yerr=err, capsize=3, color="tab:red", alpha=0.8)
    ax.set_xticks(np.arange(len(labels)), labels, rotation=30 if len(labels) > 4 else 0, ha="right"
                  if len(labels) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_run(run_dir: str | os.PathLike) -> list[Path]:
    """(Re)draw ``plots/acc_matrix.png`` and ``plots/accuracy_curve.png`` from the run's ``metrics.json``."""
    metrics = load_metrics(run_dir)  # fails before creating anything when the run has no metrics.json
    run = RunFolder(run_dir)
    name = " / ".join(str(metrics[k]) for k in ("method", "scenario") if metrics.get(k) is not None)
    if metrics.get("seed") is not None:
        name += f" (seed {metrics['seed']})"
    written = []
    if metrics.get("acc_matrix"):
        written.append(plot_acc_matrix(metrics["acc_matrix"], run.plots_dir / "acc_matrix.png",
                                       title=f"R[t, j] (%) {name}".strip()))
    if metrics.get("A_t"):
        label = str(metrics.get("method") or "run")
        written.append(plot_accuracy_curve({label: metrics["A_t"]}, run.plots_dir / "accuracy_curve.png",
                                           title=name or None))
    return written


def plot_deletion_cost(runs: Dict[str, Mapping[str, Any]], path: str | os.PathLike, title: Optional[str] = None) -> Path:
    """Accuracy (left) and cumulative retraining work, samples x epochs (right), against the number of deletion
    requests served, one line per run (``metrics['unlearning']`` of S3T, SISA, retrain...)."""
    fig = _figure(10, 3.8)
    acc_ax, cost_ax = fig.subplots(1, 2)
    for label, m in runs.items():
        u = m["unlearning"]
        x = np.arange(len(u["requests"]) + 1)
        acc_ax.plot(x, _floats([u["initial_acc"], *[r["acc"] for r in u["requests"]]]), marker="o", ms=3, label=label)
        cost_ax.plot(x, np.cumsum([0, *[r["train_samples"] for r in u["requests"]]]), marker="o", ms=3, label=label)
    acc_ax.set_xlabel("deletion requests served")
    acc_ax.set_ylabel("test accuracy (%)")
    cost_ax.set_xlabel("deletion requests served")
    cost_ax.set_ylabel("cumulative retraining (samples x epochs)")
    acc_ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
