"""scenario.val_fraction: a per-class validation split of each experience's training data replaces its test set,
deterministically from data_seed; the test sets are never read; bad values are refused before work."""
import json

import numpy as np
import pytest

from clpet.cli import main
from clpet.scenarios.validation import with_validation
from tests.method_fixtures import word_stream
from tests.scenario_fixtures import write_text_csv


def test_val_split_is_per_class_disjoint_from_training_and_deterministic():
    stream = word_stream(n_classes=4, train_per_class=10, increment=2)
    split = with_validation(stream, 0.2, data_seed=3)
    again = with_validation(stream, 0.2, data_seed=3)
    other = with_validation(stream, 0.2, data_seed=4)
    for e, s, a, o in zip(stream, split, again, other):
        assert s.test.split == "val" and len(s.train) + len(s.test) == len(e.train)
        assert not set(s.train.ids) & set(s.test.ids) and set(s.test.ids) <= set(e.train.ids)
        assert sorted(np.unique(s.test.targets, return_counts=True)[1]) == [2, 2]  # 20 % of 10 per class
        assert np.array_equal(s.test.ids, a.test.ids) and not np.array_equal(s.test.ids, o.test.ids)
    assert split.info["evaluated_on"] == "val" and with_validation(stream, 0.0, 0) is stream
    with pytest.raises(ValueError, match="val_fraction"):
        with_validation(stream, 1.0, 0)


def test_a_run_with_val_fraction_reports_validation_numbers_and_never_reads_test(in_tmp, monkeypatch, capsys):
    root = write_text_csv(in_tmp / "data")
    args = ["run", "scenario=text-csv", f"data_root={root}", "scenario.increment=2", "backbone.name=tiny-text",
            "method=simplecil", "progress=false", "plots=false"]
    assert main([*args, f"out_dir={in_tmp / 'test'}"]) == 0
    assert main([*args, "scenario.val_fraction=0.25", f"out_dir={in_tmp / 'val'}"]) == 0
    out = capsys.readouterr().out
    assert "test sets are not read" in out and "validation numbers" in out
    on_test = json.loads((in_tmp / "test" / "metrics.json").read_text())
    on_val = json.loads((in_tmp / "val" / "metrics.json").read_text())
    assert on_test["evaluated_on"] == "test" and on_val["evaluated_on"] == "val"
    assert on_val["acc_matrix"] != on_test["acc_matrix"]


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_bad_val_fraction_fails_before_work(in_tmp, capsys, value):
    root = write_text_csv(in_tmp / "data")
    code = main(["run", "scenario=text-csv", f"data_root={root}", "backbone.name=tiny-text", "method=simplecil",
                 "progress=false", f"scenario.val_fraction={value}", f"out_dir={in_tmp / 'x'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "val_fraction" in err
    assert not (in_tmp / "x").exists()


def test_language_task_streams_take_a_validation_split_too(in_tmp):
    from tests.scenario_fixtures import write_text_tasks

    root = write_text_tasks(in_tmp / "tasks")
    out = in_tmp / "lm"
    assert main(["run", "scenario=text-tasks", f"data_root={root}", "method=seq-lora", "backbone.name=tiny-llama",
                 "method.optim.epochs=1", "method.lora.rank=2", "progress=false", "plots=false",
                 "scenario.val_fraction=0.34", f"out_dir={out}"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["evaluated_on"] == "val" and m["avg_task_acc"] is not None


def test_a_one_shot_experience_has_nothing_to_hold_out():
    stream = word_stream(n_classes=4, train_per_class=1, increment=2)
    with pytest.raises(ValueError, match="one training sample per class"):
        with_validation(stream, 0.5, data_seed=0)
