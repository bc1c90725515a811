"""Run a grid of clpet experiments (scenarios × method variants × seeds) and write its results table.

    .venv/bin/python experiments/run_grid.py experiments/offline_cil.yaml [--only SUBSTRING] [--seeds 0 1] [--table-only]

The grid file names ``scenarios`` (each with its overrides), ``variants`` (a label and the overrides that make it,
e.g. ``method=lae method.pet=lora``, optionally ``skip`` scenarios where the variant cannot run), ``seeds`` and
optionally ``reading``, the hand-written interpretation printed under the table.
Every run goes to ``experiments/runs/<grid>/<scenario>/<variant>/seed<k>`` (git-ignored); a finished run is
skipped and a killed one resumes, so the script can be stopped and restarted at will. A finished run's record
(``metrics.json``, ``config.yaml``, ``provenance.json``, ``code_commit.txt``) is copied to
``experiments/results/records/<grid>/...`` (committed), so a grid run over several sessions or machines keeps
what finished: a run with a record counts as finished (delete the record to run it again), and the table is made
from the records. Runs go seed by seed (every
variant gets seed 0 before any gets seed 1), so a grid stopped part-way still has a complete first seed.
The table (mean ± std over seeds of A_last, A_avg, forgetting, plasticity -- on task-incremental language streams
average and whole accuracy, BWT, FWT, forgetting, plasticity and peak memory --, trainable parameters, wall time, plus
FSCIL and LAE extras when present: FSCIL drop and novel accuracy, LAE's online/offline experts, ADAM's halves and
feature shift, dynamic ConPET's selector task-id accuracy, I-LoRA's fast-adapter accuracy), the machine it ran on and the commit(s) of the code that made the runs go to
``experiments/results/<grid>.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's clpet (a grid worktree runs its own code)

from clpet.provenance import code_commit, cpu_name  # noqa: E402
from clpet.results import atomic_write_bytes, run_finished  # noqa: E402


RECORD_FILES = ("metrics.json", "config.yaml", "provenance.json", "code_commit.txt")


def record_dir(out_dir: Path) -> Path:
    """Where a run's record is kept in the repository: its path under experiments/runs, under results/records."""
    return ROOT / "experiments" / "results" / "records" / out_dir.relative_to(ROOT / "experiments" / "runs")


def finished_in(folder: Path) -> bool:
    """Whether ``folder`` holds the metrics of a run that went through its whole stream."""
    f = folder / "metrics.json"
    return f.exists() and run_finished(json.loads(f.read_text()))


