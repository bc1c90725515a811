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
