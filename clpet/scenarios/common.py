"""Helpers shared by the dataset loaders: config coercion, where the data lives, held-out splits, and the
last step every loader takes (caps per class, then the class-incremental split)."""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Type, TypeVar

import numpy as np
from omegaconf import OmegaConf

from clpet.scenarios.base import SampleSet, Scenario, ScenarioConfig, build_class_incremental, cap_per_class

C = TypeVar("C", bound=ScenarioConfig)


def as_config(config_cls: Type[C], cfg: Any) -> C:
    """``cfg`` (None, a dict, a DictConfig or an instance) as a validated ``config_cls`` instance.
    Unknown keys raise, as they do for a scenario YAML."""
    if isinstance(cfg, config_cls):
        return cfg
    if dataclasses.is_dataclass(cfg):
        cfg = dataclasses.asdict(cfg)
    merged = OmegaConf.merge(OmegaConf.structured(config_cls), cfg if cfg is not None else {})
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def resolve_root(scenario_root: Optional[str], data_root: Optional[str], default: Optional[str]) -> Optional[str]:
    """Where a dataset lives (``~`` expanded). Precedence: ``scenario.root`` > the run's ``data_root`` > the
    package default."""
    for path in (scenario_root, data_root, default):
        if path not in (None, ""):
            return os.path.expanduser(str(path))
    return None


def holdout_split(labels: np.ndarray, test_fraction: float, data_seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A deterministic per-class held-out split of a source that has none.

    For each class (in sorted label order, drawing from one ``RandomState(data_seed)``),
    ``round(test_fraction * n)`` samples go to test, at least 1 and at most ``n - 1`` (a class with one
    sample keeps it for training). Returns (train index, test index), each sorted, i.e. in source order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    rng = np.random.RandomState(data_seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        n = len(idx)
        n_test = min(n - 1, max(1, int(np.floor(test_fraction * n + 0.5))))
        perm = rng.permutation(n)
        test.append(idx[perm[:n_test]])
        train.append(idx[perm[n_test:]])
    empty = np.zeros(0, dtype=np.int64)
    return (np.sort(np.concatenate(train)) if train else empty, np.sort(np.concatenate(test)) if test else empty)


def finish_stream(
    cfg: ScenarioConfig,
    default_name: str,
    train: SampleSet,
    test: SampleSet,
    class_names: Sequence[str],
    seed: int,
    info: Optional[Dict[str, Any]] = None,
) -> Scenario:
    """Apply the per-class caps (drawn with ``cfg.data_seed``) and split into class-incremental experiences."""
    train = cap_per_class(train, cfg.max_train_per_class, cfg.data_seed)
    test = cap_per_class(test, cfg.max_test_per_class, cfg.data_seed)
    info = dict(info or {})
    info.update(n_classes=len(class_names), n_train=len(train), n_test=len(test))
    return build_class_incremental(
        cfg.name or default_name,
        train,
        test,
        list(class_names),
        order=cfg.order,
        init=cfg.init,
        increment=cfg.increment,
        seed=seed,
        info=info,
    )
