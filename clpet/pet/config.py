"""PET configs: one dataclass per kind (PEFT's ``<Method>Config`` pattern), validated in ``__post_init__``.

Every config has ``kind`` (the ``PETS`` registry name), ``blocks`` (transformer block / CNN block indices; ``None``
= all) and, where it applies, ``targets`` (site roles; ``None`` = the kind's default for the backbone family).
Presets give the settings of the papers' reference code: ``AdapterConfig.lae()``, ``AdapterConfig.aper()``,
``LoRAConfig.lae()``, ``PrefixConfig.lae()``, ``VPTConfig.aper()``, ``SSFConfig.aper()``.
Site roles (see ``clpet.pet.sites``): ``q k v qkv proj fc1 fc2 norm1 norm2`` in transformer blocks,
``patch_embed final_norm`` (timm ViT) / ``embed_norm`` (BERT) outside them, and ``pointwise convs norms`` or a
layer's name inside the block (``conv_pw``, ``mlp.fc1``) for CNNs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Tuple, Union

Scale = Union[float, str]  # a fixed float, or "learnable" (a scalar parameter initialised to 1.0)
LEARNABLE = "learnable"
ACTIVATIONS = ("gelu", "relu")
PLACEMENTS = ("attn-parallel", "mlp-parallel", "pointwise-parallel")
ROLE_ALIASES = {"query": "q", "key": "k", "value": "v", "o": "proj", "out_proj": "proj", "c_proj": "proj"}


def _blocks(value: Any, who: str) -> Optional[Tuple[int, ...]]:
    if value is None:
        return None
    if isinstance(value, int):
        value = (value,)
    try:
        blocks = tuple(int(b) for b in value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: blocks must be None or a list of block indices; got {value!r}") from None
    if not blocks:
        raise ValueError(f"{who}: blocks is empty; use None for every block")
    if any(b < 0 for b in blocks) or len(set(blocks)) != len(blocks):
        raise ValueError(f"{who}: blocks must be distinct non-negative indices; got {list(blocks)}")
    return blocks


def _targets(value: Any, who: str) -> Optional[Tuple[str, ...]]:
    if value is None:
        return None
    if isinstance(value, str):
        value = (value,)
    targets = tuple(ROLE_ALIASES.get(str(t), str(t)) for t in value)
    if not targets:
        raise ValueError(f"{who}: targets is empty; use None for the kind's default sites")
    return tuple(dict.fromkeys(targets))  # keep order, drop repeats (e.g. "k" and "key")


def _scale(value: Any, who: str, name: str = "scale") -> Scale:
    if value is None or value == LEARNABLE:
        return LEARNABLE
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{who}: {name} must be a number or '{LEARNABLE}'; got {value!r}")
    return float(value)


def _choice(value: Any, options: Iterable[str], who: str, name: str) -> str:
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{who}: unknown {name} '{value}'; valid: {', '.join(options)}")
    return value


def _check_kind(cfg: Any) -> None:
    expected = type(cfg).KIND
    if cfg.kind != expected:
        raise ValueError(f"{type(cfg).__name__}: kind must be '{expected}'; got '{cfg.kind}'")


@dataclass
class AdapterConfig:
    """Bottleneck adapter ``s * up(dropout(act(down(u))))`` added next to a sub-layer.

    ``placement``: ``attn-parallel`` (LAE: input = the block input after ``norm1``, added next to attention),
    ``mlp-parallel`` (AdaptFormer/APER: input = the post-attention residual stream, added next to the MLP) or
    ``pointwise-parallel`` (CNNs: a 1x1-conv bottleneck next to each pointwise conv). ``init="zero-up"``:
    down-projection Kaiming-uniform (a = sqrt 5), biases and up-projection zero, so the adapter starts at 0.
    """

    KIND = "adapter"
    kind: str = "adapter"
    placement: str = "attn-parallel"
    bottleneck: int = 5
    activation: str = "gelu"
    dropout: float = 0.0
    scale: Scale = LEARNABLE
    init: str = "zero-up"
    blocks: Optional[Tuple[int, ...]] = None
    targets: Optional[Tuple[str, ...]] = None  # CNN pointwise-parallel only (default: every pointwise conv)

    def __post_init__(self) -> None:
        who = "adapter"
        _check_kind(self)
        self.placement = _choice(self.placement, PLACEMENTS, who, "placement")
        if int(self.bottleneck) != self.bottleneck or self.bottleneck < 1:
            raise ValueError(f"{who}: bottleneck must be a positive integer; got {self.bottleneck!r}")
        self.bottleneck = int(self.bottleneck)
        self.activation = _choice(self.activation, ACTIVATIONS, who, "activation")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"{who}: dropout must be in [0, 1); got {self.dropout!r}")
        self.dropout = float(self.dropout)
        self.scale = _scale(self.scale, who)
        self.init = _choice(self.init, ("zero-up",), who, "init")
        self.blocks = _blocks(self.blocks, who)
        self.targets = _targets(self.targets, who)
        if self.targets is not None and self.placement != "pointwise-parallel":
            raise ValueError(f"{who}: targets apply to placement 'pointwise-parallel' (CNNs) only; "
                             f"'{self.placement}' is fixed by the block structure")

    @classmethod
    def lae(cls, **overrides: Any) -> "AdapterConfig":
        """LAE (gqk/LAE ``config/vit_adapter.yaml``): parallel to attention, bottleneck 5, GELU, learnable
        scalar, blocks 0-4."""
        return cls(**{"placement": "attn-parallel", "bottleneck": 5, "activation": "gelu", "dropout": 0.0,
                      "scale": LEARNABLE, "blocks": (0, 1, 2, 3, 4), **overrides})

    @classmethod
    def aper(cls, **overrides: Any) -> "AdapterConfig":
        """AdaptFormer as APER uses it (zhoudw-zdw/RevisitingCIL): parallel to the MLP, bottleneck 64, ReLU,
        dropout 0.1, fixed scale 0.1, every block."""
        return cls(**{"placement": "mlp-parallel", "bottleneck": 64, "activation": "relu", "dropout": 0.1,
                      "scale": 0.1, "blocks": None, **overrides})


@dataclass
class LoRAConfig:
    """Low-rank update ``scale * B A x`` added to a linear (or pointwise-conv) layer; B zero-initialised,
    A Kaiming-uniform (a = sqrt 5), as in Hu et al. (arXiv:2106.09685) and LAE's ``KVLoRA``.

    ``targets``: ``q``/``k``/``v`` (slices of a fused qkv projection, or the separate query/key/value layers),
    ``qkv`` (the whole fused projection), ``proj``, ``fc1``, ``fc2``; ``pointwise`` or layer names on CNNs.
    Scale: ``alpha`` given -> ``alpha / rank`` (fixed); otherwise ``scale`` (a float, or ``"learnable"``: one
    scalar parameter per target, initialised to 1.0, as LAE's learnable K and V scales).
    """

    KIND = "lora"
    kind: str = "lora"
    rank: int = 8
    alpha: Optional[float] = None
    scale: Scale = 1.0
    dropout: float = 0.0
    targets: Optional[Tuple[str, ...]] = None  # default: ("q", "v") on transformers, ("pointwise",) on CNNs
    blocks: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        who = "lora"
        _check_kind(self)
        if int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f"{who}: rank must be a positive integer; got {self.rank!r}")
        self.rank = int(self.rank)
        self.scale = _scale(self.scale, who)
        if self.alpha is not None:
            if self.scale != 1.0:
                raise ValueError(f"{who}: give either alpha (scale = alpha / rank) or scale, not both")
            self.alpha = float(self.alpha)
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"{who}: dropout must be in [0, 1); got {self.dropout!r}")
        self.dropout = float(self.dropout)
        self.targets = _targets(self.targets, who)
        self.blocks = _blocks(self.blocks, who)

    @property
    def effective_scale(self) -> Scale:
        return self.alpha / self.rank if self.alpha is not None else self.scale

    @classmethod
    def lae(cls, **overrides: Any) -> "LoRAConfig":
        """LAE (gqk/LAE ``KVLoRA``): rank 5 on the K and V slices of the fused qkv only, learnable K/V scales,
        blocks 0-4."""
        return cls(**{"rank": 5, "scale": LEARNABLE, "targets": ("k", "v"), "blocks": (0, 1, 2, 3, 4), **overrides})


@dataclass
class PrefixConfig:
    """Prefix tuning: ``length`` learnable key and value vectors per block (full width, split over heads like
    the keys), inserted after the class token, initialised U(init_low, init_high), each multiplied by a key /
    value scale (``"learnable"``: a scalar parameter initialised to 1.0). ``compensatory``: LAE's
    renormalisation of the attention mass on the prefix (``clpet.pet.ops.prefix_attention``)."""

    KIND = "prefix"
    kind: str = "prefix"
    length: int = 10
    compensatory: bool = True
    init_low: float = 0.0
    init_high: float = 0.01
    key_scale: Scale = LEARNABLE
    value_scale: Scale = LEARNABLE
    blocks: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        who = "prefix"
        _check_kind(self)
        if int(self.length) != self.length or self.length < 1:
            raise ValueError(f"{who}: length must be a positive integer; got {self.length!r}")
        self.length = int(self.length)
        self.compensatory = bool(self.compensatory)
        self.init_low, self.init_high = float(self.init_low), float(self.init_high)
        if not self.init_low < self.init_high:
            raise ValueError(f"{who}: init_low must be below init_high; got {self.init_low}, {self.init_high}")
        self.key_scale = _scale(self.key_scale, who, "key_scale")
        self.value_scale = _scale(self.value_scale, who, "value_scale")
        self.blocks = _blocks(self.blocks, who)

    @classmethod
    def lae(cls, **overrides: Any) -> "PrefixConfig":
        """LAE (gqk/LAE ``config/vit_prefix.yaml``): length 10, learnable key/value scales, compensatory,
        blocks 0-4."""
        return cls(**{"length": 10, "compensatory": True, "blocks": (0, 1, 2, 3, 4), **overrides})


@dataclass
class VPTConfig:
    """Visual prompt tuning (Jia et al., arXiv:2203.12119): ``length`` prompt tokens after the class token.
    ``deep``: new prompts at every selected block, replacing the previous block's prompt outputs; shallow: one
    set at the input of block 0, carried through every block. ``init``: ``xavier`` (the VPT paper:
    U(-v, v), v = sqrt(6 / (fan_in + D)), fan_in = 3 * patch^2 for ViTs, D for text) or ``zeros`` (APER code)."""

    KIND = "vpt"
    kind: str = "vpt"
    length: int = 5
    deep: bool = True
    init: str = "xavier"
    blocks: Optional[Tuple[int, ...]] = None  # deep only

    def __post_init__(self) -> None:
        who = "vpt"
        _check_kind(self)
        if int(self.length) != self.length or self.length < 1:
            raise ValueError(f"{who}: length must be a positive integer; got {self.length!r}")
        self.length = int(self.length)
        self.deep = bool(self.deep)
        self.init = _choice(self.init, ("xavier", "zeros"), who, "init")
        self.blocks = _blocks(self.blocks, who)
        if self.blocks is not None and not self.deep:
            raise ValueError(f"{who}: shallow prompts enter at block 0 only; blocks applies to deep=True")

    @classmethod
    def aper(cls, **overrides: Any) -> "VPTConfig":
        """APER's VPT (zhoudw-zdw/RevisitingCIL ``convs/vpt.py``): 5 tokens, zero-initialised, deep by default."""
        return cls(**{"length": 5, "deep": True, "init": "zeros", **overrides})


@dataclass
class SSFConfig:
    """Scale and shift features (Lian et al., arXiv:2210.08823): ``y * gamma + beta`` per channel after each
    targeted op. ``init_std = 0`` starts at the identity (gamma = 1, beta = 0); the SSF and APER reference code
    draw gamma ~ N(1, 0.02), beta ~ N(0, 0.02) (``init_std=0.02``, the ``aper()`` preset)."""

    KIND = "ssf"
    kind: str = "ssf"
    init_std: float = 0.0
    targets: Optional[Tuple[str, ...]] = None  # default: every op of the family (see clpet.pet.ssf)
    blocks: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        who = "ssf"
        _check_kind(self)
        if float(self.init_std) < 0:
            raise ValueError(f"{who}: init_std must be >= 0; got {self.init_std!r}")
        self.init_std = float(self.init_std)
        self.targets = _targets(self.targets, who)
        self.blocks = _blocks(self.blocks, who)

    @classmethod
    def aper(cls, **overrides: Any) -> "SSFConfig":
        """SSF as in the SSF / APER reference code: every op, gamma ~ N(1, 0.02), beta ~ N(0, 0.02)."""
        return cls(**{"init_std": 0.02, **overrides})


PetConfig = Union[AdapterConfig, LoRAConfig, PrefixConfig, VPTConfig, SSFConfig]
CONFIGS = {c.KIND: c for c in (AdapterConfig, LoRAConfig, PrefixConfig, VPTConfig, SSFConfig)}


def pet_config(cfg: Any) -> PetConfig:
    """A config dataclass from a dataclass, a mapping or an OmegaConf node with ``kind``; unknown keys fail."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        if type(cfg) in CONFIGS.values():
            return cfg
        cfg = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if not (isinstance(cfg, Mapping) or hasattr(cfg, "keys")):
        raise TypeError(f"a PET config must be a mapping or a config dataclass with a 'kind'; got {type(cfg).__name__}")
    values = {str(k): cfg[k] for k in cfg.keys()}
    kind = values.get("kind")
    if kind not in CONFIGS:
        raise ValueError(f"unknown PET kind '{kind}'; valid: {', '.join(sorted(CONFIGS))}")
    cls = CONFIGS[kind]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"PET kind '{kind}' has no key(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    for key in ("blocks", "targets"):  # OmegaConf ListConfig -> tuple
        if values.get(key) is not None and not isinstance(values[key], (str, int)):
            values[key] = tuple(values[key])
    return cls(**values)
