"""Scenario streams and their dataset loaders. Importing this package registers every scenario in
``clpet.registry.SCENARIOS`` (one module per dataset source; see the top-level ``scenarios/*.yaml``)."""
from clpet.scenarios.base import (
    MODALITIES,
    Experience,
    SampleSet,
    Scenario,
    ScenarioBuilder,
    ScenarioConfig,
    build_class_incremental,
    cap_per_class,
    class_increments,
    resolve_class_order,
)
# importing a scenario module registers its scenario
from clpet.scenarios import clipart, fashion_mnist, image_folder, synthetic, text_csv, wordnet  # noqa: F401
from clpet.scenarios import cifar100, fscil, fscil_benchmarks, imagenet_r, presplit  # noqa: F401
from clpet.scenarios import avalanche_scenario  # noqa: F401  (imports Avalanche only when built)
from clpet.scenarios import lm_benchmarks, lm_offline, tasks, trace  # noqa: F401  (task-incremental language streams)

__all__ = [
    "MODALITIES",
    "Experience",
    "SampleSet",
    "Scenario",
    "ScenarioBuilder",
    "ScenarioConfig",
    "build_class_incremental",
    "cap_per_class",
    "class_increments",
    "resolve_class_order",
]
