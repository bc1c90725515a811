"""Method mechanisms (not just "it runs"): SimpleCIL prototypes are class means of test-transform features,
frozen features are computed once per sample, the baselines train what they claim to train."""
import numpy as np
import pytest
import torch

import clpet.backbones  # noqa: F401
import clpet.methods  # noqa: F401
import clpet.scenarios  # noqa: F401
from clpet.config import compose, rewrite_overrides, validate
from clpet.context import RunContext
from clpet.features import FeatureCache
from clpet.registry import BACKBONES, METHODS, SCENARIOS


def build(method: str, *overrides: str):
    cfg = validate(compose(rewrite_overrides(["scenario=synthetic", f"method={method}", *overrides])))
    torch.manual_seed(0)
    scenario = SCENARIOS.get("synthetic").build(cfg.scenario, seed=0, data_root=None)
    backbone = BACKBONES.get(cfg.backbone.name).from_config(cfg.backbone)
    m = METHODS.get(method)(cfg.method)
    ctx = RunContext(progress=False, feature_cache=FeatureCache(), eval_batch_size=7)
    m.setup(backbone, scenario, ctx)
    return m, scenario, backbone


def direct_features(backbone, samples):
    backbone.eval()
    with torch.no_grad():
        return backbone.features(backbone.preprocess(list(samples.inputs), train=False))


def test_simplecil_prototype_is_the_class_mean_of_test_transform_features():
    m, scenario, backbone = build("simplecil")
    exp = scenario[0]
    m.learn(exp)
    feats = direct_features(backbone, exp.train)
    targets = torch.as_tensor(exp.train.targets)
    for row, c in enumerate(exp.classes):
        expected = feats[targets == c].mean(dim=0)
        torch.testing.assert_close(m.prototypes[row], expected, rtol=1e-6, atol=1e-6)
    cached = m.ctx.feature_cache.features(backbone, exp.train, m.ctx)
    assert torch.equal(m.prototypes[0], cached[targets == exp.classes[0]].mean(dim=0))  # exactly


def test_simplecil_predicts_by_cosine_to_prototypes():
    m, scenario, backbone = build("simplecil")
    for exp in scenario:
        m.learn(exp)
    test = scenario[1].test
    f = torch.nn.functional.normalize(direct_features(backbone, test), dim=1)
    p = torch.nn.functional.normalize(m.prototypes, dim=1)
    expected = (f @ p.t()).argmax(dim=1).numpy()
    assert np.array_equal(m.predict_set(test), expected)


def test_frozen_features_are_computed_once_per_sample():
    m, scenario, _ = build("simplecil")
    for t, exp in enumerate(scenario):
        m.learn(exp)
        for j in range(t + 1):  # what the runner does: every seen test set after every experience
            m.predict_set(scenario[j].test)
    total = sum(len(e.train) + len(e.test) for e in scenario)
    assert m.ctx.feature_cache.computed == total


def test_feature_cache_on_disk_is_reused(tmp_path):
    m, scenario, backbone = build("simplecil")
    ctx = RunContext(progress=False, feature_cache=FeatureCache(str(tmp_path)))
    first = ctx.feature_cache.features(backbone, scenario[0].test, ctx)
    again = FeatureCache(str(tmp_path))
    ctx2 = RunContext(progress=False, feature_cache=again)
    assert torch.equal(again.features(backbone, scenario[0].test, ctx2), first)
    assert again.computed == 0


def test_simplecil_never_changes_the_backbone():
    m, scenario, backbone = build("simplecil")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    for exp in scenario:
        m.learn(exp)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert m.count_trainable_parameters() == 0


@pytest.mark.parametrize("train_backbone, body_changes", [(True, True), (False, False)])
def test_finetune_trains_body_only_when_asked(train_backbone, body_changes):
    m, scenario, backbone = build("finetune", f"method.train_backbone={str(train_backbone).lower()}")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    m.learn(scenario[0])
    changed = any(not torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert changed == body_changes
    assert m.head.sizes == [len(scenario[0].classes)]
    m.learn(scenario[1])
    assert m.head.sizes == [len(scenario[0].classes), len(scenario[1].classes)]
    assert m.predict(backbone.preprocess(list(scenario[0].test.inputs[:3]), train=False)).shape == (3, m.n_seen)


def test_joint_retrains_from_the_pretrained_start_on_all_seen_data(monkeypatch):
    import clpet.methods.finetune as ft

    seen_sizes = []
    real_fit = ft.fit

    def spy(method, samples, cfg, seed, param_groups=None, desc=""):
        seen_sizes.append(len(samples))
        return real_fit(method, samples, cfg, seed, param_groups=param_groups, desc=desc)

    monkeypatch.setattr(ft, "fit", spy)
    m, scenario, backbone = build("joint")
    start = {k: v.clone() for k, v in backbone.state_dict().items()}
    m.learn_experience(scenario[0])
    snapshot = {}

    def record_start(method, samples, cfg, seed, param_groups=None, desc=""):
        snapshot.update({k: v.clone() for k, v in method.backbone.state_dict().items()})
        return spy(method, samples, cfg, seed, param_groups=param_groups, desc=desc)

    monkeypatch.setattr(ft, "fit", record_start)
    m.learn_experience(scenario[1])
    assert all(torch.equal(start[k], snapshot[k]) for k in start)  # restarted from the pre-trained weights
    assert seen_sizes == [len(scenario[0].train), len(scenario[0].train) + len(scenario[1].train)]


def test_feature_cache_keys_by_content_not_by_id(tmp_path):
    from clpet.scenarios.base import SampleSet

    m, scenario, backbone = build("simplecil")
    ctx = RunContext(progress=False, feature_cache=FeatureCache(str(tmp_path)))
    a = scenario[0].test
    b = SampleSet([x + 1.0 for x in a.inputs], a.targets, a.ids, a.modality, a.split)  # same ids, other data
    fa = ctx.feature_cache.features(backbone, a, ctx)
    fb = FeatureCache(str(tmp_path)).features(backbone, b, RunContext(progress=False))
    assert not torch.allclose(fa, fb)
    torch.testing.assert_close(fb, direct_features(backbone, b), rtol=1e-5, atol=1e-5)
