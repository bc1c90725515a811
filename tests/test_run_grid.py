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
