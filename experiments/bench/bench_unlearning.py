"""Wall time per deletion request, S3T vs SISA vs full retraining (target: S3T >= 10x below retraining), read from
the finished runs of an unlearning grid (each request's retraining is timed by the method: ``train_time_s``):

    .venv/bin/python experiments/bench/bench_unlearning.py experiments/runs/unlearning_wordnet/wordnet

(or on the grid's committed records, ``experiments/results/records/unlearning_wordnet/wordnet``: the same files).

Per variant: the mean and maximum retraining seconds per request over every request of every finished seed, the
accuracy after the last request, and the ratio of full retraining's mean to the variant's. The grid must run alone
on the machine (these are wall times).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from clpet.provenance import cpu_name  # noqa: E402


def finished_runs(folder: Path) -> dict:
    out: dict = {}
    for path in sorted(folder.glob("*/seed*/metrics.json")):
        m = json.loads(path.read_text())
        if "unlearning" in m and m["unlearning"]["n_requests"] == m.get("n_requests_planned"):
            out.setdefault(path.parent.parent.name, []).append(m)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    runs = finished_runs(args.folder)
    if not runs:
        raise SystemExit(f"no finished unlearning run under {args.folder}")
    rows = {}
    for variant, ms in runs.items():
        times = [r["train_time_s"] for m in ms for r in m["unlearning"]["requests"]]
        rows[variant] = (len(ms), len(times), float(np.mean(times)), float(np.max(times)),
                         float(np.mean([m["unlearning"]["final_acc"] for m in ms])))
    base = rows.get("retrain", (None, None, None))[2]
    print(f"# {args.folder}; machine: {cpu_name()}")
    print("| variant | seeds | requests | retraining s / request (mean) | max | accuracy after the last request "
          "| retrain mean / variant mean |")
    print("|---|---|---|---|---|---|---|")
    for variant, (n, k, mean, top, acc) in rows.items():
        ratio = "–" if base is None or mean == 0 else f"{base / mean:.1f}x"
        ratio = "inf (no retraining)" if base is not None and mean == 0 else ratio
        print(f"| {variant} | {n} | {k} | {mean:.2f} | {top:.2f} | {acc:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
