"""Run folder: atomic writes, file formats, checkpoints and RNG state with weights_only=True."""
import json
import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from clpet.results import (
    RunFolder,
    atomic_torch_save,
    atomic_write_text,
    load_checkpoint,
    load_metrics,
    rng_state,
    set_rng_state,
)


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_atomic_write_text_replaces(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


def test_failing_torch_save_keeps_previous_file_and_no_temp(tmp_path):
    p = tmp_path / "checkpoint.pt"
    atomic_torch_save({"step": 1, "w": torch.ones(2)}, p)
    before = p.read_bytes()
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"step": 2, "bad": Unpicklable()}, p)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert load_checkpoint(p)["step"] == 1


def test_acc_matrix_csv(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.write_acc_matrix(np.array([[90.0, np.nan, np.nan], [95.0, 90.0, np.nan], [70.0, 80.125, 75.0]]))
    assert run.acc_matrix_path.read_text() == (
        "after\\exp,0,1,2\n"
        "0,90.00,,\n"
        "1,95.00,90.00,\n"
        "2,70.00,80.12,75.00\n"
    )
    run.write_acc_matrix([[90.0, None, None], [95.0, 90.0]])  # partial run, ragged rows
    assert run.acc_matrix_path.read_text() == "after\\exp,0,1,2\n0,90.00,,\n1,95.00,90.00,\n"


def test_metrics_config_log(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.write_metrics({"A_last": np.float64(81.5), "forgetting": float("nan"), "A_t": np.array([90.0, 81.5])})
    text = run.metrics_path.read_text()
    assert "NaN" not in text
    assert load_metrics(run.path) == {"A_last": 81.5, "forgetting": None, "A_t": [90.0, 81.5]}
    on_disk = json.loads(text)
    assert len(on_disk.pop("sha256")) == 64 and run.load_metrics() == on_disk  # the checksum is checked and removed
    with pytest.raises(FileNotFoundError, match="empty"):
        load_metrics(tmp_path / "empty")

    run.write_config({"method": {"name": "lae", "lr": 0.001}, "seed": 1})
    assert run.read_config() == {"method": {"name": "lae", "lr": 0.001}, "seed": 1}
    run.write_config(OmegaConf.create({"a": 1, "b": "${a}"}))
    assert run.read_config() == {"a": 1, "b": 1}

    run.log("first")
    run.log("second\n")
    assert run.log_path.read_text() == "first\nsecond\n"
    assert run.plots_dir.is_dir() and run.plots_dir.name == "plots"


def test_checkpoint_missing_and_roundtrip(tmp_path):
    run = RunFolder(tmp_path)
    assert run.load_checkpoint() is None
    run.save_checkpoint({"experience": 2, "model": {"w": torch.arange(3.0)}, "name": "lae"})
    state = torch.load(run.checkpoint_path, map_location="cpu", weights_only=True)
    assert state["experience"] == 2 and torch.equal(state["model"]["w"], torch.arange(3.0))
    assert run.load_checkpoint()["name"] == "lae"


def _draws():
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.concatenate([np.random.rand(3), np.random.randn(3)]),
        torch.rand(3),
    )


def test_rng_state_roundtrip_weights_only(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.randn(1)  # and in numpy's
    run = RunFolder(tmp_path)
    run.save_checkpoint({"rng": rng_state()})
    expected = _draws()

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(torch.load(run.checkpoint_path, map_location="cpu", weights_only=True)["rng"])
    got = _draws()
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_state_roundtrip_weights_only(tmp_path):
    torch.cuda.manual_seed_all(7)
    run = RunFolder(tmp_path)
    run.save_checkpoint({"rng": rng_state()})
    expected = torch.rand(4, device="cuda").cpu()
    torch.cuda.manual_seed_all(99)
    set_rng_state(run.load_checkpoint()["rng"])
    assert torch.equal(torch.rand(4, device="cuda").cpu(), expected)
