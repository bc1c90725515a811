"""Where PET modules can attach: the blocks of a backbone and the named roles inside them, found from module
types and names (never from method names), for three families:

==========  ====================================================================================================
``vit``     timm ViTs: a module with ``patch_embed`` and ``blocks`` whose blocks have ``attn`` and ``mlp``
            (``Block``, ``ResPostBlock``, ``RelPosBlock``, ``EvaBlock``...). Roles per block: ``block attn norm1
            norm2 qkv proj fc1 fc2`` (``q``/``k``/``v`` = slices of the fused ``qkv``, or Eva's separate
            ``q_proj``/``k_proj``/``v_proj``); outside the blocks ``patch_embed`` and ``final_norm``.
``bert``    Hugging Face BERT-style encoders (BERT, MiniLM, RoBERTa...): a module with ``embeddings`` and
            ``encoder.layer``. Roles per layer: ``block``, ``attn`` (``attention.self``), ``attn_out``
            (``attention.output``), ``mlp_out`` (``output``), ``q k v`` (query/key/value), ``proj``
            (``attention.output.dense``), ``norm1`` (``attention.output.LayerNorm``), ``fc1``
            (``intermediate.dense``), ``fc2`` (``output.dense``), ``norm2`` (``output.LayerNorm``); outside the
            layers ``embed_norm``.
``cnn``     timm CNNs: blocks named ``blocks.S.B`` (EfficientNet, MobileNet), ``stages.S.blocks.B`` (ConvNeXt) or
            ``layerS.B`` (ResNet), numbered in order. Roles = layer names inside the block (``conv_pw``,
            ``conv_pwl``, ``mlp.fc1``...), grouped as ``pointwise`` (1x1, stride-1, ungrouped convs and the
            channels-last ``Linear`` layers of ConvNeXt), ``convs`` and ``norms``; squeeze-excite, attention and
            downsample paths are left out.
==========  ====================================================================================================

Paths are *logical*: the names the modules had before any PET wrapper was inserted (a wrapper's ``base`` hop is
skipped), so the structure is the same before and after sets are added.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from torch import nn

from clpet.pet.wrappers import PetWrapper, unwrap

FAMILIES = ("vit", "bert", "cnn")
_CNN_BLOCK = re.compile(r"(?:^|\.)(?:blocks\.\d+\.\d+|stages\.\d+\.blocks\.\d+|layer\d+\.\d+)$")
_CNN_SKIP = {"se", "attn", "downsample", "shortcut", "aa", "sk"}
SUPPORTED = ("timm ViTs (patch_embed + blocks with attn/mlp), Hugging Face BERT-style encoders "
             "(embeddings + encoder.layer) and timm CNNs (blocks.S.B / stages.S.blocks.B / layerS.B)")


# ------------------------------------------------------------------------------------------ logical tree


def logical_named_modules(root: nn.Module, prefix: str = "") -> Iterator[Tuple[str, nn.Module]]:
    """``named_modules()`` as if no PET wrapper were there: wrappers are replaced by their ``base`` and their
    PET modules are not visited."""
    module = unwrap(root)
    yield prefix, module
    for name, child in module._modules.items():
        if child is not None:
            yield from logical_named_modules(child, f"{prefix}.{name}" if prefix else name)


def get_logical(root: nn.Module, path: str) -> nn.Module:
    """The (unwrapped) module at a logical path."""
    module = unwrap(root)
    for part in path.split(".") if path else ():
        module = unwrap(module._modules[part])
    return module


def parent_slot(root: nn.Module, path: str) -> Tuple[nn.Module, str]:
    """(the unwrapped parent module, the child's name) for a logical path: ``parent._modules[name]`` holds the
    module or the wrapper around it."""
    parent_path, _, name = path.rpartition(".")
    return get_logical(root, parent_path), name


# ----------------------------------------------------------------------------------------------- structure


@dataclass
class BlockSites:
    """One block: its index, path and class, layout (``pre``/``post`` norm for timm, ``bert``, ``cnn``,
    ``other``), roles (role -> module path), fused-qkv slices (role -> (qkv path, slice index)), groups
    (CNN: group -> roles) and whether its attention is one the prefix wrapper supports."""

    index: int
    path: str
    cls: str
    layout: str
    roles: Dict[str, str] = field(default_factory=dict)
    slices: Dict[str, Tuple[str, int]] = field(default_factory=dict)
    groups: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    standard_attn: bool = False


@dataclass
class Structure:
    """What ``find_structure`` found: the family, the blocks and global sites, the model width / heads, the token
    position where prompts and prefixes go (after the class token) and, per PET kind, why it cannot attach to
    this model at all (``unsupported``)."""

    family: str
    model_cls: str
    root: str
    blocks: List[BlockSites]
    globals: Dict[str, str]
    modules: Dict[str, nn.Module]
    dim: int = 0
    heads: int = 0
    token_at: int = 0
    prompt_fan_in: int = 0
    unsupported: Dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.family} backbone ({self.model_cls} at '{self.root or '<root>'}', {len(self.blocks)} blocks)"

    def module(self, path: str) -> nn.Module:
        return self.modules[path]

    def block_indices(self, blocks: Optional[Sequence[int]], who: str) -> List[int]:
        """The selected block indices; an index past the last block fails in one line."""
        n = len(self.blocks)
        if blocks is None:
            return list(range(n))
        bad = [b for b in blocks if b >= n]
        if bad:
            raise ValueError(f"{who}: block index {bad[0]} is out of range: the {self.describe()} has blocks 0-{n - 1}")
        return list(blocks)

    def known_roles(self) -> List[str]:
        roles = set(self.globals)
        for b in self.blocks:
            roles |= set(b.roles) | set(b.slices) | set(b.groups)
        return sorted(roles)

    def check_targets(self, targets: Sequence[str], who: str) -> None:
        known = set(self.known_roles())
        for t in targets:
            if t not in known:
                raise ValueError(f"{who}: unknown target '{t}' on the {self.describe()}; "
                                 f"valid: {', '.join(sorted(known))}")


def find_structure(model: nn.Module) -> Structure:
    """The PET structure of ``model`` (a Backbone or any module containing a supported model); one-line
    ValueError when nothing supported is found."""
    named = list(logical_named_modules(model))
    for path, module in named:
        blocks = getattr(module, "blocks", None)
        if hasattr(module, "patch_embed") and isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
            return _vit_structure(path, module, named)
    for path, module in named:
        encoder = getattr(module, "encoder", None)
        layers = getattr(encoder, "layer", None) if encoder is not None else None
        if hasattr(module, "embeddings") and isinstance(layers, nn.ModuleList) and len(layers):
            return _bert_structure(path, module, named)
    cnn_blocks = [(p, m) for p, m in named if _CNN_BLOCK.search(p)]
    if cnn_blocks:
        return _cnn_structure(named, cnn_blocks)
    raise ValueError(f"no PET sites in {type(unwrap(model)).__name__}: supported are {SUPPORTED}")


def site_names(model: nn.Module) -> Dict[str, List[str]]:
    """role -> module paths over all blocks (``Backbone.sites()``); {} for an unsupported model."""
    try:
        structure = find_structure(model)
    except ValueError:
        return {}
    out: Dict[str, List[str]] = {role: [path] for role, path in structure.globals.items()}
    for b in structure.blocks:
        for role, path in [("block", b.path), *b.roles.items()]:
            out.setdefault(role, [])
            if path not in out[role]:
                out[role].append(path)
    return out


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


# ------------------------------------------------------------------------------------------------ timm ViT


def _timm_block_layouts() -> Tuple[tuple, tuple]:
    from timm.models import vision_transformer as vt

    pre, post = [vt.Block], [vt.ResPostBlock]
    try:
        from timm.models import eva

        pre.append(eva.EvaBlock)
        post.append(eva.EvaBlockPostNorm)
    except (ImportError, AttributeError):  # pragma: no cover - older timm
        pass
    try:
        from timm.models import vision_transformer_relpos as rp

        pre.append(rp.RelPosBlock)
        post.append(rp.ResPostRelPosBlock)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return tuple(pre), tuple(post)


def _vit_structure(root: str, vit: nn.Module, named: List[Tuple[str, nn.Module]]) -> Structure:
    from timm.layers import Attention
    from timm.models.vision_transformer import VisionTransformer

    pre, post = _timm_block_layouts()
    modules = dict(named)
    blocks: List[BlockSites] = []
    dim = heads = 0
    for i, raw in enumerate(vit.blocks):
        block = unwrap(raw)
        path = _join(root, "blocks", str(i))
        if not (hasattr(block, "attn") and hasattr(block, "mlp")):
            raise ValueError(f"timm block {path} ({type(block).__name__}) has no separate attn and mlp; "
                             f"PET sites are defined for Block-style ViT blocks only")
        layout = "pre" if isinstance(block, pre) else "post" if isinstance(block, post) else "other"
        attn, mlp = unwrap(block.attn), unwrap(block.mlp)
        sites = BlockSites(i, path, type(block).__name__, layout, standard_attn=isinstance(attn, Attention))
        sites.roles["attn"] = _join(path, "attn")
        for norm in ("norm1", "norm2"):
            module = unwrap(getattr(block, norm, None))
            if isinstance(module, nn.Module) and not isinstance(module, nn.Identity):
                sites.roles[norm] = _join(path, norm)
        qkv = unwrap(getattr(attn, "qkv", None))
        if isinstance(qkv, nn.Linear):
            sites.roles["qkv"] = _join(path, "attn", "qkv")
            for j, role in enumerate(("q", "k", "v")):
                sites.slices[role] = (sites.roles["qkv"], j)
            dim = dim or qkv.in_features
        for role, name in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj")):
            if isinstance(unwrap(getattr(attn, name, nn.Identity())), nn.Linear):
                sites.roles[role] = _join(path, "attn", name)
        if isinstance(unwrap(getattr(attn, "proj", nn.Identity())), nn.Linear):
            sites.roles["proj"] = _join(path, "attn", "proj")
        for role in ("fc1", "fc1_g", "fc1_x", "fc2"):
            if isinstance(unwrap(getattr(mlp, role, nn.Identity())), nn.Linear):
                sites.roles[role] = _join(path, "mlp", role)
        heads = heads or int(getattr(attn, "num_heads", 0))
        blocks.append(sites)
    if not dim:
        dim = int(getattr(vit, "embed_dim", 0) or getattr(vit, "num_features", 0))
    globals_: Dict[str, str] = {"patch_embed": _join(root, "patch_embed")}
    if isinstance(getattr(vit, "norm", None), nn.Module) and not isinstance(unwrap(vit.norm), nn.Identity):
        globals_["final_norm"] = _join(root, "norm")
    proj = getattr(unwrap(vit.patch_embed), "proj", None)
    fan_in = int(proj.weight[0].numel()) if isinstance(proj, nn.Conv2d) else dim
    structure = Structure("vit", type(vit).__name__, root, blocks, globals_, modules, dim=dim, heads=heads,
                          token_at=int(getattr(vit, "num_prefix_tokens", 1)), prompt_fan_in=fan_in)
    if not isinstance(vit, VisionTransformer):
        structure.unsupported["vpt"] = (f"prompt tokens need absolute position embeddings (timm "
                                        f"VisionTransformer); {type(vit).__name__} encodes positions inside its blocks")
    return structure


# -------------------------------------------------------------------------------------------------- BERT


def _bert_structure(root: str, model: nn.Module, named: List[Tuple[str, nn.Module]]) -> Structure:
    modules = dict(named)
    blocks: List[BlockSites] = []
    dim = heads = 0
    for i, raw in enumerate(model.encoder.layer):
        layer = unwrap(raw)
        path = _join(root, "encoder", "layer", str(i))
        att = unwrap(getattr(layer, "attention", nn.Identity()))
        self_att = unwrap(getattr(att, "self", nn.Identity()))
        need = [(self_att, "query"), (self_att, "key"), (self_att, "value"),
                (unwrap(getattr(att, "output", nn.Identity())), "dense"),
                (unwrap(getattr(layer, "intermediate", nn.Identity())), "dense"),
                (unwrap(getattr(layer, "output", nn.Identity())), "dense")]
        if not all(isinstance(unwrap(getattr(m, n, nn.Identity())), nn.Linear) for m, n in need):
            raise ValueError(f"encoder layer {path} ({type(layer).__name__}) lacks the BERT layout (attention.self."
                             f"query/key/value, attention.output.dense, intermediate.dense, output.dense)")
        sites = BlockSites(i, path, type(layer).__name__, "bert", standard_attn=True)
        sites.roles.update({
            "attn": _join(path, "attention", "self"), "attn_out": _join(path, "attention", "output"),
            "mlp_out": _join(path, "output"),
            "q": _join(path, "attention", "self", "query"), "k": _join(path, "attention", "self", "key"),
            "v": _join(path, "attention", "self", "value"), "proj": _join(path, "attention", "output", "dense"),
            "norm1": _join(path, "attention", "output", "LayerNorm"), "fc1": _join(path, "intermediate", "dense"),
            "fc2": _join(path, "output", "dense"), "norm2": _join(path, "output", "LayerNorm"),
        })
        sites.groups["qkv"] = ("q", "k", "v")
        dim = dim or unwrap(self_att.query).in_features
        heads = heads or int(getattr(self_att, "num_attention_heads", 0))
        blocks.append(sites)
    globals_ = {}
    if isinstance(getattr(unwrap(model.embeddings), "LayerNorm", None), nn.LayerNorm):
        globals_["embed_norm"] = _join(root, "embeddings", "LayerNorm")
    return Structure("bert", type(model).__name__, root, blocks, globals_, modules, dim=dim, heads=heads,
                     token_at=1, prompt_fan_in=dim)


# --------------------------------------------------------------------------------------------------- CNN


def _is_pointwise(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):  # ConvNeXt's channels-last MLP
        return True
    return (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1) and tuple(m.stride) == (1, 1)
            and m.groups == 1 and tuple(m.dilation) == (1, 1))


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm))


def _cnn_structure(named: List[Tuple[str, nn.Module]], cnn_blocks: List[Tuple[str, nn.Module]]) -> Structure:
    modules = dict(named)
    first = cnn_blocks[0][0]
    root = first[: _CNN_BLOCK.search(first).start()]
    blocks: List[BlockSites] = []
    for i, (path, block) in enumerate(cnn_blocks):
        sites = BlockSites(i, path, type(block).__name__, "cnn")
        groups: Dict[str, List[str]] = {"pointwise": [], "convs": [], "norms": []}
        for rel, m in logical_named_modules(block):
            if not rel or _CNN_SKIP & set(rel.split(".")) or _CNN_BLOCK.search(_join(path, rel)):
                continue
            if isinstance(m, (nn.Conv2d, nn.Linear)) or _is_norm(m):
                sites.roles[rel] = _join(path, rel)
                if _is_pointwise(m):
                    groups["pointwise"].append(rel)
                if isinstance(m, nn.Conv2d):
                    groups["convs"].append(rel)
                if _is_norm(m):
                    groups["norms"].append(rel)
        sites.groups = {g: tuple(r) for g, r in groups.items() if r}
        blocks.append(sites)
    model_cls = type(modules.get(root.rstrip("."), cnn_blocks[0][1])).__name__
    structure = Structure("cnn", model_cls, root.rstrip("."), blocks, {}, modules)
    reason = "it has no attention layers or token sequence (prefix and prompt tuning need a transformer)"
    structure.unsupported["prefix"] = reason
    structure.unsupported["vpt"] = reason
    return structure


__all__ = ["BlockSites", "FAMILIES", "PetWrapper", "Structure", "find_structure", "get_logical",
           "logical_named_modules", "parent_slot", "site_names"]
