"""Provenance of a run: what produced its numbers, written to ``provenance.json`` in the run folder.

One record per start of the run (the first start, then every resume), each holding: the command line, the code (clpet's version
and the git commit of its source tree, ``+dirty`` with uncommitted changes to tracked files), the library versions,
the machine (CPU, GPU, Python), the run settings that change numbers (seed, device, precision, world size, global
batch = batch size x gradient accumulation x world size), the data (scenario fingerprint, class order, the split
and index files with their recorded checksums, every file of the scenario's ``info``) and the backbone (its config
name, model, the weight file or folder it loaded with a SHA-256 of each weight file, and its cache key).

What this adds to the field's trackers (MLflow, W&B record what a script logs): the CL-specific items -- class
order, split files, weight checksums -- collected from clpet's own objects, with no service to run.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

from clpet.distributed import world_size

LIBRARIES = ("torch", "torchvision", "transformers", "peft", "timm", "numpy", "scikit-learn", "scipy", "hydra-core",
             "omegaconf", "avalanche-lib", "safetensors", "tokenizers")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".npz", ".gguf", ".ckpt")
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def code_commit(root: Path = SOURCE_ROOT) -> str:
    """The commit of the source tree at ``root``, ``+dirty`` with uncommitted changes to tracked files;
    ``unknown`` outside a git checkout (an installed wheel) or without git."""
    git = ["git", "-C", str(root)]
    try:
        top = subprocess.run([*git, "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True,
                             timeout=20).stdout.strip()
        if Path(top).resolve() != Path(root).resolve():
            return "unknown"  # an installed clpet inside some other checkout: that repository's commit is not ours
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=20).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def library_versions() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {}
    for name in ("clpet", *LIBRARIES):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def weight_files(path: Optional[str]) -> List[str]:
    """The weight files of a weights file or model folder (its top level: config and tokenizer files excluded)."""
    if not path or not os.path.exists(path):
        return []
    if os.path.isfile(path):
        return [path]
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(WEIGHT_SUFFIXES)
                  and os.path.isfile(os.path.join(path, n)))


def file_checksums(paths: List[str]) -> Dict[str, Optional[str]]:
    from clpet.scenarios._checksums import file_digest

    return {os.path.abspath(p): (file_digest(p) if os.path.isfile(p) else None) for p in paths}


def machine() -> Dict[str, Any]:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version(),
            "platform": platform.platform(), "gpus": gpus, "cuda": getattr(torch.version, "cuda", None)}


def _files_of(info: Dict[str, Any]) -> List[str]:
    """Paths named in a scenario's ``info`` (``split_files``, ``index_files``, ...) that are files."""
    found: List[str] = []

    def visit(value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for v in value:
                visit(v)
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, (str, os.PathLike)) and os.path.isfile(str(value)):
            found.append(str(value))

    for key, value in info.items():
        if key.endswith("_files") or key.endswith("_file"):
            visit(value)
    return sorted(set(found))


def command_line() -> List[str]:
    """The command that reproduces this run: ``sys.argv``, or inside a sweep job ``clpet run`` + the job's own
    overrides (a sweep's argv would rerun the whole sweep)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return ["clpet", "run", *HydraConfig.get().overrides.task]
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return list(sys.argv)


def record(cfg: Any, scenario: Any, method: Any, device: Any) -> Dict[str, Any]:
    """This start's provenance record (see the module docstring)."""
    from clpet.results import to_jsonable

    optim = getattr(method.cfg, "optim", None)
    batch = getattr(optim, "batch_size", None)
    accum = getattr(optim, "grad_accum_steps", 1) or 1
    world = world_size()
    backbone = method.backbone
    info = dict(getattr(scenario, "info", {}) or {})
    return to_jsonable({
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": command_line(),
        "code": {"commit": code_commit(), "source": str(SOURCE_ROOT)},
        "libraries": library_versions(),
        "machine": machine(),
        "run": {"seed": cfg.run.seed, "device": str(device), "precision": method.ctx.precision,
                "preset": cfg.run.preset, "world_size": world, "batch_size": batch, "grad_accum_steps": accum,
                "global_batch": None if batch is None else int(batch) * int(accum) * world,
                "sharded_backbone": getattr(method, "shard_info", None)},
        "data": {"scenario": cfg.scenario.name, "fingerprint": scenario.fingerprint(),
                 "class_order": [int(c) for c in getattr(scenario, "class_order", []) or []],
                 "files": file_checksums(_files_of(info)),
                 "info": info},
        "backbone": {"name": cfg.backbone.name, "model": getattr(cfg.backbone, "model", None),
                     "weights": backbone.weight_path,
                     "weight_checksums": file_checksums(weight_files(backbone.weight_path)),
                     "cache_key": backbone.cache_key},
    })


def append_record(folder: Any, entry: Dict[str, Any]) -> Path:
    """Add ``entry`` to the folder's ``provenance.json`` (atomically; a resume adds its own record)."""
    import json

    from clpet.results import atomic_write_text

    path = Path(folder.path) / "provenance.json"
    records = json.loads(path.read_text()) if path.is_file() else []
    records.append(entry)
    return atomic_write_text(path, json.dumps(records, indent=1) + "\n")
