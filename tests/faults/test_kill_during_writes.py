"""A run SIGKILLed anywhere -- in an optimizer step, in an inference pass, halfway through writing its checkpoint,
or with its new metrics.json written but not renamed (tests/faults/killer.py) -- resumes to the uninterrupted
run's numbers bit for bit on the CPU (an unlearning run: its accuracy before and after every deletion request).
Every method family and PET kind gets at least one moment, and the
synthetic finetune run three more drawn at random (fixed seed) from all of its steps, passes and writes; the torn
temporary file of a cut write is never read: the folder keeps the previous checkpoint, and the resumed run
deletes the leftover and says so. (tests/test_checkpoint.py stops every method between experiences in-process.)"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clpet.cli import main
from clpet.results import load_checkpoint
from tests.scenario_fixtures import write_text_csv, write_text_tasks

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["plots=false", "progress=false"]
NUMBERS = ("acc_matrix", "A_t", "A_last", "A_avg", "forgetting", "bwt", "plasticity", "n_experiences_done")
TORN_CHECKPOINT, UNRENAMED_METRICS = "write:checkpoint.pt:2:half", "write:metrics.json:2:before-rename"
TEXT = ["scenario=text-csv", "scenario.increment=2", "backbone.name=tiny-text"]
LAE = ["method=lae", "method.blocks=[0,1]", "method.optim.epochs=2", "method.num_freeze_epochs=1"]
UNLEARN = ["method.shards=2", "method.slices=2", "method.optim.epochs=1", "method.optim.batch_size=4",
           "method.rank=2", "deletions.kind=uniform", "deletions.requests=3"]
LM = ["scenario=text-tasks", "backbone.name=tiny-llama", "method.optim.epochs=2", "method.optim.batch_size=4"]

# family -> (overrides, data kind, the moments it is killed at: each after the run's first checkpoint and before
# its end -- ADAM trains in its first experience only, so it dies in an evaluation)
FAMILIES = {
    "finetune": (["scenario=synthetic", "method=finetune", "method.optim.epochs=2"], None,
                 [TORN_CHECKPOINT, UNRENAMED_METRICS, "step:9"]),
    "simplecil": (["scenario=synthetic", "method=simplecil"], None, ["eval:4"]),
    "adam-adapter": ([*TEXT, "method=adam", "method.optim.epochs=2", "method.bottleneck=4"], "csv", ["eval:6"]),
    "lae-adapter": ([*TEXT, *LAE, "method.pet=adapter"], "csv", ["step:4"]),
    "lae-prefix": ([*TEXT, *LAE, "method.pet=prefix"], "csv", [TORN_CHECKPOINT]),
    "lae-lora": ([*TEXT, *LAE, "method.pet=lora"], "csv", ["eval:5"]),
    "seq-lora": ([*LM, "method=seq-lora", "method.lora.rank=2"], "tasks", [TORN_CHECKPOINT]),
    "ilora": ([*LM, "method=ilora", "method.buffer_size=5"], "tasks", ["step:12", UNRENAMED_METRICS]),
    "conpet-dynamic": ([*LM, "method=conpet-dynamic", "method.steps_per_epoch=3"], "tasks", ["step:8"]),
    "olora": ([*LM, "method=olora", "method.lora.rank=2"], "tasks", ["eval:5"]),
    "osft": ([*LM, "method=osft"], "tasks", ["step:7"]),
    "migu": ([*LM, "method=migu"], "tasks", [TORN_CHECKPOINT]),
    "inc-lora": ([*LM, "method=inc-lora", "method.lora.rank=2"], "tasks", ["step:11"]),
    "seq-ft": ([*LM, "method=seq-ft"], "tasks", [UNRENAMED_METRICS]),
    "multitask": ([*LM, "method=multitask", "method.lora.rank=2"], "tasks", ["step:20"]),
    "conpet-static": ([*LM, "method=conpet-static", "method.steps_per_epoch=3"], "tasks", ["step:9"]),
    "zero-shot": (["scenario=text-tasks", "backbone.name=tiny-llama", "method=zero-shot"], "tasks", ["eval:6"]),
    # exact unlearning: one training, then deletion requests (SISA retrains the hit shard; S3T falls back)
    "s3t": ([*TEXT, *UNLEARN, "method=s3t"], "csv", ["step:45", "write:checkpoint.pt:3:half"]),
    "sisa": ([*TEXT, *UNLEARN, "method=sisa"], "csv", ["step:30", UNRENAMED_METRICS]),
}


def numbers(metrics: dict) -> dict:
    """What must come out the same: the accuracy matrix and its summaries, or an unlearning run's accuracy before
    and after each request (wall times aside)."""
    if "unlearning" in metrics:
        u = metrics["unlearning"]
        return {"initial": u["initial_acc"], "after": [r["acc"] for r in u["requests"]], "n": u["n_requests"]}
    return {key: metrics[key] for key in NUMBERS}


def overrides(name: str, tmp_path: Path) -> list:
    args, data, _ = FAMILIES[name]
    root = {"csv": write_text_csv, "tasks": write_text_tasks}[data](tmp_path / "data") if data else None
    return [*args, *([f"data_root={root}"] if root else []), *QUIET]


def random_moments(n: int, seed: int = 0) -> list:
    """``n`` kill moments of the synthetic finetune run (3 experiences: 24 optimizer steps, 6 inference passes,
    3 writes of each run file) drawn with a fixed seed, all after its first checkpoint."""
    rng = np.random.default_rng(seed)
    pool = ([f"step:{k}" for k in range(9, 25)] + [f"eval:{k}" for k in range(2, 7)]
            + [f"write:{f}:{k}:{w}" for f in ("checkpoint.pt", "metrics.json", "acc_matrix.csv") for k in (2, 3)
               for w in ("half", "before-rename")])
    return [str(m) for m in rng.choice(pool, size=n, replace=False)]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", [*FAMILIES, "finetune-random"])
def test_a_run_killed_at_any_moment_resumes_to_the_uninterrupted_numbers(tmp_path, name, capsys):
    moments = random_moments(3) if name == "finetune-random" else FAMILIES[name][2]
    args = overrides(name.replace("-random", ""), tmp_path)
    full = tmp_path / "full"
    assert main(["run", *args, f"out_dir={full}"]) == 0
    expected = json.loads((full / "metrics.json").read_text())
    for spec in moments:
        cut = tmp_path / f"cut-{spec.replace(':', '-')}"
        killed = subprocess.run([sys.executable, str(ROOT / "tests" / "faults" / "killer.py"), spec, "run", *args,
                                 f"out_dir={cut}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert killed.returncode == -signal.SIGKILL, (spec, killed.stderr[-2000:])  # it died where the spec says
        saved = torch.load(cut / "checkpoint.pt", weights_only=True)
        assert "unlearning" in saved or saved["next_experience"] >= 1, spec  # the resume has work to skip
        torn = [p.name for p in cut.glob(".*.tmp")]
        assert len(torn) == (1 if spec.startswith("write:") else 0), spec
        load_checkpoint(cut / "checkpoint.pt")  # the last whole checkpoint, its checksum intact
        capsys.readouterr()
        assert main(["run", *args, f"out_dir={cut}", "resume=true"]) == 0
        if torn:
            assert f"partly written file(s) a killed run left: {torn[0]}" in capsys.readouterr().out
        assert not list(cut.glob(".*.tmp"))
        assert numbers(json.loads((cut / "metrics.json").read_text())) == numbers(expected), spec
