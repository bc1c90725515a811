"""The ``trace`` scenario (TRACE's layout and per-task metrics) and the generation metrics TRACE scores with:
the values below are TRACE's reference implementations' (documented examples, or the packages TRACE calls);
``experiments/fidelity/trace_metrics.py`` compares the whole set against TRACE's own code."""
import json

import pytest

from clpet.cli import main
from clpet.evaluation import text_metrics as tm
from clpet.evaluation.sari import sari_sentence
from clpet.registry import SCENARIOS
from tests.scenario_fixtures import write_trace


def build(root, **cfg):
    return SCENARIOS.get("trace").build({"name": "trace", **cfg}, seed=0, data_root=str(root))


# ------------------------------------------------------------------------------------------ metrics
def test_sari_equals_the_reference_metrics_documented_values():
    # the example of the Hugging Face `sari` metric card (what TRACE's 20Minuten score loads)
    source = "About 95 species are currently accepted ."
    refs = ["About 95 species are currently known .", "About 95 species are now accepted .",
            "95 species are now accepted ."]
    assert 100 * sari_sentence(source, "About 95 you now get in .", refs) == pytest.approx(26.953601953601954, abs=1e-12)
    # an output equal to its single reference: every 0/0 counts as 1, so add and keep F1 and delete precision are 1
    assert sari_sentence("a b c d e", "a b c", ["a b c"]) == pytest.approx(1.0)
    # copying the source keeps everything and deletes nothing the reference deleted
    assert 0 < sari_sentence("a b c d e", "a b c d e", ["a b c"]) < 1
    # the metric entry passes the prompt as the source
    assert tm.sari("a b c", "a b c", "a b c d e") == pytest.approx(sari_sentence("a b c d e", "a b c", ["a b c"]))


def test_sari_is_case_and_tokenisation_insensitive_as_the_reference():
    assert sari_sentence("The dog, it sleeps.", "the dog sleeps .", ["The dog sleeps."]) == pytest.approx(
        sari_sentence("the dog , it sleeps .", "The dog sleeps.", ["the dog sleeps ."]))


def test_rouge_l_trace_is_the_rouge_package_in_traces_argument_order():
    from rouge import Rouge

    pred, ref = "the Council met. it approved the plan.", "The council approved the new plan. Members voted."
    expected = Rouge(metrics=["rouge-l"]).get_scores(ref, pred, avg=True)["rouge-l"]["f"]
    assert tm.rouge_l_trace(pred, ref) == pytest.approx(expected)
    assert tm.rouge_l_trace(pred, ref) != pytest.approx(tm.rouge_l(pred, ref))  # two packages, two numbers
    assert tm.rouge_l_trace("the cat", "The cat") < 1  # case kept, unlike rouge-score
    assert tm.rouge_l_trace("", ref) == 0.0 and tm.rouge_l_trace("...", ref) == 0.0


def test_code_similarity_is_fuzzywuzzys_ratio_after_py150_literals():
    assert tm.py150_literals("x = <NUM_LIT> ; s = <STR_LIT:hi> + <STR_LIT> ; c = <CHAR_LIT:a>") == "x = 0 ; s = hi +  ; c = a"
    assert tm.code_similarity("x = <NUM_LIT:3>", "x = 3") == 1.0
    assert tm.code_similarity("", "x = 3") == 0.0 and tm.code_similarity("<STR_LIT>", "x") == 0.0
    fuzz = pytest.importorskip("fuzzywuzzy.fuzz")
    import difflib

    if fuzz.SequenceMatcher is not difflib.SequenceMatcher:
        pytest.skip("fuzzywuzzy uses python-Levenshtein here, not the difflib TRACE's environment used")
    pairs = [("def f ( a ) : return a", "def g ( b ) : return b + 1"), ("for i in range(0):", "for j in rang(10) :"),
             ("import os", "import os . path"), ("a" * 250 + "b", "a" * 240 + "c" * 20)]
    for p, r in pairs:
        assert tm.code_similarity(p, r) == fuzz.ratio(p, r) / 100


