"""OSFT's mechanisms on tiny models: after task 2 the frozen singular directions of each target weight are unchanged
and the update is orthogonal to them; the first task fine-tunes the targets fully; the frozen rank follows the
progressive schedule; importance-based ranks equal a hand computation; only the targets change."""
import pytest
import torch

from clpet.methods.osft import frozen_rank, importance_fraction
from tests.method_fixtures import make_lm_method

FAST_KEYS = ["method.optim.epochs=2", "method.optim.batch_size=4", "method.optim.lr=1e-2"]


def weights(m):
    return {n: p.detach().clone() for n, p in m.backbone.model.named_parameters()}


@pytest.mark.parametrize("keys", [[], ["method.reproject=false", "method.optim.optimizer=sgd"]],
                         ids=["adamw-reprojected", "sgd-peft-hooks-only"])
def test_frozen_directions_are_kept_and_the_update_is_orthogonal_to_them(keys):
    m, scenario = make_lm_method("osft", *FAST_KEYS, *keys)
    m.learn_experience(scenario[0])
    before = weights(m)
    modules = dict(m.backbone.model.named_modules())
    ranks = m.frozen_ranks(1)
    m.learn_experience(scenario[1])
    after = weights(m)
    changed = 0
    for name in m.target_names:
        w0, w1 = before[f"{name}.weight"].double(), after[f"{name}.weight"].double()
        k = ranks[name]
        u, s, vt = torch.linalg.svd(w0, full_matrices=False)
        uh, vh = u[:, :k], vt[:k]
        delta = w1 - w0
        scale = max(float(delta.abs().max()), 1e-12)
        changed += scale > 1e-6
        # the update lies in the orthogonal complement: U_high^T delta = 0 and delta V_high^T = 0
        assert float((uh.T @ delta).abs().max()) / scale < 1e-3, name
        assert float((delta @ vh.T).abs().max()) / scale < 1e-3, name
        # so the frozen triplets are still singular triplets of the new weight
        torch.testing.assert_close(uh.T @ w1 @ vh.T, torch.diag(s[:k]), rtol=1e-4, atol=1e-4)
    assert changed >= len(m.target_names) // 2  # the targets did train
    untouched = [n for n in before if not any(n == f"{t}.weight" for t in m.target_names)]
    assert untouched and all(torch.equal(before[n], after[n]) for n in untouched)  # embeddings, norms, head
    assert type(modules[m.target_names[0]]).__name__ == "Linear"  # merged back into plain layers


def test_adam_leaves_the_complement_without_reprojection():
    """Why ``reproject`` exists: PEFT's gradient projection alone, under AdamW, moves the frozen directions."""
    m, scenario = make_lm_method("osft", *FAST_KEYS, "method.reproject=false")
    m.learn_experience(scenario[0])
    before, ranks = weights(m), m.frozen_ranks(1)
    m.learn_experience(scenario[1])
    after = weights(m)
    leaks = []
    for name in m.target_names:
        w0, w1 = before[f"{name}.weight"].double(), after[f"{name}.weight"].double()
        u = torch.linalg.svd(w0, full_matrices=False)[0][:, : ranks[name]]
        delta = w1 - w0
        leaks.append(float((u.T @ delta).abs().max() / delta.abs().max().clamp_min(1e-12)))
    assert max(leaks) > 1e-2


def test_first_task_trains_the_targets_fully_and_the_rank_follows_the_schedule():
    m, scenario = make_lm_method("osft", *FAST_KEYS)
    before = weights(m)
    m.learn_experience(scenario[0])
    after = weights(m)
    assert any(not torch.equal(before[f"{n}.weight"], after[f"{n}.weight"]) for n in m.target_names)
    assert m.frozen_fraction(0) == 0 and m.frozen_fraction(1) == pytest.approx(1 / len(scenario))
    modules = dict(m.backbone.model.named_modules())
    for n, k in m.frozen_ranks(1).items():
        d = min(modules[n].weight.shape)
        assert k == frozen_rank(1 / len(scenario), d) == max(1, min(d - 1, round(d / len(scenario))))
    m.learn_experience(scenario[1])
    assert [e["frozen_fraction"] for e in m.diagnostics(None)["osft_log"]][0] == 0.0
    assert frozen_rank(0.999, 8) == 7 and frozen_rank(0.0, 8) == 1  # never all, never none


def test_importance_ranks_equal_a_hand_computation():
    m, scenario = make_lm_method("osft", *FAST_KEYS, "method.rank_schedule=importance",
                                 "method.importance_range=[0.25,0.75]")
    m.learn_experience(scenario[0])
    samples = scenario[0].train
    batch = m.backbone.preprocess_fn(train=False)(list(samples.inputs))
    modules = dict(m.backbone.model.named_modules())
    seen = {}
    handles = [modules[n].register_forward_hook(lambda mod, inp, out, n=n: seen.__setitem__(n, inp[0].detach()))
               for n in m.target_names]
    with torch.no_grad():
        m.eval()
        m.backbone.model(**batch)
    for h in handles:
        h.remove()
    ranks = m.frozen_ranks(1)
    mask = batch["attention_mask"].bool()
    for n in m.target_names:
        w = modules[n].weight.detach().float()
        x = seen[n]
        mdim = min(w.shape)
        cos = torch.nn.functional.cosine_similarity(x[..., :mdim], (x @ w.T)[..., :mdim], dim=-1)
        importance = float(cos[mask].mean()) if cos.shape == mask.shape else float(cos.mean())
        assert m._last_importance[n] == pytest.approx(importance, abs=1e-5)
        frac = 0.25 + min(max(importance, 0.0), 1.0) * 0.5
        assert ranks[n] == frozen_rank(frac, mdim)
    assert importance_fraction(2.0, 0.25, 0.75) == 0.75 and importance_fraction(-1.0, 0.25, 0.75) == 0.25


@pytest.mark.parametrize("bad", ["method.rank_schedule=random", "method.progressive_step=0",
                                 "method.importance_range=[0.9,0.1]", "method.importance_samples=0"])
def test_bad_osft_values_are_refused(bad):
    with pytest.raises(ValueError, match="rank_schedule|progressive_step|importance"):
        make_lm_method("osft", bad)
