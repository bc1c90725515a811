"""What a checkpoint holds is declared, and resume reproduces an uninterrupted run for every method family and
PET kind (on tiny models: the real-model check is in test_real_runs)."""
import json

import pytest
import torch

from clpet.methods.base import CheckpointMismatch
from clpet.pet.keys import is_pet_key
from tests.method_fixtures import kill_and_resume
from tests.scenario_fixtures import write_text_csv

FAST_LAE = ["method.blocks=[0,1]", "method.optim.epochs=2", "method.num_freeze_epochs=1", "method.optim.batch_size=8",
            "method.optim.lr=0.05", "method.ema_decay=0.9"]
CASES = {
    "lae-adapter": ("lae", ["method.pet=adapter", *FAST_LAE]),
    "lae-lora": ("lae", ["method.pet=lora", *FAST_LAE]),
    "lae-prefix": ("lae", ["method.pet=prefix", *FAST_LAE]),
    "adam-adapter": ("adam", ["method.optim.epochs=2", "method.bottleneck=4"]),
    "adam-finetune": ("adam", ["method.pet=finetune", "method.optim.epochs=1"]),
    "finetune": ("finetune", ["method.optim.epochs=1"]),
    "simplecil": ("simplecil", []),
    "conpet-static": ("conpet-static", ["method.optim.epochs=1", "method.steps_per_epoch=3", "method.memory=kmeans",
                                        "method.exemplars_per_class=2"]),
    "conpet-dynamic": ("conpet-dynamic", ["method.optim.epochs=1", "method.steps_per_epoch=3"]),
    # class-incremental text on a language model: heads on the LM's features, PEFT LoRAs
    "conpet-static-llama": ("conpet-static", ["method.optim.epochs=1", "method.steps_per_epoch=3"], "tiny-llama"),
    "conpet-dynamic-llama": ("conpet-dynamic", ["method.optim.epochs=1", "method.steps_per_epoch=3"], "tiny-llama"),
}


def args(root, out, overrides, backbone="tiny-text", **extra):
    base = ["scenario=text-csv", f"data_root={root}", "scenario.increment=2", f"backbone.name={backbone}",
            "progress=false", "plots=false", f"out_dir={out}"]
    return ["run", *base, *overrides, *[f"{k}={v}" for k, v in extra.items()]]


def metrics(path):
    return json.loads((path / "metrics.json").read_text())


def pretrained_keys(saved):
    return [k for k in saved["method"] if k.startswith("backbone.") and not is_pet_key(k)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_run_resumes_to_the_same_numbers(tmp_path, monkeypatch, case):
    method, overrides, *backbone = CASES[case]
    root = write_text_csv(tmp_path / "data")
    _, saved = kill_and_resume(tmp_path, monkeypatch, method,
                               lambda out: args(root, out, overrides, *backbone, method=method))
    frozen = pretrained_keys(saved)
    assert bool(frozen) == (case in ("finetune",)), frozen[:3]  # pretrained weights only where trained


LM_CASES = {
    "seq-lora-llama": ("seq-lora", "tiny-llama"), "seq-lora-t5": ("seq-lora", "tiny-t5"),
    "inc-lora-llama": ("inc-lora", "tiny-llama"), "multitask-t5": ("multitask", "tiny-t5"),
    "seq-ft-llama": ("seq-ft", "tiny-llama"), "zero-shot-llama": ("zero-shot", "tiny-llama"),
    "ilora-llama": ("ilora", "tiny-llama"), "ilora-t5": ("ilora", "tiny-t5"),
    "conpet-static-t5": ("conpet-static", "tiny-t5"), "conpet-dynamic-llama": ("conpet-dynamic", "tiny-llama"),
    "olora-llama": ("olora", "tiny-llama"), "olora-t5": ("olora", "tiny-t5"),
    "migu-llama": ("migu", "tiny-llama"), "migu-lora-t5": ("migu", "tiny-t5", ["method.variant=lora"]),
    "migu-random-llama": ("migu", "tiny-llama", ["method.random_update=true"]),
    "osft-llama": ("osft", "tiny-llama"), "osft-importance-t5": ("osft", "tiny-t5", ["method.rank_schedule=importance"]),
}


@pytest.mark.parametrize("case", sorted(LM_CASES))
def test_killed_lm_run_resumes_to_the_same_numbers(tmp_path, monkeypatch, case):
    from tests.scenario_fixtures import write_text_tasks

    method, backbone, *extra = LM_CASES[case]
    root = write_text_tasks(tmp_path / "tasks")
    fast = ["method.optim.epochs=2", "method.optim.batch_size=4"] if method != "zero-shot" else []
    fast += extra[0] if extra else []
    fast += ["method.lora.rank=2"] if "lora" in method or method == "multitask" else []
    fast += ["method.buffer_size=5"] if method == "ilora" else []
    fast += ["method.steps_per_epoch=3"] if method.startswith("conpet") else []

    def run_args(out):
        return ["run", "scenario=text-tasks", f"data_root={root}", f"method={method}", f"backbone.name={backbone}",
                "progress=false", "plots=false", f"out_dir={out}", *fast]

    _, saved = kill_and_resume(tmp_path, monkeypatch, method, run_args)
    full_weights = method in ("seq-ft", "osft") or (method == "migu" and "method.variant=lora" not in fast)
    assert bool(pretrained_keys(saved)) == full_weights  # the LoRA methods keep only their adapters


def test_pet_structure_is_in_the_checkpoint_and_a_mismatch_names_the_key(tmp_path):
    from tests.method_fixtures import make_method

    m, scenario, _ = make_method("lae", *FAST_LAE)
    m.learn_experience(scenario[0])
    m.learn_experience(scenario[1])  # the offline set exists from experience 2 on
    state, extra = m.checkpoint_state_dict(), m.extra_state()
    sets = [s["name"] for s in extra["pet_structure"]["pets"]["sets"]]
    assert sets == ["online", "offline"] and extra["pet_structure"]["pets"]["frozen"] == ["offline"]

    fresh, _, _ = make_method("lae", *FAST_LAE)  # a new process: only the online set, one head
    fresh.load_extra_state(extra)
    fresh.load_checkpoint_state_dict(state)
    assert fresh.pets.names() == ["online", "offline"] and fresh.pets.is_frozen("offline")
    for k, v in m.checkpoint_state_dict().items():
        assert torch.equal(v, fresh.checkpoint_state_dict()[k]), k

    broken = dict(state)
    key = next(k for k in broken if ".pets.offline." in k)
    del broken[key]
    again, _, _ = make_method("lae", *FAST_LAE)
    again.load_extra_state(extra)
    with pytest.raises(CheckpointMismatch, match="missing '" + key.replace(".", r"\.")):
        again.load_checkpoint_state_dict(broken)
    broken = {**state, key: torch.zeros(3)}
    with pytest.raises(CheckpointMismatch, match="shape"):
        again.load_checkpoint_state_dict(broken)
