"""Run under ``torchrun --nproc_per_node=2`` by tests/test_distributed.py: the mechanisms of clpet.distributed on
each rank, results written to ``<out>/rank<r>.json``.

1. Gradients: for global batches of 7 and of 1 sample (one rank then holds none), each rank's weighted mean loss
   plus ``average_gradients`` must give the gradient of the whole batch's mean loss, computed here in full.
2. Frozen features: ``FeatureCache.features`` over 37 samples computes each sample once across the ranks
   (``computed`` per rank) and every rank ends with the features of all of them, equal to a plain forward.
3. A pass with fewer batches than ranks draws the global RNG alike on every rank.
4. Parameters without gradients stay without (no zeros for the optimizer to step on).
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from clpet import distributed
from clpet.backbones import build_backbone
from clpet.context import RunContext
from clpet.features import FeatureCache
from clpet.scenarios.base import SampleSet


def main(out: Path) -> None:
    distributed.init_from_env(torch.device("cpu"))
    torch.manual_seed(0)
    x, y = torch.randn(7, 3), torch.randint(0, 2, (7,))
    model = torch.nn.Linear(3, 2)
    gradient_errors = []
    for batch in (list(range(7)), [4]):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        full = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        mine, weight = distributed.shard_batch(batch)
        (torch.nn.functional.cross_entropy(model(x[mine]), y[mine]) * weight).backward()
        distributed.average_gradients(model.parameters())
        gradient_errors.append(max(float((p.grad - g).abs().max()) for p, g in zip(model.parameters(), full)))

    backbone = build_backbone({"name": "tiny-mlp", "in_dim": 4}).eval()
    rng = np.random.RandomState(0)
    samples = SampleSet([rng.randn(4).astype(np.float32) for _ in range(37)], np.zeros(37, dtype=np.int64),
                        np.arange(37), "vector")
    cache = FeatureCache()
    feats = cache.features(backbone, samples, RunContext(eval_batch_size=8, progress=False))
    with torch.no_grad():
        plain = backbone.features(torch.from_numpy(np.stack(samples.inputs)))
    # 3. a pass with fewer batches than ranks (rank 1 has none) leaves the global RNG where it leaves rank 0's
    torch.manual_seed(1)
    distributed.map_loader(samples.subset(np.arange(5)), backbone.preprocess_fn(train=False), 8, lambda b: b.shape[0])
    after_pass = float(torch.rand(1))
    # 4. a parameter without a gradient on every rank keeps None (a frozen PET is not stepped)
    frozen = torch.nn.Linear(2, 2)
    frozen.weight.grad = None
    distributed.average_gradients(frozen.parameters())
    result = {"world": distributed.world_size(), "gradient_errors": gradient_errors, "computed": cache.computed,
              "rows": int(feats.shape[0]), "feature_error": float((feats - plain).abs().max()),
              "rng_after_pass": after_pass, "none_kept": frozen.weight.grad is None and frozen.bias.grad is None}
    (out / f"rank{distributed.rank()}.json").write_text(json.dumps(result))
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
