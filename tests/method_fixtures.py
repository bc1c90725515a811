"""A tiny learnable text stream and helpers to drive one method outside the runner (mechanism tests)."""
from __future__ import annotations

import numpy as np
import torch

from clpet.config import compose, rewrite_overrides, validate
from clpet.runner import build_method
from clpet.scenarios.base import SampleSet, build_class_incremental


def word_stream(n_classes: int = 4, train_per_class: int = 12, test_per_class: int = 6, increment: int = 2, seed: int = 0):
    """Texts whose words come from a class-specific vocabulary (plus shared noise words): learnable by a tiny
    BERT in a few steps. Classes in natural order, ``increment`` per experience."""
    rng = np.random.RandomState(seed)

    def draw(per_class: int, offset: int) -> SampleSet:
        texts, labels = [], []
        for c in range(n_classes):
            for _ in range(per_class):
                words = [f"w{c}x{rng.randint(4)}" for _ in range(4)] + [f"noise{rng.randint(8)}" for _ in range(2)]
                rng.shuffle(words)
                texts.append(" ".join(words))
                labels.append(c)
        return SampleSet(texts, np.array(labels), np.arange(len(labels)) + offset, "text")

    train, test = draw(train_per_class, 0), draw(test_per_class, 0)
    test.split = "test"
    return build_class_incremental("words", train, test, [f"c{c}" for c in range(n_classes)], order="natural",
                                   increment=increment, seed=seed)


def make_method(method: str, *overrides: str, backbone: str = "tiny-text", scenario=None):
    """(method, scenario, backbone) set up exactly as the runner sets it up (``runner.build_method``, on the
    CPU), on ``word_stream`` by default."""
    cfg = validate(compose(rewrite_overrides([f"method={method}", f"backbone.name={backbone}", "progress=false",
                                              "eval_batch_size=16", *overrides])))
    torch.manual_seed(0)
    scenario = scenario or word_stream()
    m = build_method(cfg, scenario, torch.device("cpu"))
    return m, scenario, m.backbone


def snapshot(tensors: dict) -> dict:
    return {k: v.detach().clone() for k, v in tensors.items()}


def final_report(m) -> dict:
    """What the runner records after the last experience: each prediction mode on every test set, and the
    method's diagnostics on their union (``runner.final_diagnostics`` with the scenario's evaluator)."""
    from clpet.registry import EVALUATORS
    from clpet.runner import final_diagnostics

    return final_diagnostics(m, EVALUATORS.get(m.stream.evaluation)(), m.stream, lambda j: None)


def make_lm_method(method: str, *overrides: str, backbone: str = "tiny-llama"):
    """(method, scenario) on a small ``text-tasks`` stream (two tasks), set up as the runner sets it up."""
    import tempfile
    from pathlib import Path

    from clpet.registry import SCENARIOS
    from tests.scenario_fixtures import write_text_tasks

    root = write_text_tasks(Path(tempfile.mkdtemp(prefix="clpet-tasks-")) / "tasks")
    cfg = validate(compose(rewrite_overrides(["scenario=text-tasks", f"data_root={root}", f"method={method}",
                                              f"backbone.name={backbone}", "progress=false", *overrides])))
    torch.manual_seed(0)
    scenario = SCENARIOS.get("text-tasks").build(cfg.scenario, seed=0, data_root=str(root))
    return build_method(cfg, scenario, torch.device("cpu")), scenario


RESUME_KEYS = ("acc_matrix", "A_t", "A_last", "A_avg", "forgetting", "bwt", "plasticity", "fwt", "baseline")


def kill_and_resume(tmp_path, monkeypatch, method: str, run_args, dies_at: int = 1):
    """Run ``run_args(out_dir)`` uninterrupted; run it again killed while learning experience ``dies_at``;
    resume it; assert the resumed run's numbers (``RESUME_KEYS``, every ``*_acc`` and ``*_shift``) equal the
    uninterrupted run's. Returns (the uninterrupted run's metrics, the checkpoint the killed run left)."""
    import json

    import pytest

    from clpet.cli import main
    from clpet.methods.base import Method
    from clpet.results import load_checkpoint

    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(run_args(full)) == 0
    real_learn = Method.learn_experience  # every method's class learns through it (whatever for_protocol picks)

    def dies(self, exp):
        if exp.index == dies_at:
            raise KeyboardInterrupt
        return real_learn(self, exp)

    monkeypatch.setattr(Method, "learn_experience", dies)
    with pytest.raises(KeyboardInterrupt):
        main(run_args(cut))
    monkeypatch.undo()
    saved = load_checkpoint(cut / "checkpoint.pt")
    assert saved["next_experience"] == dies_at
    assert main([*run_args(cut), "resume=true"]) == 0
    a, b = (json.loads((p / "metrics.json").read_text()) for p in (full, cut))
    for key in RESUME_KEYS + tuple(k for k in a if k.endswith("_acc") or k.endswith("_shift")):
        assert a.get(key) == b.get(key), key
    return a, saved


def kill_at_call(monkeypatch, owner, name: str, n: int):
    """Patch ``owner.name`` so that its ``n``-th call raises KeyboardInterrupt (a killed process); returns a function
    that restores the real one."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, dies)
    return lambda: monkeypatch.setattr(owner, name, real)
