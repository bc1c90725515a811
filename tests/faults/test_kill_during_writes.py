"""A run SIGKILLed while it writes its checkpoint or its metrics (tests/faults/killer.py: half of the new bytes in
the temporary file, or all of them before the rename) resumes to the uninterrupted run's numbers bit for bit on
the CPU, for a trained classification backbone (finetune), a PET method with an EMA expert (LAE, prefix and LoRA
on a tiny text encoder) and a language-model method with a replay buffer (I-LoRA). The torn temporary file is
never read: the folder keeps the previous checkpoint, and the resumed run deletes the leftover and says so."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from clpet.cli import main
from clpet.results import load_checkpoint
from tests.scenario_fixtures import write_text_csv, write_text_tasks

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["plots=false", "progress=false"]
NUMBERS = ("acc_matrix", "A_t", "A_last", "A_avg", "forgetting", "bwt", "plasticity", "n_experiences_done")


def family(name: str, data: Path) -> list:
    return {
        "finetune": ["scenario=synthetic", "method=finetune", "method.optim.epochs=2"],
        "lae-prefix": ["scenario=text-csv", f"data_root={write_text_csv(data)}", "method=lae", "method.pet=prefix",
                       "backbone.name=tiny-text", "method.blocks=[0,1]", "method.optim.epochs=2",
                       "method.num_freeze_epochs=1"],
        "lae-lora": ["scenario=text-csv", f"data_root={write_text_csv(data)}", "method=lae", "method.pet=lora",
                     "backbone.name=tiny-text", "method.blocks=[0,1]", "method.optim.epochs=2",
                     "method.num_freeze_epochs=1"],
        "ilora": ["scenario=text-tasks", f"data_root={write_text_tasks(data)}", "method=ilora",
                  "backbone.name=tiny-llama", "method.optim.epochs=2", "method.optim.batch_size=4"],
    }[name]


# (file, its n-th write, how far the write got): the first checkpoint torn halfway, the second metrics.json
# complete but not renamed (the metrics of experience 2 lost, the checkpoint of experience 1 kept)
KILLS = [("checkpoint.pt", 1, "half"), ("metrics.json", 2, "before-rename")]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ["finetune", "lae-prefix", "lae-lora", "ilora"])
def test_a_run_killed_while_writing_resumes_to_the_uninterrupted_numbers(tmp_path, name, capsys):
    args = family(name, tmp_path / "data")
    full = tmp_path / "full"
    assert main(["run", *args, *QUIET, f"out_dir={full}"]) == 0
    expected = json.loads((full / "metrics.json").read_text())
    for target, n, when in KILLS:
        cut = tmp_path / f"cut-{target}-{n}"
        killed = subprocess.run([sys.executable, str(ROOT / "tests" / "faults" / "killer.py"), target, str(n), when,
                                 "run", *args, *QUIET, f"out_dir={cut}"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        torn = [p.name for p in cut.glob(f".{target}.*.tmp")]
        assert len(torn) == 1  # the write was cut: its temporary file is left, as after a power cut
        if (cut / "checkpoint.pt").exists():
            load_checkpoint(cut / "checkpoint.pt")  # the previous one, whole
        capsys.readouterr()
        assert main(["run", *args, *QUIET, f"out_dir={cut}", "resume=true"]) == 0
        assert f"partly written file(s) a killed run left: {torn[0]}" in capsys.readouterr().out
        assert not list(cut.glob(".*.tmp"))
        got = json.loads((cut / "metrics.json").read_text())
        for key in NUMBERS:
            assert got[key] == expected[key], (target, key)
