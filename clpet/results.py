"""The run folder: config, metrics, accuracy matrix, log, checkpoint, plots -- all written atomically.

Layout of one run (docs/architecture.md "Reliability")::

    <run>/config.yaml        composed config
    <run>/metrics.json       summary (clpet.metrics.summarize + run info), rewritten after every experience
    <run>/acc_matrix.csv     R[t, j] in percent, empty cells where not evaluated
    <run>/log.txt            appended lines
    <run>/checkpoint.pt      resume state, loadable with torch.load(weights_only=True)
    <run>/plots/             PNGs

Every file is written to a temporary file in the same folder, fsynced, then ``os.replace``-d over the
target, so a killed process leaves either the old or the new file, never a torn one; a full disk fails the
write with one line and leaves the previous file as it was. ``checkpoint.pt`` and ``metrics.json`` carry a
SHA-256 of their content (key ``sha256``), checked on every read: a file changed after it was written (flipped
bytes, a cut) is reported in one line and never loaded. Files written before clpet kept checksums load without
the check. A run holds ``<run>/.lock`` (``fcntl.flock``) while it writes, so a second run on the same folder
fails at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np
import torch
import yaml

from clpet.metrics import matrix_to_rows

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.yaml"
ACC_MATRIX_FILE = "acc_matrix.csv"
LOG_FILE = "log.txt"
CHECKPOINT_FILE = "checkpoint.pt"
PLOTS_DIR = "plots"
LOCK_FILE = ".lock"
CHECKSUM_KEY = "sha256"


class RunFileError(ValueError):
    """A run file that cannot be trusted or written: corrupted, truncated, the disk full, the folder in use.
    One line; the CLI prints it as ``clpet: error: ...``."""

_UMASK = os.umask(0)
os.umask(_UMASK)


# ---------------------------------------------------------------------------------------------- atomic writes
def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not supported everywhere (e.g. Windows); best effort
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Run ``write(f)`` on a temp file next to ``path``, fsync, then replace ``path``; no temp file survives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RunFileError(f"no space left on the device writing {path}; the previous {path.name} is "
                               f"intact") from None
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + fsync + os.replace)."""
    return _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; if pickling fails, the previous file is left intact."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def content_digest(obj: Any) -> str:
    """SHA-256 of a checkpoint-like structure's content: dict keys in sorted order, every tensor's dtype, shape
    and raw bytes, arrays likewise, other values by type and ``repr``. Independent of how the file lays it out,
    so it can be stored inside the file it checks."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, Mapping):
        h.update(b"{%d" % len(obj))
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(b"[%d" % len(obj) if isinstance(obj, list) else b"(%d" % len(obj))
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, torch.Tensor):
        flat = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{flat.dtype}{tuple(obj.shape)}".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    elif isinstance(obj, np.ndarray):
        h.update(f"A{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def save_checked(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``atomic_torch_save`` of the dict ``obj`` with its ``content_digest`` under ``CHECKSUM_KEY``."""
    obj = dict(obj)
    obj.pop(CHECKSUM_KEY, None)
    return atomic_torch_save({**obj, CHECKSUM_KEY: content_digest(obj)}, path)


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)``, its checksum verified and removed (when it
    has one); ``RunFileError`` (one line naming the file) when the file is unreadable or its content changed."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as e:  # unpickling errors carry multi-line hints; keep the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunFileError(f"cannot load checkpoint {path} (truncated or corrupted?): {first}") from None
    if isinstance(state, dict) and CHECKSUM_KEY in state:
        expected = state.pop(CHECKSUM_KEY)
        if content_digest(state) != expected:
            raise RunFileError(f"checkpoint {path} is corrupted: its content does not match its SHA-256; not "
                               f"loaded (delete it to start the run over)")
    return state


# ---------------------------------------------------------------------------------------------- JSON
def to_jsonable(obj: Any) -> Any:
    """Recursively convert numpy/torch values to plain Python; NaN and inf become ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _json_digest(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
                          .encode("utf-8")).hexdigest()


def metrics_text(metrics: Mapping[str, Any]) -> str:
    """``metrics.json``'s text: the metrics (NaN as null, indent 2) and the SHA-256 of their content."""
    payload = to_jsonable({k: v for k, v in metrics.items() if k != CHECKSUM_KEY})
    return json.dumps({**payload, CHECKSUM_KEY: _json_digest(payload)}, indent=2, allow_nan=False) + "\n"


