"""Shared test settings: offline, quiet, and every run folder under the test's tmp dir."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run with the tmp dir as the working directory (default run folders land in tmp/runs)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny_overrides(**extra):
    """Overrides for a fast synthetic run: Gaussian blobs, a tiny MLP, no plots or progress bars."""
    base = {
        "scenario": "synthetic",
        "progress": "false",
        "plots": "false",
    }
    base.update({k: str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]
