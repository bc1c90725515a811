"""CLIP backbones: ``hf-clip`` (a Hugging Face ``CLIPModel`` from a local folder) and ``tiny-clip`` (tests).

Both encoders are kept: ``features(pixels)`` is the projected image embedding (what SimpleCIL-style methods read),
``encode_text(texts)`` the projected text embedding of class-name prompts (what CLIP-based methods such as
``clip-zeroshot`` and ``cpe-clip`` compare it with). Images get CLIP's preprocessing (Resize(size, bicubic) on the
short side, CenterCrop(size), CLIP's mean/std) at test time and, by default, at training time too (the CLIP
continual-learning codes train on it; ``train_augment=true`` uses RandomResizedCrop + flip instead). Texts are
tokenised to CLIP's fixed context (77 tokens, padded), which prompt methods rely on (prompt slots after the start
token, the end token's position found from the ids).

What this adds to transformers: the CLIP encoders exposed as one clpet backbone, with the layer lists
(``text_layers``, ``vision_layers``) a prompt method hooks into; and ``tiny-clip``, a random-init CLIP with a
byte-level tokenizer built in code, so tests need no download.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch
from torch import nn

from clpet.backbones.base import Backbone
from clpet.backbones.hf_encoder import file_stamp
from clpet.backbones.images import ImagePreprocess, ImageTransform
from clpet.registry import BACKBONES

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT_LENGTH = 77


class TextTokens:
    """Picklable: class-name prompts -> ``{"input_ids", "attention_mask"}`` padded to the fixed context."""

    def __init__(self, tokenizer: Any, context_length: int) -> None:
        self.tokenizer, self.context_length = tokenizer, int(context_length)

    def __call__(self, texts: Sequence[str]) -> dict:
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


class ClipBackbone(Backbone):
    """A ``CLIPModel`` (``self.model``) with its tokenizer; image features are CLIP's projected image embedding."""

    modality = "image"

    def __init__(self, model: nn.Module, tokenizer: Any, image_size: int, train_augment: bool, key: str) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = int(model.config.projection_dim)
        self.tokens = TextTokens(tokenizer, min(CONTEXT_LENGTH, int(model.config.text_config.max_position_embeddings)))
        test = ImagePreprocess(ImageTransform(image_size, False, CLIP_MEAN, CLIP_STD, crop_pct=1.0,
                                              interpolation="bicubic"))
        train = ImagePreprocess(ImageTransform(image_size, True, CLIP_MEAN, CLIP_STD, interpolation="bicubic")) \
            if train_augment else test  # one transform, one decoded-image cache
        self._pre = {True: train, False: test}
        self._key = key

    @property
    def cache_key(self) -> str:
        return self._key

    @property
    def text_layers(self) -> nn.ModuleList:
        return self.model.text_model.encoder.layers

    @property
    def vision_layers(self) -> nn.ModuleList:
        return self.model.vision_model.encoder.layers

    def preprocess_fn(self, train: bool) -> ImagePreprocess:
        return self._pre[train]

    def preprocess(self, inputs: Sequence[Any], train: bool) -> torch.Tensor:
        return self._pre[train](inputs)

    def enable_image_cache(self, max_mb: float) -> bool:
        distinct = list({id(pre): pre for pre in self._pre.values()}.values())
        return any([pre.enable_cache(max_mb / len(distinct)) for pre in distinct])

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The projected image embedding (not normalised), (B, projection_dim)."""
        pooled = self.model.vision_model(pixel_values=pixel_values).pooler_output
        return self.model.visual_projection(pooled)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """The projected text embedding of each text (EOS-token pooling), (N, projection_dim)."""
        device = self.model.logit_scale.device
        enc = {k: v.to(device) for k, v in self.tokens(texts).items()}
        pooled = self.model.text_model(**enc).pooler_output
        return self.model.text_projection(pooled)

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's learned temperature, exp(logit_scale) (100 in the released models)."""
        return self.model.logit_scale.exp()


