"""Exact unlearning on a tiny model: after deletions the served model of every shard is, bit for bit, the model that
training without the deleted samples (same seeds, same slice order) gives -- S3T (its surviving prefix) and SISA
(retrained from the slice) -- and retrain; the run loop, its metrics and plot; bad requests fail in one line and
change nothing; a killed run resumes at its next request."""
import json

import numpy as np
import pytest
import torch

from clpet.cli import main
from clpet.scenarios.base import SampleSet
from tests.method_fixtures import kill_at_call, make_method
from tests.scenario_fixtures import write_text_csv

TINY = ["method.shards=2", "method.slices=2", "method.optim.epochs=1", "method.optim.batch_size=4", "method.rank=2"]


def whole_train(scenario):
    return SampleSet.concat([e.train for e in scenario])


def built(method, *extra, backbone_name="tiny-text"):
    keys = [k for k in TINY if method != "retrain" or not k.startswith(("method.shards", "method.slices"))]
    m, scenario, _ = make_method(method, *keys, *extra, backbone=backbone_name)
    return m, whole_train(scenario)


def served_state(m, shard):
    """The tensors of the model ``shard`` serves (stage LoRAs and head)."""
    key = {k: key for k, key, _ in m.served_models()}[shard]
    return m.store[key]


def sample_in(m, shard, slc):
    rows = np.flatnonzero((m.shard_of == shard) & (m.slice_of == slc))
    return int(m.train_set.ids[rows[0]])


def test_s3t_layer_slices_go_top_down_and_each_stage_trains_only_its_block():
    m, train = built("s3t", "method.sequences=2")
    assert m.stage_blocks == [[1], [0]]  # 2 blocks, 2 slices: stage 0 = the top block
    assert m.sequences == [[0, 1], [1, 0]]
    m.fit_all(train)
    a, b = m.store["k0/b0/s0"], m.store["k0/b0/s1"]
    shared = [k for k in a if k.startswith("stage0.")]
    assert shared and all(torch.equal(a[k], b[k]) for k in shared)  # stage 1 left the top block's LoRA alone
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("head."))  # the head trains every stage


def test_s3t_deletion_serves_exactly_the_model_trained_without_the_sample():
    m, train = built("s3t", "method.sequences=2")
    m.fit_all(train)
    victim = sample_in(m, 0, 1)  # slice 1 of shard 0: sequence 0 keeps stage 0; sequence 1 (slice 1 first) dies
    acc_before = m.accuracy(train)
    m.forget([victim])
    assert m.prefix[0] == [1, 0] and m.served_prefix(0) == (0, 1) and m.full_retrains == 0
    fresh, _ = built("s3t", "method.sequences=2")
    fresh.prepare(train)
    fresh.deleted = {victim}
    fresh.train_shard(0)  # from scratch without the sample, same seeds and slice order
    served = served_state(m, 0)
    for k, v in served.items():
        assert torch.equal(v, fresh.store["k0/b0/s0"][k]), k
    assert isinstance(acc_before, float)
    # shard 1 is untouched and still serves its full sequence
    assert m.served_prefix(1) == (0, 2)


def test_s3t_shard_with_nothing_left_retrains_exactly():
    m, train = built("s3t", "method.sequences=1")
    m.fit_all(train)
    victim = sample_in(m, 1, 0)  # the first slice of shard 1's only sequence
    cost = m.forget([victim])
    assert m.full_retrains == 1 and cost["optimizer_steps"] > 0 and m.prefix[1] == [2]
    fresh, _ = built("s3t", "method.sequences=1")
    fresh.prepare(train)
    fresh.deleted = {victim}
    fresh.train_shard(1)
    for k, v in served_state(m, 1).items():
        assert torch.equal(v, fresh.store["k1/b0/s1"][k]), k


