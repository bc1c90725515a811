"""Avalanche integration, both ways (optional extra: ``pip install 'clpet[avalanche]'``, avalanche-lib >= 0.6).

clpet method -> Avalanche
    :class:`ClpetStrategy` runs any clpet method as an Avalanche ``SupervisedTemplate``; :class:`ClpetPlugin`
    adds a method that is an add-on to plain SGD to any Avalanche strategy. Avalanche's ``EvaluationPlugin``
    metrics (accuracy, forgetting, confusion matrix, loggers) see the method's real predictions
    (``method.predict``, e.g. LAE's online/offline ensemble). How clpet's training-loop hooks map onto Avalanche
    callbacks, and why the numbers equal the runner's: ``clpet.integrations.avalanche_strategy``.

clpet scenario <-> Avalanche benchmark
    :func:`as_avalanche_benchmark` (same experiences, class order and remapped labels; items ``(raw x, y, t)``)
    and :func:`from_avalanche` (any class-incremental Avalanche benchmark as a clpet ``Scenario``; also behind
    ``clpet run scenario=avalanche scenario.benchmark=SplitCIFAR100``). Design: ``avalanche_data``.

An Avalanche user adds LAE in a few lines (``experiments/avalanche_example.py``)::

    scenario = from_avalanche(SplitCIFAR100(n_experiences=10))       # or any clpet scenario
    benchmark = as_avalanche_benchmark(scenario)                      # clpet's raw samples, remapped labels
    method = setup_method("lae", scenario, backbone="timm")  # ViT-B/16 IN-21k, built as `clpet run` does
    strategy = ClpetStrategy(method=method, evaluator=my_evaluation_plugin)
    for exp in benchmark.train_stream:
        strategy.train(exp)
        strategy.eval(benchmark.test_stream[: exp.current_experience + 1])

Importing this module without Avalanche raises ``AvalancheMissingError`` (an ``ImportError``) naming the extra.
"""
from __future__ import annotations

from typing import Optional, Sequence

from clpet.integrations.avalanche_compat import AvalancheMissingError, require_avalanche

require_avalanche("clpet.integrations.avalanche")

from clpet.integrations.avalanche_data import (  # noqa: E402
    avalanche_dataset,
    as_avalanche_benchmark,
    from_avalanche,
    load_classic_benchmark,
    to_raw_sample,
)
from clpet.integrations.avalanche_strategy import ClpetPlugin, ClpetStrategy, routed_fit  # noqa: E402
from clpet.methods.base import Method  # noqa: E402
from clpet.scenarios.base import Scenario  # noqa: E402


def setup_method(
    method: str,
    scenario: Scenario,
    *,
    backbone: str,
    overrides: Sequence[str] = (),
    seed: int = 0,
    device: str = "auto",
    eval_batch_size: int = 128,
    num_workers: int = 0,
    cache_dir: Optional[str] = None,
    progress: bool = False,
) -> Method:
    """A clpet method set up on ``scenario`` exactly as ``clpet run`` sets it up: the config composed and
    validated from the method's YAML plus ``overrides`` (clpet syntax, e.g. ``"method.pet=lora"``,
    ``"backbone.pretrained=false"``), the global RNG seeded with ``seed``, then backbone, method and run
    context built in the runner's order (so the same seed gives the runner's initial weights)."""
    from clpet.config import compose, rewrite_overrides, validate
    from clpet.runner import build_method, seed_everything

    run_keys = [f"seed={seed}", f"device={device}", f"eval_batch_size={eval_batch_size}",
                f"num_workers={num_workers}", f"progress={str(bool(progress)).lower()}"]
    if cache_dir is not None:
        run_keys.append(f"cache_dir={cache_dir}")
    cfg = validate(compose(rewrite_overrides([f"method={method}", f"backbone.name={backbone}", *run_keys,
                                              *overrides])))
    seed_everything(seed)
    return build_method(cfg, scenario)


__all__ = [
    "AvalancheMissingError",
    "ClpetPlugin",
    "ClpetStrategy",
    "as_avalanche_benchmark",
    "avalanche_dataset",
    "from_avalanche",
    "load_classic_benchmark",
    "require_avalanche",
    "routed_fit",
    "setup_method",
    "to_raw_sample",
]
