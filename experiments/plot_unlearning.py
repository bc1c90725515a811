"""Accuracy and cumulative retraining work against the number of deletion requests, one line per method, from the
finished runs of an unlearning grid (``experiments/unlearning_wordnet.yaml``), seed by seed:

    .venv/bin/python experiments/plot_unlearning.py experiments/runs/unlearning_wordnet/wordnet --seed 0 \\
        --out experiments/results/unlearning_wordnet.png

Reads ``<folder>/<variant>/seed<k>/metrics.json`` (``clpet.plots.plot_deletion_cost`` draws them): the run folders,
or the grid's committed records (``experiments/results/records/unlearning_wordnet/wordnet``), which hold the same
``metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clpet.plots import plot_deletion_cost  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    runs = {}
    for metrics in sorted(args.folder.glob(f"*/seed{args.seed}/metrics.json")):
        m = json.loads(metrics.read_text())
        if "unlearning" in m and m["unlearning"]["n_requests"] == m.get("n_requests_planned"):
            runs[metrics.parent.parent.name] = m
    if not runs:
        raise SystemExit(f"no finished unlearning run for seed {args.seed} under {args.folder}")
    plot_deletion_cost(runs, args.out, title=f"{args.folder.name}, seed {args.seed}")
    print(f"{args.out}: {', '.join(runs)}")


if __name__ == "__main__":
    main()
