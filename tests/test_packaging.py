"""The wheel carries the config groups: `clpet run` works from an installed package, not only a checkout."""
import subprocess
import sys
import zipfile

import pytest


@pytest.mark.timeout(300)
def test_wheel_ships_configs_and_composes_from_them(tmp_path):
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(root)],
        check=True, capture_output=True, timeout=240,
    )
    wheel = next(tmp_path.glob("clpet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for yaml_file in sorted(p.name for p in (root / "scenarios").glob("*.yaml")):
        assert f"clpet/conf/scenarios/{yaml_file}" in names
    for yaml_file in sorted(p.name for p in (root / "methods").glob("*.yaml")):
        assert f"clpet/conf/methods/{yaml_file}" in names
    for preset in sorted((root / "presets").glob("*/*.yaml")):
        assert f"clpet/conf/presets/{preset.parent.name}/{preset.name}" in names
    for launcher in sorted((root / "hydra" / "launcher").glob("*.yaml")):
        assert f"clpet/conf/hydra/launcher/{launcher.name}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import clpet, clpet.config as c; "
        "assert str(c.config_dir()).startswith(%r), c.config_dir(); "
        "cfg = c.validate(c.compose(c.rewrite_overrides(['scenario=synthetic', 'method=finetune']))); "
        "lae = c.validate(c.compose(c.rewrite_overrides(['scenario=imagenet-r', 'method=lae']))); "
        "assert lae.run.preset == 'lae/imagenet-r', lae.run.preset; "
        "c.compose(c.rewrite_overrides(['scenario=synthetic', 'method=finetune', 'hydra/launcher=slurm'])); "
        "print(cfg.method.name)" % str(site)
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "finetune"
