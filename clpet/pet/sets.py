"""What the two PET-set holders share (``PetManager`` for clpet's kinds, ``PeftSets`` for PEFT adapters): the
frozen/live bookkeeping a subclass keeps in ``_frozen`` / ``_live``, the ``use`` context, and restoring sets from
the structure ``export_structure`` saved in a checkpoint."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Mapping, Set, Tuple


def plain(value: Any) -> Any:
    """Tuples as lists, recursively (a config read back from a checkpoint may hold either)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


class NamedSets:
    """Mixin: ``freeze`` / ``unfreeze`` / ``is_frozen`` / ``use`` over the subclass's ``_get(name)``,
    ``set_active(names)``, ``_sync()``, ``_frozen`` and ``_live``."""

    _frozen: Set[str]
    _live: Tuple[str, ...]

    @contextmanager
    def use(self, names: Any) -> Iterator[None]:
        """``with sets.use("offline"): ...`` -- live sets for the block, the previous ones restored after."""
        previous = self._live
        self.set_active(names)
        try:
            yield
        finally:
            self.set_active(previous)

    def freeze(self, name: str) -> None:
        """Keep a set's parameters out of training (``requires_grad=False``) even while it is live."""
        self._get(name)
        self._frozen.add(name)
        self._sync()

    def unfreeze(self, name: str) -> None:
        self._get(name)
        self._frozen.discard(name)
        self._sync()

    def is_frozen(self, name: str) -> bool:
        self._get(name)
        return name in self._frozen

    def restore_structure(self, structure: Mapping[str, Any], config_of: Callable[[str], Any],
                          add: Callable[[str, Any], None]) -> Tuple[Set[str], List[str]]:
        """Make the sets those of a saved structure: missing ones are added (``add(name, saved config)``), existing
        ones must have the saved config (``config_of(name)``); a set here but not there is an error. Returns the
        saved (frozen, live) for the subclass to apply."""
        wanted = [(str(s["name"]), s["config"]) for s in structure["sets"]]
        names = [n for n, _ in wanted]
        extra = [n for n in self.names() if n not in names]
        if extra:
            raise ValueError(f"PET set '{extra[0]}' exists here but not in the saved structure ({names})")
        for name, cfg in wanted:
            if name in self.names():
                if plain(config_of(name)) != plain(cfg):
                    raise ValueError(f"PET set '{name}' has another config than the saved one")
            else:
                add(name, cfg)
        return set(structure["frozen"]) & set(self.names()), list(structure["live"])
