"""Sweeps on Hydra's launchers: joblib and submitit's local executor run every job into its own run folder and
end with the sweep table; running the same sweep again skips the finished jobs and resumes a killed one."""
import json

import pytest

from clpet.cli import main

SWEEP = ["-m", "scenario=synthetic", "method=simplecil,finetune", "seed=0,1",
         "progress=false", "plots=false"]


def finetune_only(args):
    return [a if a != "method=simplecil,finetune" else "method=finetune" for a in args]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_a_sweep_on_a_launcher_ends_with_its_table(tmp_path, monkeypatch, capsys, launcher):
    monkeypatch.chdir(tmp_path)
    extra = {"joblib": ["hydra.launcher.n_jobs=2"], "submitit_local": ["hydra.launcher.timeout_min=5"]}[launcher]
    args = [*finetune_only(SWEEP), f"hydra/launcher={launcher}", *extra, f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 2 and "| synthetic | finetune | 2 |" in out
    seeds = sorted(json.loads((j / "metrics.json").read_text())["seed"] for j in jobs)
    assert seeds == [0, 1]


def test_a_sweep_run_again_skips_finished_jobs_and_resumes_a_killed_one(tmp_path, monkeypatch, capsys):
    from clpet.methods.base import Method

    monkeypatch.chdir(tmp_path)
    args = [*SWEEP, f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    real = Method.learn_experience

    def dies(self, exp):  # the last job (finetune, seed 1) is killed while learning its second experience
        if self.cfg.name == "finetune" and self.ctx.seed == 1 and exp.index == 1:
            raise KeyboardInterrupt
        return real(self, exp)

    monkeypatch.setattr(Method, "learn_experience", dies)
    with pytest.raises(KeyboardInterrupt):
        main(["run", *args])
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    done = sorted(p for p in (tmp_path / "sweep").iterdir() if (p / "metrics.json").is_file())
    stamps = {j: (j / "metrics.json").stat().st_mtime_ns for j in done}
    capsys.readouterr()
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 4 and out.count("finished already:") == 3
    killed = next(j for j in jobs if j not in stamps or "resumed" in (j / "log.txt").read_text())
    assert "resumed" in (killed / "log.txt").read_text()
    assert all(json.loads((j / "metrics.json").read_text())["n_experiences_done"] == 3 for j in jobs)
    assert all((j / "metrics.json").stat().st_mtime_ns == stamps[j] for j in stamps if j != killed)
