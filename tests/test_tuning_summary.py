"""experiments/tuning/summarise.py reports each named search's trials with the objective the trials were run
for, says which searches have not run, and writes no test table when told there is none."""
import importlib.util
import json
from pathlib import Path

import yaml


def _summarise():
    path = Path(__file__).resolve().parents[1] / "experiments" / "tuning" / "summarise.py"
    spec = importlib.util.spec_from_file_location("summarise_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _trial(sweep: Path, number: int, lr: float, metrics: dict) -> None:
    folder = sweep / str(number)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"objective": "avg_task_acc", "method": {"optim": {"lr": lr}}}))
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_trials_of_a_language_search_are_reported_by_their_own_objective(tmp_path):
    sweep = tmp_path / "sweeps" / "ilora_lm-offline"
    _trial(sweep, 0, 1e-4, {"avg_task_acc": 40.0, "A_last": 35.0, "A_avg": 50.0})
    _trial(sweep, 1, 1e-3, {"avg_task_acc": 61.5, "A_last": 58.25, "A_avg": 70.0})
    (sweep / "2").mkdir()  # a trial that never wrote its metrics
    (sweep / "optimization_results.yaml").write_text(yaml.safe_dump(
        {"best_params": {"++method.optim.lr": 1e-3}, "best_value": 61.5}))
    out = tmp_path / "summary.md"
    args = ["--sweeps", str(tmp_path / "sweeps"), "--searches", "ilora_lm-offline", "conpet-dynamic_wordnet",
            "--scores", "A_last", "--tests", "", "--title", "T", "--intro", "I", "--command", "bash x.sh",
            "--reading", str(tmp_path / "none.md"), "--out", str(out)]
    assert _summarise().main(args) == 0
    text = out.read_text()
    assert "## Search: ilora on lm-offline (validation split)" in text
    assert "Best: `method.optim.lr=0.001` (validation avg_task_acc 61.50)." in text
    assert "| trial | method.optim.lr | val avg_task_acc | val A_last |" in text
    assert "| 1 | 0.001 | 61.50 | 58.25 |" in text and "| 2 | – | – | – |" in text
    assert "## Search: conpet-dynamic on wordnet (validation split)\n\nNot run yet." in text
    assert "## Test split" not in text and "Produced by `bash x.sh`" in text


def test_keep_copies_the_result_and_only_the_finished_trials(tmp_path):
    sweep = tmp_path / "runs" / "ilora_lm-offline"
    _trial(sweep, 0, 1e-4, {"avg_task_acc": 40.0, "n_experiences_done": 5, "n_experiences": 5})
    _trial(sweep, 1, 1e-3, {"avg_task_acc": 20.0, "n_experiences_done": 2, "n_experiences": 5})  # killed
    (sweep / "0" / "provenance.json").write_text("[]")
    (sweep / "2").mkdir()  # never wrote its metrics
    (sweep / "multirun.yaml").write_text("{}")  # not a trial
    records = tmp_path / "records"
    args = ["--sweeps", str(sweep.parent), "--searches", "ilora_lm-offline", "--keep", str(records)]
    assert _summarise().main(args) == 0
    assert not (records / "ilora_lm-offline").exists()  # no optimization_results.yaml: the search is not done
    (sweep / "optimization_results.yaml").write_text(yaml.safe_dump({"best_params": {"x": 1}, "best_value": 40.0}))
    assert _summarise().main(args) == 0
    kept = records / "ilora_lm-offline"
    assert sorted(p.name for p in kept.iterdir()) == ["0", "optimization_results.yaml"]
    assert sorted(p.name for p in (kept / "0").iterdir()) == ["config.yaml", "metrics.json", "provenance.json"]
    assert (kept / "0" / "metrics.json").read_text() == (sweep / "0" / "metrics.json").read_text()
