"""Fidelity harness: clpet's ``simplecil`` and ``adam`` against zhoudw-zdw/RevisitingCIL's own SimpleCIL and
APER-Adapter code, on the same images, the same initial weights and the same class order.

    git clone https://github.com/zhoudw-zdw/RevisitingCIL   # on a machine that reaches GitHub; copy it here
    pip install --target /tmp/refsite easydict               # the reference's one extra import (APER-Adapter)
    .venv/bin/python experiments/fidelity/revisiting_cil.py --reference-repo RevisitingCIL \\
        --reference-site /tmp/refsite [--methods simplecil,adam] [--seeds 1993]

What both sides get:
- **Images**: a small tree in the reference's ImageNet-R layout (``train/<wnid>/*.jpg``, ``test/<wnid>/*.jpg``),
  written by this script from OpenClipart (Debian ``openclipart-png``): the first ``--classes`` topic folders of
  clpet's ``clipart`` scenario with enough images, each PNG flattened on white and saved as JPEG, so both read the
  same bytes. The reference reads it through its own ``iImageNetR`` (its transforms, ``ImageFolder`` labels); clpet
  through ``scenario=imagenet-r split=aper`` with the APER paper preset (no normalisation, Resize 256 bicubic +
  CenterCrop 224 at test, RandomResizedCrop(0.05, 1) bilinear + flip at train, fp32).
- **Weights**: one ViT-B/16 file (timm ``vit_base_patch16_224``, random init with ``--weights-seed``: no
  pre-trained ViT can be downloaded here) that the reference loads in place of its ``timm.create_model(...,
  pretrained=True)`` and clpet through ``backbone.weights``. Pass ``--weights FILE`` to use a real checkpoint.
- **Order**: the reference's ``np.random.seed(seed)`` permutation (``shuffle: true``) and clpet's ``scenario.order``
  of the same seed; B0Inc``--increment``.

What is patched in the reference process (nothing of its arithmetic): ``.cuda()`` is the identity when no GPU is
present, ``num_workers`` 0, ``timm.create_model(..., pretrained=True)`` loads the weights file, and
``iImageNetR.download_data`` reads the tree. Its ``_set_random`` seeds torch with 1 whatever the seed; this
harness seeds it with the run's seed so that several seeds give independent runs.

What is compared: the accuracy matrix R[t, j] (accuracy on task j's test classes after task t) as integer counts
of correct test images. SimpleCIL must agree exactly (it trains nothing: features, prototypes and cosine
predictions are deterministic). APER-Adapter trains an adapter with random init, random crops and a shuffled
loader, whose random streams differ between the two codes, so the comparison there is of the mean over seeds, with
the seed-to-seed spread beside it (issue target: within 0.5 points of A_last).

Writes ``--out`` (default ``experiments/fidelity/revisiting_cil.json``) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REFERENCE_NAMES = {"simplecil": "simplecil", "adam": "aper_adapter"}
REFERENCE_CONFIGS = {"simplecil": "exps/simplecil/imagenetr_5_5_vit-b_simplecil.json",
                     "adam": "exps/aper_adapter/imagenetr_5_5_vit-b_adapter.json"}


# ---------------------------------------------------------------------------------------------------- shared inputs
def build_tree(out: str, classes: int, train_per_class: int, test_per_class: int) -> List[str]:
    """The APER-layout tree from OpenClipart; returns the class folders' names (fake wnids, sorted = label order)."""
    from PIL import Image

    from clpet.scenarios.clipart import DEFAULT_EXCLUDE, DEFAULT_ROOT
    from clpet.scenarios.images import list_images

    marker = os.path.join(out, "DONE")
    if os.path.exists(marker):
        return sorted(os.listdir(os.path.join(out, "train")))
    need = train_per_class + test_per_class
    topics = []
    for folder, _dirs, _files in sorted(os.walk(DEFAULT_ROOT)):
        rel = os.path.relpath(folder, DEFAULT_ROOT)
        if any(rel == ex or rel.startswith(ex + "/") for ex in DEFAULT_EXCLUDE):
            continue
        pngs = sorted(p for p in list_images(folder) if p.lower().endswith(".png") and not os.path.islink(p)
                      and os.path.dirname(p) == folder)
        if len(pngs) >= need:
            topics.append((rel, pngs[:need]))
        if len(topics) == classes:
            break
    if len(topics) < classes:
        raise SystemExit(f"only {len(topics)} OpenClipart folders hold {need} PNGs; lower --classes or the counts")
    names = []
    for k, (rel, pngs) in enumerate(topics):
        wnid = f"n{k:08d}"
        names.append(wnid)
        for split, part in (("train", pngs[:train_per_class]), ("test", pngs[train_per_class:])):
            os.makedirs(os.path.join(out, split, wnid), exist_ok=True)
            for i, src in enumerate(part):
                with Image.open(src) as im:
                    im = im.convert("RGBA")
                    flat = Image.new("RGB", im.size, (255, 255, 255))
                    flat.paste(im, mask=im.split()[3])
                    flat.save(os.path.join(out, split, wnid, f"{i:04d}.jpg"), quality=95)
        print(f"  {wnid} = {rel}", flush=True)
    with open(marker, "w") as f:
        f.write("\n".join(f"n{k:08d} {rel}" for k, (rel, _) in enumerate(topics)) + "\n")
    return names


