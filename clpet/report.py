"""``clpet report RUN_DIR... [--out report.html]``: one self-contained HTML page for a sweep or a set of runs.

The page holds, per scenario, the ``compare`` table (mean ± std over seeds per method), the A_t curves, the
stability-plasticity scatter and the forgetting bars (the figures of ``clpet compare --plot``), then one section
per run: its accuracy-matrix heatmap, its final metrics and its provenance (``provenance.json``: weights and their
checksum, split files, class order, seed, precision, library versions, code commit). Figures are PNGs embedded as
``data:`` URIs and the style is inline, so the file opens anywhere, offline, and can be mailed or attached to a
paper's supplement. What clpet adds over the tracking tools (TensorBoard, W&B, MLflow, which clpet also logs to):
a single static file made from the run folders alone, with the continual-learning views side by side.
"""
from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from clpet.compare import RunGroup, _cell, _columns, group_runs, write_comparison_plots
from clpet.results import atomic_write_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
img { max-width: 32em; margin: 0.3em; border: 1px solid #eee; }
details { margin: 0.3em 0 1em; } pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""
RUN_METRICS = ("A_last", "A_avg", "forgetting", "bwt", "plasticity", "avg_task_acc", "wall_time_s")


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    head = "".join(f'<th class="name">{html.escape(h)}</th>' if i < 2 else f"<th>{html.escape(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="name">{html.escape(c)}</td>' if i < 2 else f"<td>{html.escape(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def comparison_table(groups: Sequence[RunGroup]) -> str:
    """The ``compare`` table (same columns and numbers) as HTML."""
    cols = _columns(groups)
    rows = [[g.method, str(len(g.runs)), *[_cell(k, *g.stat(k)) for k in cols]] for g in groups]
    return _table(["method", "n", *cols], rows, cls="compare")


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _run_section(run_dir: Path, metrics: Mapping[str, Any], heatmap_png: Path) -> str:
    from clpet.plots import plot_acc_matrix

    title = f"{metrics.get('scenario', '?')} / {metrics.get('method', '?')} / seed {metrics.get('seed', '?')}"
    parts = [f"<h3>{html.escape(title)}</h3>", f"<p><code>{html.escape(str(run_dir))}</code></p>"]
    parts.append(_table(["metric", "value"], [[k, _fmt(metrics.get(k))] for k in RUN_METRICS if k in metrics],
                        cls="run-metrics"))
    if metrics.get("acc_matrix"):
        heatmap = plot_acc_matrix(metrics["acc_matrix"], heatmap_png, title=f"R[t, j] (%): {title}")
        parts.append(_img(heatmap, f"accuracy matrix of {title}"))
    provenance = run_dir / "provenance.json"
    if provenance.is_file():
        text = json.dumps(json.loads(provenance.read_text(encoding="utf-8")), indent=2, sort_keys=True)
        parts.append('<details class="provenance"><summary>provenance</summary>'
                     f"<pre>{html.escape(text)}</pre></details>")
    return "\n".join(parts)


def write_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write the report of every run at or below ``run_dirs`` to ``out`` (atomically); returns its path.
    ``FileNotFoundError`` (naming the folder) when a path holds no finished or running run."""
    groups = group_runs(run_dirs)
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [f"<h1>clpet report</h1><p>{sum(len(g.runs) for g in groups)} runs, written {when} from "
            f"{', '.join(html.escape(str(p)) for p in run_dirs)}</p>"]
    with tempfile.TemporaryDirectory(prefix="clpet-report-") as tmp:
        figures = Path(tmp)
        for i, scenario in enumerate(dict.fromkeys(g.scenario for g in groups)):
            mine = [g for g in groups if g.scenario == scenario]
            plots = write_comparison_plots(mine, figures / f"scenario{i}")
            body.append(f"<h2>{html.escape(scenario)}</h2>")
            body.append(comparison_table(mine))
            body.append("<div class=\"figures\">" + "".join(_img(p, p.stem.replace("_", " ")) for p in plots)
                        + "</div>")
        body.append("<h2>Runs</h2>")
        runs = [(Path(d), m) for g in groups for d, m in zip(g.dirs, g.runs)]
        for i, (run_dir, metrics) in enumerate(runs):
            body.append(_run_section(run_dir, metrics, figures / f"matrix{i}.png"))
        page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>clpet report</title>"
                f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return atomic_write_text(out, page)

