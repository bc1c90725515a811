"""Summarise a validation search script (``offline_defaults.sh``, ``replay_defaults.sh``): every Optuna trial
(validation numbers), the values each search chose, and the test-split runs of the chosen values beside the current
defaults.

    .venv/bin/python experiments/tuning/summarise.py [--sweeps runs/tuning] [--tests experiments/runs/tuning]
        [--searches adam_wordnet lae_wordnet] [--scores A_last A_avg] [--metrics A_last ...] [--out FILE]

Reads ``<sweeps>/<method>_<scenario>/<trial>/{config.yaml,metrics.json}`` and ``optimization_results.yaml`` of
each search named, and ``<tests>/<label>/seed<k>/metrics.json`` unless ``--tests ""``; copies each finished
test run's record to ``experiments/results/records/tuning/`` (as ``run_grid.py`` does) and writes the markdown
(``--out``) with the machine and the code commit. The reading under the tables is written by hand after the runs
(``--reading FILE``). The defaults are those of ``offline_defaults.sh`` (ADAM and LAE on WordNet).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from clpet.compare import mean_std  # noqa: E402
from clpet.provenance import code_commit, cpu_name  # noqa: E402
from clpet.results import atomic_write_text  # noqa: E402
from run_grid import copy_record, finished_folder, finished_in  # noqa: E402

METRICS = ("A_last", "A_avg", "forgetting", "plasticity", "wall_time_s")


def dotted(doc: Dict[str, Any], key: str) -> Any:
    """``doc["method"]["optim"]["lr"]`` for ``"method.optim.lr"``; None where a level is missing."""
    for part in key.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def plain(key: str) -> str:
    """``method.optim.lr`` for the sweeper's ``++method.optim.lr`` (it keeps clpet's rewritten override form)."""
    return key.lstrip("+")


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def commits_of(run_dir: Path) -> List[str]:
    """The code commit of every start of a run (its ``provenance.json`` records one entry per start)."""
    made = run_dir / "provenance.json"
    if not made.is_file():
        return []
    return [str(entry.get("code", {}).get("commit")) for entry in json.loads(made.read_text())]


def trials_table(sweep: Path, commits: List[str], scores: List[str]) -> List[str]:
    """One row per trial: its swept values, its validation objective (the ``objective`` key of the trials'
    config) and the other validation ``scores``."""
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    keys = [plain(k) for k in best["best_params"]]
    trials = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    configs = {t: yaml.safe_load((t / "config.yaml").read_text()) for t in trials if (t / "config.yaml").is_file()}
    objective = next((c.get("objective", "A_last") for c in configs.values()), "A_last")
    scores = [objective, *(k for k in scores if k != objective)]
    rows = []
    for trial in trials:
        if not (trial / "metrics.json").is_file():
            rows.append((int(trial.name), [None] * len(keys), [None] * len(scores)))
            continue
        commits += commits_of(trial)
        m = json.loads((trial / "metrics.json").read_text())
        rows.append((int(trial.name), [dotted(configs.get(trial, {}), k) for k in keys], [m.get(k) for k in scores]))
    lines = [f"Best: {', '.join(f'`{plain(k)}={fmt(v)}`' for k, v in best['best_params'].items())} "
             f"(validation {objective} {best['best_value']:.2f}).", "",
             "| trial | " + " | ".join(keys) + " | " + " | ".join(f"val {k}" for k in scores) + " |",
             "|" + "---|" * (len(keys) + len(scores) + 1)]
    for num, values, got in rows:
        cells = " | ".join("–" if v is None else f"{v:.2f}" for v in got)
        lines.append(f"| {num} | " + " | ".join(fmt(v) for v in values) + f" | {cells} |")
    return lines


def kept_record(run_dir: Path):
    """A finished run's folder to read: its committed record (copied there when missing) for a run under
    experiments/runs, the folder itself elsewhere; None while it is not finished."""
    if (ROOT / "experiments" / "runs") in run_dir.resolve().parents:
        return finished_folder(run_dir.resolve())
    return run_dir if finished_in(run_dir) else None


def kept_sweep(sweep: Path, records: Path) -> Path:
    """Copy a finished search to ``records/<its name>`` (committed, so the summary can be rebuilt without the
    sweep folder): its ``optimization_results.yaml`` and each finished trial's config, metrics and provenance.
    Returns the copy; a search that has not finished is left alone and its folder returned."""
    if not (sweep / "optimization_results.yaml").is_file() or sweep.resolve() == (records / sweep.name).resolve():
        return sweep
    kept = records / sweep.name
    copy_record(sweep, kept, ("optimization_results.yaml",))
    for trial in (p for p in sweep.iterdir() if p.name.isdigit() and finished_in(p)):
        copy_record(trial, kept / trial.name, ("config.yaml", "metrics.json", "provenance.json"))
    return kept


def test_table(tests: Path, commits: List[str], metrics: List[str]) -> List[str]:
    """Mean ± sample std over seeds per label of the test-split runs (their commits added to ``commits``)."""
    lines = ["| run | n | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 2)]
    for label in sorted(p for p in tests.iterdir() if p.is_dir()):
        runs = []
        for seed_dir in sorted(label.glob("seed*")):
            record = kept_record(seed_dir)
            if record is None:
                continue
            runs.append(json.loads((record / "metrics.json").read_text()))
            commits += commits_of(record)
        cells = []
        for key in metrics:
            mean, std = mean_std([r.get(key) for r in runs])
            cells.append("–" if mean is None else f"{mean:.2f}" + ("" if std is None else f" ± {std:.2f}"))
        lines.append(f"| {label.name} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


TITLE = "Offline schedules of ADAM and LAE chosen on validation data (issue \"Reproduce the papers by default\")"
INTRO = ("WordNet supersenses with MiniLM-L6 (45 classes, 5 experiences of 9), Adapter PET. Searches: Hydra's "
         "Optuna sweeper (TPE, sampler seed 0) with `scenario.val_fraction=0.2` (20% of each class's training "
         "samples held out; the objective is validation A_last, the test split is never read). Test: the chosen "
         "values, the current defaults and SimpleCIL on the test split, seeds 0-2, mean ± sample std.")


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweeps", default=str(ROOT / "runs" / "tuning"))
    p.add_argument("--tests", default=str(ROOT / "experiments" / "runs" / "tuning"),
                   help="test-split runs of the chosen values ('' for none)")
    p.add_argument("--searches", nargs="+", default=["adam_wordnet", "lae_wordnet"],
                   help="sweep folders under --sweeps, named <method>_<scenario>")
    p.add_argument("--scores", nargs="+", default=["A_last", "A_avg"],
                   help="validation numbers per trial beside the objective")
    p.add_argument("--metrics", nargs="+", default=list(METRICS), help="columns of the test-split table")
    p.add_argument("--title", default=TITLE)
    p.add_argument("--intro", default=INTRO)
    p.add_argument("--command", default="bash experiments/tuning/offline_defaults.sh")
    p.add_argument("--reading", default=str(ROOT / "experiments" / "tuning" / "reading.md"))
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "offline_tuning.md"))
    p.add_argument("--keep", metavar="DIR", default=None,
                   help="only copy each finished search named to DIR/<method>_<scenario> (kept_sweep), then stop")
    args = p.parse_args(argv)
    if args.keep:
        for name in args.searches:
            print(kept_sweep(Path(args.sweeps) / name, Path(args.keep)))
        return 0

    sweeps = Path(args.sweeps)
    out = [f"# {args.title}", "", args.intro, ""]
    commits: List[str] = []
    for name in args.searches:
        sweep = sweeps / name
        method, _, scenario = name.rpartition("_")
        out += [f"## Search: {method} on {scenario} (validation split)", ""]
        if not (sweep / "optimization_results.yaml").is_file():
            out += ["Not run yet.", ""]
            continue
        out += trials_table(sweep, commits, args.scores) + [""]
    table = test_table(Path(args.tests), commits, args.metrics) if args.tests else []
    commits = list(dict.fromkeys(commits))
    if table:
        out += ["## Test split", "", *table, ""]
    machine = f"{cpu_name()} ({platform.machine()}), {os.cpu_count()} cores, Python {platform.python_version()}"
    out += [f"Produced by `{args.command}` on {machine}, code at commit "
            f"{', '.join(commits) or code_commit(ROOT)}.", ""]
    reading = Path(args.reading)
    if reading.is_file():
        out += ["## Reading (written after the runs, from the numbers above)", "", reading.read_text().strip(), ""]
    atomic_write_text(args.out, "\n".join(out))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
