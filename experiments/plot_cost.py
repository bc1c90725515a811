"""Training cost per task against the task index, from finished run folders that record ``train_cost`` (ConPET's
variants): optimizer steps, and training wall time with its least-squares slope per task.

    .venv/bin/python experiments/plot_cost.py experiments/runs/conpet_wordnet/wordnet-long \\
        --out experiments/results/conpet_cost.png

Reads ``<folder>/<variant>/seed<k>/metrics.json``; one line per variant (mean over the seeds found), and prints a
markdown table of the slopes (seconds and steps per task index, over tasks 2..T: the first task has no replay).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

import numpy as np


def load(folder: Path) -> Dict[str, List[List[dict]]]:
    """variant -> per seed, the ``train_cost`` list."""
    out: Dict[str, List[List[dict]]] = {}
    for metrics in sorted(folder.glob("*/seed*/metrics.json")):
        m = json.loads(metrics.read_text())
        if "train_cost" in m and m.get("n_experiences_done") == m.get("n_experiences"):
            out.setdefault(metrics.parent.parent.name, []).append(m["train_cost"])
    if not out:
        raise SystemExit(f"no finished run with train_cost under {folder}")
    return out


def slope(y: np.ndarray) -> float:
    """Least-squares slope of y against the task index, tasks 2..T."""
    x = np.arange(1, len(y))
    return float(np.polyfit(x, y[1:], 1)[0]) if len(y) > 2 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load(args.folder)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    print("| variant | seeds | steps per task (2nd..last) | train time slope (s / task) | steps slope (per task) |")
    print("|---|---|---|---|---|")
    for variant, seeds in sorted(runs.items()):
        steps = np.mean([[c["optimizer_steps"] for c in s] for s in seeds], axis=0)
        secs = np.mean([[c["train_time_s"] for c in s] for s in seeds], axis=0)
        tasks = np.arange(1, len(steps) + 1)
        axes[0].plot(tasks, steps, marker="o", label=variant)
        axes[1].plot(tasks, secs, marker="o", label=variant)
        print(f"| {variant} | {len(seeds)} | {int(steps[1])}..{int(steps[-1])} | {slope(secs):.3f} | {slope(steps):.2f} |")
    axes[0].set(xlabel="task", ylabel="optimizer steps", title="steps per task")
    axes[1].set(xlabel="task", ylabel="training time (s)", title="training time per task")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
