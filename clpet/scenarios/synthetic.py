"""Synthetic Gaussian blobs (vectors): a tiny, instant stream for testing the mechanics (runner, methods,
metrics), not a benchmark. No source files: everything is drawn from ``data_seed``.

Class c has mean ``separation * u_c`` with ``u_c`` a random unit vector, and unit-variance isotropic noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from clpet.registry import SCENARIOS
from clpet.scenarios.base import SampleSet, Scenario, ScenarioBuilder, ScenarioConfig
from clpet.scenarios.common import as_config, finish_stream


def gaussian_blobs(
    n_classes: int, dim: int, n_train: int, n_test: int, separation: float, data_seed: int
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), float32 features, samples grouped by class."""
    if n_classes < 1 or dim < 1 or n_train < 1 or n_test < 1:
        raise ValueError(
            f"synthetic: n_classes, dim, train_per_class, test_per_class must be >= 1, "
            f"got {n_classes}, {dim}, {n_train}, {n_test}"
        )
    rng = np.random.RandomState(data_seed)
    means = rng.standard_normal((n_classes, dim))
    means *= separation / np.linalg.norm(means, axis=1, keepdims=True)

    def draw(per_class: int) -> Tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(n_classes), per_class)
        x = means[y] + rng.standard_normal((len(y), dim))
        return x.astype(np.float32), y

    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    return x_tr, y_tr, x_te, y_te


@SCENARIOS.register("synthetic")
class SyntheticBlobs(ScenarioBuilder):
    """Gaussian blobs in R^dim, one per class: an instant stream for mechanics tests."""

    @dataclass
    class Config(ScenarioConfig):
        name: str = "synthetic"
        n_classes: int = 6
        dim: int = 16
        train_per_class: int = 50
        test_per_class: int = 20
        separation: float = 6.0  # norm of each class mean, in noise standard deviations (SimpleCIL on tiny-mlp ~98%)
        increment: int = 2
        default_backbone: str = "tiny-mlp"

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        x_tr, y_tr, x_te, y_te = gaussian_blobs(
            cfg.n_classes, cfg.dim, cfg.train_per_class, cfg.test_per_class, cfg.separation, cfg.data_seed
        )
        train = SampleSet(list(x_tr), y_tr, np.arange(len(y_tr)), "vector", "train")
        test = SampleSet(list(x_te), y_te, np.arange(len(y_te)), "vector", "test")
        names = [f"blob{c}" for c in range(cfg.n_classes)]
        return finish_stream(cfg, "synthetic", train, test, names, seed, info={"dim": cfg.dim})
