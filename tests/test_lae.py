"""LAE mechanisms (docs/methods.md, LAE): EMA after every step, calibration freeze, current-task loss, offline set
from experience 2, max-of-softmax ensemble, frozen backbone."""
import pytest
import torch

from clpet.methods.lae import LAE, OFFLINE, ONLINE, max_softmax_ensemble
from tests.method_fixtures import make_method, snapshot, final_report

FAST = ["method.blocks=[0,1]", "method.optim.epochs=2", "method.num_freeze_epochs=1", "method.optim.batch_size=8",
        "method.optim.lr=0.01"]


@pytest.fixture(params=["adapter", "lora", "prefix"])
def lae(request):
    return make_method("lae", f"method.pet={request.param}", *FAST)


def test_no_offline_set_during_the_first_experience(lae):
    m, scenario, _ = lae
    m.learn(scenario[0])
    assert OFFLINE not in m.pets
    m.learn(scenario[1])
    assert OFFLINE in m.pets and m.pets.is_frozen(OFFLINE)


def test_offline_set_starts_as_a_copy_of_the_first_expert_and_is_emad_after_every_step(lae, monkeypatch):
    m, scenario, _ = lae
    m.learn(scenario[0])
    online_after_exp1 = snapshot(m.pets.state_dict(ONLINE))
    steps, checked = [], []
    real_after_step = LAE.after_step

    def spy(self):
        before = snapshot(self.pets.state_dict(OFFLINE))
        if not steps:  # first step of experience 2: the offline set is the expert of experience 1
            assert all(torch.equal(before[k], online_after_exp1[k]) for k in before)
        online = snapshot(self.pets.state_dict(ONLINE))
        real_after_step(self)
        after = self.pets.state_dict(OFFLINE)
        moved = False
        for k in after:
            expected = 0.9999 * before[k].double() + 0.0001 * online[k].double()  # exact, in float64
            ulps = 4 * torch.finfo(torch.float32).eps * expected.abs().clamp_min(1e-30)
            assert ((after[k].double() - expected).abs() <= ulps).all(), k  # float32 rounding only
            moved |= bool(((before[k].double() - expected).abs() > ulps).any())  # the check can fail
        checked.append(moved)
        steps.append(1)

    monkeypatch.setattr(LAE, "after_step", spy)
    m.learn(scenario[1])
    n_batches = len(scenario[1].train) // 8  # drop_last
    assert len(steps) == 2 * n_batches  # an EMA update after every optimizer step
    assert any(checked[n_batches:])  # once the online PETs train (after calibration) the offline ones move


def test_pets_frozen_in_calibration_epochs_of_later_experiences(lae, monkeypatch):
    m, scenario, _ = lae
    log = []
    epoch = {"e": 0}
    real_before, real_after = LAE.before_epoch, LAE.after_step

    def before_epoch(self, e):
        epoch["e"] = e
        real_before(self, e)

    def after_step(self):  # gradients of this step are still on the parameters here
        params = self.pets.parameters(ONLINE)
        log.append((self.experience, epoch["e"], all(p.requires_grad for p in params),
                    any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params),
                    all(p.grad is not None for p in self.head.heads[-1].parameters())))
        real_after(self)

    monkeypatch.setattr(LAE, "before_epoch", before_epoch)
    monkeypatch.setattr(LAE, "after_step", after_step)
    m.learn(scenario[0])
    m.learn(scenario[1])
    assert all(train and grad for exp, _, train, grad, _ in log if exp == 0)  # no freeze in experience 1
    assert all(not train and not grad for exp, e, train, grad, _ in log if exp == 1 and e == 0)  # calibration
    assert all(train and grad for exp, e, train, grad, _ in log if exp == 1 and e == 1)
    assert all(head for *_, head in log)  # the new head always trains
    assert {(exp, e) for exp, e, *_ in log} == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_pets_do_not_change_during_calibration_epochs(lae, monkeypatch):
    m, scenario, _ = lae
    m.learn(scenario[0])
    start = snapshot(m.pets.state_dict(ONLINE))
    m.cfg.optim.epochs = 1  # only the calibration epoch
    m.learn(scenario[1])
    assert all(torch.equal(start[k], v) for k, v in m.pets.state_dict(ONLINE).items())