def copy_record(src: Path, dst: Path, names=RECORD_FILES) -> None:
    """Copy the record files ``names`` that ``src`` has into ``dst`` (made when missing), each write atomic."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (src / name).exists():
            atomic_write_bytes(dst / name, (src / name).read_bytes())


def finished_folder(out_dir: Path):
    """The record folder of a finished run (copied there when missing), else None."""
    record = record_dir(out_dir)
    if finished_in(record):
        return record
    if not finished_in(out_dir):
        return None
    copy_record(out_dir, record)
    return record


def finished(out_dir: Path) -> bool:
    return finished_folder(out_dir) is not None


def run_one(overrides: list, out_dir: Path) -> None:
    if finished(out_dir):
        return
    resume = ["resume=true"] if (out_dir / "checkpoint.pt").exists() else []
    cmd = [sys.executable, "-m", "clpet.cli", "run", *overrides, f"out_dir={out_dir}", "progress=false", *resume]
    print("$", " ".join(cmd[2:]), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    commits = out_dir / "code_commit.txt"
    commits.write_text((commits.read_text() if commits.exists() else "") + code_commit(ROOT) + "\n")
    subprocess.run(cmd, check=True, cwd=ROOT)


def run_commits(run: Path) -> set:
    f = (finished_folder(run) or run) / "code_commit.txt"
    return set(f.read_text().split()) if f.exists() else {"unrecorded"}


def mean_std(values: list, fmt: str = ".2f") -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:{fmt}}"
    return f"{np.mean(vals):{fmt}} ± {np.std(vals, ddof=1):{fmt}}"


def run_dir(base: Path, sc: dict, var: dict, seed: int) -> Path:
    return base / sc["name"] / var["label"] / f"seed{seed}"


def planned_runs(grid: dict, base: Path) -> list:
    """(scenario, variant, seed, run folder) of every run in the grid, seed-major: every variant gets its first
    seed before any gets its second, so a grid stopped part-way still has one complete set of rows."""
    return [(sc, var, seed, run_dir(base, sc, var, seed)) for seed in grid["seeds"] for sc in grid["scenarios"]
            for var in grid["variants"] if sc["name"] not in var.get("skip", [])]


CIL_COLUMNS = {"A_last": "A_last", "A_avg": "A_avg", "forgetting": "forgetting", "plasticity": "plasticity"}
#: task-incremental language streams: what LM continual-learning tables report
TIL_COLUMNS = {"avg_task_acc": "average acc", "A_last": "whole acc", "bwt": "BWT", "fwt": "FWT",
               "forgetting": "forgetting", "plasticity": "plasticity", "peak_rss_mb": "peak RSS (MiB)"}


def unlearning_row(us: list) -> dict:
    """The unlearning methods' columns: accuracy before and after the requests, requests served before the first
    full retrain ("+": none happened), retraining work and time per request, the offline training time."""
    per = [u["requests"] for u in us]
    return {
        "acc before": mean_std([u["initial_acc"] for u in us]),
        "acc after": mean_std([u["final_acc"] for u in us]),
        "requests": str(us[0]["n_requests"]),
        "deletions before full retrain": mean_std([u["deletions_before_full_retrain"] for u in us], fmt=".1f")
        + ("" if all(u["full_retrain_reached"] for u in us) else " (+)"),
        "retraining / request (samples x epochs)": mean_std([np.mean([r["train_samples"] for r in p]) for p in per],
                                                            fmt=".0f"),
        "retraining / request (s)": mean_std([np.mean([r["train_time_s"] for r in p]) for p in per]),
        "training (s)": mean_std([u["offline"]["train_time_s"] for u in us], fmt=".1f"),
    }


def table(grid: dict, base: Path) -> str:
    lines = []
    for sc in grid["scenarios"]:
        rows, extra_cols = [], []
        for var in grid["variants"]:
            if sc["name"] in var.get("skip", []):
                continue
            ms = []
            for seed in grid["seeds"]:
                run = run_dir(base, sc, var, seed)
                folder = finished_folder(run)
                if folder is not None:
                    ms.append(json.loads((folder / "metrics.json").read_text()))
            if not ms:
                continue
            row = {"variant": var["label"], "n": len(ms)}
            if "unlearning" in ms[0]:
                row.update(unlearning_row([m["unlearning"] for m in ms]))
            cols = {} if "unlearning" in ms[0] else \
                TIL_COLUMNS if ms[0].get("protocol") == "task-incremental" else CIL_COLUMNS
            def over(key: str, fmt: str = ".2f") -> str:
                return mean_std([m.get(key) for m in ms], fmt=fmt)

            for key, title in cols.items():
                row[title] = over(key, ".0f" if key == "peak_rss_mb" else ".2f")
            if any("fscil" in m for m in ms):
                fs = [m["fscil"] for m in ms if "fscil" in m]
                sessions = np.mean([f["session_acc"] for f in fs], axis=0)
                row["session acc (mean)"] = " / ".join(f"{a:.1f}" for a in sessions)
                row["perf. drop"] = mean_std([f["performance_drop"] for f in fs])
                row["base (last)"] = mean_std([f["base_acc"][-1] for f in fs])
                row["novel (last)"] = mean_std([f["novel_acc"][-1] for f in fs])
            if any("lae_online_acc" in m for m in ms):
                row["online / offline"] = f"{over('lae_online_acc')} / {over('lae_offline_acc')}"
            if any("adam_adapted_acc" in m for m in ms):
                row["pretrained / adapted only"] = f"{over('adam_pretrained_acc')} / {over('adam_adapted_acc')}"
                row["feature shift"] = over("adam_feature_shift", ".1e")
            if any("selector_acc" in m for m in ms):
                row["selector acc"] = over("selector_acc")
            if any("ilora_fast_acc" in m for m in ms):
                row["fast adapter (whole acc)"] = over("ilora_fast_acc")
            row["trainable params"] = f"{int(np.median([m.get('trainable_params', 0) for m in ms])):,}"
            row["wall time (s)"] = over("wall_time_s")
            rows.append(row)
            extra_cols += [k for k in row if k not in extra_cols]
        if not rows:
            continue
        header = [k for k in extra_cols]
        lines += [f"### {sc['name']}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in header) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("grid")
    ap.add_argument("--only", default="", help="run only scenario/variant labels containing this")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="run only these of the grid's seeds")
    ns = ap.parse_args()
    grid_path = Path(ns.grid).resolve()
    grid = yaml.safe_load(grid_path.read_text())
    base = ROOT / "experiments" / "runs" / grid_path.stem
    planned = planned_runs(grid, base)
    if not ns.table_only:
        for sc, var, seed, run in planned:
            if ns.seeds is not None and seed not in ns.seeds:
                continue
            if not ns.only or ns.only in f"{sc['name']}/{var['label']}":
                run_one([*sc.get("overrides", []), *var["overrides"], f"seed={seed}"], run)
    done = [run for *_, run in planned if finished(run)]
    commits = sorted(set().union(*[run_commits(run) for run in done]))
    status = "complete" if len(done) == len(planned) else f"PARTIAL: {len(done)} of {len(planned)} runs finished so far"
    out = ROOT / "experiments" / "results" / f"{grid_path.stem}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{cpu_name()} ({platform.machine()}), {os.cpu_count()} cores, Python {platform.python_version()}"
    text = (f"# {grid.get('title', grid_path.stem)}\n\n{grid.get('description', '').strip()}\n\n"
            f"Produced by `.venv/bin/python experiments/run_grid.py {grid_path.relative_to(ROOT)}` "
            f"on {machine}, code at commit {', '.join(commits) or '–'}. Seeds: {grid['seeds']}; "
            f"mean ± sample std over seeds (`n` = seeds finished).\n\n"
            f"Status: {status}.\n\n{table(grid, base)}\n")
    if grid.get("reading"):
        text += f"\n## Reading (written after the runs, from the numbers above)\n\n{grid['reading'].strip()}\n"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
