"""Cross-run comparison: mean +- std over seeds per (scenario, method), as markdown, CSV and plots.

``compare_runs(["runs/"])`` finds every ``metrics.json`` at or below the given folders (up to
``MAX_DEPTH`` levels, enough for Hydra multirun's ``multirun/<date>/<time>/<job>/``), groups the runs by
(scenario, method) and reports each metric as mean +- sample std (ddof = 1) over the runs of a group.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clpet.results import METRICS_FILE, atomic_write_text, load_metrics

MAX_DEPTH = 4
BASE_METRICS = ["A_last", "A_avg", "forgetting", "bwt", "plasticity", "wall_time_s"]
OPTIONAL_METRICS = ["avg_task_acc", "fwt", "trainable_params"]  # shown when some run has a value
_INTEGER_METRICS = {"trainable_params"}


@dataclass
class RunGroup:
    """The runs of one (scenario, method) pair."""

    scenario: str
    method: str
    runs: list[dict] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    @property
    def seeds(self) -> list[Any]:
        return [r.get("seed") for r in self.runs]

    def stat(self, key: str) -> tuple[float | None, float | None]:
        """(mean, sample std) of ``key`` over the runs that have it; std is ``None`` for fewer than 2."""
        return mean_std([r.get(key) for r in self.runs])

    def curve(self, key: str = "A_t") -> tuple[list[float | None], list[float | None]]:
        """Position-wise mean and sample std of a per-experience list (runs may differ in length)."""
        lists = [r.get(key) or [] for r in self.runs]
        width = max((len(v) for v in lists), default=0)
        means, stds = [], []
        for i in range(width):
            m, s = mean_std([v[i] if i < len(v) else None for v in lists])
            means.append(m)
            stds.append(s)
        return means, stds


def mean_std(values: Sequence[Any]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof = 1) of the finite numbers in ``values``; ``None`` where undefined."""
    x = np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=float)
    if x.size == 0:
        return None, None
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else None)


def find_run_dirs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Every folder holding a ``metrics.json``: each path itself, or its subfolders up to ``MAX_DEPTH``
    levels down. A path with none raises ``FileNotFoundError`` naming it."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise FileNotFoundError(f"run folder not found: {p}")
        if (p / METRICS_FILE).is_file():
            found.append(p)
            continue
        below = sorted({m.parent for d in range(1, MAX_DEPTH + 1)
                        for m in p.glob("/".join(["*"] * d + [METRICS_FILE]))})
        if not below:
            raise FileNotFoundError(f"no {METRICS_FILE} in {p} or its subfolders (not a finished run folder?)")
        found.extend(below)
    return list(dict.fromkeys(found))  # keep order, drop duplicates


def group_runs(run_dirs: Sequence[str | os.PathLike]) -> list[RunGroup]:
    """Load every run below ``run_dirs`` and group by (scenario, method), sorted by scenario then method."""
    groups: dict[tuple[str, str], RunGroup] = {}
    for d in find_run_dirs(run_dirs):
        metrics = load_metrics(d)
        key = (str(metrics.get("scenario", "?")), str(metrics.get("method", "?")))
        group = groups.setdefault(key, RunGroup(*key))
        group.runs.append(metrics)
        group.dirs.append(d)
    return [groups[k] for k in sorted(groups)]


def _columns(groups: Sequence[RunGroup]) -> list[str]:
    extra = [k for k in OPTIONAL_METRICS if any(r.get(k) is not None for g in groups for r in g.runs)]
    return BASE_METRICS + extra


def _cell(key: str, mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    digits = 0 if key in _INTEGER_METRICS else 2
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(groups: Sequence[RunGroup]) -> str:
    """Markdown table: scenario, method, n (runs), then mean +- std per metric (2 decimals)."""
    cols = _columns(groups)
    lines = ["| scenario | method | n | " + " | ".join(cols) + " |", "|" + "---|" * (3 + len(cols))]
    for g in groups:
        cells = [_cell(k, *g.stat(k)) for k in cols]
        lines.append(f"| {g.scenario} | {g.method} | {len(g.runs)} | " + " | ".join(cells) + " |")
    notes = []
    for g in groups:
        seeds = [s for s in g.seeds if s is not None]
        if len(set(map(str, seeds))) < len(seeds):
            notes.append(f"- {g.scenario}/{g.method}: repeated seeds {seeds}")
        for r, d in zip(g.runs, g.dirs):
            done, total = r.get("n_experiences_done"), r.get("n_experiences")
            if done is not None and total is not None and done < total:
                notes.append(f"- {d}: in progress ({done}/{total} experiences)")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def csv_table(groups: Sequence[RunGroup]) -> str:
    """The same table as CSV: scenario, method, n, seeds, then ``<metric>_mean`` and ``<metric>_std``
    (empty where undefined)."""
    cols = _columns(groups)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scenario", "method", "n", "seeds"] + [f"{k}_{s}" for k in cols for s in ("mean", "std")])
    for g in groups:
        row: list[Any] = [g.scenario, g.method, len(g.runs), " ".join(str(s) for s in g.seeds)]
        for k in cols:
            row.extend("" if v is None else f"{v:.4f}" for v in g.stat(k))
        writer.writerow(row)
    return buf.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "scenario"


def write_comparison_plots(groups: Sequence[RunGroup], plot_dir: str | os.PathLike) -> list[Path]:
    """Per scenario: ``accuracy_curves_<scenario>.png`` (mean A_t +- std band per method),
    ``stability_plasticity_<scenario>.png`` (forgetting vs plasticity, one point per method) and
    ``forgetting_bars_<scenario>.png``."""
    from clpet.plots import plot_accuracy_curve, plot_forgetting_bars, plot_stability_plasticity

    out = Path(plot_dir)
    written: list[Path] = []
    for scenario in dict.fromkeys(g.scenario for g in groups):
        mine = [g for g in groups if g.scenario == scenario]
        curves, bands = {}, {}
        for g in mine:
            curves[g.method], bands[g.method] = g.curve("A_t")
        slug = _slug(scenario)
        written.append(plot_accuracy_curve(curves, out / f"accuracy_curves_{slug}.png", std=bands,
                                           title=f"A_t on {scenario} (mean ± std over seeds)"))
        points = {g.method: (g.stat("forgetting")[0], g.stat("plasticity")[0]) for g in mine}
        errors = {g.method: (g.stat("forgetting")[1], g.stat("plasticity")[1]) for g in mine}
        written.append(plot_stability_plasticity(points, out / f"stability_plasticity_{slug}.png",
                                                 title=f"stability vs plasticity on {scenario}", errors=errors))
        written.append(plot_forgetting_bars({g.method: g.stat("forgetting")[0] for g in mine},
                                            out / f"forgetting_bars_{slug}.png",
                                            errors={g.method: g.stat("forgetting")[1] for g in mine},
                                            title=f"forgetting on {scenario}"))
    return written


def compare_runs(run_dirs: list[str], out_csv: str | None = None, plot_dir: str | None = None) -> str:
    """Markdown table of mean +- std per (scenario, method) over the runs found at or below ``run_dirs``;
    optionally also the CSV at ``out_csv`` and the comparison plots in ``plot_dir``."""
    groups = group_runs(run_dirs)
    if out_csv:
        atomic_write_text(out_csv, csv_table(groups))
    if plot_dir:
        write_comparison_plots(groups, plot_dir)
    return markdown_table(groups)
