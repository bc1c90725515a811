"""ADAM/APER mechanisms (docs/methods.md): PETs train on the first experience only, features are
concat[pretrained, adapted] (2·D), prototypes are class means of those features."""
import pytest
import torch

from clpet.methods.adam import ADAPTED
from tests.method_fixtures import make_method, snapshot, final_report

FAST = ["method.optim.epochs=2", "method.optim.batch_size=8", "method.optim.lr=0.05"]


@pytest.fixture(params=["adapter", "ssf", "vpt-deep", "vpt-shallow", "finetune"])
def adam(request):
    return make_method("adam", f"method.pet={request.param}", *FAST)


def adapted_state(m):
    if m.adapted_backbone is not None:
        return snapshot(m.adapted_backbone.state_dict())
    return snapshot(m.pets.state_dict(ADAPTED))


def test_pets_change_during_the_first_experience_only(adam):
    m, scenario, _ = adam
    start = adapted_state(m)
    m.learn(scenario[0])
    after_first = adapted_state(m)
    assert any(not torch.equal(start[k], after_first[k]) for k in start), "the PET did not train"
    m.learn(scenario[1])
    assert all(torch.equal(after_first[k], v) for k, v in adapted_state(m).items())
    assert m.count_trainable_parameters() > 0


def test_features_are_pretrained_and_adapted_concatenated(adam):
    m, scenario, bb = adam
    m.learn(scenario[0])
    feats = m.merged_features(scenario[0].test)
    assert feats.shape == (len(scenario[0].test), 2 * bb.feature_dim)
    m.eval()
    batch = bb.preprocess(list(scenario[0].test.inputs), train=False)
    with torch.no_grad():
        if m.pets is not None:
            with m.pets.use(None):
                plain = bb.features(batch)
        else:
            plain = bb.features(batch)
    torch.testing.assert_close(feats[:, : bb.feature_dim], plain, rtol=1e-5, atol=1e-5)  # first half: pretrained
    torch.testing.assert_close(feats[:, bb.feature_dim:], m.adapted_features(batch).detach(), rtol=1e-5, atol=1e-5)


def test_prototypes_are_class_means_for_every_experience(adam):
    m, scenario, _ = adam
    for exp in scenario:
        m.learn(exp)
    for exp in scenario:
        feats = m.merged_features(exp.train)
        targets = torch.as_tensor(exp.train.targets)
        for c in exp.classes:
            assert torch.equal(m.prototypes[c].cpu(), feats[targets == c].mean(0))


def test_pretrained_backbone_never_changes(adam):
    m, scenario, bb = adam
    before = {n: p.detach().clone() for n, p in bb.named_parameters() if ".pets." not in n}
    m.learn(scenario[0])
    assert all(torch.equal(before[n], p) for n, p in bb.named_parameters() if ".pets." not in n)


def test_runner_scores_each_half_alone_and_the_feature_shift():
    m, scenario, bb = make_method("adam", "method.pet=adapter", *FAST)
    for exp in scenario:
        m.learn(exp)
    r = final_report(m)
    simplecil, _, _ = make_method("simplecil")
    for exp in scenario:
        simplecil.learn(exp)
    from clpet.scenarios.base import SampleSet

    test = SampleSet.concat([e.test for e in scenario.experiences])
    simple_acc = float((simplecil.predict_set(test) == test.targets).mean() * 100)
    assert r["adam_pretrained_acc"] == pytest.approx(simple_acc, abs=1e-3)  # the pretrained half is SimpleCIL
    feats = m.merged_features(test)
    d = bb.feature_dim
    shift = ((feats[:, d:] - feats[:, :d]).norm(dim=1) / feats[:, :d].norm(dim=1)).mean()
    assert r["adam_feature_shift"] == pytest.approx(float(shift), rel=1e-4) and r["adam_feature_shift"] > 0
    assert 0 <= r["adam_adapted_acc"] <= 100