def make_weights(path: str, seed: int) -> None:
    import timm
    import torch
    from safetensors.torch import save

    from clpet.results import atomic_write_bytes

    if os.path.exists(path):
        return
    torch.manual_seed(seed)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in model.state_dict().items()}))


def task_ranges(n_classes: int, increment: int) -> List[range]:
    edges = list(range(0, n_classes, increment)) + [n_classes]
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:])]


# --------------------------------------------------------------------------------------------------- reference side
def reference_side(a: argparse.Namespace) -> None:
    """Runs inside the reference checkout (cwd); writes {correct[t][j], count[t][j]} to a.result."""
    sys.path.insert(0, os.getcwd())
    if a.reference_site:
        sys.path.insert(0, a.reference_site)
    import numpy as np
    import timm
    import torch
    from safetensors.torch import load_file
    from torchvision import datasets

    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kw: self  # the reference calls .cuda() unconditionally
        torch.nn.Module.cuda = lambda self, *args, **kw: self
    create_model = timm.create_model

    def create_from_file(name: str, pretrained: bool = False, **kw: Any):
        if pretrained and name.startswith("vit_base_patch16_224"):
            model = create_model("vit_base_patch16_224", pretrained=False, **kw)
            model.load_state_dict(load_file(a.weights), strict=True)
            return model
        return create_model(name, pretrained=pretrained, **kw)

    timm.create_model = create_from_file

    import utils.data as ref_data
    import utils.data_manager as ref_dm
    from utils import factory
    from utils.data import split_images_labels

    class Tree(ref_data.iImageNetR):
        def download_data(self) -> None:
            self.train_data, self.train_targets = split_images_labels(
                datasets.ImageFolder(os.path.join(a.tree, "train")).imgs)
            self.test_data, self.test_targets = split_images_labels(
                datasets.ImageFolder(os.path.join(a.tree, "test")).imgs)

    ref_dm._get_idata = lambda name: Tree()
    with open(REFERENCE_CONFIGS[a.method]) as f:
        args = json.load(f)
    args.update(seed=a.seed, device=[torch.device("cuda:0" if torch.cuda.is_available() else "cpu")],
                init_cls=a.increment, increment=a.increment)
    if a.epochs is not None:
        args["tuned_epoch"] = a.epochs
    torch.manual_seed(a.seed)  # trainer._set_random, with the run's seed instead of its constant 1
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    dm = ref_dm.DataManager(args["dataset"], args["shuffle"], args["seed"], args["init_cls"], args["increment"])
    model = factory.get_model(args["model_name"], args)
    sys.modules[type(model).__module__].num_workers = 0
    ranges = task_ranges(dm.get_total_classnum(), a.increment)
    correct, count = [], []
    for t in range(dm.nb_tasks):
        tic = time.perf_counter()
        model.incremental_train(dm)
        y_pred, y_true = model._eval_cnn(model.test_loader)
        model.after_task()
        top1 = y_pred[:, 0]
        correct.append([int(((top1 == y_true) & np.isin(y_true, list(r))).sum()) for r in ranges[: t + 1]])
        count.append([int(np.isin(y_true, list(r)).sum()) for r in ranges[: t + 1]])
        print(f"  reference {a.method} seed {a.seed} task {t}: {correct[-1]} of {count[-1]} "
              f"({time.perf_counter() - tic:.0f} s)", flush=True)
    with open(a.result, "w") as f:
        json.dump({"correct": correct, "count": count, "class_order": list(map(int, dm._class_order))}, f)


