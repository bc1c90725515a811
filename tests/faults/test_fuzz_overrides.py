"""Property-based (Hypothesis): any bad value for a key, any malformed or deleting override, on a config that runs
(LAE on a tiny text stream -- the positive control below) exits non-zero with one line on stderr, no traceback,
and no run folder. The examples are derandomized, so a failure reproduces."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clpet.cli import main
from tests.scenario_fixtures import write_text_csv

NOT_A_NUMBER = ["abc", "[1]", "null", "{a: 1}", "''"]
BAD_VALUES = {
    "method.optim.lr": ["inf", "-inf", "nan", "0", "-1e-3", "1e400", *NOT_A_NUMBER],
    "method.optim.batch_size": ["0", "-4", "2.5", "inf", *NOT_A_NUMBER],
    "method.optim.epochs": ["-1", "1.5", "inf", *NOT_A_NUMBER],
    "method.optim.weight_decay": ["-0.1", "inf", "nan", *NOT_A_NUMBER],
    "method.optim.momentum": ["-0.5", "1.5", "nan", *NOT_A_NUMBER],
    "method.ema_decay": ["1.0", "-0.5", "nan", "2", *NOT_A_NUMBER],
    "method.rank": ["0", "-3", "2.5", *NOT_A_NUMBER],
    "method.num_freeze_epochs": ["-1", "abc"],
    "method.blocks": ["[99]", "[-1]", "[]", "abc", "[0,0]"],
    "method.pet": ["lora2", "", "[lora]"],
    "seed": ["-1", "4294967296", "1e30", "1.5", *NOT_A_NUMBER],
    "scenario.increment": ["0", "-2", "1000", "1.5", *NOT_A_NUMBER],
    "scenario.init": ["-1", "1000", "abc"],
    "scenario.val_fraction": ["-0.1", "1", "1.5", "nan", "abc"],
    "scenario.order": ["[0,0,1,2]", "[0,1]", "[0,1,2,9]", "abc"],
    "eval_batch_size": ["0", "-1", *NOT_A_NUMBER],
    "num_workers": ["-1", "1.5", "abc"],
    "image_cache_mb": ["-1", "nan", "abc"],
    "precision": ["fp8", "abc", "1"],
    "device": ["tpu", "cuda:x", "cpu:0:1"],
    "objective": ["accuracy", "1"],
    "logger": ["[tensorbored]", "abc"],
    "deletions.kind": ["sometimes"],
    "backbone.name": ["nope", "resnet9000"],
    "data_root": ["/nonexistent/data"],
}
MALFORMED = ["method.optim.lr==1", "=3", "~method", "~scenario", "~method.optim", "+unknown_key=1", "method.optim.lr",
             "scenario=nope", "method=nope", "method.optim.lr=[1,", "seed=${oc.env:HOME}", "method.nope=1",
             "scenario.nope=1", "resume=maybe", "out_dir=", "out_dir=' '", "=", "method.optim=3"]

bad_override = st.one_of(
    st.sampled_from(sorted(BAD_VALUES)).flatmap(lambda k: st.sampled_from(BAD_VALUES[k]).map(lambda v: f"{k}={v}")),
    st.sampled_from(MALFORMED),
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = write_text_csv(tmp_path_factory.mktemp("fuzz") / "data")
    return ["scenario=text-csv", f"data_root={root}", "scenario.increment=2", "backbone.name=tiny-text", "method=lae",
            "method.blocks=[0,1]", "method.optim.epochs=1", "method.num_freeze_epochs=0", "plots=false",
            "progress=false"]


def test_the_base_config_runs(base, tmp_path):
    assert main(["run", *base, f"out_dir={tmp_path / 'ok'}"]) == 0  # so a refusal below is the override's doing


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(override=bad_override)
def test_every_bad_override_fails_in_one_line_before_work(base, tmp_path, capsys, monkeypatch, override):
    monkeypatch.chdir(tmp_path)  # a run folder that lands in the working directory (out_dir=) shows up here
    out = tmp_path / "run"
    capsys.readouterr()
    code = main(["run", *base, f"out_dir={out}", override])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, override
    assert len(lines) == 1 and lines[0].startswith("clpet: error:") and "Traceback" not in err, (override, err)
    assert not out.exists() and not list(tmp_path.iterdir()), override
