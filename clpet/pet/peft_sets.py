"""``PeftSets``: named PEFT adapters on a Hugging Face language model, behind the PET-set interface of
``PetManager`` (docs/architecture.md, "PET systems").

PEFT already holds several named adapters on one model (``add_adapter``, ``set_adapter``, ``delete_adapter``) and
saves each in its own format. What clpet adds: sets that are live but frozen (``freeze``), the composition of
several live sets with ``requires_grad`` following "live and not frozen", ``copy_set`` and ``ema_update`` matched by
tensor key (not position), and a self-description for checkpoints (``export_structure`` / ``import_structure``).

A set's config is a plain mapping: ``kind`` (a PEFT tuner: ``lora``) and that tuner's ``*Config`` keys
(``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``; ``target_modules=None`` takes PEFT's default table
for the model family, e.g. ``q_proj``/``v_proj`` on LLaMA and ``q``/``v`` on T5).
"""
from __future__ import annotations

import copy
import re
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from clpet.pet.keys import register_pet_segments
from clpet.pet.sets import NamedSets

Names = Union[None, str, Sequence[str]]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _peft_kinds() -> Dict[str, Tuple[type, Tuple[str, ...]]]:
    """kind -> (PEFT config class, the tuner layer's adapter containers)."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer

    return {"lora": (LoraConfig, tuple(LoraLayer.adapter_layer_names))}


def peft_config(cfg: Mapping[str, Any]) -> Any:
    """The PEFT ``*Config`` of a plain mapping with ``kind``; unknown kinds or keys fail in one line."""
    values = dict(cfg)
    kind = values.pop("kind", "lora")
    kinds = _peft_kinds()
    if kind not in kinds:
        raise ValueError(f"unknown PEFT kind '{kind}'; valid: {', '.join(kinds)}")
    if values.get("target_modules") is not None:
        values["target_modules"] = list(values["target_modules"])
    try:
        return kinds[kind][0](**values)
    except TypeError as exc:
        raise ValueError(f"PEFT {kind}: {exc}") from None


class PeftSets(NamedSets):
    """Named PEFT adapter sets on ``backbone.model`` (a Hugging Face LM). The base weights are frozen."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.peft_model: Any = None  # PeftModel, made when the first set is added
        self._configs: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
        self._live: Tuple[str, ...] = ()
        self._frozen: Set[str] = set()
        self._containers: Tuple[str, ...] = ()
        model.requires_grad_(False)

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def names(self) -> List[str]:
        return list(self._configs)

    def __contains__(self, name: object) -> bool:
        return name in self._configs

    @property
    def active(self) -> Tuple[str, ...]:
        return self._live

    def config(self, name: str) -> Dict[str, Any]:
        return dict(self._get(name))

    # -- creating and removing sets ----------------------------------------------------------------------------
    def add_set(self, name: str, cfg: Mapping[str, Any]) -> None:
        """Add an adapter (not live until ``set_active``); the model is left as it was on error."""
        from peft import get_peft_model

        self._check_new(name)
        plain = {"kind": "lora", **dict(cfg)}
        pcfg = peft_config(plain)
        with torch.inference_mode(False):
            if self.peft_model is None:
                self.peft_model = get_peft_model(self.model, pcfg, adapter_name=name)
                kind = plain["kind"]
                self._containers = _peft_kinds()[kind][1]
                register_pet_segments(self._containers)
            else:
                self.peft_model.add_adapter(name, pcfg)
        self._configs[name] = plain
        self._sync()

    def copy_set(self, src: str, dst: str) -> None:
        """``dst`` = a copy of ``src`` (same config, own tensors)."""
        self.add_set(dst, self.config(src))
        self.load_state_dict(dst, self.state_dict(src))

    def delete_set(self, name: str) -> None:
        self._get(name)
        self.peft_model.base_model.delete_adapter(name)
        del self._configs[name]
        self._frozen.discard(name)
        self._live = tuple(n for n in self._live if n != name)
        self._sync()

    # -- live sets ---------------------------------------------------------------------------------------------
    def set_active(self, names: Names) -> None:
        """Make ``names`` live (their outputs add up); ``None`` or ``[]`` = the plain base model."""
        live = () if names is None else (names,) if isinstance(names, str) else tuple(names)
        for n in live:
            self._get(n)
        if len(set(live)) != len(live):
            raise ValueError(f"set_active: a set is named twice in {list(live)}")
        self._live = live
        self._sync()

    # -- tensors -----------------------------------------------------------------------------------------------
    def _tensors(self, name: str) -> "OrderedDict[str, torch.Tensor]":
        """The set's parameters themselves, keyed by their path with the set name removed."""
        self._get(name)
        out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        for path, p in self.model.named_parameters():
            parts = path.split(".")
            for i, part in enumerate(parts[:-1]):
                if part in self._containers and parts[i + 1] == name:
                    out[".".join(parts[: i + 1] + parts[i + 2:])] = p
                    break
        return out

    def named_parameters(self, name: str) -> List[Tuple[str, nn.Parameter]]:
        return list(self._tensors(name).items())

    def parameters(self, name: str) -> List[nn.Parameter]:
        return list(self._tensors(name).values())

    def num_trainable(self, name: Optional[str] = None) -> int:
        if name is not None:
            return sum(p.numel() for p in self.parameters(name))
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def state_dict(self, name: str) -> "OrderedDict[str, torch.Tensor]":
        """The set's tensors (detached, sharing storage), keyed without the set name: sets of one config match."""
        return OrderedDict((k, v.detach()) for k, v in self._tensors(name).items())

    def load_state_dict(self, name: str, state_dict: Mapping[str, torch.Tensor]) -> None:
        own = self.state_dict(name)
        if own.keys() != state_dict.keys():
            missing = [k for k in own if k not in state_dict]
            unexpected = [k for k in state_dict if k not in own]
            raise ValueError(f"load_state_dict('{name}'): {len(missing)} missing and {len(unexpected)} unexpected "
                             f"key(s), e.g. {(missing or unexpected)[0]!r}")
        with torch.no_grad():
            for key, tensor in own.items():
                if tensor.shape != state_dict[key].shape:
                    raise ValueError(f"load_state_dict('{name}'): '{key}' has shape {tuple(state_dict[key].shape)}, "
                                     f"the set has {tuple(tensor.shape)}")
                tensor.copy_(state_dict[key])

    def ema_update(self, dst: str, src: str, decay: float) -> None:
        """``dst = decay * dst + (1 - decay) * src`` by key (``lerp``); decay 0 copies, decay 1 keeps."""
        if not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"ema_update: decay must be in [0, 1]; got {decay}")
        d, s = self._tensors(dst), self._tensors(src)
        if d.keys() != s.keys():
            raise ValueError(f"ema_update('{dst}', '{src}'): the sets have different tensors")
        if decay == 1.0 or dst == src:
            return
        with torch.no_grad():
            torch._foreach_lerp_(list(d.values()), [s[k] for k in d], 1.0 - float(decay))

    def save_adapter(self, name: str, directory: str) -> str:
        """Save one set in PEFT's format; returns the folder ``PeftModel.from_pretrained(base, folder)`` loads."""
        import os

        self._get(name)
        self.peft_model.save_pretrained(directory, selected_adapters=[name])
        return directory if name == "default" else os.path.join(directory, name)

    # -- self-description --------------------------------------------------------------------------------------
    def export_structure(self) -> Dict[str, Any]:
        return {"sets": [{"name": n, "config": copy.deepcopy(c)} for n, c in self._configs.items()],
                "frozen": sorted(self._frozen), "live": list(self._live)}

    def import_structure(self, structure: Mapping[str, Any]) -> None:
        frozen, live = self.restore_structure(structure, self.config, lambda n, cfg: self.add_set(n, dict(cfg)))
        self._frozen = frozen
        self.set_active(live)

    # -- internals ---------------------------------------------------------------------------------------------
    def _get(self, name: str) -> Dict[str, Any]:
        if name not in self._configs:
            raise KeyError(f"no PEFT set '{name}'; sets: {', '.join(self._configs) or 'none'}")
        return self._configs[name]

    def _check_new(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"invalid PET set name {name!r}: letters, digits, '_' or '-', starting with a letter or '_'")
        if name in self._configs:
            raise ValueError(f"PET set '{name}' already exists")

    def _sync(self) -> None:
        """PEFT's active adapters = the live sets (adapter layers off when none); requires_grad = live and not
        frozen, for every set's tensors."""
        if self.peft_model is None:
            return
        tuner = self.peft_model.base_model
        if self._live:
            tuner.enable_adapter_layers()
            tuner.set_adapter(list(self._live))
        else:
            tuner.disable_adapter_layers()
        for name in self._configs:
            flag = name in self._live and name not in self._frozen
            for p in self._tensors(name).values():
                p.requires_grad_(flag)
