"""Subspace and gradient-method benchmarks (issue "O-LoRA, OSFT and MIGU").

    .venv/bin/python experiments/bench/bench_subspace.py [--steps 4] [--repeats 3] [--backbone smollm2]

On SmolLM2-135M with lm-offline prompts, the same batches for every method, interleaved repeats in one process:

* MIGU's step (forward hooks accumulating each linear layer's output magnitudes, the per-layer quantile masks before
  the update) against a plain full fine-tuning step (``seq-ft``): target <= 1.15x.
* OSFT's step (PEFT's OSF layers: a factored low-rank delta in each forward, projected gradients of the factors,
  clpet's re-projection after the step) against the same plain full fine-tuning step (no target), and the per-task
  SVD time (wrapping every target under PEFT's OSF tuner at the second task's frozen rank, merging back).

Both are timed from the second task on, where the method differs from its base (MIGU masks, OSFT has a frozen rank).
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
from bench_replay import timed_steps  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backbone", default="smollm2")
    args = ap.parse_args()

    seq_ft, scenario = build("seq-ft", args.backbone)
    migu, _ = build("migu", args.backbone)
    osft, _ = build("osft", args.backbone)
    data = scenario[3]  # wordnet-nouns: 48 prompts, enough for the timed batches
    for m in (seq_ft, migu, osft):
        m.scenario.advance(data.index)
    migu.task = 1  # masking on, as from the second task
    svd_times = []
    tic = time.perf_counter()
    peft_model = osft.wrap(osft.frozen_ranks(1))  # the second task's frozen rank (1/5 of each target's directions)
    svd_times.append(time.perf_counter() - tic)
    object.__setattr__(osft, "_peft", peft_model)
    samples = data.train
    times = {"seq-ft": [], "migu": [], "osft": []}
    for _ in range(args.repeats):
        times["seq-ft"].append(timed_steps(seq_ft, samples, args.steps))
        times["migu"].append(timed_steps(migu, samples, args.steps))
        times["osft"].append(timed_steps(osft, samples, args.steps))
    tic = time.perf_counter()
    object.__setattr__(osft, "_peft", None)
    osft.backbone.model = peft_model.merge_and_unload()
    merge_s = time.perf_counter() - tic
    for _ in range(2):  # the SVD again on the merged weights (what each later task pays)
        tic = time.perf_counter()
        again = osft.wrap(osft.frozen_ranks(2))
        svd_times.append(time.perf_counter() - tic)
        osft.backbone.model = again.merge_and_unload()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"backbone {args.backbone}, batch {seq_ft.cfg.optim.batch_size}, {args.steps} steps x {args.repeats} repeats, "
          f"{len(osft.target_names)} OSFT targets, {migu.diagnostics(None).get('migu_masked_fraction')} of MIGU's rows masked")
    print("| step | s / step (median) | ratio to seq-ft | all repeats |\n|---|---|---|---|")
    for k in ("seq-ft", "migu", "osft"):
        print(f"| {k} | {med[k]:.3f} | {med[k] / med['seq-ft']:.2f} | {', '.join(f'{t:.3f}' for t in times[k])} |")
    print(f"OSFT per-task SVD (wrap every target): {', '.join(f'{t:.2f}' for t in svd_times)} s; merge {merge_s:.2f} s")
    print(f"MIGU ratio {med['migu'] / med['seq-ft']:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
