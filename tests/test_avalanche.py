"""Avalanche integration (issue 5): clpet methods as Avalanche strategies/plugins give the runner's numbers,
scenario <-> benchmark round trips, Avalanche's own plugins alongside, Avalanche benchmarks as clpet scenarios,
and clpet without Avalanche. Everything but the last needs the extra ``clpet[avalanche]`` (skipped without)."""
import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clpet.config import ConfigError, compose, rewrite_overrides, validate
from clpet.registry import SCENARIOS
from tests.method_fixtures import word_stream, final_report
from tests.scenario_fixtures import write_text_csv

REPO = Path(__file__).resolve().parents[1]
COMMON = ["progress=false", "plots=false", "checkpoint=false", "eval_batch_size=16"]
# LAE small enough for a CPU test, learning enough that the accuracy matrix is not chance; ema_decay 0.9 so the
# offline expert moves away from the first experience's and the ensemble is not trivial
LAE_FAST = ["method.blocks=[0,1]", "method.optim.epochs=4", "method.num_freeze_epochs=1", "method.optim.batch_size=8",
            "method.optim.lr=0.05", "method.ema_decay=0.9"]


@pytest.fixture(scope="module")
def av():
    """The integration module (skips the test without avalanche-lib)."""
    pytest.importorskip("avalanche")
    import clpet.integrations.avalanche as integration

    return integration


# ------------------------------------------------------------------------------------------ helpers
def runner_and_setup(av, tmp: Path, scenario: str, method: str, backbone: str, overrides, data_root=None):
    """The runner's metrics for a config, and the same scenario + method built for Avalanche."""
    from clpet.runner import run

    extra = [f"data_root={data_root}"] if data_root else []
    args = [f"scenario={scenario}", f"method={method}", f"backbone.name={backbone}", *COMMON, *extra, *overrides]
    cfg = validate(compose(rewrite_overrides([*args, f"out_dir={tmp / 'run'}"])))
    metrics = run(cfg)
    stream = SCENARIOS.get(cfg.scenario.name).build(cfg.scenario, seed=cfg.run.seed, data_root=data_root)
    m = av.setup_method(method, stream, backbone=backbone, overrides=overrides, seed=cfg.run.seed, eval_batch_size=16)
    return metrics, stream, m


def quiet_evaluator(*metrics):
    """An EvaluationPlugin without loggers (Avalanche warns that nothing is logged: that is the point)."""
    import warnings

    from avalanche.training.plugins import EvaluationPlugin

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return EvaluationPlugin(*metrics, loggers=[])


def avalanche_correct(av, method, stream, evaluator=None, plugins=None):
    """correct[t, j] from Avalanche's experience accuracy metric, training and evaluating like the runner."""
    from avalanche.evaluation.metrics import accuracy_metrics

    bench = av.as_avalanche_benchmark(stream)
    evaluator = evaluator or quiet_evaluator(accuracy_metrics(experience=True))
    strategy = av.ClpetStrategy(method=method, evaluator=evaluator, plugins=plugins)
    T = len(stream)
    correct = np.full((T, T), np.nan)
    for exp in bench.train_stream:
        t = exp.current_experience
        strategy.train(exp)
        results = strategy.eval(bench.test_stream[: t + 1])
        for j in range(t + 1):
            acc = results[f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}"]
            correct[t, j] = round(acc * len(stream[j].test))
    return correct, strategy, bench


def runner_correct(metrics, stream):
    R = np.array([[np.nan if v is None else v for v in row] for row in metrics["acc_matrix"]], dtype=float)
    counts = np.array([len(e.test) for e in stream], dtype=float)
    return np.round(R * counts[None, :] / 100.0)


# ------------------------------------------------------------------------- equivalence with the runner
@pytest.mark.parametrize("scenario, backbone", [("synthetic", "tiny-mlp"), ("text-csv", "tiny-text")])
def test_simplecil_through_avalanche_gives_the_runners_accuracy_matrix_exactly(av, tmp_path, scenario, backbone):
    root = write_text_csv(tmp_path / "data") if scenario == "text-csv" else None
    metrics, stream, m = runner_and_setup(av, tmp_path, scenario, "simplecil", backbone, [], data_root=root)
    correct, _, _ = avalanche_correct(av, m, stream)
    expected = runner_correct(metrics, stream)
    np.testing.assert_array_equal(correct, expected)  # the same number of correct predictions in every cell
    assert np.nanmin(expected / np.array([len(e.test) for e in stream])) > 0.5  # not a trivial stream


