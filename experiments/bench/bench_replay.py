"""Replay-method benchmarks (issue "ConPET and I-LoRA").

    .venv/bin/python experiments/bench/bench_replay.py [--steps 6] [--repeats 2] [--backbone smollm2]

I-LoRA's training step against a plain LoRA step (``seq-lora``), on SmolLM2-135M with lm-offline prompts, the same
batches, interleaved repeats in one process. I-LoRA's step is timed from the second task on, where it is the
method: a replayed batch of the same size from a full buffer, the fast forward with every hidden state, the slow
forward without gradient, the consistency term, and the interpolation after the step. Reported: seconds per step
and the ratio (no target: the method does about three forwards where LoRA does one).

ConPET's cost per task against the task index comes from the runs of ``experiments/conpet_wordnet.yaml``
(``experiments/plot_cost.py``), not from here.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from bench_lm import build  # noqa: E402  (the same method construction as the LM benchmark)


def timed_steps(method, samples, steps: int) -> float:
    from clpet.training import fit

    cfg = method.cfg.optim
    subset = samples.subset(range(steps * cfg.batch_size))
    tic = time.perf_counter()
    fit(method, subset, cfg, seed=0)
    return (time.perf_counter() - tic) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backbone", default="smollm2")
    args = ap.parse_args()

    lora, scenario = build("seq-lora", args.backbone)
    ilora, _ = build("ilora", args.backbone)
    first, second = scenario[0], scenario[3]
    ilora.learn_experience(first)  # fills the reservoir; from here on each step replays
    ilora.scenario.advance(second.index)
    ilora._replay_on = True
    samples = second.train
    times = {"seq-lora": [], "ilora": []}
    for _ in range(args.repeats):
        times["seq-lora"].append(timed_steps(lora, samples, args.steps))
        times["ilora"].append(timed_steps(ilora, samples, args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"backbone {args.backbone}, batch {lora.cfg.optim.batch_size}, {args.steps} steps x {args.repeats} repeats, "
          f"buffer {len(ilora.buffer)} samples")
    print("| step | s / step (median) | ratio to seq-lora |\n|---|---|---|")
    for k in ("seq-lora", "ilora"):
        print(f"| {k} | {med[k]:.3f} | {med[k] / med['seq-lora']:.2f} |")


if __name__ == "__main__":
    main()
