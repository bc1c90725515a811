"""Peak memory of a stretch of work: process RSS (and CUDA max allocated on a GPU).

What no package here gives in one call: the *per-experience* peak resident set size. On Linux the kernel keeps
the peak (``VmHWM`` in ``/proc/self/status``) and resets it when ``5`` is written to ``/proc/self/clear_refs``;
elsewhere the lifetime peak from ``resource.getrusage`` is reported (``rss_scope: "process"``).
"""
from __future__ import annotations

import resource
import sys
from typing import Any, Dict, Optional

import torch

_STATUS = "/proc/self/status"
_CLEAR = "/proc/self/clear_refs"


def _vm_hwm_mb() -> Optional[float]:
    try:
        with open(_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB -> MiB
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open(_CLEAR, "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _lifetime_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, kB on Linux


class PeakMemory:
    """``with PeakMemory(device) as peak: ...; peak.record()`` -> ``{"rss_mb", "rss_scope", "cuda_max_allocated_mb"}``."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self._scoped = False
        self._record: Dict[str, Any] = {}

    def __enter__(self) -> "PeakMemory":
        self._scoped = _reset_hwm() and _vm_hwm_mb() is not None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        rss = _vm_hwm_mb() if self._scoped else None
        self._record = {
            "rss_mb": round(rss if rss is not None else _lifetime_peak_mb(), 1),
            "rss_scope": "experience" if rss is not None else "process",
            "cuda_max_allocated_mb": (round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
                                      if self.device.type == "cuda" else None),
        }

    def record(self) -> Dict[str, Any]:
        return dict(self._record)

    def describe(self) -> str:
        r = self._record
        text = f"{r['rss_mb']:.0f} MiB RSS"
        return text + (f", {r['cuda_max_allocated_mb']:.0f} MiB CUDA" if r.get("cuda_max_allocated_mb") is not None else "")


__all__ = ["PeakMemory"]
