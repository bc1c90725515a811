"""The one place that checks Avalanche is installed: every Avalanche-facing clpet module calls
:func:`require_avalanche` before importing ``avalanche``, so a missing or too old ``avalanche-lib`` gives one
line naming the extra to install instead of a bare ``ModuleNotFoundError``. clpet itself never imports
Avalanche; only these modules (and the ``avalanche`` scenario, lazily) do."""
from __future__ import annotations

from types import ModuleType

MIN_VERSION = (0, 6)
INSTALL_HINT = "pip install 'clpet[avalanche]' (or: pip install 'avalanche-lib>=0.6')"


class AvalancheMissingError(ImportError):
    """``avalanche-lib`` (>= 0.6) is not installed; ``str()`` is one line naming the extra."""


def _version_tuple(version: str) -> tuple:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def require_avalanche(feature: str = "this clpet feature") -> ModuleType:
    """The ``avalanche`` module, or :class:`AvalancheMissingError` saying how to install it."""
    try:
        import avalanche
    except ImportError as err:
        raise AvalancheMissingError(f"{feature} needs Avalanche (avalanche-lib >= 0.6): {INSTALL_HINT}") from err
    version = getattr(avalanche, "__version__", "0")
    if _version_tuple(version) < MIN_VERSION:
        raise AvalancheMissingError(
            f"{feature} needs avalanche-lib >= 0.6, found {version}: {INSTALL_HINT}"
        )
    return avalanche
