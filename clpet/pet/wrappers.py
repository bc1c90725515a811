"""Wrappers that host PET sets around a frozen module (PEFT's ``BaseTunerLayer`` pattern).

A wrapper holds the module it replaces as ``base`` and one PET module per set in ``pets`` (an ``nn.ModuleDict``
keyed by set name); ``live`` names the sets that act in the forward pass (set by ``PetManager.set_active``).
With no live set a wrapper calls ``base`` unchanged, so an inactive set costs one Python call per wrapper.
All sets of one kind share the wrappers. State-dict keys of the backbone's own tensors stay what they were
(``blocks.0.attn.qkv.weight``, not ``...qkv.base.weight``): a wrapper hides its ``base.`` hop when saving and
restores it when loading, so checkpoints of the unwrapped model load into the wrapped one and back; PET tensors
appear under ``<path>.pets.<set>.``.

========================  =====================================================================================
``LayerWrapper``          a leaf op (Linear, Conv2d, norm, patch embedding): ``y = base(x)``, then each live
                          PET maps ``(x, y) -> y`` (LoRA, SSF, CNN pointwise adapters)
``ViTBlockWrapper``       a timm block: prompt tokens in/out (VPT) and adapters parallel to attention / MLP
``ViTAttentionWrapper``   timm ``Attention`` with prefix keys/values (LAE prefix)
``BertLayerWrapper``      a BERT layer: prompt tokens in/out, attention mask extended for them
``BertSelfAttentionWrapper``  BERT self-attention with prefix keys/values, the mask extended (prefix always visible)
``BertResidualWrapper``   ``BertSelfOutput`` / ``BertOutput``: adapters added before the residual LayerNorm
========================  =====================================================================================
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from clpet.pet.ops import extend_mask, prefix_attention


def unwrap(module: Optional[nn.Module]) -> Optional[nn.Module]:
    """The original module under any PET wrapper."""
    while isinstance(module, PetWrapper):
        module = module.base
    return module


def _hide_base(module: nn.Module, state_dict: Dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: ``<prefix>base.<rest>`` -> ``<prefix><rest>`` (order kept)."""
    hidden = prefix + "base."
    if not any(k.startswith(hidden) for k in state_dict):
        return
    items = list(state_dict.items())
    state_dict.clear()
    for key, value in items:
        state_dict[prefix + key[len(hidden):] if key.startswith(hidden) else key] = value


def _expose_base(module: nn.Module, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: ``<prefix><rest>`` -> ``<prefix>base.<rest>`` except the wrapper's own ``pets``."""
    own = (prefix + "base.", prefix + "pets.")
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(own)]:
        state_dict[prefix + "base." + key[len(prefix):]] = state_dict.pop(key)


class PetWrapper(nn.Module):
    """Base of all wrappers: ``base`` (the frozen module), ``pets`` (set name -> PET module), ``live``."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.pets = nn.ModuleDict()
        self.live: Tuple[str, ...] = ()
        self.register_state_dict_post_hook(_hide_base)
        self.register_load_state_dict_pre_hook(_expose_base)

    def live_pets(self) -> List[nn.Module]:
        pets = self.pets
        return [pets[name] for name in self.live if name in pets]

    def extra_repr(self) -> str:
        return f"live={list(self.live)}"


class LayerWrapper(PetWrapper):
    """A leaf op: ``y = base(x, ...)``; each live PET then maps ``(x, y) -> y`` in the order of the live sets."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        y = self.base(x, *args, **kwargs)
        for pet in self.live_pets():
            y = pet(x, y)
        return y


def _residual_branch(block: nn.Module, i: int, out: torch.Tensor) -> torch.Tensor:
    """LayerScale (``ls{i}`` or Eva's ``gamma_{i}``) and drop-path ``drop_path{i}`` of a timm block's branch."""
    ls = getattr(block, f"ls{i}", None)
    if ls is not None:
        out = ls(out)
    else:
        gamma = getattr(block, f"gamma_{i}", None)
        if gamma is not None:
            out = gamma * out
    drop = getattr(block, f"drop_path{i}", None)
    return drop(out) if drop is not None else out


