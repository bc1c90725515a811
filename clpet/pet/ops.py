"""Pure tensor functions behind the PET wrappers: prefix attention with LAE's compensation, token insertion
and removal (VPT prompts), and attention-mask extension for inserted keys/queries.

Prefix attention follows LAE (Gao et al., "A Unified Continual Learning Framework with General
Parameter-Efficient Tuning", ICCV 2023, arXiv:2303.10070; reference code gqk/LAE, ``libml/model/pet/prefix.py``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def insert_tokens(x: torch.Tensor, tokens: torch.Tensor, at: int) -> torch.Tensor:
    """Insert ``tokens`` (P, D) or (B, P, D) into ``x`` (B, T, D) before position ``at``: (B, T + P, D)."""
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(0)
    tokens = tokens.to(x.dtype).expand(x.shape[0], -1, -1)  # (B, P, D)
    if at == 0:
        return torch.cat([tokens, x], dim=1)
    return torch.cat([x[:, :at], tokens, x[:, at:]], dim=1)


def remove_tokens(x: torch.Tensor, at: int, length: int) -> torch.Tensor:
    """Drop ``length`` tokens starting at ``at`` from ``x`` (B, T, D): (B, T - length, D)."""
    if at == 0:
        return x[:, length:]
    return torch.cat([x[:, :at], x[:, at + length:]], dim=1)


def additive_mask(mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """An attention mask as an additive bias: bool (True = attend) -> 0 / -inf; float masks pass through."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return bias.masked_fill_(~mask, float("-inf"))
    return mask.to(dtype)


def extend_mask(mask: Optional[torch.Tensor], at: int, keys: int, queries: int = 0) -> Optional[torch.Tensor]:
    """Make room in a (..., Tq, Tk) attention mask for ``keys`` inserted keys and ``queries`` inserted queries at
    position ``at``. Inserted keys are visible to every query (True / 0.0); an inserted query sees what the query
    at position 0 ([CLS], never masked) sees, plus the inserted keys. A mask whose query axis has size 1
    (broadcast over queries) only gains keys. ``None`` stays ``None``."""
    if mask is None or (keys == 0 and queries == 0):
        return mask
    visible = True if mask.dtype == torch.bool else 0.0
    if keys:
        shape = (*mask.shape[:-1], keys)
        cols = torch.full(shape, visible, dtype=mask.dtype, device=mask.device)  # (..., Tq, keys)
        mask = torch.cat([mask[..., :at], cols, mask[..., at:]], dim=-1)  # (..., Tq, Tk + keys)
    if queries and mask.shape[-2] > 1:
        rows = mask[..., :1, :].expand(*mask.shape[:-2], queries, mask.shape[-1])  # (..., queries, Tk')
        mask = torch.cat([mask[..., :at, :], rows, mask[..., at:, :]], dim=-2)
    return mask


def prefix_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_prefix: torch.Tensor,
    value_prefix: torch.Tensor,
    scale: float,
    at: int = 1,
    mask: Optional[torch.Tensor] = None,
    compensatory: bool = True,
    dropout_p: float = 0.0,
    training: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Multi-head attention over ``[tokens[:at]; prefix; tokens[at:]]`` keys/values (prefix tuning).

    Shapes: ``q`` (B, H, Tq, d); ``k``, ``v`` (B, H, Tk, d); ``key_prefix``, ``value_prefix`` (1 or B, H, P, d);
    ``mask`` an additive bias or bool mask broadcastable to (B, H, Tq, Tk) over the *tokens only* (the prefix is
    always visible). Returns the output (B, H, Tq, d) and the attention weights (B, H, Tq, Tk + P).

    LAE's compensatory attention (arXiv:2303.10070, Sec. 3.2; gqk/LAE ``Prefix.compensate``): after the softmax
    over prefix and tokens (and after attention dropout, as in the reference code), the weights on the prefix
    slice are divided by their sum, so the prefix receives a total mass of exactly 1 per query, while the token
    weights are left as they are (they keep the mass 1 - lambda, lambda = the prefix's share before
    renormalisation)::

        A = softmax(q [K_p; K]^T * scale)         lambda = sum_j A[:, p_j]
        A[:, prefix] <- A[:, prefix] / lambda      out = A [V_p; V]
    """
    batch, heads = q.shape[0], q.shape[1]
    length = key_prefix.shape[-2]
    key_prefix = key_prefix.to(k.dtype).expand(batch, heads, -1, -1)  # (B, H, P, d)
    value_prefix = value_prefix.to(v.dtype).expand(batch, heads, -1, -1)
    keys = torch.cat([k[:, :, :at], key_prefix, k[:, :, at:]], dim=2)  # (B, H, Tk + P, d)
    values = torch.cat([v[:, :, :at], value_prefix, v[:, :, at:]], dim=2)
    scores = (q * scale) @ keys.transpose(-2, -1)  # (B, H, Tq, Tk + P)
    bias = additive_mask(mask, scores.dtype)
    if bias is not None:
        scores = scores + extend_mask(bias, at, length)
    attn = scores.softmax(dim=-1)
    if dropout_p > 0.0 and training:
        attn = F.dropout(attn, p=dropout_p, training=True)
    if compensatory:
        mass = attn[..., at:at + length].sum(dim=-1, keepdim=True)  # (B, H, Tq, 1): lambda
        attn = torch.cat([attn[..., :at], attn[..., at:at + length] / mass.clamp_min(1e-12),
                          attn[..., at + length:]], dim=-1)
    return attn @ values, attn