def test_exact_and_choice_accuracy_follow_trace():
    assert tm.exact_match_cased(" A ", "A") == 1.0 and tm.exact_match_cased("a", "A") == 0.0
    assert tm.exact_match_cased("", "") == 0.0  # TRACE skips empty pairs but counts them in the denominator
    assert tm.choice_accuracy("B\nBecause x", "B\nBecause y") == 1.0 and tm.choice_accuracy("C", "B\nx") == 0.0
    assert set(tm.METRICS) >= {"exact_match", "exact_match_cased", "choice_accuracy", "rouge_l", "rouge_l_trace",
                               "edit_similarity", "code_similarity", "sari"}


# ------------------------------------------------------------------------------------------ the scenario
@pytest.mark.parametrize("nested", [True, False])
def test_trace_layout_order_metrics_and_caps(tmp_path, nested):
    root = write_trace(tmp_path / "t", nested=nested)
    s = build(root)
    assert [e.task_name for e in s] == ["C-STANCE", "FOMC", "MeetingBank", "Py150", "ScienceQA", "NumGLUE-cm",
                                        "NumGLUE-ds", "20Minuten"]
    assert [e.task.metric for e in s] == ["exact_match_cased", "exact_match_cased", "rouge_l_trace",
                                          "code_similarity", "choice_accuracy", "exact_match_cased",
                                          "exact_match_cased", "sari"]
    assert s.evaluation == "generate" and s.protocol.value == "task-incremental"
    e = s[2]
    assert e.test.inputs[0] == ("Task MeetingBank, item 0. Answer:", "The council approved the plan.")
    assert len(e.train) == 4 and len(e.test) == 3
    small = build(root, order=["Py150", "FOMC"], max_train_per_label=2)
    assert [x.task_name for x in small] == ["Py150", "FOMC"] and [len(x.train) for x in small] == [2, 2]


def test_trace_refuses_rank_bad_orders_and_missing_data(tmp_path, capsys):
    root = write_trace(tmp_path / "t", tasks=["FOMC"])
    with pytest.raises(ValueError, match="evaluation must be 'generate'"):
        build(root, evaluation="rank")
    with pytest.raises(ValueError, match="the order must list distinct tasks"):
        build(root, order=["FOMC", "nope"])
    with pytest.raises(FileNotFoundError, match="C-STANCE/train.json"):
        build(root)  # order 1 needs every task
    (root / "LLM-CL_Benchmark" / "FOMC" / "test.json").write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(ValueError, match="missing column 'answer'"):
        build(root, order=["FOMC"])
    assert main(["run", "scenario=trace", "data_root=/nonexistent", "backbone.name=tiny-llama"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "/nonexistent" in err and "LLM-CL_Benchmark/<task>" in err


def test_trace_run_scores_each_task_with_its_metric(in_tmp, monkeypatch):
    """A run on tiny LLaMA: generation is replaced by the gold answer with one character changed, so each task's
    score is its metric's value on that pair -- a different number per metric."""
    from clpet.methods.lm_base import LMMethod

    def almost(self, samples, experience, task_id):
        return [a[:-1] + ("!" if a[-1] != "!" else "?") for _, a in samples.inputs]

    monkeypatch.setattr(LMMethod, "generate_set", almost)
    order = ["FOMC", "MeetingBank", "Py150", "ScienceQA", "20Minuten"]
    root = write_trace(in_tmp / "t", tasks=order)
    out = in_tmp / "r"
    args = ["run", "scenario=trace", f"data_root={root}", "method=zero-shot", "backbone.name=tiny-llama",
            "progress=false", "plots=false", f"out_dir={out}", f"scenario.order=[{','.join(order)}]"]
    assert main(args) == 0
    last = json.loads((out / "metrics.json").read_text())["acc_matrix"][-1]
    samples = build(root, order=order)
    expected = []
    for e in samples:
        prompt, answer = e.test.inputs[0]
        expected.append(100 * tm.METRICS[e.task.metric](almost(None, e.test, e, None)[0], answer, prompt))
    assert last == pytest.approx(expected)
    assert expected[0] == 0.0 and expected[3] == 100.0 and 0 < expected[1] < 100 and 0 < expected[4] < 100
