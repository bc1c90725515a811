"""The GPU path against a bare PyTorch loop, in fp32 and bf16 (issue "Reproduce the papers by default", item 7).

    .venv/bin/python experiments/bench/bench_gpu.py                   # CUDA when present, else the CPU
    .venv/bin/python experiments/bench/bench_gpu.py --device cpu --precisions fp32 --steps 4

1. **SimpleCIL feature extraction**: ``clpet run scenario=imagenet-r split=aper method=simplecil`` (its paper preset:
   ViT-B/16, Resize 256 bicubic + CenterCrop 224, no normalisation) timed whole (stream, features of every train
   and test image once, class means, cosine predictions after each experience, run folder), against a bare loop:
   a ``torch.utils.data.DataLoader`` over the same files with the same torchvision transform, workers and batch
   size, the forward pass under the same autocast, class means and cosine predictions. Throughput in images/s;
   target clpet >= 0.8x the bare loop.
2. **LAE training steps** (``method=lae``, adapter PET, online and offline sets, EMA after every step):
   ``clpet.training.fit`` over ``--steps`` batches of 24 images, against a bare loop over a DataLoader with the same
   preprocessing and workers: forward under autocast, cross-entropy, backward, Adam, ``torch._foreach_lerp_`` for
   the EMA. Seconds per step; target clpet <= 1.3x the bare step.

Data: on CUDA a paper-sized synthetic set (``--images`` JPEGs of 500x375 pixels, ImageNet-R's typical size, in
``--classes`` folders, 80/20 train/test), made once under ``--workdir``; on the CPU the offline OpenClipart tree of
``experiments/fidelity/revisiting_cil.py`` (10 classes, 360 images). Weights: a seeded random ViT-B/16 file
(throughput does not depend on the values; pass ``--weights`` for a real checkpoint). Prints one table; paste it
into ``experiments/bench/RESULTS.md`` with the machine line.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from multiprocessing import Pool
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "experiments", "fidelity"))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench_lae_step import bare_lae_setup  # noqa: E402


def _synthetic_image(job: Tuple[str, int]) -> None:
    from PIL import Image

    path, seed = job
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(3,), dtype=np.uint8)
    pixels = np.clip(base + rng.normal(0, 40, size=(375, 500, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def synthetic_tree(root: str, images: int, classes: int) -> str:
    """``root/train/<wnid>/*.jpg`` and ``root/test/<wnid>/*.jpg``, 80/20, made in parallel once."""
    marker = os.path.join(root, f"DONE_{images}_{classes}")
    if os.path.exists(marker):
        return root
    jobs = []
    per_class = images // classes
    for c in range(classes):
        for split, lo, hi in (("train", 0, int(per_class * 0.8)), ("test", int(per_class * 0.8), per_class)):
            folder = os.path.join(root, split, f"n{c:08d}")
            os.makedirs(folder, exist_ok=True)
            jobs += [(os.path.join(folder, f"{i:05d}.jpg"), c * per_class + i) for i in range(lo, hi)]
    with Pool(os.cpu_count()) as pool:
        pool.map(_synthetic_image, jobs, chunksize=64)
    open(marker, "w").close()
    return root


def overrides(ns: argparse.Namespace, method: str, precision: str, out_dir: str) -> List[str]:
    return ["scenario=imagenet-r", f"method={method}", f"data_root={ns.tree}", f"backbone.weights={ns.weights}",
            f"scenario.increment={ns.increment}", f"device={ns.device}", f"precision={precision}",
            f"num_workers={ns.workers}", f"eval_batch_size={ns.batch}", f"out_dir={out_dir}", "plots=false",
            "checkpoint=false", "progress=false"]


def resolved(ns: argparse.Namespace, method: str, precision: str, out_dir: str, extra: Sequence[str] = ()):
    from clpet.config import compose, rewrite_overrides, validate

    return validate(compose(rewrite_overrides(overrides(ns, method, precision, out_dir) + list(extra))))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    from clpet.context import RunContext

    return RunContext(device=device, precision=precision).autocast()


# ------------------------------------------------------------------------------------------------------- SimpleCIL
def clpet_simplecil(ns: argparse.Namespace, precision: str) -> float:
    from clpet.runner import run

    with tempfile.TemporaryDirectory() as out:
        cfg = resolved(ns, "simplecil", precision, os.path.join(out, "run"))
        sync(ns.dev)
        tic = time.perf_counter()
        run(cfg)
        sync(ns.dev)
        return time.perf_counter() - tic


class _Files(torch.utils.data.Dataset):
    def __init__(self, items: List[Tuple[str, int]], transform: Any) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from PIL import Image

        path, y = self.items[i]
        with Image.open(path) as im:
            return self.transform(im.convert("RGB")), y


def folder_items(root: str) -> List[Tuple[str, int]]:
    names = sorted(os.listdir(root))
    return [(os.path.join(root, n, f), y) for y, n in enumerate(names) for f in sorted(os.listdir(os.path.join(root, n)))]


def bare_model(ns: argparse.Namespace) -> torch.nn.Module:
    import timm
    from safetensors.torch import load_file

    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    model.load_state_dict(load_file(ns.weights))
    return model.to(ns.dev).eval()


def bare_simplecil(ns: argparse.Namespace, precision: str) -> float:
    """Features of every train and test image once, class means, cosine predictions per experience."""
    from torchvision import transforms as T

    tic = time.perf_counter()
    model = bare_model(ns)
    tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor()])

    @torch.inference_mode()
    def embed(items):
        loader = torch.utils.data.DataLoader(_Files(items, tf), batch_size=ns.batch, num_workers=ns.workers,
                                             pin_memory=ns.dev.type == "cuda")
        out = []
        for x, _ in loader:
            with autocast(ns.dev, precision):
                out.append(model(x.to(ns.dev, non_blocking=True)).float())
        return torch.cat(out)

    train, test = folder_items(os.path.join(ns.tree, "train")), folder_items(os.path.join(ns.tree, "test"))
    n_classes = len({y for _, y in train})
    protos, test_feats, test_y = [], [], []
    for lo in range(0, n_classes, ns.increment):
        classes = range(lo, min(lo + ns.increment, n_classes))
        tr = [it for it in train if it[1] in classes]
        f = embed(tr)
        y = torch.tensor([t for _, t in tr], device=ns.dev)
        protos += [f[y == c].mean(0) for c in classes]
        te = [it for it in test if it[1] in classes]
        test_feats.append(embed(te))
        test_y.append(torch.tensor([t for _, t in te], device=ns.dev))
        P = F.normalize(torch.stack(protos), dim=1)
        preds = (F.normalize(torch.cat(test_feats), dim=1) @ P.t()).argmax(1)
        int((preds == torch.cat(test_y)).sum())
    sync(ns.dev)
    return time.perf_counter() - tic


# ------------------------------------------------------------------------------------------------------------- LAE
def lae_method(ns: argparse.Namespace, precision: str):
    from clpet.context import RunContext
    from clpet.registry import BACKBONES, METHODS, SCENARIOS

    cfg = resolved(ns, "lae", precision, os.path.join(ns.workdir, "unused"),
                   ["scenario.split=aper", "method.pet=adapter", "method.optim.epochs=1",
                    f"method.optim.batch_size={ns.lae_batch}"])
    scenario = SCENARIOS.get("imagenet-r").build(cfg.scenario, seed=0, data_root=ns.tree)
    bb = BACKBONES.get(cfg.backbone.name).from_config(cfg.backbone)
    method = METHODS.get("lae")(cfg.method)
    torch.manual_seed(0)
    ctx = RunContext(device=ns.dev, precision=precision, num_workers=ns.workers, progress=False)
    method.setup(bb, scenario, ctx)
    method.head.grow(scenario[0].n_classes)
    method.pets.copy_set("online", "offline")  # the state of experience 2: the offline set is EMA-updated
    method.pets.freeze("offline")
    method.n_old, method.n_seen, method.experience = 0, method.head.out_features, 1
    method.cfg.num_freeze_epochs = 0  # full steps (PETs and head)
    method.to(ns.dev)
    train = scenario[0].train
    from clpet.scenarios.base import SampleSet

    while len(train) < ns.steps * ns.lae_batch:
        train = SampleSet.concat([train, train])
    return method, train.subset(range(ns.steps * ns.lae_batch))


def clpet_lae(method, samples, ns: argparse.Namespace) -> float:
    from clpet.training import fit

    cfg = method.cfg.optim
    cfg.epochs, cfg.drop_last = 1, True
    sync(ns.dev)
    tic = time.perf_counter()
    fit(method, samples, cfg, seed=0)
    sync(ns.dev)
    return (time.perf_counter() - tic) / ns.steps


class _Preprocessed(torch.utils.data.Dataset):
    def __init__(self, samples: Any) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.samples.inputs[i], int(self.samples.targets[i])


class _Collate:
    def __init__(self, preprocess: Any) -> None:
        self.preprocess = preprocess

    def __call__(self, items):
        return self.preprocess([x for x, _ in items]), torch.tensor([y for _, y in items])


def bare_lae(method, samples, ns: argparse.Namespace, precision: str) -> float:
    bb, head, pets, opt, online, offline = bare_lae_setup(method)
    loader = torch.utils.data.DataLoader(_Preprocessed(samples), batch_size=ns.lae_batch, shuffle=True,
                                         num_workers=ns.workers, collate_fn=_Collate(bb.preprocess_fn(train=True)),
                                         pin_memory=ns.dev.type == "cuda", drop_last=True)
    method.train()
    sync(ns.dev)
    tic = time.perf_counter()
    for x, y in loader:
        x, y = x.to(ns.dev, non_blocking=True), y.to(ns.dev, non_blocking=True)
        with autocast(ns.dev, precision):
            logits = head(bb.features(x).float())
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(offline, online, 1 - method.cfg.ema_decay)
    sync(ns.dev)
    method.eval()
    return (time.perf_counter() - tic) / ns.steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precisions", default=None, help="comma list; default fp32,bf16 on CUDA, fp32 on the CPU")
    ap.add_argument("--images", type=int, default=24000, help="synthetic set size on CUDA (ImageNet-R: 30,000)")
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--increment", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128, help="feature-extraction batch (clpet's eval_batch_size)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 8 on CUDA, 0 on CPU)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lae-batch", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "clpet_bench_gpu"))
    ns = ap.parse_args()
    from clpet.context import resolve_device

    ns.dev = resolve_device(ns.device)
    ns.device = str(ns.dev)
    cuda = ns.dev.type == "cuda"
    ns.precisions = (ns.precisions or ("fp32,bf16" if cuda else "fp32")).split(",")
    ns.workers = (8 if cuda else 0) if ns.workers is None else ns.workers
    os.makedirs(ns.workdir, exist_ok=True)
    import revisiting_cil as fidelity

    if cuda:
        ns.tree = synthetic_tree(os.path.join(ns.workdir, "synthetic"), ns.images, ns.classes)
    else:
        ns.tree = os.path.join(ns.workdir, "clipart-aper")
        fidelity.build_tree(ns.tree, 10, 16, 20)
        ns.increment = min(ns.increment, 5)
    if ns.weights is None:
        ns.weights = os.path.join(ns.workdir, "vit_b16_random_seed0.safetensors")
        fidelity.make_weights(ns.weights, 0)
    n_images = sum(len(os.listdir(os.path.join(ns.tree, s, c))) for s in ("train", "test")
                   for c in os.listdir(os.path.join(ns.tree, s)))
    gpu = torch.cuda.get_device_name(ns.dev) if cuda else platform.processor() or platform.machine()
    print(f"machine: {gpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}, device {ns.dev}, "
          f"workers {ns.workers}; {n_images} images in {ns.tree}", flush=True)
    rows = []
    for precision in ns.precisions:
        bare_s, tool_s = [], []
        for _ in range(ns.repeats):  # interleaved, the first pair also warms caches and kernels
            bare_s.append(bare_simplecil(ns, precision))
            tool_s.append(clpet_simplecil(ns, precision))
        ratio = min(bare_s) / min(tool_s)
        rows.append((f"SimpleCIL features ({precision})", f"{n_images / min(bare_s):.1f} img/s",
                     f"{n_images / min(tool_s):.1f} img/s", f"{ratio:.2f}x bare throughput", ">= 0.8x",
                     "yes" if ratio >= 0.8 else "no"))
        print(rows[-1], flush=True)
        method, samples = lae_method(ns, precision)
        bare_t, tool_t = [], []
        for _ in range(ns.repeats):
            bare_t.append(bare_lae(method, samples, ns, precision))
            tool_t.append(clpet_lae(method, samples, ns))
        ratio = min(tool_t) / min(bare_t)
        rows.append((f"LAE-adapter step, batch {ns.lae_batch} ({precision})", f"{min(bare_t) * 1000:.0f} ms",
                     f"{min(tool_t) * 1000:.0f} ms", f"{ratio:.2f}x bare step", "<= 1.3x",
                     "yes" if ratio <= 1.3 else "no"))
        print(rows[-1], flush=True)
        del method
    print("\n| measurement | bare PyTorch | clpet | ratio | target | met |\n|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