def load_metrics(run_dir: str | os.PathLike) -> dict:
    """Read ``<run_dir>/metrics.json``, its checksum verified and removed (when it has one);
    ``FileNotFoundError`` naming the folder when it has none, ``RunFileError`` when it is cut or changed."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in run folder {run_dir}")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RunFileError(f"{path} is not valid JSON (truncated or corrupted?): {str(e).splitlines()[0]}") from None
    if not isinstance(metrics, dict):
        raise RunFileError(f"{path} is corrupted: not a JSON object")
    expected = metrics.pop(CHECKSUM_KEY, None)
    if expected is not None and _json_digest(metrics) != expected:
        raise RunFileError(f"{path} is corrupted: its content does not match its SHA-256; not loaded")
    return metrics


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike):
    """Hold ``<folder>/.lock`` (an exclusive ``fcntl.flock``, released when the process ends, even killed) for
    the block; ``RunFileError`` at once when another process holds it. Where ``fcntl`` does not exist (Windows)
    the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_FILE, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunFileError(f"{path} is in use by another clpet run ({holder}); wait for it or choose another "
                               f"out_dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- RNG
def run_finished(metrics: Mapping[str, Any]) -> bool:
    """Whether a run's ``metrics.json`` is final: every experience learned (an unlearning run: every planned
    deletion request served)."""
    if "unlearning" in metrics:
        return metrics["unlearning"]["n_requests"] == metrics.get("n_requests_planned")
    total = metrics.get("n_experiences")
    return total is not None and metrics.get("n_experiences_done") == total


def rng_state() -> dict:
    """The state of Python ``random``, NumPy's legacy global RandomState and torch (CPU, and all CUDA
    devices when available), as plain Python values and tensors, so it survives ``weights_only=True``."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured. CUDA states are restored only when as many devices exist."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"].to(dtype=torch.uint8, device="cpu"))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to(dtype=torch.uint8, device="cpu") for s in cuda])


# ---------------------------------------------------------------------------------------------- run folder
class RunFolder:
    """One run's output folder (created on construction). See the module docstring for the layout."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def acc_matrix_path(self) -> Path:
        return self.path / ACC_MATRIX_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def plots_dir(self) -> Path:
        """``<run>/plots``, created on first access."""
        d = self.path / PLOTS_DIR
        d.mkdir(exist_ok=True)
        return d

    # writers
    def write_config(self, cfg: Any) -> Path:
        """Write ``config.yaml`` (a dict, or an OmegaConf config, resolved)."""
        if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
            cfg = dataclasses.asdict(cfg)
        if not isinstance(cfg, Mapping) or type(cfg).__module__.startswith("omegaconf"):
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(cfg, resolve=True)
        text = yaml.safe_dump(to_jsonable(cfg), sort_keys=False, default_flow_style=False)
        return atomic_write_text(self.config_path, text)

    def read_config(self) -> dict | None:
        """The saved config, or ``None`` when there is none."""
        if not self.config_path.is_file():
            return None
        return yaml.safe_load(self.config_path.read_text(encoding="utf-8"))

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        """Write ``metrics.json`` (indent 2; NaN written as null; with its checksum, ``metrics_text``)."""
        return atomic_write_text(self.metrics_path, metrics_text(metrics))

    def load_metrics(self) -> dict:
        """Read ``metrics.json`` (see :func:`load_metrics`)."""
        return load_metrics(self.path)

    def write_acc_matrix(self, R: Any) -> Path:
        """Write ``acc_matrix.csv``: header ``after\\exp,0,1,...``, one row per experience learned, values in
        percent with 2 decimals, empty cells where not evaluated. ``R``: array (NaN) or rows (None)."""
        rows = matrix_to_rows(R)
        width = max((len(r) for r in rows), default=0)
        lines = ["after\\exp," + ",".join(str(j) for j in range(width))]
        for t, row in enumerate(rows):
            cells = ["" if v is None else f"{v:.2f}" for v in row] + [""] * (width - len(row))
            lines.append(f"{t}," + ",".join(cells))
        return atomic_write_text(self.acc_matrix_path, "\n".join(lines) + "\n")

    def log(self, line: str) -> None:
        """Append ``line`` (plus a newline) to ``log.txt`` and flush."""
        with open(self.log_path, "a", encoding="utf-8", buffering=1) as f:
            f.write(line.rstrip("\n") + "\n")
            f.flush()

    def remove_partial_writes(self) -> list:
        """Delete the temporary files that writers killed mid-write left behind (``.<name>.*.tmp``; never read);
        returns their names. Call it holding the folder's lock."""
        if not self.path.is_dir():
            return []
        stale = sorted(p for p in self.path.glob(".*.tmp") if p.is_file())
        for p in stale:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        return [p.name for p in stale]

    # checkpoint
    def save_checkpoint(self, state: Mapping[str, Any]) -> Path:
        """Atomically save ``state`` to ``checkpoint.pt`` with its checksum (``save_checked``). Keep it to tensors,
        numbers, strings, lists, tuples and dicts (use :func:`rng_state` for RNGs) so it loads with
        ``weights_only=True``."""
        return save_checked(state, self.checkpoint_path)

    def load_checkpoint(self) -> dict | None:
        """The saved state (``weights_only=True``, on CPU), or ``None`` when no checkpoint exists."""
        if not self.checkpoint_path.is_file():
            return None
        return load_checkpoint(self.checkpoint_path)


class ReadOnlyRunFolder(RunFolder):
    """The run folder as a rank other than 0 of a ``torch.distributed`` run sees it: it reads (the checkpoint to
    resume from, the saved config) and never writes, so rank 0 is the folder's one writer."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS_DIR

    def write_config(self, cfg: Any) -> Path:
        return self.config_path

    def write_metrics(self, metrics: Mapping[str, Any]) -> Path:
        return self.metrics_path

    def write_acc_matrix(self, R: Any) -> Path:
        return self.acc_matrix_path

    def log(self, line: str) -> None:
        pass

    def save_checkpoint(self, state: Mapping[str, Any]) -> Path:
        return self.checkpoint_path
