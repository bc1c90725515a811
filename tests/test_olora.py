"""O-LoRA's mechanisms on tiny models: old LoRAs frozen (no gradient, unchanged), the orthogonality term equals a
hand computation, the loss lowers it, the cosine form ignores the new LoRA's scale, no task id at inference, the
per-task log, and its keys refused when bad."""
import pytest
import torch

from clpet.methods.olora import orthogonality
from tests.method_fixtures import make_lm_method

FAST_KEYS = ["method.optim.epochs=2", "method.optim.batch_size=4", "method.lora.rank=2"]


def test_orthogonality_is_the_sum_of_absolute_products_of_old_and_new_a():
    torch.manual_seed(0)
    old = {"q": torch.randn(4, 6), "v": torch.randn(4, 6)}
    new = {"q": torch.randn(2, 6), "v": torch.randn(2, 6)}
    by_hand = sum(abs(sum(old[k][i, d] * new[k][j, d] for d in range(6)))
                  for k in old for i in range(4) for j in range(2))
    assert float(orthogonality(old, new, "sum")) == pytest.approx(float(by_hand), rel=1e-5)
    # cosine: per-module mean |cos| of rows, averaged over modules; blind to the new LoRA's scale
    cos = torch.stack([torch.nn.functional.cosine_similarity(old[k][:, None], new[k][None], dim=-1).abs().mean()
                       for k in old]).mean()
    assert float(orthogonality(old, new, "cosine")) == pytest.approx(float(cos), rel=1e-5)
    shrunk = {k: 1e-3 * v for k, v in new.items()}
    assert float(orthogonality(old, shrunk, "cosine")) == pytest.approx(float(cos), rel=1e-4)
    assert float(orthogonality(old, shrunk, "sum")) == pytest.approx(1e-3 * float(by_hand), rel=1e-4)
    orthogonal = {"q": torch.eye(6)[:4], "v": torch.eye(6)[:4]}, {"q": torch.eye(6)[4:], "v": torch.eye(6)[4:]}
    assert float(orthogonality(*orthogonal, "sum")) == 0.0 == float(orthogonality(*orthogonal, "cosine"))


def test_old_loras_get_no_gradient_and_the_term_matches_the_model_a_matrices(monkeypatch):
    m, scenario = make_lm_method("olora", *FAST_KEYS)
    m.learn_experience(scenario[0])
    first = {k: v.clone() for k, v in m.pets.state_dict("task0").items()}
    seen = []
    real = type(m).after_backward

    def watch(self):
        assert not any(p.requires_grad for p in self.pets.parameters("task0"))  # frozen: outside the graph
        assert any(p.grad is not None for p in self.pets.parameters("task1"))
        seen.append(True)
        real(self)

    monkeypatch.setattr(type(m), "after_backward", watch)
    m.learn_experience(scenario[1])
    assert seen and all(torch.equal(v, m.pets.state_dict("task0")[k]) for k, v in first.items())
    a0 = {k: v for k, v in m.pets.state_dict("task0").items() if k.endswith("lora_A.weight")}
    a1 = {k: v for k, v in m.pets.state_dict("task1").items() if k.endswith("lora_A.weight")}
    assert a0 and a0.keys() == a1.keys()
    by_hand = sum(float((a0[k] @ a1[k].T).abs().sum()) for k in a0)
    assert float(m.raw_orthogonality().detach()) == pytest.approx(by_hand, rel=1e-5)
    log = m.diagnostics(None)["olora_log"]
    assert [e["task"] for e in log] == [0, 1] and "orth_first" not in log[0]  # no old LoRA on the first task
    assert log[1]["orth_end"] == pytest.approx(by_hand, rel=1e-4) and log[1]["new_a_norm"] > 0


def test_the_orthogonality_loss_lowers_the_term():
    ends = {}
    for lam in (0.0, 5.0):
        m, scenario = make_lm_method("olora", *FAST_KEYS, f"method.lambda_orth={lam}", "method.optim.lr=0.01")
        for e in scenario:
            m.learn_experience(e)
        ends[lam] = float(m.raw_orthogonality())
    assert ends[5.0] < 0.5 * ends[0.0]


def test_no_task_id_at_inference_every_lora_scores():
    m, scenario = make_lm_method("olora", *FAST_KEYS)
    for e in scenario:
        m.learn_experience(e)
    every = m.pets.names()
    assert every == ["task0", "task1"]
    assert list(m.scoring_sets(scenario[0], 0)) == list(m.scoring_sets(scenario[0], None)) == every


@pytest.mark.parametrize("bad", ["method.lambda_orth=-1", "method.lambda_orth=inf", "method.lambda_l2=nan",
                                 "method.orthogonality=frobenius", "method.lambda_orth=[0.5,-1]",
                                 "method.lambda_orth=[]", "method.task_epochs=[0,1]"])
def test_bad_olora_values_are_refused(bad):
    with pytest.raises(ValueError, match="lambda|orthogonality|task_epochs"):
        make_lm_method("olora", bad)


def test_per_task_lambdas_and_epochs_follow_the_list(monkeypatch):
    m, scenario = make_lm_method("olora", *FAST_KEYS, "method.lambda_orth=[0,3.0]", "method.lambda_l2=[0,0.1]",
                                 "method.task_epochs=[1,2]")
    seen = []
    real = type(m).loss_terms

    def spy(self, batch, targets):
        terms = real(self, batch, targets)
        seen.append((self.pets.names()[-1], self._lambdas, sorted(terms)))
        return terms

    monkeypatch.setattr(type(m), "loss_terms", spy)
    for e in scenario:
        m.learn_experience(e)
    first = [s for s in seen if s[0] == "task0"]
    second = [s for s in seen if s[0] == "task1"]
    assert {s[1] for s in first} == {(0.0, 0.0)} and {tuple(s[2]) for s in first} == {("lm",)}
    assert {s[1] for s in second} == {(3.0, 0.1)} and {tuple(s[2]) for s in second} == {("l2", "lm", "orth")}
    batches = -(-len(scenario[0].train) // 4), -(-len(scenario[1].train) // 4)
    assert (len(first), len(second)) == (batches[0], 2 * batches[1])  # task_epochs [1, 2]


def test_a_per_task_list_must_fit_the_stream():
    with pytest.raises(ValueError, match="lists 3 values for a stream of 2 tasks"):
        make_lm_method("olora", "method.lambda_orth=[0.5,0.5,0.5]")
    with pytest.raises(ValueError, match="task_epochs"):
        make_lm_method("olora", "method.task_epochs=[1]")
