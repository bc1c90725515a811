"""I-LoRA's mechanisms on tiny models: the slow adapter follows the interpolation rule exactly and receives no
gradient, the one-sided consistency term, the reservoir buffer (drawn before the current batch enters it), and
scoring with the slow adapter (the fast one as a prediction mode)."""
import numpy as np
import pytest
import torch

from clpet.methods.ilora import FAST, SLOW, consistency_loss, interpolation_weight
from clpet.replay import ReservoirBuffer
from tests.method_fixtures import make_lm_method

FAST_KEYS = ["method.optim.epochs=1", "method.optim.batch_size=4", "method.lora.rank=2", "method.buffer_size=6"]


def clone(sets, name):
    return {k: v.clone() for k, v in sets.state_dict(name).items()}


def test_interpolation_weight_is_min_of_the_ramp_and_ema_alpha():
    assert [interpolation_weight(s, 0.25) for s in (1, 2, 3)] == [0.25, 0.25, 0.25]
    assert [interpolation_weight(s, 0.9) for s in (1, 2, 3, 100)] == [0.5, pytest.approx(2 / 3), 0.75, 0.9]


def test_slow_adapter_follows_the_interpolation_rule_and_gets_no_gradient(monkeypatch):
    m, scenario = make_lm_method("ilora", *FAST_KEYS, "method.ema_alpha=0.6")
    assert torch.equal(torch.cat([v.flatten() for v in m.pets.state_dict(FAST).values()]),
                       torch.cat([v.flatten() for v in m.pets.state_dict(SLOW).values()]))  # the same start
    expected = clone(m.pets, SLOW)
    steps = []
    real = type(m).after_step

    def watch(self):
        fast = clone(self.pets, FAST)  # the fast adapter right after the optimizer step
        assert all(p.grad is None for p in self.pets.parameters(SLOW))
        real(self)
        a = interpolation_weight(self.task_steps, 0.6)
        for k in expected:
            expected[k] = a * expected[k] + (1 - a) * fast[k]
        steps.append(a)

    monkeypatch.setattr(type(m), "after_step", watch)
    m.learn_experience(scenario[0])
    n0 = len(steps)
    m.learn_experience(scenario[1])
    assert n0 >= 2 and len(steps) > n0 + 1
    assert steps[0] == 0.5 and steps[1] == pytest.approx(0.6)  # a = min(1 - 1/(s+1), 0.6) for s = 1, 2
    assert steps[n0] == 0.5 and steps[n0 + 1] == pytest.approx(0.6)  # the step count restarts with each task
    slow = m.pets.state_dict(SLOW)
    for k, v in expected.items():
        torch.testing.assert_close(slow[k], v, rtol=1e-6, atol=1e-7)
    assert not all(torch.equal(slow[k], v) for k, v in m.pets.state_dict(FAST).items())
    assert all(not p.requires_grad for p in m.pets.parameters(SLOW))


def test_consistency_is_zero_where_fast_is_above_slow_and_positive_otherwise():
    torch.manual_seed(0)
    slow = [torch.randn(2, 5, 3) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    above = [s + 0.5 for s in slow]
    assert float(consistency_loss(above, slow, mask)) == 0.0
    below = [s - 0.5 for s in slow]
    assert float(consistency_loss(below, slow, mask)) == pytest.approx(0.25)  # relu(0.5)^2 everywhere
    assert float(consistency_loss(above, slow, mask, form="mse")) == pytest.approx(0.25)
    # padded positions do not count: changing them changes nothing
    padded = [b.clone() for b in below]
    for p in padded:
        p[0, 3:] = -100.0
    assert float(consistency_loss(padded, slow, mask)) == pytest.approx(0.25)
    # the gradient reaches the fast states only
    fast = [b.clone().requires_grad_(True) for b in below]
    slow_g = [s.clone().requires_grad_(True) for s in slow]
    consistency_loss(fast, slow_g, mask).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fast) and all(s.grad is None for s in slow_g)


