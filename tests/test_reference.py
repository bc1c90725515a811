"""Reported beside reproduced: a finished run that applied a preset shows up next to the paper's number with the
delta (``clpet compare --reference``); a preset=none run and a run of another setting do not; the
reproducibility table lists every reported entry, blank where no run exists."""
import json

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


def test_compare_reference_prints_reported_measured_and_delta(tmp_path, capsys):
    run = simplecil_run(tmp_path, "b0inc5")
    simplecil_run(tmp_path, "off", "preset=none", "scenario.split=aper", "scenario.increment=5")  # not the paper setting: never matched
    simplecil_run(tmp_path, "b0inc2", "scenario.increment=2")  # a setting with no reported number
    capsys.readouterr()
    measured = json.loads((run / "metrics.json").read_text())
    assert main(["compare", str(tmp_path / "runs"), "--reference", "--csv", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "SimpleCIL B0Inc5" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    paper = next(e for e in reported("simplecil/imagenet-r") if e["label"] == "SimpleCIL B0Inc5")
    assert cells[3] == "1" and cells[4] == f"{paper['A_last']:.2f}"
    assert cells[5] == f"{measured['A_last']:.2f}" and cells[6] == f"{measured['A_last'] - paper['A_last']:+.2f}"
    assert "SimpleCIL B0Inc20" not in out


def test_the_reproducibility_table_is_blank_without_runs(tmp_path):
    table = reference_table([str(tmp_path / "nothing-here")], all_entries=True)
    rows = [line for line in table.splitlines()[2:] if line.startswith("| simplecil/imagenet-r")]
    assert len(rows) == 2
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[3] == "0" and cells[5] == "" and cells[6] == "" and cells[-2] == "" and cells[-1] == ""