def test_loss_ignores_old_class_logits(lae):
    m, scenario, bb = lae
    m.learn(scenario[0])
    m.n_old = m.head.out_features
    m.head.grow(2)
    batch = bb.preprocess(list(scenario[1].train.inputs[:6]), train=False)
    targets = torch.as_tensor(scenario[1].train.targets[:6])
    m.eval()
    before = m.loss_terms(batch, targets)["ce"]
    with torch.no_grad():
        m.head.heads[0].weight.normal_(std=5.0)  # old classes' logits change wildly
    assert torch.equal(before, m.loss_terms(batch, targets)["ce"])


def test_prediction_is_the_max_of_the_two_softmaxes(lae):
    m, scenario, bb = lae
    m.learn(scenario[0])
    m.learn(scenario[1])
    m.eval()
    batch = bb.preprocess(list(scenario[0].test.inputs), train=False)
    with torch.no_grad():
        online = m.logits(batch)
        with m.pets.use(OFFLINE):
            offline = m.logits(batch)
        ens = m.predict(batch)
    expected = torch.maximum(online.softmax(1), offline.softmax(1))
    torch.testing.assert_close(ens, expected)
    torch.testing.assert_close(max_softmax_ensemble([online, offline]), expected)
    assert (m.predict_set(scenario[0].test) == expected.argmax(1).numpy()).all()


def test_backbone_untouched_and_only_pets_and_head_train(lae):
    m, scenario, bb = lae
    pretrained = {n: p.detach().clone() for n, p in bb.named_parameters() if ".pets." not in n}
    m.learn(scenario[0])
    m.learn(scenario[1])
    now = {n: p for n, p in bb.named_parameters() if ".pets." not in n}
    assert pretrained.keys() == now.keys()
    assert all(torch.equal(pretrained[n], now[n]) for n in now)
    trainable = {id(p) for p in m.trainable_parameters()}
    allowed = {id(p) for p in m.pets.parameters(ONLINE)} | {id(p) for p in m.head.parameters()}
    assert trainable <= allowed


def test_runner_scores_the_online_and_offline_experts(lae):
    m, scenario, _ = lae
    for exp in scenario:
        m.learn(exp)
    out = final_report(m)
    assert 0 <= out["lae_online_acc"] <= 100 and 0 <= out["lae_offline_acc"] <= 100
    assert m.mode is None  # back to the ensemble
    test = scenario[0].test
    with m.prediction_mode("online"):
        online = m.predict_set(test)
    m.eval()
    with m.pets.use(ONLINE), torch.no_grad():  # the online mode is the online expert alone
        expected = m.head(m.backbone.features(m.backbone.preprocess(list(test.inputs), train=False))).argmax(1)
    assert (online == expected.numpy()).all()
    with pytest.raises(ValueError, match="no prediction mode 'nope'"):
        with m.prediction_mode("nope"):
            pass


def test_frozen_cnn_keeps_its_batchnorm_statistics():
    from tests.method_fixtures import make_method
    import numpy as np
    from clpet.scenarios.base import SampleSet, build_class_incremental

    rng = np.random.RandomState(0)
    imgs = [rng.randint(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(16)]
    data = SampleSet(imgs, np.arange(16) % 4, np.arange(16), "image")
    stream = build_class_incremental("img", data, data, list("abcd"), order="natural", increment=2)
    m, scenario, bb = make_method("lae", *FAST, "backbone.image_size=32", backbone="efficientnet-lite0", scenario=stream)
    buffers = {k: v.clone() for k, v in bb.named_buffers() if "running" in k}
    m.learn(scenario[0])
    assert buffers and all(torch.equal(v, dict(bb.named_buffers())[k]) for k, v in buffers.items())
