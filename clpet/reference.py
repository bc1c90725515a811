"""Reported beside reproduced: the paper numbers a preset lists (``reported:``) next to the runs made with it.

A run is matched to a reported entry when the run applied that entry's preset (``preset`` in its
``config.yaml``; a ``preset=none`` run is not the paper's setting, whatever its keys), changed none of the preset's
other keys (``preset_overridden``), and its resolved config holds every value of the entry's ``when`` (e.g.
``method.pet: prefix``). ``clpet compare RUN_DIR... --reference`` prints
one row per entry with runs; ``reproducibility_table`` lists every entry of every preset, blank where no run
exists yet, and is what ``experiments/reproducibility.py`` writes to ``REPRODUCIBILITY.md``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from clpet.compare import find_run_dirs, mean_std
from clpet.presets import available_presets, flatten, reported
from clpet.results import load_metrics, run_finished

METRICS = ("A_last", "A_avg")


def run_preset(config: Dict[str, Any]) -> Optional[str]:
    """The preset a run applied (its name without the ``(without its backbone keys ...)`` note), or None."""
    name = str(config.get("preset") or "none")
    return None if name == "none" or "(" in name else name


def matches(config: Dict[str, Any], when: Dict[str, Any]) -> bool:
    """The run holds every value of ``when`` and changed no other preset key (``preset_overridden``; the seed
    and the ``when`` keys themselves may differ from the preset: they choose the entry)."""
    flat, need = flatten(config), flatten(dict(when or {}))
    allowed = set(need) | {"seed"}
    if any(key not in allowed for key in config.get("preset_overridden") or []):
        return False
    return all(flat.get(key) == value for key, value in need.items())


def load_run(run_dir: Path) -> Tuple[Dict[str, Any], Dict[str, Any], List[Dict[str, Any]]]:
    """(config, metrics, provenance records) of a run folder."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    prov = run_dir / "provenance.json"
    records = json.loads(prov.read_text()) if prov.is_file() else []
    return config or {}, load_metrics(run_dir), records


def matched_runs(run_dirs: Sequence[str | os.PathLike]) -> Dict[Tuple[str, str], List[Tuple[Path, dict, list]]]:
    """(preset, entry label) -> the finished runs below ``run_dirs`` that reproduce that entry."""
    out: Dict[Tuple[str, str], List[Tuple[Path, dict, list]]] = {}
    for d in find_run_dirs(run_dirs):
        config, metrics, records = load_run(d)
        name = run_preset(config)
        if name is None or not run_finished(metrics) or name not in available_presets():
            continue
        for entry in reported(name):
            if matches(config, entry.get("when") or {}):
                out.setdefault((name, entry["label"]), []).append((d, metrics, records))
    return out


def _num(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.2f}"


def _measured(runs: List[Tuple[Path, dict, list]], key: str) -> Tuple[Optional[float], Optional[float], str]:
    mean, std = mean_std([m.get(key) for _, m, _ in runs])
    if mean is None:
        return None, None, ""
    return mean, std, f"{mean:.2f}" + ("" if std is None else f" ± {std:.2f}")


def command_of(records: List[Dict[str, Any]]) -> str:
    argv = list((records[0] if records else {}).get("argv") or [])
    if argv and (argv[0].endswith("clpet") or argv[0].endswith(os.path.join("clpet", "cli.py"))):
        argv = ["clpet", *argv[1:]]
    return " ".join(argv)


def machine_of(records: List[Dict[str, Any]]) -> str:
    m = (records[0] if records else {}).get("machine") or {}
    if not m:
        return ""
    gpus = ", ".join(m.get("gpus") or []) or f"{m.get('cores')} CPU cores"
    return f"{m.get('cpu')}, {gpus}"


def reference_table(run_dirs: Sequence[str | os.PathLike], all_entries: bool = False) -> str:
    """Markdown: per reported entry, the paper's A_last / A_avg, the runs' mean ± std and the delta; with
    ``all_entries`` every entry of every preset (blank where no run exists) plus each row's command and machine."""
    try:
        runs = matched_runs(run_dirs) if run_dirs else {}
    except FileNotFoundError:
        if not all_entries:
            raise
        runs = {}  # the reproducibility table of a checkout without runs: every row blank
    head = "| preset | setting | source | n | reported A_last | measured A_last | Δ A_last | reported A_avg | measured A_avg | Δ A_avg |"
    if all_entries:
        head += " command | machine |"
    lines = [head, "|" + "---|" * len(head.strip("|").split("|"))]
    for name in available_presets():
        for entry in reported(name):
            found = runs.get((name, entry["label"]), [])
            if not found and not all_entries:
                continue
            cells = [name, entry["label"], entry.get("source", ""), str(len(found))]
            for key in METRICS:
                paper = entry.get(key)
                mean, _, text = _measured(found, key)
                delta = "" if mean is None or paper is None else f"{mean - float(paper):+.2f}"
                cells += [_num(paper), text, delta]
            if all_entries:
                records = found[0][2] if found else []
                cells += [f"`{command_of(records)}`" if records else "", machine_of(records)]
            lines.append("| " + " | ".join(cells) + " |")
    if len(lines) == 2 and not all_entries:
        return ("no run below these folders reproduces a reported setting (a run must apply a preset with reported "
                "numbers and finish; see `clpet list` and presets/)\n")
    return "\n".join(lines) + "\n"
