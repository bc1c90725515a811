"""``PetManager``: named PET sets on one backbone (PEFT's ``inject_adapter`` / multi-adapter model, without its
separate prompt-learning path).

A set is a name, a config (one kind) and one PET module per site. Sets of the same kind share the wrappers; each
wrapper keeps its sets' modules in an ``nn.ModuleDict`` keyed by set name, so the PET weights live inside the
backbone (``.to(device)`` moves them, ``backbone.state_dict()`` has them under ``<site>.pets.<set>.``). The
backbone's own parameters are frozen and never written.

Live sets: ``set_active(name | [names] | None)`` switches the forward pass *and* ``requires_grad`` (a parameter
trains iff its set is live and not frozen). Several live sets compose in the given order (LoRA and adapters add
up, SSF applies in sequence, prompts stack); at most one prefix set may be live per block.
``use(name)`` does the same for a ``with`` block and restores the previous live sets afterwards.
Set state dicts are keyed by site path and tensor name *without* the set name, so the sets of one config have
the same keys: EMA and loading match tensors by key, never by position.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from clpet.pet.base import Attach, PetKind
from clpet.pet.config import PetConfig, pet_config
from clpet.pet.sets import NamedSets
from clpet.pet.sites import Structure, find_structure, parent_slot
from clpet.pet.wrappers import PetWrapper
from clpet.registry import PETS

Names = Union[None, str, Sequence[str]]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


@dataclass
class _Set:
    config: PetConfig
    kind: type
    paths: List[str] = field(default_factory=list)


class PetManager(NamedSets):
    """Named PET sets on ``model`` (a Backbone or any module holding a timm ViT / BERT encoder / timm CNN).

    ``freeze_backbone`` sets ``requires_grad=False`` on every parameter of ``model`` at construction."""

    def __init__(self, model: nn.Module, freeze_backbone: bool = True) -> None:
        if any(isinstance(m, PetWrapper) for m in model.modules()):
            raise ValueError(f"{type(model).__name__} already holds PET wrappers; use the PetManager that added them")
        self.model = model
        self._structure: Optional[Structure] = None
        self._wrappers: Dict[str, PetWrapper] = {}
        self._sets: Dict[str, _Set] = {}
        self._live: Tuple[str, ...] = ()
        self._frozen: Set[str] = set()
        self._flags: Dict[str, bool] = {}  # requires_grad last given to each set's parameters
        if freeze_backbone:
            model.requires_grad_(False)

    # -- structure and bookkeeping ---------------------------------------------------------------------------
    @property
    def structure(self) -> Structure:
        """The backbone's blocks and sites (``clpet.pet.sites``); ValueError for an unsupported backbone."""
        if self._structure is None:
            self._structure = find_structure(self.model)
        return self._structure

    def names(self) -> List[str]:
        return list(self._sets)

    def __contains__(self, name: object) -> bool:
        return name in self._sets

    def config(self, name: str) -> PetConfig:
        return self._get(name).config

    @property
    def active(self) -> Tuple[str, ...]:
        """The live sets, in application order (``()`` = the plain backbone)."""
        return self._live

    def sites(self, name: str) -> List[str]:
        """Paths of the modules the set is attached to."""
        return list(self._get(name).paths)

    # -- creating and removing sets --------------------------------------------------------------------------
    def add_set(self, name: str, cfg: Union[PetConfig, Mapping[str, Any]]) -> None:
        """Add a set: plan every site, check, then wrap. On any error the model is left untouched.

        The new set is not live (its parameters have ``requires_grad=False``) until ``set_active``."""
        self._check_new(name)
        cfg = pet_config(cfg)
        kind = PETS.get(cfg.kind)
        attaches: List[Attach] = kind.plan(self.structure, cfg)
        if not attaches:
            raise ValueError(f"{cfg.kind}: nothing matched on the {self.structure.describe()}")
        paths = [a.path for a in attaches]
        if len(set(paths)) != len(paths):
            raise ValueError(f"{cfg.kind}: two sites of one set on the same module ({paths})")
        for a in attaches:
            held = self._wrappers.get(a.path)
            if held is not None and type(held) is not a.wrapper:
                raise ValueError(f"{cfg.kind}: {a.path} is already wrapped by {type(held).__name__}, "
                                 f"not {a.wrapper.__name__}")
        with torch.inference_mode(False):  # real parameters even when called under inference mode
            modules = [self._build(a) for a in attaches]  # may raise: nothing changed yet
        for a, module in zip(attaches, modules):
            wrapper = self._wrappers.get(a.path)
            if wrapper is None:
                wrapper = self._wrap(a)
            wrapper.pets[name] = module
        self._sets[name] = _Set(cfg, kind, paths)
        self._flags.pop(name, None)
        self._sync()

    def copy_set(self, src: str, dst: str) -> None:
        """``dst`` = a deep copy of ``src`` (same config, own tensors); e.g. LAE's offline set from the online one."""
        info = self._get(src)
        self._check_new(dst)
        with torch.inference_mode(False):
            copies = [copy.deepcopy(self._wrappers[path].pets[src]) for path in info.paths]
        for path, module in zip(info.paths, copies):
            self._wrappers[path].pets[dst] = module
        self._sets[dst] = _Set(copy.deepcopy(info.config), info.kind, list(info.paths))
        self._flags.pop(dst, None)
        self._sync()

    def delete_set(self, name: str) -> None:
        """Remove a set; a wrapper left with no set is replaced by its original module again."""
        info = self._get(name)
        for path in info.paths:
            wrapper = self._wrappers[path]
            del wrapper.pets[name]
            if len(wrapper.pets) == 0:
                parent, child = parent_slot(self.model, path)
                parent._modules[child] = wrapper.base
                del self._wrappers[path]
        del self._sets[name]
        self._flags.pop(name, None)
        self._frozen.discard(name)
        self._live = tuple(n for n in self._live if n != name)
        self._sync()

    # -- live sets and training flags ------------------------------------------------------------------------
    def set_active(self, names: Names) -> None:
        """Make ``names`` live (a name, a list applied in order, or None for the plain backbone) and give exactly
        the live, unfrozen sets ``requires_grad=True``."""
        live = self._normalise(names)
        exclusive = [n for n in live if self._sets[n].kind.exclusive]  # prefix: one live set per site
        for path, wrapper in self._wrappers.items() if len(exclusive) > 1 else ():
            clash = [n for n in exclusive if n in wrapper.pets]
            if len(clash) > 1:
                raise ValueError(f"sets {clash} are {self._sets[clash[0]].kind.Config.KIND} sets on the same "
                                 f"site {path}; at most one can be live")
        self._live = live
        self._sync()

    def refresh(self) -> None:
        """Re-apply live sets and ``requires_grad`` to every set (after code that called
        ``model.requires_grad_(...)`` or replaced modules)."""
        self._sync(force=True)

    # -- parameters, state dicts, EMA -------------------------------------------------------------------------
    def named_parameters(self, name: str) -> List[Tuple[str, nn.Parameter]]:
        """(key, parameter) of a set; keys as in ``state_dict(name)``."""
        out = []
        for path in self._get(name).paths:
            out += [(f"{path}.{k}", p) for k, p in self._wrappers[path].pets[name].named_parameters()]
        return out

    def parameters(self, name: str) -> List[nn.Parameter]:
        return [p for _, p in self.named_parameters(name)]

    def num_trainable(self, name: Optional[str] = None) -> int:
        """Elements in a set's parameters; without a name, elements of every parameter of the model that has
        ``requires_grad=True`` now."""
        if name is not None:
            return sum(p.numel() for p in self.parameters(name))
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def state_dict(self, name: str) -> "OrderedDict[str, torch.Tensor]":
        """The set's tensors (detached, sharing storage with the parameters, as ``nn.Module.state_dict``), keyed by
        ``<site path>.<tensor name>`` without the set name. Clone them to keep a snapshot."""
        out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for path in self._get(name).paths:
            for key, tensor in self._wrappers[path].pets[name].state_dict().items():
                out[f"{path}.{key}"] = tensor
        return out

    def load_state_dict(self, name: str, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Copy tensors into set ``name`` by key. ``strict``: the keys must be exactly the set's keys."""
        own = self.state_dict(name)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict('{name}'): {len(missing)} missing key(s){_eg(missing)} and "
                             f"{len(unexpected)} unexpected key(s){_eg(unexpected)}")
        for key in own.keys() & state_dict.keys():
            if tuple(own[key].shape) != tuple(state_dict[key].shape):
                raise ValueError(f"load_state_dict('{name}'): '{key}' has shape {tuple(state_dict[key].shape)}, "
                                 f"the set has {tuple(own[key].shape)}")
        with torch.no_grad():
            for key in own.keys() & state_dict.keys():
                own[key].copy_(state_dict[key])

    def ema_update(self, dst: str, src: str, decay: float) -> None:
        """``dst = decay * dst + (1 - decay) * src``, tensor by tensor matched by key (``dst.lerp_(src, 1 - decay)``;
        decay 0 copies, decay 1 keeps). LAE's accumulation: ``ema_update("offline", "online", 0.9999)``."""
        if not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"ema_update: decay must be in [0, 1]; got {decay}")
        d_float, s_float, d_other, s_other = self._ema_pairs(dst, src)
        if dst == src or decay == 1.0:
            return
        with torch.no_grad():
            if decay == 0.0:  # an exact copy
                torch._foreach_copy_(d_float + d_other, s_float + s_other)
                return
            for d, s in zip(d_other, s_other):  # integer buffers, if a kind ever has one: copied
                d.copy_(s)
            if d_float:
                torch._foreach_lerp_(d_float, s_float, 1.0 - float(decay))  # d += (1 - decay) * (s - d)

    # -- self-description (checkpoints) ----------------------------------------------------------------------
    def export_structure(self) -> Dict[str, Any]:
        """What rebuilds these sets on a fresh backbone: each set's name and config (in creation order), which
        are frozen, and the live sets -- plain values, loadable with ``torch.load(weights_only=True)``."""
        return {
            "sets": [{"name": n, "config": dataclasses.asdict(info.config)} for n, info in self._sets.items()],
            "frozen": sorted(self._frozen),
            "live": list(self._live),
        }

    def import_structure(self, structure: Mapping[str, Any]) -> None:
        """Make the sets what ``export_structure`` described: missing sets are added from their configs (their
        tensors are then loaded with the method's state), existing ones must have the same config; frozen and
        live flags are restored. A set that is here but not in ``structure`` is an error (ValueError, one line)."""
        frozen, live = self.restore_structure(structure, lambda n: dataclasses.asdict(self._sets[n].config),
                                              lambda n, cfg: self.add_set(n, pet_config(cfg)))
        self._frozen = frozen
        self._live = self._normalise(live)
        self._sync(force=True)

    def describe(self) -> str:
        """Multi-line summary: backbone structure, then per set its kind, sites, size and state."""
        lines = [self.structure.describe() if self._sets else type(self.model).__name__]
        for name, info in self._sets.items():
            state = "live" if name in self._live else "inactive"
            state += ", frozen" if name in self._frozen else ""
            lines.append(f"  {name}: {info.config.kind} on {len(info.paths)} site(s), "
                         f"{self.num_trainable(name):,} parameters ({state})")
        return "\n".join(lines)

    # -- internals -------------------------------------------------------------------------------------------
    def _get(self, name: str) -> _Set:
        if name not in self._sets:
            known = ", ".join(self._sets) or "none"
            raise KeyError(f"no PET set '{name}'; sets: {known}")
        return self._sets[name]

    def _check_new(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.match(name) or hasattr(nn.ModuleDict(), name):
            raise ValueError(f"invalid PET set name {name!r}: use letters, digits, '_' or '-', starting with a letter "
                             f"or '_', and not an nn.ModuleDict attribute")
        if name in self._sets:
            raise ValueError(f"PET set '{name}' already exists")

    def _normalise(self, names: Names) -> Tuple[str, ...]:
        if names is None:
            return ()
        live = (names,) if isinstance(names, str) else tuple(names)
        for n in live:
            self._get(n)
        if len(set(live)) != len(live):
            raise ValueError(f"set_active: a set is named twice in {list(live)}")
        return live

    def _build(self, a: Attach) -> nn.Module:
        base = self.structure.module(a.path)
        module = a.make(base)
        ref = next(iter(base.parameters()), None)
        if ref is None:
            ref = next(iter(base.buffers()), None)
        if ref is not None:
            module.to(device=ref.device, dtype=ref.dtype if ref.is_floating_point() else None)
        return module.train(base.training)

    def _wrap(self, a: Attach) -> PetWrapper:
        parent, child = parent_slot(self.model, a.path)
        base = parent._modules[child]
        wrapper = a.wrapper(base, **a.wrapper_kwargs)
        wrapper.training = wrapper.pets.training = base.training  # not .train(): that would recurse into base
        parent._modules[child] = wrapper
        self._wrappers[a.path] = wrapper
        return wrapper

    def _sync(self, force: bool = False) -> None:
        """Tell every wrapper the live sets; set ``requires_grad`` of the sets whose flag changed (all: ``force``)."""
        live = self._live
        for wrapper in self._wrappers.values():
            wrapper.live = live
        for name, info in self._sets.items():
            flag = name in live and name not in self._frozen
            if not force and self._flags.get(name) is flag:
                first = next(self._wrappers[info.paths[0]].pets[name].parameters(), None)
                if first is None or first.requires_grad is flag:  # unchanged, and nobody flipped it behind our back
                    continue
            self._flags[name] = flag
            for path in info.paths:
                for p in self._wrappers[path].pets[name].parameters():
                    if p.requires_grad != flag:
                        p.requires_grad_(flag)

    def _tensors(self, name: str) -> "OrderedDict[str, torch.Tensor]":
        """The set's parameters and buffers themselves (not detached copies), keyed as in ``state_dict``."""
        out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for path in self._get(name).paths:
            module = self._wrappers[path].pets[name]
            for key, tensor in [*module.named_parameters(), *module.named_buffers()]:
                out[f"{path}.{key}"] = tensor
        return out

    def _ema_pairs(self, dst: str, src: str) -> Tuple[list, list, list, list]:
        """(dst floats, src floats, dst others, src others): the tensors themselves, matched by key."""
        d, s = self._tensors(dst), self._tensors(src)
        if d.keys() != s.keys():
            only_d, only_s = [k for k in d if k not in s], [k for k in s if k not in d]
            raise ValueError(f"ema_update('{dst}', '{src}'): the sets differ: {len(only_d)} key(s) only in "
                             f"'{dst}'{_eg(only_d)}, {len(only_s)} only in '{src}'{_eg(only_s)}")
        for key in d:
            if d[key].shape != s[key].shape:
                raise ValueError(f"ema_update('{dst}', '{src}'): '{key}' shapes differ: "
                                 f"{tuple(d[key].shape)} vs {tuple(s[key].shape)}")
        floats = [k for k in d if d[k].is_floating_point()]
        others = [k for k in d if not d[k].is_floating_point()]
        return [d[k] for k in floats], [s[k] for k in floats], [d[k] for k in others], [s[k] for k in others]


def _eg(keys: List[str]) -> str:
    return f" (e.g. '{keys[0]}')" if keys else ""


__all__ = ["PetKind", "PetManager"]