class ViTBlockWrapper(PetWrapper):
    """A timm transformer block with prompt tokens (``hook = "tokens"``) and adapters (``hook = "attn"`` /
    ``"mlp"``).

    Adapters (``clpet.pet.adapter``) in a pre-norm block (``Block``, ``RelPosBlock``, ``EvaBlock``), h = norm1(x)::

        x1 = x  + drop_path1(ls1(attn(h)))        + sum_attn_adapters(h)     # LAE: parallel to attention
        x2 = x1 + drop_path2(ls2(mlp(norm2(x1)))) + sum_mlp_adapters(x1)     # AdaptFormer/APER: parallel to MLP

    which is timm's ``Block.forward`` plus the adapter terms. In a post-norm block (``ResPostBlock``...) the
    adapters take the sub-layer's input, as on BERT: ``x1 = x + drop_path1(norm1(attn(x))) + A(x)``,
    ``x2 = x1 + drop_path2(norm2(mlp(x1))) + A(x1)``. Prompts enter before the block at ``token_at`` (after the
    class and register tokens) and leave after it (``clpet.pet.prompt``).
    """

    def __init__(self, base: nn.Module, token_at: int, layout: str = "pre") -> None:
        super().__init__(base)
        self.token_at = int(token_at)
        self.layout = layout

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        pets = self.live_pets()
        if not pets:
            return self.base(x, *args, **kwargs)
        prompts = [p for p in pets if p.hook == "tokens"]
        attn_adapters = [p for p in pets if p.hook == "attn"]
        mlp_adapters = [p for p in pets if p.hook == "mlp"]
        for p in prompts:
            x = p.enter(x, self.token_at)
        if attn_adapters or mlp_adapters:
            x = self._adapted(x, attn_adapters, mlp_adapters, args, kwargs)
        else:
            x = self.base(x, *args, **kwargs)
        for p in reversed(prompts):
            x = p.leave(x, self.token_at)
        return x

    def _adapted(self, x: torch.Tensor, attn_adapters: List[nn.Module], mlp_adapters: List[nn.Module],
                 args: tuple, kwargs: dict) -> torch.Tensor:
        b = self.base
        if self.layout == "post":
            x1 = x + _residual_branch(b, 1, b.norm1(b.attn(x, *args, **kwargs)))
            for adapter in attn_adapters:
                x1 = x1 + adapter(x)
            x2 = x1 + _residual_branch(b, 2, b.norm2(b.mlp(x1)))
            for adapter in mlp_adapters:
                x2 = x2 + adapter(x1)
            return x2
        h = b.norm1(x)
        x1 = x + _residual_branch(b, 1, b.attn(h, *args, **kwargs))
        for adapter in attn_adapters:
            x1 = x1 + adapter(h)
        x2 = x1 + _residual_branch(b, 2, b.mlp(b.norm2(x1)))
        for adapter in mlp_adapters:
            x2 = x2 + adapter(x1)
        return x2


class ViTAttentionWrapper(PetWrapper):
    """timm ``Attention`` with one live prefix set: timm's forward with the prefix keys/values inserted at
    ``token_at`` and the attention computed by ``clpet.pet.ops.prefix_attention``."""

    def __init__(self, base: nn.Module, token_at: int) -> None:
        super().__init__(base)
        self.token_at = int(token_at)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        pets = self.live_pets()
        if not pets:
            return self.base(x, *args, **kwargs)
        attn_mask = args[0] if args else kwargs.get("attn_mask")
        if (args[1] if len(args) > 1 else kwargs.get("is_causal", False)):
            raise ValueError("prefix: causal attention (is_causal=True) is not supported")
        prefix = pets[0]
        a = self.base
        B, N, _ = x.shape
        gate = a.gate(x).sigmoid() if getattr(a, "gate", None) is not None else None
        qkv = a.qkv(x).reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, d)
        q, k, v = qkv.unbind(0)
        q, k = a.q_norm(q), a.k_norm(k)
        key_prefix, value_prefix = prefix.key_value(a.num_heads)  # (1, H, P, d) each
        out, _ = prefix_attention(q, k, v, key_prefix, value_prefix, a.scale, at=min(self.token_at, N),
                                  mask=attn_mask, compensatory=prefix.compensatory,
                                  dropout_p=a.attn_drop.p, training=self.training)
        out = out.transpose(1, 2).reshape(B, N, a.num_heads * a.head_dim)  # (B, N, H*d)
        out = a.norm(out)
        if gate is not None:
            out = out * gate
        return a.proj_drop(a.proj(out))


