"""Config composition, the Hydra group trap, and one-line errors before any work starts."""
import subprocess
import sys

import pytest

from clpet.cli import main
from clpet.config import ConfigError, compose, rewrite_overrides, validate  # noqa: F401


def resolved(*args):
    return validate(compose(rewrite_overrides(list(args))))


def test_defaults_compose_to_wordnet_on_minilm():
    cfg = resolved()
    assert cfg.scenario.name == "wordnet"
    assert cfg.backbone.name == "minilm"  # backbone=auto takes the scenario's default


def test_group_override_picks_the_yaml_not_a_string():
    # the Hydra trap: a bare `scenario=x` must select scenarios/x.yaml, not replace the node by a string
    cfg = resolved("scenario=fashion-mnist", "method=finetune")
    assert cfg.scenario.name == "fashion-mnist"
    assert cfg.method.name == "finetune"
    assert cfg.method.optim.epochs >= 1


def test_nested_override_reaches_the_typed_config():
    cfg = resolved("method=finetune", "method.optim.lr=0.5", "scenario.max_train_per_class=7", "seed=3")
    assert cfg.method.optim.lr == 0.5
    assert cfg.scenario.max_train_per_class == 7
    assert cfg.run.seed == 3


@pytest.mark.parametrize(
    "args, needle",
    [
        (["method=nope"], "unknown method 'nope'"),
        (["method=simplecl"], "did you mean 'simplecil'"),
        (["scenario=wordnett"], "unknown scenario 'wordnett'"),
        (["method.typo=1"], "unknown key 'method.typo'"),
        (["scenario.incremnt=3"], "unknown key 'scenario.incremnt'"),
        (["backbone.name=nope"], "unknown backbone 'nope'"),
        (["sed=1"], "unknown key 'sed' (did you mean 'seed'?)"),
        (["device=tpu"], "unknown device 'tpu'"),
        (["method=finetune", "method.optim.optimizer=rmsprop"], "unknown optimizer 'rmsprop'"),
        (["method=finetune", "method.optim.lr=abc"], "method"),
        (["resume=true"], "resume=true needs out_dir"),
    ],
)
def test_bad_config_fails_with_one_line(args, needle):
    with pytest.raises(ConfigError) as info:
        resolved(*args)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_unknown_method_lists_valid_names(capsys):
    assert main(["run", "method=nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for name in ("simplecil", "finetune", "joint"):
        assert name in err


def test_console_script_fails_fast_on_unknown_method():
    proc = subprocess.run(
        [sys.executable, "-m", "clpet.cli", "run", "method=nope"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "valid:" in proc.stderr


def test_list_shows_every_registered_name(capsys):
    from clpet.config import available
    from clpet.presets import available_presets
    from clpet.registry import BACKBONES

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in available("scenario") + available("method") + BACKBONES.names():
        assert name in out
    presets = out.split("presets (")[1]
    assert "ilora/lm-offline" in presets and "lae/imagenet-r" in presets
    for name in available_presets():
        assert name in presets
    lines = {x.split()[0]: x for x in presets.splitlines()[1:]}
    assert "paper setting: LAE on ImageNet-R" in lines["lae/imagenet-r"] and "A_last 72.27" in lines["lae/imagenet-r"]
    assert "paper setting: CPE-CLIP on CUB-200" in lines["cpe-clip/cub200-fscil"]
    assert "I-LoRA on the offline" in lines["ilora/lm-offline"]
    assert lines["ilora/lm-offline"].endswith("schedule chosen on validation data")
    assert "paper setting" not in lines["lae/wordnet"]


def test_every_scenario_method_pair_composes_or_is_refused_for_its_protocol():
    from clpet.config import ConfigError, available
    from clpet.registry import METHODS, SCENARIOS

    composed = 0
    for scenario in available("scenario"):
        for method in available("method"):
            args = (f"scenario={scenario}", f"method={method}")
            cfg = compose(rewrite_overrides(list(args)))
            supported = METHODS.get(cfg.method.name).protocols
            if SCENARIOS.get(cfg.scenario.name).protocol in supported:
                if cfg.backbone.name == "hf-clip":  # a CLIP preset: the user names the model folder, said in one line
                    with pytest.raises(ConfigError, match="hf-clip needs backbone.model="):
                        validate(cfg)
                    continue
                cfg = validate(cfg)
                assert cfg.scenario.name and cfg.method.name
                composed += 1
            else:
                with pytest.raises(ConfigError, match="supports"):
                    resolved(*args)
    assert composed > 50


def test_multirun_rejects_a_bad_combination_before_any_job(in_tmp, capsys):
    assert main(["run", "-m", "scenario=synthetic", "method=simplecil,nope"]) == 2
    assert not (in_tmp / "runs").exists()
