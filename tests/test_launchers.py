"""Sweeps on Hydra's launchers: joblib, submitit's local executor and a local Ray cluster run every job into its
own run folder and end with the sweep table; running the same sweep again skips the finished jobs and resumes a
killed one; the SLURM launcher (clpet's ``hydra/launcher=slurm``) writes the submission a cluster would get."""
import json
import pickle

import pytest

from clpet.cli import main
from tests.scenario_fixtures import write_text_csv

SWEEP = ["-m", "scenario=synthetic", "method=simplecil,finetune", "seed=0,1",
         "progress=false", "plots=false"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local", "ray"])
def test_a_sweep_on_a_launcher_ends_with_its_table(tmp_path, monkeypatch, capsys, launcher):
    """``method=simplecil,lae seed=0,1`` on a text stream with a 5-block tiny encoder (LAE's default blocks)."""
    monkeypatch.chdir(tmp_path)
    data = write_text_csv(tmp_path / "data")
    extra = {"joblib": ["hydra.launcher.n_jobs=2"], "submitit_local": ["hydra.launcher.timeout_min=5"],
             # a local Ray cluster of 2 workers (one CPU per job), no dashboard
             "ray": ["+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false"],
             }[launcher]
    if launcher == "ray":
        import ray

        request_cleanup = ray.shutdown
    else:
        request_cleanup = None
    args = ["-m", "scenario=text-csv", f"data_root={data}", "backbone.name=tiny-text", "backbone.depth=5",
            "method=simplecil,lae", "seed=0,1", "progress=false", "plots=false", f"hydra/launcher={launcher}", *extra,
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 4 and "| text-csv | lae | 2 |" in out and "| text-csv | simplecil | 2 |" in out
    runs = sorted((m["method"], m["seed"]) for m in (json.loads((j / "metrics.json").read_text()) for j in jobs))
    assert runs == [("lae", 0), ("lae", 1), ("simplecil", 0), ("simplecil", 1)]
    if request_cleanup is not None:
        request_cleanup()


class SubmissionWritten(Exception):
    """Raised in place of calling ``sbatch``: the test stops at the submission."""


def test_the_slurm_launcher_submits_one_array_with_the_configured_resources(tmp_path, monkeypatch):
    """A dry run of ``hydra/launcher=slurm``: submitit writes the sbatch file and the pickled jobs, and the
    ``sbatch`` call is replaced by reading them back. The file carries clpet's SLURM settings (hydra/launcher/
    slurm.yaml, with one overridden on the command line) and one array task per job of the sweep; each pickled
    job holds that job's overrides."""
    from submitit.slurm.slurm import SlurmExecutor

    seen = {}

    def no_sbatch(self, path):
        seen["sbatch"] = open(path).read()
        seen["folder"] = self.folder
        raise SubmissionWritten

    monkeypatch.setattr(SlurmExecutor, "_make_submission_command", no_sbatch)
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # "srun is here"
    monkeypatch.chdir(tmp_path)
    args = ["-m", "scenario=synthetic", "method=simplecil,finetune", "seed=0,1", "hydra/launcher=slurm",
            "hydra.launcher.partition=a100", "hydra.launcher.timeout_min=90", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    with pytest.raises((SubmissionWritten, SystemExit)):
        main(["run", *args])
    text = seen["sbatch"]
    for line in ("#SBATCH --partition=a100", "#SBATCH --time=90", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --ntasks-per-node=1", "#SBATCH --array=0-3%4"):
        assert line in text, (line, text)
    assert "-m submitit.core._submit" in text
    jobs = sorted(tmp_path.joinpath("sweep", ".submitit").rglob("*.pkl"))
    assert len(jobs) == 4
    overrides = []
    for job in jobs:
        with open(job, "rb") as f:
            submission = pickle.load(f)  # the test's own file, written just now by submitit
        # args: (job overrides, job dir key, job number, job id, Hydra state); fn is the launcher itself
        overrides.append(sorted(o for o in submission.args[0] if o.startswith(("methods@method=", "seed="))))
    assert sorted(overrides) == sorted(sorted([f"methods@method={m}", f"seed={k}"])
                                                  for m in ("simplecil", "finetune") for k in (0, 1))


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