def _mask_arg(args: tuple, kwargs: dict) -> Optional[torch.Tensor]:
    return args[0] if args else kwargs.get("attention_mask")


def _with_mask(args: tuple, kwargs: dict,
               fn: Callable[[Optional[torch.Tensor]], Optional[torch.Tensor]]) -> Tuple[tuple, dict]:
    if args:
        return (fn(args[0]), *args[1:]), kwargs
    if "attention_mask" in kwargs:
        return args, {**kwargs, "attention_mask": fn(kwargs["attention_mask"])}
    return args, kwargs


class BertLayerWrapper(PetWrapper):
    """A BERT layer with prompt tokens: they enter after ``[CLS]`` (``token_at``) and leave after the layer; the
    layer's attention mask (built by the model for the real tokens) gains rows and columns for every prompt token
    in the sequence (inserted here or carried from an earlier layer), all visible."""

    def __init__(self, base: nn.Module, token_at: int = 1) -> None:
        super().__init__(base)
        self.token_at = int(token_at)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        pets = self.live_pets()
        if not pets:
            return self.base(hidden_states, *args, **kwargs)
        x = hidden_states
        for p in pets:
            x = p.enter(x, self.token_at)
        mask = _mask_arg(args, kwargs)
        if mask is not None:
            extra = x.shape[1] - mask.shape[-1]
            args, kwargs = _with_mask(args, kwargs, lambda m: extend_mask(m, self.token_at, extra, extra))
        out = self.base(x, *args, **kwargs)
        y = out[0] if isinstance(out, tuple) else out
        for p in reversed(pets):
            y = p.leave(y, self.token_at)
        return (y, *out[1:]) if isinstance(out, tuple) else y


class BertSelfAttentionWrapper(PetWrapper):
    """BERT self-attention with one live prefix set, inserted after ``[CLS]``; padding stays masked, the prefix is
    always visible. Returns ``(context (B, T, D), attention weights)`` as ``BertSelfAttention`` does."""

    def __init__(self, base: nn.Module, token_at: int = 1) -> None:
        super().__init__(base)
        self.token_at = int(token_at)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        pets = self.live_pets()
        if not pets:
            return self.base(hidden_states, *args, **kwargs)
        for name in ("cache", "past_key_values", "past_key_value", "encoder_hidden_states"):
            if kwargs.get(name) is not None:
                raise ValueError(f"prefix: BERT self-attention with {name} (decoder / cross-attention) is not "
                                 f"supported")
        prefix = pets[0]
        a = self.base
        B, T, _ = hidden_states.shape
        shape = (B, T, -1, a.attention_head_size)
        q = a.query(hidden_states).view(shape).transpose(1, 2)  # (B, H, T, d)
        k = a.key(hidden_states).view(shape).transpose(1, 2)
        v = a.value(hidden_states).view(shape).transpose(1, 2)
        key_prefix, value_prefix = prefix.key_value(a.num_attention_heads)  # (1, H, P, d)
        scale = getattr(a, "scaling", a.attention_head_size ** -0.5)
        dropout = a.dropout.p if isinstance(getattr(a, "dropout", None), nn.Dropout) else 0.0
        out, weights = prefix_attention(q, k, v, key_prefix, value_prefix, scale, at=min(self.token_at, T),
                                        mask=_mask_arg(args, kwargs), compensatory=prefix.compensatory,
                                        dropout_p=dropout, training=self.training)
        return out.transpose(1, 2).reshape(B, T, -1), weights  # (B, T, H*d)


class BertResidualWrapper(PetWrapper):
    """``BertSelfOutput`` / ``BertOutput`` with adapters: ``LayerNorm(dropout(dense(h)) + u + sum adapters(u))``,
    ``u`` = the sub-layer's residual input (the layer input for attention, the attention output for the MLP)."""

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        pets = self.live_pets()
        if not pets:
            return self.base(hidden_states, input_tensor)
        b = self.base
        y = b.dropout(b.dense(hidden_states)) + input_tensor
        for adapter in pets:
            y = y + adapter(input_tensor)
        return b.LayerNorm(y)