def test_sisa_deletion_retrains_from_the_slice_exactly_as_training_without_it():
    m, train = built("sisa")
    m.fit_all(train)
    victim = sample_in(m, 0, 1)
    before = {k: v.clone() for k, v in m.store["k0/s0"].items()}
    cost = m.forget([victim])
    assert cost["optimizer_steps"] > 0 and m.full_retrains == 0
    assert all(torch.equal(v, m.store["k0/s0"][k]) for k, v in before.items())  # the checkpoint before the slice
    fresh, _ = built("sisa")
    fresh.prepare(train)
    fresh.deleted = {victim}
    fresh.train_everything()
    for shard in (0, 1):
        for k, v in served_state(m, shard).items():
            assert torch.equal(v, served_state(fresh, shard)[k]), (shard, k)


def test_retrain_is_training_without_the_samples():
    m, train = built("retrain")
    m.fit_all(train)
    victims = [int(i) for i in train.ids[:3]]
    m.forget(victims)
    fresh, _ = built("retrain")
    fresh.prepare(train)
    fresh.deleted = set(victims)
    fresh.train_everything()
    for k, v in m.store["full"].items():
        assert torch.equal(v, fresh.store["full"][k]), k


@pytest.mark.parametrize("method", ["s3t", "sisa"])
def test_served_logits_cached_across_requests_equal_a_fresh_evaluation(method):
    """A request re-evaluates only the shards it changed: the cached ensemble logits must equal recomputing all."""
    m, train = built(method, "method.sequences=1") if method == "s3t" else built(method)
    m.fit_all(train)
    m.logits_of(train)  # fills the cache with every shard's logits
    for victim in (sample_in(m, 0, 1), sample_in(m, 1, 0)):  # cut shard 0 to a prefix / retrain shard 1
        m.forget([victim])
        cached = m.logits_of(train)
        m._logit_cache.clear()
        assert torch.equal(cached, m.logits_of(train))
    assert m.full_retrains == 1


def test_bad_requests_fail_in_one_line_and_change_nothing():
    m, train = built("s3t")
    m.fit_all(train)
    state = {k: v.clone() for k, v in m.store["k0/b0/s1"].items()}
    with pytest.raises(ValueError, match="unknown sample id"):
        m.forget([10**9])
    victim = int(train.ids[0])
    m.forget([victim])
    prefix = [list(p) for p in m.prefix]
    with pytest.raises(ValueError, match="already deleted"):
        m.forget([victim, int(train.ids[1])])
    assert m.prefix == prefix and m.deleted == {victim}
    assert all(torch.equal(v, m.store["k0/b0/s1"][k]) for k, v in state.items())


def run_args(root, out, method, *extra):
    keys = TINY if method != "retrain" else [k for k in TINY if not k.startswith(("method.shards", "method.slices"))]
    return ["run", "scenario=text-csv", f"data_root={root}", "scenario.increment=2", "backbone.name=tiny-text",
            f"method={method}", "progress=false", f"out_dir={out}", *keys, *extra]


@pytest.mark.parametrize("method", ["s3t", "sisa", "retrain"])
def test_a_run_serves_the_deletion_stream_and_reports_its_cost(in_tmp, capsys, method):
    root = write_text_csv(in_tmp / "data")
    out = in_tmp / method
    assert main(run_args(root, out, method, "deletions.kind=uniform", "deletions.requests=3", "deletions.size=2")) == 0
    text = capsys.readouterr().out
    assert "taken whole" in text and "deletions before full retrain" in text
    u = json.loads((out / "metrics.json").read_text())["unlearning"]
    assert u["n_requests"] == 3 and u["n_deleted"] == 6 and len(u["requests"]) == 3
    assert u["offline"]["optimizer_steps"] > 0 and 0 <= u["initial_acc"] <= 100
    if method == "retrain":
        assert u["deletions_before_full_retrain"] == 0 and all(r["full_retrains"] == 1 for r in u["requests"])
    assert (out / "plots" / "deletion_cost.png").stat().st_size > 0


