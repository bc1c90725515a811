"""A checkpoint or metrics.json changed after it was written -- bytes flipped anywhere, the file cut short -- is
reported in one line and never loaded (the SHA-256 stored in each, clpet.results); a flip that lands where the
file's format ignores it (zip padding) leaves the content, and so the loaded state, exactly as written."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from clpet.cli import main
from clpet.results import CHECKSUM_KEY, RunFileError, content_digest, load_checkpoint, load_metrics

QUIET = ["plots=false", "progress=false"]
ARGS = ["scenario=synthetic", "method=finetune", "method.optim.epochs=1", *QUIET]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("corrupt") / "run"
    assert main(["run", *ARGS, f"out_dir={out}"]) == 0
    return out


def clpet_line(*args) -> tuple:
    done = subprocess.run([sys.executable, "-m", "clpet", *args], capture_output=True, text=True, timeout=300)
    return done.returncode, done.stderr


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1 and lines[0].startswith("clpet: error:"), stderr[-2000:]
    return lines[0]


def test_flipped_bytes_anywhere_in_a_checkpoint_are_caught_or_change_nothing(finished, tmp_path):
    original = (finished / "checkpoint.pt").read_bytes()
    reference = content_digest({k: v for k, v in load_checkpoint(finished / "checkpoint.pt").items()})
    rng = np.random.default_rng(0)
    caught = 0
    for i, at in enumerate(rng.choice(len(original), size=60, replace=False)):
        damaged = bytearray(original)
        damaged[at] ^= 0xFF
        path = tmp_path / f"flip{i}.pt"
        path.write_bytes(bytes(damaged))
        try:
            state = load_checkpoint(path)
        except RunFileError as exc:
            caught += 1
            assert "\n" not in str(exc) and str(path) in str(exc)
            continue
        assert content_digest(state) == reference, f"byte {at} changed the content and was not caught"
    assert caught >= 30  # most bytes of a checkpoint are its tensors


def test_a_cut_checkpoint_is_caught_at_every_length(finished, tmp_path):
    original = (finished / "checkpoint.pt").read_bytes()
    for n in (0, 1, 100, len(original) // 3, len(original) // 2, len(original) - 1):
        path = tmp_path / f"cut{n}.pt"
        path.write_bytes(original[:n])
        with pytest.raises(RunFileError, match="cannot load checkpoint"):
            load_checkpoint(path)


def changed_tensor(path) -> None:
    state = torch.load(path, weights_only=True)
    key = next(k for k, v in state["method"].items() if v.is_floating_point())
    state["method"][key].view(-1)[0] += 1.0  # a bit flip that still unpickles: the stored checksum is now wrong
    torch.save(state, path)


def cut_in_half(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage, message", [(changed_tensor, "does not match its SHA-256"),
                                             (cut_in_half, "truncated or corrupted")])
def test_resume_from_a_damaged_checkpoint_stops_in_one_line(finished, tmp_path, damage, message):
    run = tmp_path / "run"
    assert main(["run", *ARGS, f"out_dir={run}"]) == 0
    damage(run / "checkpoint.pt")
    code, stderr = clpet_line("run", *ARGS, f"out_dir={run}", "resume=true")
    assert code != 0 and message in one_error_line(stderr)


def test_a_changed_or_cut_metrics_file_is_refused_by_every_reader_in_one_line(finished, tmp_path):
    run = tmp_path / "run"
    assert main(["run", *ARGS, f"out_dir={run}"]) == 0
    text = (run / "metrics.json").read_text()
    assert json.loads(text)[CHECKSUM_KEY] and load_metrics(run)["A_last"] is not None
    a_last = json.loads(text)["A_last"]
    changed = text.replace(f'"A_last": {json.dumps(a_last)}', f'"A_last": {json.dumps(a_last + 1.0)}', 1)
    assert changed != text
    for damaged, message in ((changed, "does not match its SHA-256"), (text[: len(text) // 2], "not valid JSON")):
        (run / "metrics.json").write_text(damaged)
        with pytest.raises(RunFileError, match=message):
            load_metrics(run)
        report = ["report", str(run), "--out", str(tmp_path / "r.html")]
        for command in (["compare", str(run)], ["plot", str(run)], report):
            code, stderr = clpet_line(*command)
            assert code != 0 and message in one_error_line(stderr), command
