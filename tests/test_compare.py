"""Cross-run comparison over seeds and the per-run plots."""
import csv
import math

import pytest

from clpet.compare import compare_runs, find_run_dirs
from clpet.metrics import summarize
from clpet.plots import plot_run
from clpet.results import RunFolder

PNG = b"\x89PNG\r\n\x1a\n"

# per method: three seeds of (A_last, A_avg, forgetting, bwt, plasticity, wall_time_s, A_t)
RUNS = {
    "lae": [
        (80.0, 85.0, 10.0, -10.0, 90.0, 100.0, [90.0, 80.0]),
        (82.0, 86.0, 12.0, -12.0, 91.0, 110.0, [90.0, 82.0]),
        (84.0, 87.0, 14.0, -14.0, 92.0, 120.0, [90.0, 84.0]),
    ],
    "simplecil": [
        (70.0, 75.0, 5.0, -5.0, 80.0, 10.0, [80.0, 70.0]),
        (71.0, 75.0, 6.0, -6.0, 80.0, 10.0, [79.0, 71.0]),
        (75.0, 75.0, 10.0, -10.0, 80.0, 10.0, [75.0, 75.0]),
    ],
}
# hand-computed: lae A_last 80, 82, 84 -> mean 82, sample std sqrt((4+0+4)/2) = 2
#                simplecil A_last 70, 71, 75 -> mean 72, sample std sqrt((4+1+9)/2) = sqrt(7) = 2.6458
#                simplecil forgetting 5, 6, 10 -> mean 7, sample std sqrt((4+1+9)/2) = sqrt(7)


def make_runs(root):
    for method, seeds in RUNS.items():
        for seed, (al, aa, f, b, p, w, at) in enumerate(seeds, start=1):
            RunFolder(root / "toy" / method / f"seed{seed}").write_metrics({
                "scenario": "toy", "method": method, "seed": seed, "A_last": al, "A_avg": aa,
                "forgetting": f, "bwt": b, "plasticity": p, "wall_time_s": w, "A_t": at,
                "trainable_params": 1000 if method == "lae" else 0,
            })


def test_compare_three_seeds_two_methods(tmp_path):
    make_runs(tmp_path / "runs")
    out_csv, plots = tmp_path / "table.csv", tmp_path / "cmp"
    md = compare_runs([str(tmp_path / "runs")], out_csv=str(out_csv), plot_dir=str(plots))

    lines = md.strip().splitlines()
    assert lines[0].startswith("| scenario | method | n | A_last | A_avg | forgetting | bwt | plasticity | wall_time_s")
    lae = next(line for line in lines if "| lae |" in line)
    cil = next(line for line in lines if "| simplecil |" in line)
    assert "| toy | lae | 3 | 82.00 ± 2.00 | 86.00 ± 1.00 | 12.00 ± 2.00 | -12.00 ± 2.00 | 91.00 ± 1.00" in lae
    assert "110.00 ± 10.00" in lae and "1000 ± 0" in lae
    assert "| toy | simplecil | 3 | 72.00 ± 2.65 | 75.00 ± 0.00 | 7.00 ± 2.65 |" in cil

    with open(out_csv, newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert rows["lae"]["n"] == "3" and rows["lae"]["seeds"] == "1 2 3"
    assert math.isclose(float(rows["lae"]["A_last_mean"]), 82.0)
    assert math.isclose(float(rows["lae"]["A_last_std"]), 2.0)
    assert math.isclose(float(rows["simplecil"]["A_last_std"]), math.sqrt(7), abs_tol=1e-4)
    assert math.isclose(float(rows["simplecil"]["forgetting_mean"]), 7.0)

    pngs = sorted(p.name for p in plots.iterdir())
    assert pngs == ["accuracy_curves_toy.png", "forgetting_bars_toy.png", "stability_plasticity_toy.png"]
    for name in pngs:
        assert (plots / name).read_bytes().startswith(PNG)


def test_single_run_shows_mean_only(tmp_path):
    make_runs(tmp_path)
    md = compare_runs([str(tmp_path / "toy" / "lae" / "seed1")])
    assert "| toy | lae | 1 | 80.00 | 85.00 | 10.00 | -10.00 | 90.00 | 100.00 |" in md
    assert "±" not in md


def test_missing_metrics_is_one_line_error(tmp_path):
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        compare_runs([str(tmp_path / "not_a_run")])
    assert "not_a_run" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_run_dirs([tmp_path / "nowhere"])


def test_plot_run_from_metrics(tmp_path):
    run = RunFolder(tmp_path / "run")
    metrics = summarize([[90], [95, 45], [70, 40, 150]], [100, 50, 200])
    metrics.update(scenario="toy", method="lae", seed=1)
    run.write_metrics(metrics)
    written = plot_run(run.path)
    assert sorted(p.name for p in written) == ["acc_matrix.png", "accuracy_curve.png"]
    for p in written:
        assert p.read_bytes().startswith(PNG)
    assert sorted(p.name for p in run.plots_dir.iterdir()) == ["acc_matrix.png", "accuracy_curve.png"]
