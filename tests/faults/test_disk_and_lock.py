"""A full disk during a write leaves the previous file intact, fails in one line, and the run resumes from what is
left to the uninterrupted numbers; two runs on one out_dir at once: one gets the folder (``.lock``), the other
fails in one line and changes nothing."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import clpet.results as results
from clpet.cli import main
from clpet.results import RunFileError, RunFolder, folder_lock

QUIET = ["plots=false", "progress=false"]
ARGS = ["scenario=synthetic", "method=finetune", "method.optim.epochs=1", *QUIET]
NUMBERS = ("acc_matrix", "A_t", "A_last", "A_avg", "forgetting", "bwt", "plasticity")


def disk_fills_on(monkeypatch, name: str, n: int) -> None:
    """The ``n``-th atomic write of file ``name`` runs out of space after half of its bytes."""
    real = results._atomic_write
    calls = {"n": 0}

    def atomic_write(path, write):
        if Path(path).name == name:
            calls["n"] += 1
            if calls["n"] == n:
                def fills(f):
                    f.write(b"x" * 10)
                    raise OSError(errno.ENOSPC, "No space left on device")

                return real(path, fills)
        return real(path, write)

    monkeypatch.setattr(results, "_atomic_write", atomic_write)


@pytest.mark.parametrize("name", ["metrics.json", "checkpoint.pt", "acc_matrix.csv"])
def test_a_full_disk_leaves_the_previous_file_and_fails_in_one_line(tmp_path, monkeypatch, name):
    folder = RunFolder(tmp_path / "run")
    folder.write_metrics({"A_last": 1.0})
    folder.save_checkpoint({"next_experience": 1})
    folder.write_acc_matrix([[1.0]])
    before = {p.name: p.read_bytes() for p in folder.path.iterdir()}
    disk_fills_on(monkeypatch, name, 1)
    write = {"metrics.json": lambda: folder.write_metrics({"A_last": 2.0}),
             "checkpoint.pt": lambda: folder.save_checkpoint({"next_experience": 2}),
             "acc_matrix.csv": lambda: folder.write_acc_matrix([[1.0], [2.0]])}[name]
    intact = f"no space left on the device writing .*{name}; the previous {name} is intact"
    with pytest.raises(RunFileError, match=intact):
        write()
    assert {p.name: p.read_bytes() for p in folder.path.iterdir()} == before  # no temporary file left either


def test_a_run_whose_disk_fills_stops_in_one_line_and_resumes_to_the_same_numbers(tmp_path, monkeypatch, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", *ARGS, f"out_dir={full}"]) == 0
    disk_fills_on(monkeypatch, "checkpoint.pt", 2)
    capsys.readouterr()
    assert main(["run", *ARGS, f"out_dir={cut}"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clpet: error: no space left on the device writing")
    monkeypatch.undo()
    assert main(["run", *ARGS, f"out_dir={cut}", "resume=true"]) == 0
    a, b = (json.loads((p / "metrics.json").read_text()) for p in (full, cut))
    assert all(a[k] == b[k] for k in NUMBERS)


def test_a_folder_in_use_is_refused_in_one_line_and_left_alone(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom clpet.results import folder_lock\n"
                               f"with folder_lock({str(run)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main(["run", *ARGS, f"out_dir={run}"]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by another clpet run (pid {holder.pid})" in err[0]
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    assert main(["run", *ARGS, f"out_dir={run}"]) == 0  # the lock goes with its process, even a killed one


def test_two_runs_started_at_once_on_one_folder_one_finishes_the_other_fails_in_one_line(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "clpet", "run", *ARGS, f"out_dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0
    loser = next(err for p, (_, err) in zip(procs, outs) if p.returncode != 0)
    lines = [line for line in loser.splitlines() if line.startswith("clpet: error:")]
    assert len(lines) == 1 and ("in use by another clpet run" in lines[0] or "already holds a run" in lines[0])
    assert "Traceback" not in loser
    assert json.loads((run / "metrics.json").read_text())["n_experiences_done"] == 3


def test_the_lock_is_not_taken_twice_in_one_process_either(tmp_path):
    with folder_lock(tmp_path / "run"):
        with pytest.raises(RunFileError, match="in use by another clpet run"):
            with folder_lock(tmp_path / "run"):
                pass