@BACKBONES.register("hf-clip")
class HFClip(ClipBackbone):
    """Any Hugging Face CLIP (``CLIPModel`` + its tokenizer) from a local folder: ``backbone.model=DIR``."""

    @dataclass
    class Config:
        name: str = "hf-clip"
        model: str = ""  # a local folder with config.json, the weights and the tokenizer files
        image_size: Optional[int] = None  # default: the model's vision_config.image_size
        train_augment: bool = False

        def __post_init__(self) -> None:
            path = os.path.expanduser(self.model)
            if not self.model:
                raise ValueError("hf-clip needs backbone.model=/path/to/a/local/CLIP folder (e.g. clip-vit-base-patch16)")
            if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
                raise ValueError(f"hf-clip: no CLIP model folder (config.json, weights, tokenizer) at {path}")

    @classmethod
    def from_config(cls, cfg: "HFClip.Config") -> "HFClip":
        from transformers import AutoTokenizer, CLIPModel

        path = os.path.expanduser(cfg.model)
        model = CLIPModel.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        size = int(cfg.image_size or model.config.vision_config.image_size)
        backbone = cls(model, tokenizer, size, cfg.train_augment,
                       f"{cfg.name}|{os.path.abspath(path)}|{file_stamp(path)}|size={size}|aug={cfg.train_augment}")
        backbone.weight_path = path
        return backbone


@BACKBONES.register("tiny-clip")
class TinyClip(ClipBackbone):
    """A random-init CLIP built in code (2 text and 2 vision layers, 32 px images, byte-level tokenizer): tests."""

    @dataclass
    class Config:
        name: str = "tiny-clip"
        dim: int = 32
        layers: int = 2
        heads: int = 2
        image_size: int = 32
        patch_size: int = 8
        projection_dim: int = 16
        init_seed: int = 0
        train_augment: bool = False

        def __post_init__(self) -> None:
            if min(self.dim, self.layers, self.heads, self.image_size, self.patch_size, self.projection_dim) <= 0:
                raise ValueError("tiny-clip: dim, layers, heads, image_size, patch_size and projection_dim must be > 0")
            if self.dim % self.heads or self.image_size % self.patch_size:
                raise ValueError("tiny-clip: dim must divide by heads and image_size by patch_size")

    @classmethod
    def from_config(cls, cfg: "TinyClip.Config") -> "TinyClip":
        from transformers import CLIPConfig, CLIPModel

        from clpet.backbones.lm import byte_tokenizer

        tok = byte_tokenizer(specials_last=True, wrap=True)
        common = dict(hidden_size=cfg.dim, intermediate_size=2 * cfg.dim, num_hidden_layers=cfg.layers,
                      num_attention_heads=cfg.heads)
        config = CLIPConfig(
            text_config=dict(common, vocab_size=len(tok), max_position_embeddings=CONTEXT_LENGTH,
                             pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
            vision_config=dict(common, image_size=cfg.image_size, patch_size=cfg.patch_size),
            projection_dim=cfg.projection_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = CLIPModel(config).eval()
        key = (f"{cfg.name}|dim={cfg.dim}|layers={cfg.layers}|heads={cfg.heads}|size={cfg.image_size}"
               f"|patch={cfg.patch_size}|proj={cfg.projection_dim}|seed={cfg.init_seed}|aug={cfg.train_augment}")
        return cls(model, tok, cfg.image_size, cfg.train_augment, key)


def clip_backbone_or_fail(backbone: Backbone, method: str) -> ClipBackbone:
    """``backbone`` if it is a CLIP backbone; a one-line ValueError for a method that needs both encoders."""
    if not isinstance(backbone, ClipBackbone):
        raise ValueError(f"{method} needs a CLIP backbone (backbone=hf-clip backbone.model=DIR, or tiny-clip); "
                         f"got {type(backbone).__name__}")
    return backbone


def class_prompts(template: str, names: List[str]) -> List[str]:
    """``template.format(name)`` per class name (``_`` read as a space); one line if a name is missing."""
    if not names or any(not str(n).strip() for n in names):
        raise ValueError("this method prompts CLIP with class names, and the scenario has none for some class")
    return [template.format(str(n).replace("_", " ")) for n in names]
