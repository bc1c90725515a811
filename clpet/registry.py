"""Name -> class registries, one per axis (backbones, PET kinds, methods, scenarios, evaluators).

Pattern from timm's ``_registry.py``: register with a decorator under the name users type; a duplicate name
is an error; an unknown name fails with one line listing the known names and the closest match.

Each registry knows the package whose modules fill it and imports that package on first lookup, so
``METHODS.get("simplecil")`` works after importing only ``clpet.registry`` and the CLI stays fast when it
only needs to reject a bad name.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Dict, Generic, Iterator, List, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name. ``str()`` is one line that lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of classes (or factories) for one axis, e.g. ``METHODS``."""

    def __init__(self, kind: str, package: str = "") -> None:
        self.kind = kind
        self.package = package
        self._entries: Dict[str, T] = {}
        self._loaded = not package

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # set first: the package's modules call register() while importing
            importlib.import_module(self.package)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("lae")``. Registering the same name twice raises."""

        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is already registered by {self._entries[name]!r}")
            self._entries[name] = obj
            try:
                setattr(obj, "registry_name", name)
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.kind} '{name}'{hint}; valid: {', '.join(self.names())}"

    def names(self) -> List[str]:
        self._load()
        return sorted(self._entries)

    def describe(self) -> Dict[str, str]:
        """name -> first line of the entry's docstring (for ``clpet list``)."""
        out = {}
        for name in self.names():
            doc = (getattr(self._entries[name], "__doc__", None) or "").strip()
            out[name] = doc.splitlines()[0] if doc else ""
        return out

    def __contains__(self, name: Any) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)


BACKBONES: Registry = Registry("backbone", "clpet.backbones")
PETS: Registry = Registry("PET kind", "clpet.pet")
METHODS: Registry = Registry("method", "clpet.methods")
SCENARIOS: Registry = Registry("scenario", "clpet.scenarios")
EVALUATORS: Registry = Registry("evaluator", "clpet.evaluation")