def test_bad_deletion_config_fails_before_work(in_tmp, capsys):
    root = write_text_csv(in_tmp / "data")
    ids = in_tmp / "ids.txt"
    ids.write_text("0 1\n99999\n")
    cases = [(["deletions.kind=file", f"deletions.file={ids}"], "unknown sample id"),
             (["deletions.kind=often"], "unknown deletions.kind"),
             (["deletions.requests=0", "deletions.kind=uniform"], "deletions.requests"),
             (["deletions.bogus=1"], "deletions")]
    for extra, message in cases:
        out = in_tmp / "x"
        assert main(run_args(root, out, "s3t", *extra)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not (out / "metrics.json").exists()
    assert main(["run", "scenario=text-csv", f"data_root={root}", "backbone.name=tiny-text", "method=simplecil",
                 "progress=false", "deletions.kind=uniform", f"out_dir={in_tmp / 'y'}"]) == 2
    assert "does not unlearn" in capsys.readouterr().err


def test_killed_unlearning_run_resumes_at_its_next_request(in_tmp, monkeypatch):
    from clpet.methods.unlearning import UnlearningMethod

    root = write_text_csv(in_tmp / "data")
    stream = ["deletions.kind=uniform", "deletions.requests=3"]
    assert main(run_args(root, in_tmp / "full", "s3t", *stream)) == 0
    restore = kill_at_call(monkeypatch, UnlearningMethod, "forget", 2)
    with pytest.raises(KeyboardInterrupt):
        main(run_args(root, in_tmp / "killed", "s3t", *stream))
    restore()
    assert main(run_args(root, in_tmp / "killed", "s3t", *stream, "resume=true")) == 0
    full = json.loads((in_tmp / "full" / "metrics.json").read_text())["unlearning"]
    resumed = json.loads((in_tmp / "killed" / "metrics.json").read_text())["unlearning"]
    assert [r["acc"] for r in resumed["requests"]] == [r["acc"] for r in full["requests"]]
    assert resumed["initial_acc"] == full["initial_acc"]
    from clpet.results import RunFolder

    a, b = (RunFolder(in_tmp / n).load_checkpoint()["unlearning"] for n in ("full", "killed"))
    assert a["prefix"] == b["prefix"] and a["store"].keys() == b["store"].keys()
    assert all(torch.equal(a["store"][k][t], b["store"][k][t]) for k in a["store"] for t in a["store"][k])
    # resuming with another deletion stream is refused in one line
    assert main(run_args(root, in_tmp / "killed", "s3t", *stream, "deletions.seed=1", "resume=true")) == 2


def test_clpet_unlearn_serves_a_request_file_on_a_finished_run_and_resumes_when_killed(in_tmp, monkeypatch, capsys):
    from clpet.methods.unlearning import UnlearningMethod

    root = write_text_csv(in_tmp / "data")
    out = in_tmp / "run"
    assert main(run_args(root, out, "s3t", "deletions.kind=uniform", "deletions.requests=1")) == 0
    served = json.loads((out / "metrics.json").read_text())["unlearning"]["requests"][0]["ids"]
    train_ids = [i for i in range(48) if i not in served]
    ids = in_tmp / "ids.txt"
    ids.write_text(f"# two requests\n{train_ids[0]} {train_ids[1]}\n{train_ids[2]}\n")
    restore = kill_at_call(monkeypatch, UnlearningMethod, "forget", 2)
    with pytest.raises(KeyboardInterrupt):
        main(["unlearn", str(out), f"ids={ids}"])
    restore()
    mid = json.loads((out / "metrics.json").read_text())["unlearning"]
    assert mid["n_requests"] == 2  # the first request of the file was served and written before the kill
    assert main(["unlearn", str(out), f"ids={ids}"]) == 0  # the same command goes on with the rest of the file
    u = json.loads((out / "metrics.json").read_text())["unlearning"]
    assert [r["ids"] for r in u["requests"]] == [served, train_ids[:2], [train_ids[2]]]
    assert main(["unlearn", str(out), f"ids={ids}"]) == 0  # the whole file served: nothing more to do
    assert json.loads((out / "metrics.json").read_text())["unlearning"]["n_requests"] == 3
    again = in_tmp / "again.txt"
    again.write_text(f"{train_ids[0]}\n")
    capsys.readouterr()
    assert main(["unlearn", str(out), f"ids={again}"]) == 2  # another file naming a deleted id: refused
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "deleted twice" in err


def test_s3t_on_a_language_model_uses_peft_loras_per_layer_and_stays_exact():
    m, train = built("s3t", "method.sequences=2", backbone_name="tiny-llama")
    assert m.language_model and m.stage_blocks == [[1], [0]]
    m.fit_all(train)
    victim = sample_in(m, 0, 1)
    m.forget([victim])
    fresh, _ = built("s3t", "method.sequences=2", backbone_name="tiny-llama")
    fresh.prepare(train)
    fresh.deleted = {victim}
    fresh.train_shard(0)
    served = served_state(m, 0)
    assert any(".layers.1." in k for k in served) and not any(".layers.0." in k for k in served)
    for k, v in served.items():
        assert torch.equal(v, fresh.store["k0/b0/s0"][k]), k


def test_skewed_stream_hits_slices_by_their_probability_and_matches_the_method_slices():
    from clpet.unlearning.requests import DeletionsConfig, make_requests

    m, train = built("s3t", "method.slices=2")
    m.prepare(train)
    cfg = DeletionsConfig(kind="skewed", requests=20, slice_probs=[0.0, 1.0], shards=2, slices=2)
    requests = make_requests(cfg, train.ids, m.ctx.seed)
    hit = [int(m.slice_of[m.row_of[i]]) for r in requests for i in r]
    assert len(hit) == 20 and set(hit) == {1}  # only slice 1 may be drawn
    uniform = make_requests(DeletionsConfig(kind="uniform", requests=20), train.ids)
    assert make_requests(DeletionsConfig(kind="uniform", requests=20), train.ids) == uniform  # same stream each time
    with pytest.raises(ValueError, match="slice_probs"):
        DeletionsConfig(kind="skewed", slice_probs=[1.0], slices=2)


def test_a_skewed_stream_takes_the_method_slices_and_refuses_others(in_tmp, capsys):
    root = write_text_csv(in_tmp / "data")
    skewed = ["deletions.kind=skewed", "deletions.slice_probs=[0,1]", "deletions.requests=2"]
    assert main(run_args(root, in_tmp / "ok", "s3t", *skewed)) == 0
    u = json.loads((in_tmp / "ok" / "metrics.json").read_text())["unlearning"]
    from clpet.results import RunFolder

    from clpet.config import compose, rewrite_overrides, validate
    from clpet.runner import build_scenario
    from clpet.unlearning.runner import whole

    state = RunFolder(in_tmp / "ok").load_checkpoint()["unlearning"]
    cfg = validate(compose(rewrite_overrides(["scenario=text-csv", f"data_root={root}", "scenario.increment=2",
                                              "backbone.name=tiny-text", "method=s3t", *TINY])))
    row = {int(i): r for r, i in enumerate(whole(build_scenario(cfg))[0].ids)}
    assert {int(state["slice_of"][row[i]]) for r in u["requests"] for i in r["ids"]} == {1}  # the method's slice 1
    capsys.readouterr()
    three = ["deletions.kind=skewed", "deletions.slice_probs=[0,1,1]", "deletions.slices=3"]
    assert main(run_args(root, in_tmp / "bad", "s3t", *three)) == 2
    assert "differs from method.slices" in capsys.readouterr().err


def test_the_default_stream_is_not_correlated_with_the_slicing():
    """With the run seed and deletions.seed both 0, the requests must not all fall on the first slices."""
    from clpet.unlearning.requests import DeletionsConfig, make_requests, slice_assignment

    ids = np.arange(600)
    _, slc = slice_assignment(len(ids), 5, 6, seed=0)
    hit = [int(slc[i]) for r in make_requests(DeletionsConfig(kind="uniform", requests=60), ids, 0) for i in r]
    assert len(set(hit)) == 6 and max(np.bincount(hit)) < 25  # spread over the slices (uniform: about 10 each)
