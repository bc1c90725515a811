"""ConPET's mechanisms on tiny models: the dynamic replay sampler, the K-means exemplar memory, the dynamic
variant's routing (top-k, -100 fill, teacher forcing in training only), frozen old experts with cached outputs,
and a training cost per task that does not grow with the number of tasks."""
import numpy as np
import pytest
import torch

from clpet.methods.conpet import SELECTOR, expert_set, route
from clpet.replay import dynamic_replay_batches, kmeans_exemplars
from tests.method_fixtures import make_method, word_stream

FAST = ["method.optim.epochs=1", "method.optim.lr=0.02", "method.steps_per_epoch=4", "method.optim.batch_size=8"]


# ------------------------------------------------------------------------------------------ replay sampler
@pytest.mark.parametrize("old_sizes", [[6], [6, 600, 60], [5] * 9])
def test_replay_sampler_has_fixed_steps_half_old_and_distinct_new_samples(old_sizes):
    rng = np.random.RandomState(0)
    batches = dynamic_replay_batches(20, old_sizes, steps=7, batch_size=8, replay_fraction=0.5, rng=rng)
    assert len(batches) == 7 and all(len(b) == 8 for b in batches)  # whatever the number of old tasks
    for b in batches:
        new, old = b[:4], b[4:]
        assert all(i < 20 for i in new) and len(set(new)) == 4  # current samples, distinct within the batch
        assert all(20 <= i < 20 + sum(old_sizes) for i in old)
    alone = dynamic_replay_batches(20, [], 3, 8, 0.5, rng)
    assert len(alone) == 3 and all(len(b) == 8 and max(b) < 20 for b in alone)  # no old task: current samples only


def test_replay_sampler_picks_old_tasks_uniformly_whatever_their_sizes():
    sizes = [5, 500, 50, 1]
    rng = np.random.RandomState(1)
    batches = dynamic_replay_batches(10, sizes, steps=3000, batch_size=8, replay_fraction=0.5, rng=rng)
    edges = np.cumsum([10, *sizes])
    task = np.searchsorted(edges, [i for b in batches for i in b[4:]], side="right") - 1
    freq = np.bincount(task, minlength=len(sizes)) / len(task)
    assert np.allclose(freq, 0.25, atol=0.015)  # 12000 draws: sd of one frequency 0.004
    within = [i - edges[1] for b in batches for i in b[4:] if edges[1] <= i < edges[2]]
    assert len(set(within)) > 450  # samples of a task drawn uniformly: nearly all 500 appear


