"""Hyperparameter search through Hydra's Optuna sweeper: the objective is the validation number of each trial
(``scenario.val_fraction`` > 0, test sets unread), the best trial is the one with the highest objective, and a
search that would select on test data fails before the first trial."""
import json
from pathlib import Path

import yaml

from clpet.cli import main

SEARCH = ["-m", "scenario=synthetic", "method=finetune", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
          "hydra.sweeper.sampler.seed=0", "method.optim.lr=interval(0.001,0.2)", "progress=false", "plots=false",
          "checkpoint=false"]


def test_optuna_search_maximises_the_validation_objective(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *SEARCH, "scenario.val_fraction=0.25", "objective=A_avg"]) == 0
    sweep = next((tmp_path / "runs" / "multirun").iterdir())
    trials = [json.loads((d / "metrics.json").read_text()) for d in sorted(sweep.iterdir()) if d.is_dir()]
    assert len(trials) == 3 and all(t["evaluated_on"] == "val" for t in trials)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(t["A_avg"] for t in trials)
    lrs = [yaml.safe_load((d / "config.yaml").read_text())["method"]["optim"]["lr"]
           for d in sorted(sweep.iterdir()) if d.is_dir()]
    assert len(set(lrs)) == 3 and all(0.001 <= lr <= 0.2 for lr in lrs)
    assert "best trial" in capsys.readouterr().out


def test_a_search_on_test_data_is_refused_before_any_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *SEARCH]) == 2
    assert "scenario.val_fraction" in capsys.readouterr().err
    assert not Path(tmp_path / "runs").exists()
    assert main(["run", *SEARCH, "scenario.val_fraction=0.25", "objective=loss"]) == 2
    assert "unknown objective 'loss'" in capsys.readouterr().err