def test_lae_through_avalanche_gives_the_runners_accuracy_matrix(av, tmp_path):
    """LAE trains, so the two paths agree only if they feed the same batches in the same order, take the same
    optimizer steps with the same hooks, and draw the same random numbers (dropout) - which the strategy
    arranges (``avalanche_strategy`` docstring). Allowed to differ by one test sample per cell: bf16 autocast
    and non-deterministic kernels on GPUs, DataLoader workers, or Avalanche plugins that change the data or the
    model make the paths diverge; on CPU with the default plugins they agree exactly (asserted below)."""
    root = write_text_csv(tmp_path / "data")
    metrics, stream, m = runner_and_setup(av, tmp_path, "text-csv", "lae", "tiny-text", LAE_FAST, data_root=root)
    correct, _, _ = avalanche_correct(av, m, stream)
    expected = runner_correct(metrics, stream)
    assert np.nanmax(np.abs(correct - expected)) <= 1
    if m.ctx.device.type == "cpu":
        np.testing.assert_array_equal(correct, expected)
        assert final_report(m) == {k: metrics[k] for k in ("lae_online_acc", "lae_offline_acc")}
    assert expected[0, 0] > 0.5 * len(stream[0].test)  # LAE learned something


def test_avalanche_training_takes_the_same_steps_as_method_learn(av):
    """Mechanism behind the equivalence: the PETs and head after one experience trained by Avalanche's loop equal
    (bit for bit, on CPU) those of ``method.learn`` with clpet's own loop; the optimizer holds trainable
    parameters only, never the frozen backbone."""
    stream = word_stream()
    direct = av.setup_method("lae", stream, backbone="tiny-text", overrides=LAE_FAST)
    direct.learn(stream[0])
    direct.learn(stream[1])
    m = av.setup_method("lae", stream, backbone="tiny-text", overrides=LAE_FAST)
    backbone_params = {id(p) for p in m.backbone.parameters() if not p.requires_grad}
    seen = []

    from avalanche.core import SupervisedPlugin

    class OptimizerSpy(SupervisedPlugin):
        def after_update(self, strategy, **kwargs):
            params = [p for g in strategy.optimizer.param_groups for p in g["params"]]
            seen.append((len(params), any(id(p) in backbone_params for p in params)))

    bench = av.as_avalanche_benchmark(stream)
    strategy = av.ClpetStrategy(method=m, evaluator=quiet_evaluator(), plugins=[OptimizerSpy()])
    for exp in bench.train_stream:
        strategy.train(exp)
    a, b = direct.state_dict(), m.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = sum(4 * (len(e.train) // 8) for e in stream)  # LAE_FAST: 4 epochs of batches of 8, drop_last
    assert len(seen) == steps and not any(frozen for _, frozen in seen)


# ------------------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("which", ["synthetic", "words"])
def test_scenario_to_benchmark_to_scenario_round_trip(av, which):
    stream = (SCENARIOS.get("synthetic").build(None, seed=3, data_root=None) if which == "synthetic"
              else word_stream(n_classes=6, increment=2))
    bench = av.as_avalanche_benchmark(stream)
    assert len(bench.train_stream) == len(bench.test_stream) == len(stream)
    for e, train, test in zip(stream, bench.train_stream, bench.test_stream):
        assert sorted(train.classes_in_this_experience) == e.classes == sorted(test.classes_in_this_experience)
        assert train.task_labels == [0]  # class-incremental: no task label at test time
        assert list(train.dataset.targets) == e.train.targets.tolist()
        assert list(train.dataset.sample_ids) == e.train.ids.tolist()
        x, y, t = train.dataset[1]
        assert y == e.train.targets[1] and t == 0
        assert x is e.train.inputs[1]  # the raw sample itself, preprocessed by the clpet backbone
    back = av.from_avalanche(bench)
    assert back.fingerprint() == stream.fingerprint()  # ids and labels of every split of every experience
    assert back.class_order == stream.class_order and back.class_names == stream.class_names
    assert (back.name, back.modality, back.protocol, back.info) == (stream.name, stream.modality, stream.protocol,
                                                                     stream.info)
    for a, b in zip(stream, back):
        assert (a.classes, a.class_names, a.task_id, a.task_name) == (b.classes, b.class_names, b.task_id, b.task_name)
        for split in ("train", "test"):
            sa, sb = getattr(a, split), getattr(b, split)
            assert sb.split == split and all(np.array_equal(u, v) for u, v in zip(sa.inputs, sb.inputs))


def test_mismatched_benchmark_is_refused_in_one_line(av):
    stream = word_stream()
    m = av.setup_method("simplecil", stream, backbone="tiny-text")
    other = av.as_avalanche_benchmark(word_stream(train_per_class=5))
    strategy = av.ClpetStrategy(method=m, evaluator=quiet_evaluator())
    with pytest.raises(ValueError, match="does not match the scenario") as err:
        strategy.train(other.train_stream[0])
    assert "\n" not in str(err.value)


# -------------------------------------------------------------------------- Avalanche's own plugins
def test_avalanche_metrics_and_loggers_see_the_lae_ensemble(av, tmp_path):
    from avalanche.core import SupervisedPlugin
    from avalanche.evaluation.metrics import (accuracy_metrics, confusion_matrix_metrics, forgetting_metrics,
                                              loss_metrics, timing_metrics)
    from avalanche.logging import CSVLogger, TextLogger
    from avalanche.training.plugins import EvaluationPlugin

    stream = word_stream()
    m = av.setup_method("lae", stream, backbone="tiny-text", overrides=LAE_FAST)
    text = io.StringIO()
    evaluator = EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True, stream=True), loss_metrics(epoch=True, experience=True),
        forgetting_metrics(experience=True, stream=True), timing_metrics(epoch=True),
        confusion_matrix_metrics(num_classes=stream.n_classes, stream=True, save_image=False),
        loggers=[TextLogger(text), CSVLogger(log_folder=str(tmp_path / "csv"))],
    )
    outputs = []

    class Capture(SupervisedPlugin):  # what every metric reads at after_eval_forward
        def after_eval_forward(self, strategy, **kwargs):
            outputs.append((strategy.mb_output.clone(), strategy.method.predict(strategy.mb_x)))

    correct, strategy, bench = avalanche_correct(av, m, stream, evaluator=evaluator, plugins=[Capture()])
    assert outputs and all(torch.equal(a, b) for a, b in outputs)  # method.predict: the ensemble
    assert m.has_offline and m.mode is None  # None: the ensemble
    last = strategy.evaluator.get_last_metrics()
    cm = last["ConfusionMatrix_Stream/eval_phase/test_stream"]
    preds = {j: m.predict_set(stream[j].test) for j in range(len(stream))}
    expected = np.zeros((stream.n_classes, stream.n_classes), dtype=np.int64)
    for j, p in preds.items():
        np.add.at(expected, (stream[j].test.targets, p), 1)
    np.testing.assert_array_equal(cm.numpy(), expected)  # Avalanche's matrix is the runner's predictions'
    acc0 = np.mean(preds[0] == stream[0].test.targets)
    assert last["Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000"] == pytest.approx(acc0)
    forgetting = last["ExperienceForgetting/eval_phase/test_stream/Task000/Exp000"]
    assert forgetting == pytest.approx((correct[0, 0] - correct[1, 0]) / len(stream[0].test))
    assert "Top1_Acc_Stream/eval_phase/test_stream" in text.getvalue()
    assert (tmp_path / "csv" / "eval_results.csv").read_text().count("\n") > 1
    assert "Loss_Epoch/train_phase/train_stream/Task000" in last  # training metrics: loss terms, predictions


