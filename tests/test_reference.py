"""Reported beside reproduced: a finished run that applied a preset shows up next to the paper's number with the
delta (``clpet compare --reference``); a preset=none run and a run of another setting do not; the
reproducibility table lists every reported entry, blank where no run exists."""
import json

import yaml

from clpet.cli import main
from clpet.presets import reported
from clpet.reference import reference_table
from tests.paper_fixtures import wnids, write_presplit


def simplecil_run(tmp_path, name, *extra):
    write_presplit(tmp_path / "imagenet-r", wnids(10), n_train=2, n_test=1)
    out = tmp_path / "runs" / name
    assert main(["run", "scenario=imagenet-r", "method=simplecil", f"data_root={tmp_path}", f"out_dir={out}",
                 "backbone.model=vit_tiny_patch16_224", "backbone.pretrained=false", "backbone.image_size=32",
                 "progress=false", "plots=false", "checkpoint=false", *extra]) == 0
    return out


def paper_run(folder, a_last, a_avg, **config):
    """A finished run folder as a preset run leaves it (the paper-scale data and weights are not here)."""
    folder.mkdir(parents=True)
    base = {"preset": "simplecil/imagenet-r", "preset_overridden": [], "seed": 1993,
            "scenario": {"name": "imagenet-r", "increment": 5}, "method": {"name": "simplecil"}}
    for key, value in config.items():
        base[key] = value
    (folder / "config.yaml").write_text(yaml.safe_dump(base))
    (folder / "metrics.json").write_text(json.dumps({"scenario": "imagenet-r", "method": "simplecil", "seed": 0,
                                                     "A_last": a_last, "A_avg": a_avg, "n_experiences": 40,
                                                     "n_experiences_done": 40}))


def test_compare_reference_prints_reported_measured_and_delta(tmp_path, capsys):
    paper_run(tmp_path / "runs" / "a", 55.0, 63.0)
    paper_run(tmp_path / "runs" / "b", 54.0, 62.0)
    paper_run(tmp_path / "runs" / "moved", 10.0, 10.0, preset_overridden=["backbone.model"])  # not the setting
    simplecil_run(tmp_path, "debug")  # a real run on a random-init tiny ViT: overrides the preset's backbone
    simplecil_run(tmp_path, "off", "preset=none", "scenario.split=aper", "scenario.increment=5")  # not a preset run
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "runs"), "--reference", "--csv", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "SimpleCIL B0Inc5" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    paper = next(e for e in reported("simplecil/imagenet-r") if e["label"] == "SimpleCIL B0Inc5")
    assert cells[3] == "2" and cells[4] == f"{paper['A_last']:.2f}"
    assert cells[5] == "54.50 ± 0.71" and cells[6] == f"{54.5 - paper['A_last']:+.2f}"
    assert "SimpleCIL B0Inc20" not in out
    saved = yaml.safe_load((tmp_path / "runs" / "debug" / "config.yaml").read_text())
    assert "backbone.model" in saved["preset_overridden"] and "backbone.pretrained" not in saved["preset_overridden"]


def test_the_reproducibility_table_is_blank_without_runs(tmp_path):
    table = reference_table([str(tmp_path / "nothing-here")], all_entries=True)
    rows = [line for line in table.splitlines()[2:] if line.startswith("| simplecil/imagenet-r")]
    assert len(rows) == 2
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[3] == "0" and cells[5] == "" and cells[6] == "" and cells[-2] == "" and cells[-1] == ""
