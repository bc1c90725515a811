"""experiments/run_grid.py keeps a finished run's record in the repository, so a grid spread over sessions keeps
what finished and builds its table from the records alone."""
import importlib.util
import json
from pathlib import Path

import pytest


@pytest.fixture
def grid_module(tmp_path, monkeypatch):
    path = Path(__file__).resolve().parents[1] / "experiments" / "run_grid.py"
    spec = importlib.util.spec_from_file_location("run_grid_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    return mod


def _finished_run(folder: Path, a_last: float) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"n_experiences": 2, "n_experiences_done": 2, "A_last": a_last,
                                                     "trainable_params": 3, "wall_time_s": 1.0}))
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "checkpoint.pt").write_bytes(b"big")
    (folder / "code_commit.txt").write_text("abc1234\n")


def test_a_finished_run_leaves_a_record_that_outlives_its_folder(grid_module, tmp_path):
    import shutil

    grid = {"scenarios": [{"name": "wordnet"}], "variants": [{"label": "simplecil", "overrides": []}], "seeds": [0, 1]}
    base = tmp_path / "experiments" / "runs" / "g"
    run0 = grid_module.run_dir(base, grid["scenarios"][0], grid["variants"][0], 0)
    _finished_run(run0, 40.0)
    unfinished = grid_module.run_dir(base, grid["scenarios"][0], grid["variants"][0], 1)
    unfinished.mkdir(parents=True)
    (unfinished / "metrics.json").write_text(json.dumps({"n_experiences": 2, "n_experiences_done": 1}))
    assert grid_module.finished(run0) and not grid_module.finished(unfinished)
    record = tmp_path / "experiments" / "results" / "records" / "g" / run0.relative_to(base)
    assert sorted(p.name for p in record.iterdir()) == ["code_commit.txt", "config.yaml", "metrics.json"]
    assert not (tmp_path / "experiments" / "results" / "records" / "g" / unfinished.relative_to(base)).exists()
    shutil.rmtree(tmp_path / "experiments" / "runs")  # a new session: the git-ignored run folders are gone
    assert grid_module.finished(run0) and grid_module.run_commits(run0) == {"abc1234"}
    table = grid_module.table(grid, base)
    assert "| simplecil | 1 | 40.00 |" in table


def test_the_table_reports_the_selector_and_the_fast_adapter_where_runs_record_them(grid_module, tmp_path):
    grid = {"scenarios": [{"name": "lm"}], "seeds": [0, 1],
            "variants": [{"label": "conpet-dynamic", "overrides": []}, {"label": "ilora", "overrides": []}]}
    base = tmp_path / "experiments" / "runs" / "g"
    extra = {"conpet-dynamic": {"selector_acc": 40.0}, "ilora": {"ilora_fast_acc": 70.0}}
    for var in grid["variants"]:
        for seed in (0, 1):
            run = grid_module.run_dir(base, grid["scenarios"][0], var, seed)
            _finished_run(run, 30.0)
            metrics = json.loads((run / "metrics.json").read_text())
            metrics.update({k: v + 2 * seed for k, v in extra[var["label"]].items()})
            (run / "metrics.json").write_text(json.dumps(metrics))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in grid_module.table(grid, base).splitlines()}
    header = [c.strip() for c in rows["variant"].strip("|").split("|")]
    dynamic = [c.strip() for c in rows["conpet-dynamic"].strip("|").split("|")]
    ilora = [c.strip() for c in rows["ilora"].strip("|").split("|")]
    assert dynamic[header.index("selector acc")] == "41.00 ± 1.41"
    assert ilora[header.index("fast adapter (whole acc)")] == "71.00 ± 1.41"
    assert ilora[header.index("selector acc")] == "" and dynamic[header.index("fast adapter (whole acc)")] == ""
