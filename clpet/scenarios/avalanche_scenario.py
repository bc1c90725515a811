"""Avalanche's classic class-incremental benchmarks as a clpet scenario:
``clpet run scenario=avalanche scenario.benchmark=SplitCIFAR100 scenario.n_experiences=10``.

The benchmark is built by Avalanche (``avalanche.benchmarks.classic``, so its class order is Avalanche's, drawn
with ``seed``) from data already on disk, then converted by ``clpet.integrations.avalanche_data.from_avalanche``:
the Avalanche transforms are dropped (the clpet backbone preprocesses), images become ``uint8`` arrays, labels
are remapped so experience t holds a contiguous id block, and the per-class caps apply. Only the constructors
in :data:`AVALANCHE_BENCHMARKS` can be named: no import path or expression from a config is ever evaluated.

Needs the optional extra ``clpet[avalanche]``; this module imports Avalanche only inside ``build``, so clpet
imports, lists and validates configs without it.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Optional

from clpet.registry import SCENARIOS
from clpet.scenarios.base import Scenario, ScenarioBuilder, ScenarioConfig
from clpet.scenarios.common import as_config, resolve_root

#: the ``avalanche.benchmarks.classic`` constructors a config may name; all take ``n_experiences``, ``seed`` and
#: ``dataset_root`` and download their data when it is missing (which fails offline: then put it there first).
AVALANCHE_BENCHMARKS = (
    "SplitMNIST",
    "SplitFMNIST",
    "SplitCIFAR10",
    "SplitCIFAR100",
    "SplitTinyImageNet",
    "SplitCUB200",
    "SplitImageNet",
    "SplitOmniglot",
)
BENCHMARK_ORDER = "benchmark"  # the only ``order``: Avalanche's own class order


def check_avalanche_config(cfg: Any) -> None:
    """One-line ``ValueError`` for a benchmark outside the allow-list or keys this scenario does not use."""
    if cfg.benchmark not in AVALANCHE_BENCHMARKS:
        close = difflib.get_close_matches(str(cfg.benchmark), AVALANCHE_BENCHMARKS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        valid = ", ".join(AVALANCHE_BENCHMARKS)
        raise ValueError(f"unknown Avalanche benchmark '{cfg.benchmark}'{hint}; valid: {valid}")
    if cfg.n_experiences < 1:
        raise ValueError(f"n_experiences must be >= 1, got {cfg.n_experiences}")
    if cfg.order != BENCHMARK_ORDER or cfg.init != 0 or cfg.increment != 0:
        raise ValueError(
            "the class order and increments come from the Avalanche benchmark: set n_experiences and seed, and "
            f"leave order={BENCHMARK_ORDER}, init=0, increment=0"
        )


@SCENARIOS.register("avalanche")
class AvalancheClassic(ScenarioBuilder):
    """An Avalanche classic benchmark (SplitMNIST, SplitCIFAR100, ...) as a stream; needs clpet[avalanche]."""

    @dataclass
    class Config(ScenarioConfig):
        name: str = "avalanche"
        benchmark: str = "SplitMNIST"  # one of AVALANCHE_BENCHMARKS
        n_experiences: int = 5
        seed: Optional[int] = None  # Avalanche's class-order seed; None = the run's seed
        dataset_root: Optional[str] = None  # > the run's data_root > Avalanche's default (~/.avalanche/data/...)
        order: Any = BENCHMARK_ORDER
        increment: int = 0
        default_backbone: str = "efficientnet-lite0"

        def __post_init__(self) -> None:
            check_avalanche_config(self)

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        try:
            from clpet.integrations.avalanche_data import from_avalanche, load_classic_benchmark
        except ImportError as err:  # AvalancheMissingError: one line naming the extra
            raise FileNotFoundError(str(err).splitlines()[0]) from None
        bench_seed = seed if cfg.seed is None else cfg.seed
        benchmark = load_classic_benchmark(
            cfg.benchmark, cfg.n_experiences, bench_seed, resolve_root(cfg.dataset_root, data_root, None)
        )
        return from_avalanche(
            benchmark,
            name=f"{cfg.name}-{cfg.benchmark}",
            max_train_per_class=cfg.max_train_per_class,
            max_test_per_class=cfg.max_test_per_class,
            data_seed=cfg.data_seed,
            info={"benchmark": cfg.benchmark, "n_experiences": cfg.n_experiences, "benchmark_seed": bench_seed},
        )
