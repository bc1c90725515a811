"""Tiny random-init backbones for fast mechanics tests: ``tiny-mlp``, ``tiny-text`` and ``tiny-vit``.

No weights: each model is initialised from ``init_seed`` (without touching the global RNG), so the same config
gives the same model. ``tiny-text`` is a genuine ``transformers`` ``BertModel`` and ``tiny-vit`` a genuine timm
``VisionTransformer``, so PET modules attach to them exactly as to BERT encoders and ViT-B/16.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np
import timm
import torch
from torch import nn

from clpet.backbones.base import Backbone
from clpet.backbones.hf_encoder import TextEncoder
from clpet.backbones.images import ImagePreprocess, ImageTransform
from clpet.backbones.timm_backbone import TimmImageBackbone
from clpet.registry import BACKBONES


def _no_weights(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"{name} is a random-init test model without weights; set backbone.pretrained=false")


# -------------------------------------------------------------------------------------------- tiny-mlp


class VectorPreprocess:
    """Picklable batch function: list of 1-D float vectors -> (B, in_dim) float32 tensor."""

    def __init__(self, in_dim: int) -> None:
        self.in_dim = int(in_dim)

    def __call__(self, inputs: Sequence[Any]) -> torch.Tensor:
        x = np.asarray([np.asarray(v, dtype=np.float32).reshape(-1) for v in inputs], dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"tiny-mlp expects vectors of length {self.in_dim} (backbone.in_dim); got shape {x.shape}")
        return torch.from_numpy(x)  # (B, in_dim)


@BACKBONES.register("tiny-mlp")
class TinyMLP(Backbone):
    """Random-init 2-layer MLP over float vectors (modality ``vector``), for mechanics tests."""

    modality = "vector"

    @dataclass
    class Config:
        name: str = "tiny-mlp"
        in_dim: int = 16
        dim: int = 32
        init_seed: int = 0
        pretrained: bool = False

    def __init__(self, cfg: "TinyMLP.Config") -> None:
        _no_weights(cfg.name, cfg.pretrained)
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            self.model = nn.Sequential(nn.Linear(cfg.in_dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))
        self.feature_dim = int(cfg.dim)
        self._pre = VectorPreprocess(cfg.in_dim)
        self._key = f"{cfg.name}|in={cfg.in_dim}|dim={cfg.dim}|seed={cfg.init_seed}"

    @property
    def cache_key(self) -> str:
        return self._key

    def preprocess_fn(self, train: bool) -> VectorPreprocess:
        return self._pre

    def preprocess(self, inputs: Sequence[Any], train: bool) -> torch.Tensor:
        return self._pre(inputs)

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)  # (B, dim)

    @classmethod
    def from_config(cls, cfg: "TinyMLP.Config") -> "TinyMLP":
        return cls(cfg)


# ------------------------------------------------------------------------------------------- tiny-text

PAD, CLS, SEP = 0, 1, 2
_N_SPECIAL = 3
_WORD = re.compile(r"[a-z0-9]+")


class HashWordTokenizer:
    """Deterministic word-level tokenizer: lowercase, split on non-alphanumerics, hash words (CRC32) into
    ``vocab_size`` ids; ``[PAD]`` = 0, ``[CLS]`` = 1, ``[SEP]`` = 2. Call signature follows Hugging Face's."""

    def __init__(self, vocab_size: int = 1000) -> None:
        if vocab_size <= _N_SPECIAL:
            raise ValueError(f"vocab_size must exceed {_N_SPECIAL}")
        self.vocab_size = int(vocab_size)

    def encode(self, text: str) -> List[int]:
        return [_N_SPECIAL + zlib.crc32(w.encode("utf-8")) % (self.vocab_size - _N_SPECIAL)
                for w in _WORD.findall(text.lower())]

    def __call__(self, texts: Sequence[str], padding: bool = True, truncation: bool = True,
                 max_length: int = 64, return_tensors: str = "pt") -> Dict[str, torch.Tensor]:
        body = max(int(max_length) - 2, 0) if truncation else None
        rows = [[CLS] + self.encode(t)[:body] + [SEP] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), PAD, dtype=torch.long)  # (B, T), padded per batch
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}


@BACKBONES.register("tiny-text")
class TinyText(TextEncoder):
    """Random-init 2-layer, 32-wide BERT with a hashing word tokenizer (modality ``text``), for mechanics tests."""

    @dataclass
    class Config:
        name: str = "tiny-text"
        dim: int = 32
        depth: int = 2
        heads: int = 2
        intermediate: int = 64
        vocab_size: int = 1000
        max_length: int = 64
        init_seed: int = 0
        pretrained: bool = False

    def __init__(self, cfg: "TinyText.Config") -> None:
        _no_weights(cfg.name, cfg.pretrained)
        from transformers import BertConfig, BertModel

        config = BertConfig(
            vocab_size=cfg.vocab_size, hidden_size=cfg.dim, num_hidden_layers=cfg.depth,
            num_attention_heads=cfg.heads, intermediate_size=cfg.intermediate,
            max_position_embeddings=max(int(cfg.max_length), 8), pad_token_id=PAD,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = BertModel(config, add_pooling_layer=False)
        key = (f"{cfg.name}|dim={cfg.dim}|depth={cfg.depth}|heads={cfg.heads}|ff={cfg.intermediate}"
               f"|vocab={cfg.vocab_size}|max_length={cfg.max_length}|seed={cfg.init_seed}")
        super().__init__(model, HashWordTokenizer(cfg.vocab_size), "mean", cfg.max_length, key)

    @classmethod
    def from_config(cls, cfg: "TinyText.Config") -> "TinyText":
        return cls(cfg)


# -------------------------------------------------------------------------------------------- tiny-vit


@BACKBONES.register("tiny-vit")
class TinyViT(TimmImageBackbone):
    """Random-init timm ViT (32 px, patch 8, depth 2, width 32, 2 heads; modality ``image``), for mechanics tests."""

    @dataclass
    class Config:
        name: str = "tiny-vit"
        image_size: int = 32
        patch_size: int = 8
        depth: int = 2
        dim: int = 32
        heads: int = 2
        init_seed: int = 0
        pretrained: bool = False

    def __init__(self, cfg: "TinyViT.Config") -> None:
        _no_weights(cfg.name, cfg.pretrained)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = timm.create_model(
                "vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=cfg.image_size,
                patch_size=cfg.patch_size, depth=cfg.depth, embed_dim=cfg.dim, num_heads=cfg.heads,
            )
        size, half = int(cfg.image_size), (0.5, 0.5, 0.5)
        train_pre = ImagePreprocess(ImageTransform(size, True, half, half, crop_pct=1.0, interpolation="bilinear",
                                                   scale=(0.5, 1.0)))
        test_pre = ImagePreprocess(ImageTransform(size, False, half, half, crop_pct=1.0, interpolation="bilinear"))
        key = (f"{cfg.name}|size={size}|patch={cfg.patch_size}|depth={cfg.depth}|dim={cfg.dim}|heads={cfg.heads}"
               f"|seed={cfg.init_seed}")
        super().__init__(model, train_pre, test_pre, key)

    @classmethod
    def from_config(cls, cfg: "TinyViT.Config") -> "TinyViT":
        return cls(cfg)
