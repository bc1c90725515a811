"""Data parallelism inside one run (``torchrun --nproc_per_node=2 -m clpet run ...``) on the CPU with gloo.

The mechanisms (tests/ddp_worker.py): a split batch's averaged gradient is the whole batch's gradient, and frozen
features are computed once per sample across the ranks. End to end against one process on the same config:
SimpleCIL's accuracy matrix is identical (it trains nothing; features come from the same batches); finetune
and seq-lora on the tiny backbones give the same matrix within one test sample per cell and the same trained
weights within 1e-2, because each rank's loss is a mean over its part of the batch, so the global gradient is
summed in another order (float rounding; the weights drift apart by a few 1e-3 over a run); LAE on tiny-text is
within 15 points of A_last, because the backbone's dropout draws differ per rank and the tiny stream has 12 test
texts per experience (one text = 8.3 points). Only rank 0 writes the run folder. ``shard_backbone=true``
(FSDP2 on the frozen weights) gives the unsharded two-rank numbers bit for bit. A two-rank sharded seq-lora job
killed (SIGKILL to the launcher and both ranks) while learning its second experience resumes, under two ranks
again, to the uninterrupted two-rank run's numbers bit for bit.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.scenario_fixtures import write_text_csv, write_text_tasks

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks on two cores
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
QUIET = ["plots=false", "progress=false"]
ACCELERATE_FSDP = [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--num_processes=2",
                   "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", "-m", "clpet"]


def clpet(args, ranks: int, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [*TORCHRUN, "-m", "clpet", *args] if ranks == 2 else [sys.executable, "-m", "clpet", *args]
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def both(tmp_path: Path, overrides) -> tuple:
    """The same run as one process and as two ranks; (metrics, checkpoint state) of each."""
    out = []
    for ranks in (1, 2):
        folder = tmp_path / f"ranks{ranks}"
        done = clpet(["run", *overrides, *QUIET, f"out_dir={folder}"], ranks, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        out.append((json.loads((folder / "metrics.json").read_text()),
                    torch.load(folder / "checkpoint.pt", weights_only=True)["method"], folder))
    return out


def matrix(metrics) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in metrics["acc_matrix"]], dtype=float)


def weight_gap(a, b) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.timeout(300)
def test_split_batches_give_the_global_gradient_and_features_are_computed_once(tmp_path):
    done = subprocess.run([*TORCHRUN, str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert all(max(r["gradient_errors"]) < 1e-6 for r in ranks)  # a batch of 7 (4 + 3) and of 1 (1 + none)
    assert sum(r["computed"] for r in ranks) == 37 and min(r["computed"] for r in ranks) > 0
    assert all(r["rows"] == 37 and r["feature_error"] == 0.0 for r in ranks)
    assert ranks[0]["rng_after_pass"] == ranks[1]["rng_after_pass"]
    assert all(r["none_kept"] for r in ranks)


@pytest.mark.timeout(400)
def test_simplecil_gives_the_single_process_matrix_exactly_and_rank_0_alone_writes(tmp_path):
    (one, _, _), (two, _, folder) = both(tmp_path, ["scenario=synthetic", "method=simplecil"])
    assert one["acc_matrix"] == two["acc_matrix"]
    provenance = json.loads((folder / "provenance.json").read_text())
    assert '"world_size": 2' in json.dumps(provenance)
    log = (folder / "log.txt").read_text()
    assert log.count("experience 3/3") == 1  # one writer
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in (tmp_path / "ranks1").iterdir())


@pytest.mark.timeout(300)
def test_accelerate_launch_runs_the_same_data_parallel_path(tmp_path):
    """``accelerate launch --multi_gpu`` starts the ranks through torch's elastic launcher with the same environment;
    on a machine without GPUs the run device is set to the CPU (gloo)."""
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
                  "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", "-m", "clpet"]
    args = ["run", "scenario=synthetic", "method=simplecil", "device=cpu", *QUIET]
    single = clpet([*args, f"out_dir={tmp_path / 'one'}"], 1, tmp_path)
    launched = subprocess.run([*accelerate, *args, f"out_dir={tmp_path / 'two'}"], cwd=tmp_path, env=ENV,
                              capture_output=True, text=True, timeout=240)
    assert single.returncode == 0 and launched.returncode == 0, launched.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert one["acc_matrix"] == two["acc_matrix"]
    assert '"world_size": 2' in (tmp_path / "two" / "provenance.json").read_text()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("setting", ["finetune", "seq-lora"])
def test_trained_methods_match_one_process_within_the_stated_tolerance(tmp_path, setting):
    overrides = {
        "finetune": ["scenario=synthetic", "method=finetune"],
        "seq-lora": ["scenario=text-tasks", f"data_root={write_text_tasks(tmp_path / 'data')}", "method=seq-lora",
                     "backbone.name=tiny-llama", "method.optim.epochs=2", "method.optim.batch_size=4",
                     "method.lora.rank=2"],
    }[setting]
    one_sample = {"finetune": 100 / 40, "seq-lora": 100 / 6}[setting]  # the smallest test set: 40 vectors, 6 prompts
    (one, w1, _), (two, w2, _) = both(tmp_path, overrides)
    assert np.nanmax(np.abs(matrix(one) - matrix(two))) <= one_sample + 1e-9
    assert weight_gap(w1, w2) < 1e-2


@pytest.mark.timeout(600)
def test_lae_matches_one_process_within_the_stated_tolerance(tmp_path):
    overrides = ["scenario=text-csv", f"data_root={write_text_csv(tmp_path / 'data')}", "method=lae",
                 "backbone.name=tiny-text", "method.blocks=[0,1]", "method.optim.epochs=4",
                 "method.num_freeze_epochs=1", "method.optim.batch_size=8"]
    (one, _, _), (two, _, _) = both(tmp_path, overrides)
    assert abs(one["A_last"] - two["A_last"]) <= 15.0
    assert two["n_experiences_done"] == one["n_experiences_done"]


def test_a_method_with_per_batch_state_is_refused_under_torchrun(tmp_path):
    done = clpet(["run", "scenario=text-tasks", f"data_root={write_text_tasks(tmp_path / 'data')}", "method=ilora",
                  "backbone.name=tiny-llama", *QUIET, f"out_dir={tmp_path / 'x'}"], 2, tmp_path)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("clpet: error:")]
    assert errors and "does not run data-parallel" in errors[0]
    assert not (tmp_path / "x" / "metrics.json").exists()


def tiny_lm(tmp_path: Path, method: str) -> list:
    lora = [] if method == "seq-ft" else ["method.lora.rank=2"]
    return ["scenario=text-tasks", f"data_root={write_text_tasks(tmp_path / 'data')}", f"method={method}",
            "backbone.name=tiny-llama", "method.optim.epochs=2", "method.optim.batch_size=4", *lora]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("setting", ["rank-seq-lora", "generate-inc-lora"])
def test_a_sharded_backbone_gives_the_unsharded_numbers(tmp_path, setting):
    """``shard_backbone=true`` gathers the exact frozen weights for every forward and leaves the adapters whole, so
    the two-rank run's matrix and adapters equal the unsharded two-rank run's bit for bit; inc-lora adds an adapter
    per task into the sharded model, and greedy generation keeps the ranks in step (a rank that stopped decoding
    first would hang the other). The inc-lora run is sharded through ``accelerate launch --use_fsdp`` instead of
    the key (accelerate's FSDP switch turns it on)."""
    overrides = {"rank-seq-lora": tiny_lm(tmp_path, "seq-lora"),
                 "generate-inc-lora": [*tiny_lm(tmp_path, "inc-lora"), "scenario.evaluation=generate"]}[setting]
    # chunks of 2 prompts: 3 and 5 per task, so ranks get uneven numbers of them (the lockstep padding) and decode
    # different prompts, which stop at different lengths (synced_gpus)
    overrides += ["method.eval_samples_per_batch=2", "device=cpu"]
    runs = {}
    for shard in (False, True):
        folder = tmp_path / f"shard-{shard}"
        args = ["run", *overrides, *QUIET, f"out_dir={folder}"]
        if shard and setting == "generate-inc-lora":
            done = subprocess.run([*ACCELERATE_FSDP, *args], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                                  timeout=300)
        else:
            done = clpet([*args, f"shard_backbone={str(shard).lower()}"], 2, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[shard] = (json.loads((folder / "metrics.json").read_text()),
                       torch.load(folder / "checkpoint.pt", weights_only=True)["method"], folder)
    (plain, w_plain, _), (sharded, w_sharded, folder) = runs[False], runs[True]
    assert plain["acc_matrix"] == sharded["acc_matrix"]
    assert w_plain.keys() == w_sharded.keys() and all(torch.equal(w_plain[k], w_sharded[k]) for k in w_plain)
    held = json.loads((folder / "provenance.json").read_text())[0]["run"]["sharded_backbone"]
    assert held["blocks"] == 2 and held["per_rank"] == [held["frozen"] // 2] * 2  # each rank keeps half of each


def test_shard_backbone_is_refused_in_one_line_in_one_process(tmp_path):
    done = clpet(["run", *tiny_lm(tmp_path, "seq-lora"), *QUIET, "shard_backbone=true", f"out_dir={tmp_path / 'x'}"],
                 1, tmp_path)
    errors = [e for e in done.stderr.splitlines() if e.startswith("clpet: error:")]
    assert done.returncode != 0 and errors and "this is one process" in errors[0], done.stderr[-2000:]
    assert not (tmp_path / "x" / "metrics.json").exists()


@pytest.mark.parametrize("method, backbone, line", [("seq-ft", "tiny-llama", "trains the backbone's own weights"),
                                                    ("seq-lora", "tiny-t5", "encoder-decoder models")])
def test_shard_backbone_refuses_what_it_cannot_shard_under_torchrun(tmp_path, method, backbone, line):
    args = [*tiny_lm(tmp_path, method), f"backbone.name={backbone}"]
    done = clpet(["run", *args, *QUIET, "shard_backbone=true", f"out_dir={tmp_path / 'x'}"], 2, tmp_path)
    errors = [e for e in done.stderr.splitlines() if e.startswith("clpet: error:")]
    assert done.returncode != 0 and errors and line in errors[0], done.stderr[-2000:]


@pytest.mark.timeout(600)
def test_a_killed_two_rank_run_resumes_to_the_uninterrupted_numbers(tmp_path):
    """Data parallel with a sharded backbone: the sharding, the adapters' averaged gradients and the checkpoint
    all take part in the resume."""
    overrides = [*tiny_lm(tmp_path, "seq-lora"), "shard_backbone=true"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    done = clpet(["run", *overrides, *QUIET, f"out_dir={full}"], 2, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = subprocess.run([*TORCHRUN, str(ROOT / "tests" / "faults" / "killer.py"), "learn:1", "run", *overrides,
                             *QUIET, f"out_dir={cut}"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["next_experience"] == 1
    assert json.loads((cut / "metrics.json").read_text())["n_experiences_done"] == 1
    resumed = clpet(["run", *overrides, *QUIET, f"out_dir={cut}", "resume=true"], 2, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (json.loads((p / "metrics.json").read_text()) for p in (full, cut))
    for key in ("acc_matrix", "A_t", "A_last", "A_avg", "forgetting", "bwt", "plasticity"):
        assert a[key] == b[key], key
    wa, wb = (torch.load(p / "checkpoint.pt", weights_only=True)["method"] for p in (full, cut))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