def test_clpet_plugin_maps_the_hooks_onto_an_avalanche_strategy(av):
    """A method that is an add-on to plain SGD (here: an L2 pull towards the start weights plus counters) inside
    Avalanche's Naive strategy on a clpet scenario turned into a benchmark."""
    from avalanche.training import Naive

    from clpet.methods.base import Method

    class L2Anchor(Method):
        def __init__(self, model):
            super().__init__(cfg=None)
            self.model = model
            self.start = [p.detach().clone() for p in model.parameters()]
            self.calls = []

        def on_experience_start(self, experience):
            self.calls.append(("start", experience.index))

        def before_epoch(self, epoch):
            self.calls.append(("epoch", epoch))

        def loss_terms(self, batch, targets):
            pull = sum(((p - s) ** 2).sum() for p, s in zip(self.model.parameters(), self.start))
            return {"l2": pull}

        def after_step(self):
            self.calls.append(("step",))

        def on_experience_end(self, experience):
            self.calls.append(("end", experience.index))

    stream = SCENARIOS.get("synthetic").build(None, seed=0, data_root=None)
    torch.manual_seed(0)
    model = torch.nn.Linear(16, stream.n_classes)
    addon = L2Anchor(model)
    addon.stream = stream  # what hosting loops read (a method set up by clpet gets it in setup)
    bench = av.as_avalanche_benchmark(stream)  # vectors: Avalanche's default collate stacks them
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), train_mb_size=25,
                     train_epochs=2, evaluator=quiet_evaluator(), plugins=[av.ClpetPlugin(addon)])
    strategy.train(bench.train_stream[0])
    strategy.train(bench.train_stream[1])
    expected = []
    for t in (0, 1):
        expected.append(("start", t))
        for e in (0, 1):
            expected += [("epoch", e)] + [("step",)] * (len(stream[t].train) // 25)
        expected.append(("end", t))
    assert addon.calls == expected
    anchored = sum(float(((p.detach() - s) ** 2).sum()) for p, s in zip(model.parameters(), addon.start))
    free = torch.nn.Linear(16, stream.n_classes)
    free.load_state_dict(dict(zip(["weight", "bias"], addon.start)))
    plain = Naive(model=free, optimizer=torch.optim.SGD(free.parameters(), lr=0.1), train_mb_size=25,
                  train_epochs=2, evaluator=quiet_evaluator())
    plain.train(bench.train_stream[0])
    plain.train(bench.train_stream[1])
    drift = sum(float(((p.detach() - s) ** 2).sum()) for p, s in zip(free.parameters(), addon.start))
    assert anchored < drift  # the method's loss term reached the backward pass


# ---------------------------------------------------------------- Avalanche benchmarks as clpet scenarios
def write_mnist(root: Path, per_class_train: int = 3, per_class_test: int = 2) -> dict:
    """A tiny MNIST in torchvision's raw IDX layout (root/MNIST/raw), so Avalanche's SplitMNIST loads offline."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    data = {}
    for split, per_class, prefix in (("train", per_class_train, "train"), ("test", per_class_test, "t10k")):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        images = rng.randint(0, 256, size=(len(labels), 28, 28)).astype(np.uint8)
        header = struct.pack(">IIII", 0x803, len(labels), 28, 28)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.tobytes())
        data[split] = (images, labels)
    return data


def test_an_avalanche_classic_benchmark_runs_as_a_clpet_scenario(av, tmp_path, capsys):
    from avalanche.benchmarks.classic import SplitMNIST

    from clpet.cli import main

    data = write_mnist(tmp_path / "mnist")
    cfg = SCENARIOS.get("avalanche").Config(benchmark="SplitMNIST", n_experiences=5, seed=1,
                                            dataset_root=str(tmp_path / "mnist"))
    stream = SCENARIOS.get("avalanche").build(cfg, seed=0, data_root=None)
    native = SplitMNIST(n_experiences=5, seed=1, dataset_root=str(tmp_path / "mnist"))
    assert len(stream) == 5 and stream.modality == "image" and stream.n_classes == 10
    order = [c for exp in native.train_stream for c in sorted(exp.classes_in_this_experience)]
    assert stream.class_order == order  # Avalanche's class order; remapped ids are positions in it
    for t, e in enumerate(stream):
        assert e.classes == [2 * t, 2 * t + 1] and len(e.train) == 6 and len(e.test) == 4
        assert all(x.dtype == np.uint8 and x.shape == (28, 28) for x in e.test.inputs)
        originals = [stream.class_order[c] for c in e.train.targets]
        images, labels = data["train"]
        for x, c in zip(e.train.inputs, originals):  # the very pixels of the source, transforms dropped
            assert any(np.array_equal(x, images[k]) for k in np.nonzero(labels == c)[0])
    assert SCENARIOS.get("avalanche").build(cfg, seed=0, data_root=None).fingerprint() == stream.fingerprint()
    out = tmp_path / "run"
    args = ["run", "scenario=avalanche", "scenario.benchmark=SplitMNIST", f"scenario.dataset_root={tmp_path / 'mnist'}",
            "method=simplecil", "backbone.name=tiny-vit", f"out_dir={out}", *COMMON]
    assert main(args) == 0, capsys.readouterr().err
    assert (out / "metrics.json").exists()


def test_avalanche_scenario_config_is_checked_before_any_work():
    with pytest.raises(ConfigError, match="did you mean 'SplitCIFAR100'"):
        validate(compose(rewrite_overrides(["scenario=avalanche", "scenario.benchmark=SplitCifar100"])))
    with pytest.raises(ConfigError, match="class order and increments come from the Avalanche benchmark"):
        validate(compose(rewrite_overrides(["scenario=avalanche", "scenario.increment=2"])))
    with pytest.raises(ConfigError, match="unknown key"):
        validate(compose(rewrite_overrides(["scenario=avalanche", "scenario.module=os.system"])))


def test_missing_benchmark_data_offline_is_one_line_naming_the_folder(av, tmp_path, monkeypatch):
    from urllib.error import URLError

    import avalanche.benchmarks.classic as classic

    def offline(**kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(classic, "SplitCIFAR100", offline)
    cfg = SCENARIOS.get("avalanche").Config(benchmark="SplitCIFAR100", n_experiences=10)
    with pytest.raises(FileNotFoundError) as err:
        SCENARIOS.get("avalanche").build(cfg, seed=0, data_root=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path) in msg and "scenario.dataset_root" in msg and "\n" not in msg


# ------------------------------------------------------------------------------ without Avalanche
BLOCK_AVALANCHE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "avalanche" or name.startswith("avalanche."):
            raise ModuleNotFoundError("No module named 'avalanche'")
sys.meta_path.insert(0, Block())
"""


def test_clpet_imports_and_runs_without_avalanche(tmp_path):
    code = BLOCK_AVALANCHE + f"""
import clpet.cli, clpet.scenarios, clpet.methods, clpet.integrations
from clpet.registry import SCENARIOS
assert "avalanche" in SCENARIOS.names()
try:
    import clpet.integrations.avalanche
except ImportError as e:
    print("IMPORT:", e)
from clpet.cli import main
code = main(["run", "scenario=avalanche", "method=simplecil", "backbone.name=tiny-vit", "out_dir={tmp_path / 'x'}",
             "progress=false", "plots=false"])
print("EXIT:", code)
assert main(["run", "scenario=synthetic", "method=simplecil", "out_dir={tmp_path / 'y'}", "progress=false",
             "plots=false"]) == 0
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TQDM_DISABLE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "IMPORT: clpet.integrations.avalanche needs Avalanche" in out.stdout
    assert "clpet[avalanche]" in out.stdout
    assert "EXIT: 2" in out.stdout and "pip install 'clpet[avalanche]'" in out.stderr


# ------------------------------------------------------------------------------------------ example
@pytest.mark.skipif(not os.path.isdir("/usr/share/wordnet"), reason="Debian wordnet-base not installed")
def test_the_avalanche_example_runs_on_an_offline_scenario(av, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("avalanche_example", REPO / "experiments" / "avalanche_example.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(["--backbone", "tiny-text", "--set", "scenario.max_train_per_class=4",
                            "scenario.max_test_per_class=2", "method.blocks=[0]", "method.optim.epochs=1"])
    assert set(summary) == {"Top1_Acc_Stream/eval_phase/test_stream/Task000", "StreamForgetting/eval_phase/test_stream"}
    assert "lae on wordnet (5 experiences) through Avalanche" in capsys.readouterr().out
