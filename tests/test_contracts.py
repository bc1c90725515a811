"""The contracts every protocol shares: protocol pairing, the seen-so-far view, the training loop's gradient hooks,
accumulation, clipping and precision."""
import pytest
import torch

from clpet.cli import main
from clpet.protocols import Protocol, check_pair
from clpet.scenarios.base import SeenView
from tests.conftest import tiny_overrides
from tests.method_fixtures import make_method


def test_protocol_pairs_are_checked_in_one_line():
    check_pair("lae", (Protocol.CLASS_INCREMENTAL,), "wordnet", "class-incremental")
    with pytest.raises(ValueError) as err:
        check_pair("lae", (Protocol.CLASS_INCREMENTAL, Protocol.FEW_SHOT_CLASS_INCREMENTAL), "lm-offline",
                   Protocol.TASK_INCREMENTAL)
    msg = str(err.value)
    assert "\n" not in msg and "supports class-incremental, few-shot-class-incremental" in msg
    assert "'lm-offline' is task-incremental" in msg
    with pytest.raises(ValueError, match="unknown protocol 'tasks'"):
        Protocol.parse("tasks")


def test_the_method_sees_the_stream_only_up_to_the_current_experience():
    m, scenario, _ = make_method("simplecil")
    assert isinstance(m.scenario, SeenView) and len(m.scenario) == 0
    seen = []
    real = type(m).learn

    def spy(self, exp):
        seen.append([e.index for e in self.scenario.experiences])
        return real(self, exp)

    type(m).learn = spy
    try:
        for exp in scenario:
            m.learn_experience(exp)
    finally:
        type(m).learn = real
    assert seen == [[0], [0, 1]]
    assert m.scenario.n_experiences == len(scenario) and m.stream is scenario
    with pytest.raises(ValueError, match="outside the stream"):
        m.scenario.advance(len(scenario))


class Recorder:
    def __init__(self, m):
        self.calls = []
        for hook in ("after_backward", "before_update", "after_step"):
            setattr(m, hook, lambda hook=hook: self.calls.append(hook))


def grads_after(m, cfg_overrides):
    from clpet.training import OptimConfig, fit

    cfg = OptimConfig(**cfg_overrides)
    for module in m.backbone.modules():  # no dropout: the comparison is about the arithmetic of the steps
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    torch.manual_seed(0)
    m.head.grow(2)
    fit(m, m.stream[0].train, cfg, seed=0)
    return {k: v.detach().clone() for k, v in m.head.state_dict().items()}


def test_gradient_hooks_accumulation_and_clipping():
    m, scenario, _ = make_method("finetune", "method.train_backbone=false")
    rec = Recorder(m)
    n = len(scenario[0].train)  # 24 samples: 3 micro-batches of 8, accumulated 2 + 1
    grads_after(m, dict(epochs=1, batch_size=8, optimizer="sgd", lr=0.1, momentum=0.0, grad_accum_steps=2))
    assert n == 24
    assert rec.calls == ["after_backward", "after_backward", "before_update", "after_step",
                         "after_backward", "before_update", "after_step"]

    # two micro-batches of 12 accumulated = one batch of 24 (plain SGD on a mean loss)
    a, _, _ = make_method("finetune", "method.train_backbone=false")
    b, _, _ = make_method("finetune", "method.train_backbone=false")
    one = grads_after(a, dict(epochs=1, batch_size=24, optimizer="sgd", lr=0.5, momentum=0.0))
    two = grads_after(b, dict(epochs=1, batch_size=12, optimizer="sgd", lr=0.5, momentum=0.0, grad_accum_steps=2))
    for k in one:
        torch.testing.assert_close(one[k], two[k], rtol=1e-5, atol=1e-6)

    # gradient rules (before_update) see the accumulated gradients before clipping; the step uses clipped ones
    c, _, _ = make_method("finetune", "method.train_backbone=false")
    norms = {"before_update": [], "after_step": []}

    def norm_at(hook):
        return lambda: norms[hook].append(float(torch.nn.utils.get_total_norm(
            [p.grad for p in c.head.parameters() if p.grad is not None])))

    c.before_update, c.after_step = norm_at("before_update"), norm_at("after_step")
    grads_after(c, dict(epochs=1, batch_size=8, optimizer="sgd", lr=0.1, max_grad_norm=1e-3))
    assert norms["after_step"] and max(norms["after_step"]) <= 1e-3 * 1.0001
    assert min(norms["before_update"]) > 1e-3


@pytest.mark.parametrize("override, message", [
    ("method.optim.lr=1e400", "finite lr"),
    ("method.optim.lr=-1", "finite lr"),
    ("method.optim.grad_accum_steps=0", "grad_accum_steps"),
    ("method.optim.max_grad_norm=0", "max_grad_norm"),
    ("method.optim.momentum=1.5", "momentum"),
    ("precision=fp8", "unknown precision"),
    ("precision=fp16", "needs a CUDA device"),
])
def test_bad_training_values_fail_before_work(in_tmp, capsys, override, message):
    device = ["device=cpu"] if override.startswith("precision") else []
    assert main(["run", *tiny_overrides(method="finetune", out_dir=in_tmp / "x"), override, *device]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (in_tmp / "x").exists()


def test_precision_is_recorded(in_tmp):
    import json

    assert main(["run", *tiny_overrides(method="finetune", out_dir=in_tmp / "p"), "device=cpu",
                 "precision=bf16"]) == 0
    m = json.loads((in_tmp / "p" / "metrics.json").read_text())
    assert m["precision"] == "bf16" and m["peak_memory"] and m["peak_memory"][0]["rss_mb"] > 0
    assert "precision: bf16" in (in_tmp / "p" / "config.yaml").read_text()


@pytest.mark.parametrize("override, message", [
    ("~method", "'method' was deleted"),
    ("seed=4294967296", "seed must be in [0, 4294967295]"),
    ("seed=-1", "seed must be in"),
    ("scenario.increment=1000", "increment 1000 is larger than"),
    ("method=lae method.rank=-3", "LAE rank must be positive"),
    ("method=lae method.blocks=[]", "LAE blocks must be distinct"),
    ("method=adam method.bottleneck=0", "ADAM bottleneck and prompt_length must be positive"),
    ("method=s3t eval_future=true", "eval_future=true does nothing for the unlearning method s3t"),
    ("method=finetune deletions.kind=uniform", "deletion requests"),
])
def test_bad_values_named_by_outside_testing_fail_in_one_line(in_tmp, capsys, override, message):
    assert main(["run", "scenario=synthetic", "progress=false", f"out_dir={in_tmp / 'x'}", *override.split()]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (in_tmp / "x").exists()