# ------------------------------------------------------------------------------------------------------- clpet side
def clpet_side(a: argparse.Namespace, method: str, seed: int, out_dir: str) -> Dict[str, Any]:
    cmd = [os.path.join(ROOT, ".venv", "bin", "clpet"), "run", "scenario=imagenet-r", f"method={method}",
           f"data_root={a.tree}", f"scenario.increment={a.increment}", f"backbone.weights={a.weights}",
           f"seed={seed}", f"scenario.order=seed{seed}", f"out_dir={out_dir}", "plots=false"]
    if method == "adam" and a.epochs is not None:
        cmd.append(f"method.optim.epochs={a.epochs}")
    shutil.rmtree(out_dir, ignore_errors=True)  # a run left by an earlier invocation of the harness
    subprocess.run(cmd, check=True, cwd=ROOT)
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return json.load(f)


def reference_run(a: argparse.Namespace, method: str, seed: int, result: str) -> Dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--as-reference", "--method", method, "--seed", str(seed),
           "--tree", a.tree, "--weights", a.weights, "--increment", str(a.increment), "--result", result]
    if a.epochs is not None:
        cmd += ["--epochs", str(a.epochs)]
    if a.reference_site:
        cmd += ["--reference-site", a.reference_site]
    subprocess.run(cmd, check=True, cwd=a.reference_repo)
    with open(result) as f:
        return json.load(f)


def clpet_correct(metrics: Dict[str, Any], count: List[List[int]]) -> List[List[int]]:
    """R[t][j] (percent) back to integer correct counts with the reference's per-task test counts."""
    rows = metrics["acc_matrix"]
    return [[round(rows[t][j] * count[t][j] / 100.0) for j in range(t + 1)] for t in range(len(count))]


