"""Paper presets: every preset equals the reference values its header cites; ``scenario=imagenet-r method=lae``
resolves to LAE's ImageNet-R setting (``--cfg job`` prints it without touching data), APER's for ``method=adam``;
the command line wins over a preset, ``preset=none`` turns it off, a wrong or mismatched name fails in one line,
and a run folder records which preset applied."""
import json

import pytest
import yaml
from omegaconf import OmegaConf

from clpet.cli import main
from clpet.config import ConfigError, compose, rewrite_overrides, validate
from clpet.presets import available_presets, flatten, header_values, load_preset, reported
from tests.paper_fixtures import write_imagenet_r

PRESETS = available_presets()
# keys a preset may set beyond its reference values: which backbone, and no split name over init/increment
PLUMBING = {"backbone.name": "timm", "scenario.split_name": None}  # hf-clip presets cite it


def resolved(*args):
    return validate(compose(rewrite_overrides(list(args))))


def printed_job(capsys, *args):
    assert main(["run", *args, "--cfg", "job"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_the_paper_presets_exist():
    assert {"lae/imagenet-r", "lae/cifar100", "adam/imagenet-r", "adam/cifar100", "simplecil/imagenet-r",
            "simplecil/cifar100"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_holds_the_reference_values_of_its_header(name):
    listed = header_values(name)
    assert len(listed) >= 5, f"{name}: its header lists no reference values"
    values = flatten({k: v for k, v in load_preset(name).items() if k != "reported"})
    for ref_key, value, key in listed:
        assert key in values, f"{name}: {ref_key} -> {key} is not set by the preset"
        assert values[key] == value, f"{name}: {key} = {values[key]!r}, the reference ({ref_key}) says {value!r}"
    extra = {k: v for k, v in values.items() if k not in {key for _, _, key in listed}}
    assert all(PLUMBING.get(k, object()) == v for k, v in extra.items()), f"{name}: no reference line for {extra}"


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_validates_on_its_pair_and_is_recorded(name, tmp_path):
    method, scenario = name.split("/")
    extra = []
    if load_preset(name).get("backbone", {}).get("name") == "hf-clip":  # the user names the CLIP folder
        (tmp_path / "config.json").write_text("{}")
        extra = [f"backbone.model={tmp_path}"]
    cfg = resolved(f"scenario={scenario}", f"method={method}", *extra)
    assert cfg.run.preset == name and cfg.raw["preset"] == name
    for key, value in flatten({k: v for k, v in load_preset(name).items() if k != "reported"}).items():
        assert OmegaConf.select(OmegaConf.create(cfg.raw), key) == value, key
    for entry in reported(name):
        assert {"label", "A_last", "A_avg", "source"} <= set(entry)


def test_lae_imagenet_r_is_the_default_of_its_command_and_cfg_job_prints_it(capsys):
    job = printed_job(capsys, "scenario=imagenet-r", "method=lae")
    assert job["preset"] == "lae/imagenet-r"
    assert job["backbone"]["model"] == "vit_base_patch16_224.orig_in21k"
    assert job["backbone"]["normalize"] is False and job["backbone"]["interpolation"] == "bilinear"
    assert (job["method"]["optim"]["epochs"], job["method"]["num_freeze_epochs"]) == (50, 30)
    assert job["method"]["optim"]["lr"] == 0.00046875 and job["method"]["optim"]["batch_size"] == 24
    assert job["precision"] == "fp32"


def test_adam_on_imagenet_r_prints_apers_setting(capsys):
    job = printed_job(capsys, "scenario=imagenet-r", "method=adam")
    assert job["preset"] == "adam/imagenet-r"
    assert job["scenario"]["split"] == "aper" and job["scenario"]["order"] == "seed1993"
    assert job["scenario"]["increment"] == 5
    optim = job["method"]["optim"]
    assert (optim["lr"], optim["batch_size"], optim["weight_decay"]) == (0.05, 24, 0.005)
    bb = job["backbone"]
    assert (bb["interpolation"], bb["train_interpolation"], bb["train_scale"]) == ("bicubic", "bilinear", [0.05, 1.0])


def test_the_command_line_wins_and_preset_none_turns_it_off():
    cfg = resolved("scenario=imagenet-r", "method=lae", "method.optim.epochs=3", "seed=0", "scenario.increment=10")
    assert cfg.method.optim.epochs == 3 and cfg.run.seed == 0 and cfg.scenario.increment == 10
    assert cfg.method.num_freeze_epochs == 30  # the rest of the preset still applies
    off = resolved("scenario=imagenet-r", "method=lae", "preset=none")
    assert off.run.preset == "none" and off.method.optim.epochs == 2
    assert off.backbone.model == "vit_base_patch16_224.augreg_in21k"
    offline = resolved("scenario=clipart", "method=lae")
    assert offline.run.preset == "none" and offline.method.optim.epochs == 2  # the CPU defaults stay
    tuned = resolved("scenario=wordnet", "method=lae")  # the schedule chosen on validation data
    assert tuned.run.preset == "lae/wordnet" and tuned.method.optim.lr == 0.023251934389025737


def test_another_backbone_drops_the_presets_backbone_keys_and_says_so():
    cfg = resolved("scenario=imagenet-r", "method=lae", "backbone=minilm")
    assert cfg.backbone.name == "minilm" and "without its backbone keys" in cfg.run.preset
    assert cfg.method.optim.epochs == 50


@pytest.mark.parametrize("preset, message", [
    ("lae/imagenet", "unknown preset 'lae/imagenet' (did you mean 'lae/imagenet-r'?)"),
    ("lae/cifar100", "preset lae/cifar100 is for method lae on scenario cifar100"),
])
def test_a_wrong_preset_fails_in_one_line(preset, message):
    with pytest.raises(ConfigError) as err:
        resolved("scenario=imagenet-r", "method=lae", f"preset={preset}")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cfg_job_rejects_other_values(capsys):
    assert main(["run", "scenario=imagenet-r", "--cfg", "all"]) == 2
    assert "--cfg job only" in capsys.readouterr().err


def test_a_run_on_an_l2p_tree_records_the_lae_preset(tmp_path, capsys):
    write_imagenet_r(tmp_path, n_classes=200, per_class=2)
    out = tmp_path / "run"
    code = main(["run", "scenario=imagenet-r", "method=lae", f"data_root={tmp_path}", f"out_dir={out}",
                 "backbone.model=vit_tiny_patch16_224", "backbone.pretrained=false", "backbone.image_size=32",
                 "scenario.increment=100", "method.optim.epochs=1", "method.num_freeze_epochs=0", "progress=false",
                 "plots=false", "checkpoint=false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "preset: lae/imagenet-r" in printed
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["preset"] == "lae/imagenet-r" and saved["backbone"]["normalize"] is False
    assert saved["backbone"]["model"] == "vit_tiny_patch16_224" and saved["method"]["optim"]["lr"] == 0.00046875
    provenance = json.loads((out / "provenance.json").read_text())[0]["run"]
    assert provenance["global_batch"] == 24 and provenance["preset"] == "lae/imagenet-r"