def test_reservoir_keeps_each_item_with_probability_capacity_over_seen():
    rng = np.random.RandomState(0)
    counts = np.zeros(200)
    for _ in range(2000):
        b = ReservoirBuffer(20)
        b.add(list(range(200)), rng)
        assert len(b) == 20 and b.seen == 200
        counts[b.items] += 1
    freq = counts / 2000
    assert freq[:100].mean() == pytest.approx(freq[100:].mean(), abs=0.01)  # early and late items alike
    assert freq.std() < 0.02  # each item near 0.1 (binomial sd of one frequency: 0.0067)
    assert len(set(map(id, b.sample(20, rng)))) == 20  # without replacement


def test_replay_starts_at_task_two_and_never_holds_the_current_batch(monkeypatch):
    m, scenario = make_lm_method("ilora", *FAST_KEYS, "method.buffer_size=100")
    drawn, terms_seen = [], []
    real_sample = ReservoirBuffer.sample

    def spy(self, k, rng):
        rows = real_sample(self, k, rng)
        drawn.append([tuple(r["input_ids"].tolist()) for r in rows])
        return rows

    monkeypatch.setattr(ReservoirBuffer, "sample", spy)
    real_terms = type(m).loss_terms

    def terms(self, batch, targets):
        before = {tuple(r["input_ids"].tolist()) for r in self.buffer.items}
        n_draws = len(drawn)
        out = real_terms(self, batch, targets)
        if len(drawn) > n_draws:  # this step replayed: only what the buffer held before the step
            assert set(drawn[-1]) <= before
        terms_seen.append(sorted(out))
        return out

    monkeypatch.setattr(type(m), "loss_terms", terms)
    m.learn_experience(scenario[0])
    assert not drawn and all(t == ["lm"] for t in terms_seen)  # task 1: no replay
    task0 = {tuple(r["input_ids"].tolist()) for r in m.buffer.items}
    assert len(task0) == len(scenario[0].train)  # the buffer holds every task-1 sample (capacity 100)
    terms_seen.clear()
    m.learn_experience(scenario[1])
    assert terms_seen and all(t == ["consistency", "lm"] for t in terms_seen)
    assert set(drawn[0]) <= task0  # the first replayed batch is old data only


def test_scoring_uses_the_slow_adapter_and_the_fast_one_as_a_mode(monkeypatch):
    m, scenario = make_lm_method("ilora", *FAST_KEYS)
    m.learn_experience(scenario[0])
    live = []
    real = type(m.pets).use

    def spy(self, names):
        live.append(names)
        return real(self, names)

    monkeypatch.setattr(type(m.pets), "use", spy)
    slow = m.candidate_logprobs(scenario[0].test, scenario[0], None)
    with m.prediction_mode("fast"):
        fast = m.candidate_logprobs(scenario[0].test, scenario[0], None)
    assert live == [[SLOW], [FAST]]
    assert not np.allclose(slow, fast)
    assert m.count_trainable_parameters() == m.pets.num_trainable(FAST) > 0


def test_attention_alias_targets_q_k_v_o_on_both_families():
    for backbone, names in (("tiny-llama", ["k_proj", "o_proj", "q_proj", "v_proj"]), ("tiny-t5", ["k", "o", "q", "v"])):
        m, _ = make_lm_method("ilora", *FAST_KEYS, backbone=backbone)
        assert sorted(m.pets.config(FAST)["target_modules"]) == names


def test_bad_ilora_values_fail_before_work(in_tmp, capsys):
    from clpet.cli import main

    for bad in ("method.ema_alpha=1.5", "method.buffer_size=0", "method.consistency=l1", "method.consistency_weight=inf"):
        assert main(["run", "scenario=lm-offline", "method=ilora", bad, f"out_dir={in_tmp / 'x'}"]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (in_tmp / "x").exists()