def test_kmeans_memory_keeps_the_sample_nearest_each_centroid():
    rng = np.random.RandomState(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    feats, labels, exact = [], [], []
    for c in range(2):
        for k, centre in enumerate(centres + 30 * c):
            pts = centre + rng.uniform(-1, 1, size=(6, 2))
            pts -= pts.mean(axis=0) - centre  # the cluster's mean is its centre...
            exact.append(sum(len(f) for f in feats) + 6)  # ...and one sample sits exactly on it
            feats.append(np.vstack([pts, centre]))
            labels += [c] * 7
    x, y = np.vstack(feats), np.array(labels)
    picked = kmeans_exemplars(x, y, per_class=3, seed=0)
    assert picked.tolist() == sorted(exact)
    assert kmeans_exemplars(x, y, per_class=100, seed=0).tolist() == list(range(len(y)))  # small classes: all


# ------------------------------------------------------------------------------------------ dynamic ConPET
def test_route_takes_top_k_and_teacher_forcing_replaces_the_last_slot():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    assert route(logits, 1, None).tolist() == [[True, False, False, False], [False, False, False, True]]
    assert route(logits, 2, None).sum(dim=1).tolist() == [2, 2]
    forced = route(logits, 2, torch.tensor([3, 3]))
    assert forced.tolist() == [[True, False, False, True], [False, False, True, True]]  # row 1 had it already
    assert route(logits, 9, None).all()  # k beyond the tasks: every expert


def three_tasks():
    return word_stream(n_classes=6, increment=2)


def test_dynamic_conpet_freezes_old_experts_and_caches_their_outputs():
    m, scenario, _ = make_method("conpet-dynamic", *FAST, scenario=three_tasks())
    m.learn_experience(scenario[0])
    expert0 = {k: v.clone() for k, v in m.pets.state_dict(expert_set(0)).items()}
    head0 = [p.clone() for p in m.head.heads[0].parameters()]
    m.learn_experience(scenario[1])
    selector_after_task1 = {k: v.clone() for k, v in m.pets.state_dict(SELECTOR).items()}
    m.learn_experience(scenario[2])
    assert all(torch.equal(v, m.pets.state_dict(expert_set(0))[k]) for k, v in expert0.items())
    assert all(torch.equal(a, b) for a, b in zip(head0, m.head.heads[0].parameters()))
    assert any(not torch.equal(v, m.pets.state_dict(SELECTOR)[k]) for k, v in selector_after_task1.items())
    assert m._expert_cache  # old samples went through the frozen experts' cache
    (t, task, sid), cached = next(iter(m._expert_cache.items()))
    sample = scenario[task].train.subset(np.flatnonzero(scenario[task].train.ids == sid))
    batch = m.backbone.preprocess_fn(train=False)(sample.inputs)
    with torch.no_grad():
        m.eval()
        recomputed = m.head.heads[t](m._features(batch, expert_set(t)))[0]
    torch.testing.assert_close(cached, recomputed)


def test_unselected_experts_get_the_null_logit_and_eval_has_no_teacher_forcing(monkeypatch):
    m, scenario, _ = make_method("conpet-dynamic", *FAST, scenario=three_tasks())
    for e in scenario:
        m.learn_experience(e)
    m.eval()
    batch = m.backbone.preprocess_fn(train=False)(scenario[0].test.inputs[:6])
    with torch.no_grad():
        picked = route(m.selector_logits(batch), 1, None)
        logits = m.predict(batch)
    for r in range(logits.shape[0]):
        for t, cols in enumerate(m.class_slices()):
            assert bool((logits[r, cols] == -100.0).all()) != bool(picked[r, t])  # only routed experts fill theirs
    # every sample sent to task 2: predictions among task 2's classes, the gold task 0 is not forced in
    monkeypatch.setattr(type(m), "selector_logits", lambda self, b: torch.tensor([[0.0, 0.0, 1.0]] * 6))
    with torch.no_grad():
        routed = m.predict(batch)
    assert (routed.argmax(dim=1) >= 4).all() and (routed[:, :4] == -100.0).all()


def test_training_cost_per_task_does_not_grow_with_the_number_of_tasks():
    stream = word_stream(n_classes=8, increment=2)
    m, scenario, _ = make_method("conpet-dynamic", *FAST, scenario=stream)
    for e in scenario:
        m.learn_experience(e)
    steps = [c["optimizer_steps"] for c in m.cost_diagnostics()["train_cost"]]
    assert steps[1] == steps[2] == steps[3] == 2 * 4  # selector + expert, 4 steps each, every task alike
    full, scenario, _ = make_method("conpet-static", *FAST, "method.steps_per_epoch=null", scenario=stream)
    for e in scenario:
        full.learn_experience(e)
    grows = [c["optimizer_steps"] for c in full.cost_diagnostics()["train_cost"]]
    assert grows[1] < grows[2] < grows[3]  # replaying everything costs more with each task


def test_static_conpet_with_kmeans_memory_replays_exemplars_only():
    m, scenario, _ = make_method("conpet-static", *FAST, "method.memory=kmeans", "method.exemplars_per_class=3",
                                 scenario=three_tasks())
    m.learn_experience(scenario[0])
    assert len(m.exemplars[0]) == 3 * 2  # 3 per class, 2 classes
    keys = []
    real = type(m).on_batch

    def spy(self, ids):
        real(self, ids)
        keys.extend(self.current_keys)

    type(m).on_batch = spy
    try:
        m.learn_experience(scenario[1])
    finally:
        type(m).on_batch = real
    old_ids = {i for t, i in keys if t == 0}
    exemplar_ids = set(scenario[0].train.ids[m.exemplars[0]].tolist())
    assert old_ids and old_ids <= exemplar_ids  # replayed old samples are exemplars, nothing else of task 0
    assert sorted(m.exemplars) == [0, 1] and [len(p) for p in m.old_pools()] == [6]


def test_dynamic_conpet_trains_under_bf16_autocast():
    m, scenario, _ = make_method("conpet-dynamic", *FAST, "precision=bf16", scenario=three_tasks())
    assert m.ctx.precision == "bf16"
    m.learn_experience(scenario[0])
    m.learn_experience(scenario[1])
    preds = m.predict_set(scenario[1].test)
    assert preds.shape == (len(scenario[1].test),) and preds.max() < 4
    assert all(v.dtype == torch.float32 for v in m._expert_cache.values())


def test_selector_accuracy_is_reported(monkeypatch):
    from tests.method_fixtures import final_report

    m, scenario, _ = make_method("conpet-dynamic", *FAST, scenario=three_tasks())
    for e in scenario:
        m.learn_experience(e)
    report = final_report(m)
    assert 0 <= report["selector_acc"] <= 100 and len(report["train_cost"]) == 3
    # a selector that always answers task 1 is right on task 1's test samples only
    monkeypatch.setattr(type(m), "selector_logits", lambda self, b: torch.tensor([[0.0, 1.0, 0.0]]).repeat(
        (b if isinstance(b, torch.Tensor) else next(iter(b.values()))).shape[0], 1))
    acc = m.selector_accuracy(type(scenario[0].test).concat([e.test for e in scenario]))
    sizes = [len(e.test) for e in scenario]
    assert acc["selector_acc"] == round(100 * sizes[1] / sum(sizes), 4)
    assert acc["selector_avg_task_acc"] == round(100 / 3, 4)


def test_dynamic_conpet_on_a_language_model_routes_prompts_to_experts(monkeypatch):
    from tests.method_fixtures import make_lm_method

    m, scenario = make_lm_method("conpet-dynamic", "method.optim.epochs=1", "method.optim.batch_size=4",
                                 "method.steps_per_epoch=3")
    m.learn_experience(scenario[0])
    m.learn_experience(scenario[1])
    assert m.pets.names() == [SELECTOR, expert_set(0), expert_set(1)]
    assert m.pets.is_frozen(expert_set(0)) and m.pets.is_frozen(expert_set(1))
    steps = [c["optimizer_steps"] for c in m.cost_diagnostics()["train_cost"]]
    assert steps[1] == 3 + 3  # selector and expert phases: steps_per_epoch each
    e = scenario[0]
    # routed to its own expert (the task id given): that expert's scores, finite
    own = m.candidate_logprobs(e.test, e, 0)
    assert np.isfinite(own).all()
    # routed to the other task: a miss on every row, which the rank evaluator counts as wrong
    monkeypatch.setattr(type(m), "prompt_selector_logits", lambda self, prompts: torch.tensor([[0.0, 1.0]] * len(prompts)))
    away = m.candidate_logprobs(e.test, e, None)
    assert np.isneginf(away).all()
    from clpet.evaluation.lm import RankClassification

    assert RankClassification().score(m, e, None) == 0.0
    assert (m.predict_set(e.test, e) == -1).all()
    acc = m.selector_accuracy()  # every prompt sent to task 1: right on task 1's samples only
    n0, n1 = len(e.test), len(scenario[1].test)
    assert acc["selector_acc"] == round(100 * n1 / (n0 + n1), 4) and acc["selector_avg_task_acc"] == 50.0


def test_dynamic_conpet_lm_scores_the_next_task_and_takes_the_task_id(in_tmp):
    """FWT needs task t+1 scored after task t, before its expert exists; with the task id given at evaluation
    each sample goes to its own expert."""
    from clpet.cli import main
    from tests.scenario_fixtures import write_text_tasks

    root = write_text_tasks(in_tmp / "d")
    for extra, out in (([], "a"), (["scenario.task_id_at_eval=true"], "b")):
        args = ["run", "scenario=text-tasks", f"data_root={root}", "method=conpet-dynamic", "backbone.name=tiny-llama",
                "progress=false", "plots=false", f"out_dir={in_tmp / out}", "method.steps_per_epoch=2", *extra]
        assert main(args) == 0
        import json

        m = json.loads((in_tmp / out / "metrics.json").read_text())
        assert m["acc_matrix"][0][1] > 0  # the next task answered by the existing expert, not counted as misses
        assert m["fwt"] == pytest.approx(m["acc_matrix"][0][1] - m["baseline"][1])


def test_static_conpet_on_a_language_model_replays_old_tasks():
    from tests.method_fixtures import make_lm_method

    m, scenario = make_lm_method("conpet-static", "method.optim.epochs=1", "method.optim.batch_size=4",
                                 "method.steps_per_epoch=3")
    seen = []
    real = type(m).on_batch

    def spy(self, ids):
        seen.append([self.batch_keys[int(i)][0] for i in ids])
        real(self, ids)

    type(m).on_batch, restore = spy, real
    try:
        m.learn_experience(scenario[0])
        first = len(seen)
        m.learn_experience(scenario[1])
    finally:
        type(m).on_batch = restore
    assert all(set(b) == {0} for b in seen[:first])
    later = seen[first:]
    assert len(later) == 3 and all(b[:2] == [1, 1] and b[2:] == [0, 0] for b in later)  # half new, half old
    assert np.isfinite(m.candidate_logprobs(scenario[0].test, scenario[0], None)).all()