def a_last_avg(correct: List[List[int]], count: List[List[int]]) -> tuple:
    """A_t = accuracy on all seen test images after task t (the reference's top1); (A_last, mean over t)."""
    acc = [100.0 * sum(c) / sum(n) for c, n in zip(correct, count)]
    return acc[-1], sum(acc) / len(acc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference-repo", help="a checkout of zhoudw-zdw/RevisitingCIL")
    p.add_argument("--reference-site", default=None, help="a folder with easydict (pip install --target)")
    p.add_argument("--methods", default="simplecil,adam")
    p.add_argument("--seeds", default="1993")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--increment", type=int, default=5)
    p.add_argument("--train-per-class", type=int, default=16)
    p.add_argument("--test-per-class", type=int, default=20)
    p.add_argument("--epochs", type=int, default=None, help="APER's tuned_epoch (reference 20); both sides")
    p.add_argument("--weights", default=None, help="a ViT-B/16 .safetensors file (default: random init, seeded)")
    p.add_argument("--weights-seed", type=int, default=0)
    p.add_argument("--workdir", default="/tmp/clpet_fidelity_rcil")
    p.add_argument("--out", default=os.path.join(HERE, "revisiting_cil.json"))
    # the reference process (internal)
    p.add_argument("--as-reference", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--tree", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.as_reference:
        return reference_side(a)
    if not a.reference_repo or not os.path.isfile(os.path.join(a.reference_repo, "utils", "inc_net.py")):
        p.error("--reference-repo must be a checkout of zhoudw-zdw/RevisitingCIL (utils/inc_net.py not found)")
    a.reference_repo = os.path.abspath(a.reference_repo)
    sys.path.insert(0, ROOT)
    os.makedirs(a.workdir, exist_ok=True)
    a.tree = os.path.join(a.workdir, "imagenet-r")
    print(f"# images: {a.tree}", flush=True)
    build_tree(a.tree, a.classes, a.train_per_class, a.test_per_class)
    if a.weights is None:
        a.weights = os.path.join(a.workdir, f"vit_b16_random_seed{a.weights_seed}.safetensors")
        make_weights(a.weights, a.weights_seed)
    a.weights = os.path.abspath(a.weights)
    commit = subprocess.run(["git", "-C", a.reference_repo, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    ours = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    runs = []
    for method in a.methods.split(","):
        for seed in [int(s) for s in a.seeds.split(",")]:
            tag = f"{method}_s{seed}"
            ref = reference_run(a, method, seed, os.path.join(a.workdir, f"ref_{tag}.json"))
            metrics = clpet_side(a, method, seed, os.path.join(a.workdir, f"clpet_{tag}"))
            mine = clpet_correct(metrics, ref["count"])
            runs.append({"method": method, "seed": seed, "count": ref["count"], "reference": ref["correct"],
                         "clpet": mine, "reference_A": a_last_avg(ref["correct"], ref["count"]),
                         "clpet_A": a_last_avg(mine, ref["count"]), "class_order": ref["class_order"],
                         "clpet_class_order": metrics.get("class_order")})
            print(f"  {tag}: reference {ref['correct']}, clpet {mine}", flush=True)
    record = {"reference_commit": commit, "clpet_commit": ours, "machine": f"{platform.platform()}, "
              f"{os.cpu_count()} cores, python {platform.python_version()}", "date": time.strftime("%Y-%m-%d"),
              "settings": {k: getattr(a, k) for k in ("classes", "increment", "train_per_class", "test_per_class",
                                                     "epochs", "weights_seed")}, "runs": runs}
    from clpet.results import atomic_write_text

    atomic_write_text(a.out, json.dumps(record, indent=1))
    print_table(record)


def print_table(record: Dict[str, Any]) -> None:
    print(f"\n# RevisitingCIL {record['reference_commit'][:7]} vs clpet {record['clpet_commit']}; "
          f"{record['machine']}")
    print("| method | seed | R[t][j] correct (reference) | R[t][j] correct (clpet) | A_last ref / clpet | "
          "A_avg ref / clpet | equal |")
    print("|---|---|---|---|---|---|---|")
    by_method: Dict[str, List[Dict[str, Any]]] = {}
    for r in record["runs"]:
        by_method.setdefault(r["method"], []).append(r)
        print(f"| {r['method']} | {r['seed']} | {r['reference']} | {r['clpet']} | "
              f"{r['reference_A'][0]:.2f} / {r['clpet_A'][0]:.2f} | {r['reference_A'][1]:.2f} / "
              f"{r['clpet_A'][1]:.2f} | {'yes' if r['reference'] == r['clpet'] else 'no'} |")
    for method, rs in by_method.items():
        import statistics as st
        ref = [r["reference_A"][0] for r in rs]
        mine = [r["clpet_A"][0] for r in rs]
        spread = f", seed std {st.stdev(ref):.2f} / {st.stdev(mine):.2f}" if len(rs) > 1 else ""
        print(f"{method}: mean A_last reference {st.mean(ref):.2f}, clpet {st.mean(mine):.2f} "
              f"(difference {st.mean(mine) - st.mean(ref):+.2f}{spread}); identical matrices in "
              f"{sum(r['reference'] == r['clpet'] for r in rs)} of {len(rs)} runs")


if __name__ == "__main__":
    main()
