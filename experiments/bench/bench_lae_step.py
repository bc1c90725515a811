"""LAE training-step overhead and ensemble evaluation cost (issue "PET library, LAE and ADAM/APER").

    .venv/bin/python experiments/bench/bench_lae_step.py [--steps 20] [--repeats 3] [--backbone minilm] [--pet adapter]

1. Training: ``clpet.training.fit`` running LAE (forward with the online PETs, cross-entropy on the current
   classes, backward, Adam step, EMA of the online PETs into the offline ones after every step) over ``--steps``
   batches of 24 WordNet texts, against a bare loop doing the same arithmetic on the same PET-equipped backbone
   and head (tokenise the batch, forward, loss, backward, ``Adam.step``, ``torch._foreach_lerp_`` for the EMA),
   same batches, same process, interleaved repeats. Target: ratio <= 1.3.
2. Evaluation: LAE's ensemble prediction (online and offline passes, max of softmaxes) against one pass (online).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def build(backbone: str, pet: str):
    from clpet.config import compose, rewrite_overrides, validate
    from clpet.context import RunContext
    from clpet.registry import BACKBONES, METHODS, SCENARIOS

    cfg = validate(compose(rewrite_overrides(["scenario=wordnet", "method=lae", f"method.pet={pet}",
                                              f"backbone.name={backbone}", "method.optim.epochs=1"])))
    scenario = SCENARIOS.get("wordnet").build(cfg.scenario, seed=0, data_root=None)
    bb = BACKBONES.get(cfg.backbone.name).from_config(cfg.backbone)
    method = METHODS.get("lae")(cfg.method)
    torch.manual_seed(0)
    method.setup(bb, scenario, RunContext(progress=False))
    # the state of experience 2: an offline set exists and is EMA-updated after every step
    method.pets.copy_set("online", "offline")
    method.pets.freeze("offline")
    method.head.grow(scenario[0].n_classes)
    method.n_old, method.n_seen, method.experience = 0, method.head.out_features, 1
    method.cfg.num_freeze_epochs = 0  # time full steps (PETs and head), not the cheaper calibration epochs
    return method, scenario


def toolkit_steps(method, samples, steps: int) -> float:
    from clpet.training import fit

    cfg = method.cfg.optim
    cfg.epochs, cfg.drop_last = 1, True
    subset = samples.subset(range(steps * cfg.batch_size))
    tic = time.perf_counter()
    fit(method, subset, cfg, seed=0)
    return time.perf_counter() - tic


def bare_lae_setup(method):
    """The online PET set trainable, a plain Adam over what trains, and the online/offline tensors for the EMA."""
    bb, head, pets = method.backbone, method.head, method.pets
    pets.set_active("online")
    pets.unfreeze("online")
    params = [p for p in list(bb.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=method.cfg.optim.lr)
    online = list(pets.state_dict("online").values())
    offline = list(pets.state_dict("offline").values())
    return bb, head, pets, opt, online, offline


def bare_steps(method, samples, steps: int) -> float:
    """The same arithmetic without the toolkit: tokenise, forward, CE, backward, Adam, EMA by _foreach_lerp_."""
    bb, head, pets, opt, online, offline = bare_lae_setup(method)
    tok = bb.preprocess_fn(train=True)
    bs = method.cfg.optim.batch_size
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(steps * bs, generator=gen).tolist()
    method.train()
    tic = time.perf_counter()
    for s in range(steps):
        idx = order[s * bs:(s + 1) * bs]
        batch = tok([samples.inputs[i] for i in idx])
        targets = torch.as_tensor(samples.targets[idx])
        logits = head(bb.features(batch).float())
        loss = F.cross_entropy(logits, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(offline, online, 1 - method.cfg.ema_decay)
    method.eval()
    return time.perf_counter() - tic


def eval_time(method, samples, mode: str) -> float:
    method.mode = mode
    tic = time.perf_counter()
    method.predict_set(samples)
    method.mode = "ensemble"
    return time.perf_counter() - tic


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--pet", default="adapter")
    ns = ap.parse_args()
    method, scenario = build(ns.backbone, ns.pet)
    train = scenario[0].train
    # targets of the first experience are 0..n-1: the current-task loss equals plain CE here
    while len(train) < ns.steps * method.cfg.optim.batch_size:
        from clpet.scenarios.base import SampleSet

        train = SampleSet.concat([train, train])
    bare, tool = [], []
    for _ in range(ns.repeats):
        bare.append(bare_steps(method, train, ns.steps))
        tool.append(toolkit_steps(method, train, ns.steps))
    test = scenario[0].test
    one, two = [], []
    for _ in range(ns.repeats):
        one.append(eval_time(method, test, "online"))
        two.append(eval_time(method, test, "ensemble"))
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"LAE-{ns.pet} on {ns.backbone}, {ns.steps} steps of batch {method.cfg.optim.batch_size}, "
          f"trainable {method.count_trainable_parameters()} parameters")
    print(f"bare loop  : min {min(bare):.2f}s  all {[round(x, 2) for x in bare]}")
    print(f"clpet fit  : min {min(tool):.2f}s  all {[round(x, 2) for x in tool]}")
    print(f"training-step ratio clpet/bare (min/min): {min(tool) / min(bare):.3f}  (target <= 1.3)")
    print(f"eval {len(test)} texts: one pass min {min(one):.2f}s, ensemble min {min(two):.2f}s, "
          f"ratio {min(two) / min(one):.2f}")


if __name__ == "__main__":
    main()
