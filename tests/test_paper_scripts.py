"""The paper-format run scripts (experiments/paper/*.sh, written for a GPU) pass clpet's config validation: every
method, key and value they set exists and is accepted. Each script runs with CLPET pointing at a validator."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "experiments" / "paper").glob("*.sh"))
VALIDATOR = """import sys
from clpet.config import compose, rewrite_overrides, validate
assert sys.argv[1] == "run", sys.argv
resolved = validate(compose(rewrite_overrides(sys.argv[2:])))
print("valid", resolved.method.name)
"""


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_paper_script_configs_validate(tmp_path, script):
    shim = tmp_path / "clpet"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'validate.py'} \"$@\"\n")
    shim.chmod(0o755)
    (tmp_path / "validate.py").write_text(VALIDATOR)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")  # hf-clip checks for a model folder when validated
    env = {**os.environ, "CLPET": str(shim), "DATA": str(tmp_path), "T5": str(tmp_path / "t5"), "DEVICE": "cpu",
           "CLIP": str(tmp_path / "clip"), "SEEDS": "42"}
    out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("valid ") >= 1


def test_there_are_paper_scripts():
    assert len(SCRIPTS) >= 2
