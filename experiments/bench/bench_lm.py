"""Language-model benchmarks on SmolLM2-135M (issue "Language models in clpet").

    .venv/bin/python experiments/bench/bench_lm.py [--steps 8] [--repeats 3] [--backbone smollm2] [--memory]

1. LoRA training step: ``clpet.training.fit`` running ``seq-lora`` (LM loss on the answer tokens, backward, AdamW,
   clipping at 1.0) over ``--steps`` batches of 8 lm-offline prompts, against a bare PEFT + PyTorch loop doing the
   same arithmetic on the same PEFT model (collate, forward with labels, backward, ``clip_grad_norm_``,
   ``AdamW.step``), same batches, same process, interleaved repeats. Target: ratio <= 1.1.
2. Rank-classification evaluation of one task's test prompts: clpet's evaluator (``RankClassification`` through
   ``seq-lora``'s ``candidate_logprobs``) against a bare loop doing the same arithmetic (the shared-prefix KV-cache
   pass, ``LanguageModel.answer_logprobs``, over the same chunks). Target: ratio <= 1.1. Also reported: a naive bare
   loop that runs one padded forward per (prompt, label) pair, what the shared prefix saves.
3. ``--memory``: peak RSS of a LoRA step against a full fine-tuning step (``seq-ft``), each in its own process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def build(method: str, backbone: str):
    from clpet.config import compose, rewrite_overrides, validate
    from clpet.registry import SCENARIOS
    from clpet.runner import build_method

    cfg = validate(compose(rewrite_overrides(["scenario=lm-offline", f"method={method}", f"backbone.name={backbone}",
                                              "progress=false", "method.optim.epochs=1"])))
    scenario = SCENARIOS.get("lm-offline").build(cfg.scenario, seed=0, data_root=None)
    torch.manual_seed(0)
    return build_method(cfg, scenario, torch.device("cpu")), scenario


def clpet_steps(method, samples, steps: int) -> float:
    from clpet.training import fit

    cfg = method.cfg.optim
    subset = samples.subset(range(steps * cfg.batch_size))
    tic = time.perf_counter()
    fit(method, subset, cfg, seed=0)
    return time.perf_counter() - tic


def bare_steps(method, samples, steps: int) -> float:
    """Same batches (clpet's seeded shuffle order), same model, no toolkit: collate, forward, backward, clip, AdamW."""
    cfg = method.cfg.optim
    subset = samples.subset(range(steps * cfg.batch_size))
    order = torch.randperm(len(subset), generator=torch.Generator().manual_seed(0)).tolist()
    collate = method.backbone.preprocess_fn(train=True)
    model = method.backbone.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    tic = time.perf_counter()
    for i in range(0, len(order), cfg.batch_size):
        batch = collate([subset.inputs[j] for j in order[i: i + cfg.batch_size]])
        opt.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
    return time.perf_counter() - tic


def clpet_rank(method, exp) -> float:
    from clpet.evaluation.lm import RankClassification

    tic = time.perf_counter()
    RankClassification().score(method, exp, None)
    return time.perf_counter() - tic


def bare_rank(method, exp, naive: bool) -> float:
    bb = method.backbone
    words = exp.task.label_words
    prompts = [p for p, _ in exp.test.inputs]
    step = method.cfg.eval_samples_per_batch
    bb.eval()
    tic = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), step):
            chunk = prompts[i: i + step]
            if not naive:
                bb.answer_logprobs(chunk, words).argmax(1)
                continue
            col = bb.preprocess_fn(train=False)  # one padded forward over every (prompt, label) pair
            pairs = [(p, w) for p in chunk for w in words]
            batch = col(pairs)
            logits = bb.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            logp = logits.float().log_softmax(-1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
            (logp * (labels != -100)).sum(1).view(len(chunk), len(words)).argmax(1)
    return time.perf_counter() - tic


def memory_probe(method: str, backbone: str) -> None:
    """Child process: one training step of ``method``; prints the peak RSS (MiB) of the process."""
    m, scenario = build(method, backbone)
    from clpet.memory import PeakMemory

    with PeakMemory(torch.device("cpu")) as peak:
        clpet_steps(m, scenario[0].train, 1)
    print(json.dumps({"method": method, **peak.record(), "trainable": m.count_trainable_parameters()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backbone", default="smollm2")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.probe:
        return memory_probe(ns.probe, ns.backbone)
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    method, scenario = build("seq-lora", ns.backbone)
    train = scenario[2].train  # language-id: 48 prompts
    clpet_steps(method, train, 1)  # warm-up
    t_bare, t_clpet = [], []
    for _ in range(ns.repeats):
        t_bare.append(bare_steps(method, train, ns.steps))
        t_clpet.append(clpet_steps(method, train, ns.steps))
    print(f"train bare : min {min(t_bare):.2f}s all {[round(t, 2) for t in t_bare]}")
    print(f"train clpet: min {min(t_clpet):.2f}s all {[round(t, 2) for t in t_clpet]}")
    print(f"train ratio clpet/bare (min/min): {min(t_clpet) / min(t_bare):.3f}  (target <= 1.1)")
    exp = scenario[2]
    e_bare, e_clpet, e_naive = [], [], []
    for _ in range(ns.repeats):
        e_bare.append(bare_rank(method, exp, naive=False))
        e_clpet.append(clpet_rank(method, exp))
        e_naive.append(bare_rank(method, exp, naive=True))
    print(f"rank bare (shared prefix): min {min(e_bare):.2f}s; clpet: min {min(e_clpet):.2f}s; "
          f"naive pairs: min {min(e_naive):.2f}s ({len(exp.test)} prompts x {len(exp.task.label_words)} labels)")
    print(f"rank ratio clpet/bare (min/min): {min(e_clpet) / min(e_bare):.3f}  (target <= 1.1); "
          f"naive/shared prefix: {min(e_naive) / min(e_bare):.2f}")
    if ns.memory:
        for m in ("seq-lora", "seq-ft"):
            out = subprocess.run([sys.executable, __file__, "--probe", m, "--backbone", ns.backbone],
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            print("memory", out)


if __name__ == "__main__":
    main()
