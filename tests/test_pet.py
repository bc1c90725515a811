"""PET kinds x backbone families (docs/architecture.md, "Testing"): identity at init, only PET parameters train, swapping sets,
state dicts, EMA, deep copies, one-line failures that leave the model untouched, parameter counts, LAE's prefix
compensation, the adapter / LoRA formulas, and site detection on timm ViTs, BERT encoders and timm CNNs.

Each kind's exceptions live in its row of ``ROWS``: the config per family, or ``Fails(config, fragment)`` for a
combination that must be rejected, and whether the kind is the identity at init (prefix and VPT are not: they
change attention from the start, so for them an *inactive* set must leave the backbone unchanged).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Dict, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clpet.backbones import build_backbone
from clpet.pet import (PETS, AdapterConfig, LoRAConfig, PetManager, PrefixConfig, SSFConfig, VPTConfig,
                       find_structure, pet_config, prefix_attention)
from clpet.pet.wrappers import PetWrapper

TEXTS = ["The cat sat on the mat today.", "a dog", "Birds fly south in the winter, mostly."]
FAMILIES = ("vit", "bert", "cnn")


class Fails(NamedTuple):
    cfg: Any
    fragment: str


class Row(NamedTuple):
    configs: Dict[str, Any]
    identity: bool


ROWS: Dict[str, Row] = {
    "adapter-lae": Row({"vit": AdapterConfig.lae(blocks=None), "bert": AdapterConfig.lae(blocks=None),
                        "cnn": AdapterConfig(placement="pointwise-parallel", blocks=(0, 1, 15))}, True),
    "adapter-aper": Row({"vit": AdapterConfig.aper(), "bert": AdapterConfig.aper(),
                         "cnn": Fails(AdapterConfig.aper(), "needs a transformer")}, True),
    "lora-lae": Row({"vit": LoRAConfig.lae(blocks=None), "bert": LoRAConfig.lae(blocks=None),
                     "cnn": Fails(LoRAConfig.lae(), "unknown target 'k'")}, True),
    "lora": Row({"vit": LoRAConfig(rank=4, targets=("qkv", "proj", "fc1", "fc2")),
                 "bert": LoRAConfig(rank=4, targets=("query", "value")),
                 "cnn": LoRAConfig(rank=4, blocks=(0, 1, 15))}, True),
    "prefix": Row({"vit": PrefixConfig.lae(blocks=None), "bert": PrefixConfig.lae(blocks=None),
                   "cnn": Fails(PrefixConfig(), "no attention layers")}, False),
    "vpt-deep": Row({"vit": VPTConfig(deep=True), "bert": VPTConfig(deep=True),
                     "cnn": Fails(VPTConfig(), "no attention layers")}, False),
    "vpt-shallow": Row({"vit": VPTConfig(deep=False), "bert": VPTConfig(deep=False),
                        "cnn": Fails(VPTConfig(deep=False), "no attention layers")}, False),
    "ssf": Row({"vit": SSFConfig(), "bert": SSFConfig(), "cnn": SSFConfig(blocks=(0, 1, 15))}, True),
}
SUPPORTED = [(k, f) for k, row in ROWS.items() for f in FAMILIES if not isinstance(row.configs[f], Fails)]
UNSUPPORTED = [(k, f) for k, row in ROWS.items() for f in FAMILIES if isinstance(row.configs[f], Fails)]


_BUILT: Dict[tuple, tuple] = {}


def make(family: str, **kw: Any):
    """(a fresh copy of the family's backbone in eval mode, a fixed batch); each model is built once per session."""
    key = (family, tuple(sorted(kw.items())))
    if key not in _BUILT:
        _BUILT[key] = _build(family, **kw)
    bb, batch = _BUILT[key]
    return copy.deepcopy(bb), batch


def _build(family: str, **kw: Any):
    if family == "vit":
        bb = build_backbone({"name": "tiny-vit", **kw})
        batch = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    elif family == "bert":
        bb = build_backbone({"name": "tiny-text", **kw})
        batch = bb.preprocess(TEXTS, train=False)  # padded: exercises the attention mask
    else:
        bb = build_backbone({"name": "efficientnet-lite0", "pretrained": False, "image_size": 32, **kw})
        batch = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return bb.eval(), batch


def feats(bb, batch) -> torch.Tensor:
    with torch.no_grad():
        return bb.features(batch)


def perturb(pets: PetManager, name: str, seed: int = 1, std: float = 0.2) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pets.parameters(name):
            p.add_(torch.randn(p.shape, generator=gen) * std)


def snapshot(model: nn.Module):
    """(module names and types, tensors) of a model, to show it is untouched."""
    return [(n, type(m)) for n, m in model.named_modules()], {k: v.clone() for k, v in model.state_dict().items()}


def same_snapshot(a, b) -> bool:
    return a[0] == b[0] and a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("kind,family", SUPPORTED)
def test_identity_at_init_or_inactive_is_plain(kind, family):
    row = ROWS[kind]
    bb, batch = make(family)
    plain = feats(bb, batch)
    pets = PetManager(bb)
    pets.add_set("a", row.configs[family])
    assert torch.equal(feats(bb, batch), plain)  # added but not live: the plain backbone, bit for bit
    pets.set_active("a")
    live = feats(bb, batch)
    if row.identity:
        assert torch.allclose(live, plain, atol=1e-6, rtol=1e-5)
    else:  # prefix / prompts take attention mass from the start
        assert not torch.allclose(live, plain, atol=1e-6)
    pets.set_active(None)
    assert torch.equal(feats(bb, batch), plain)


@pytest.mark.parametrize("kind,family", SUPPORTED)
def test_only_pet_parameters_train(kind, family):
    bb, batch = make(family)
    own = {id(p): (n, p.detach().clone()) for n, p in bb.named_parameters()}
    pets = PetManager(bb)
    pets.add_set("a", ROWS[kind].configs[family])
    pets.set_active("a")
    params = pets.parameters("a")
    assert params and all(p.requires_grad for p in params)
    assert all(not p.requires_grad for p in bb.parameters() if id(p) in own)
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-2)
    bb.features(batch).pow(2).mean().backward()
    assert all(p.grad is not None for p in params)
    assert all(p.grad is None for p in bb.parameters() if id(p) in own)
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params))
    for p in bb.parameters():
        if id(p) in own:
            assert torch.equal(p, own[id(p)][1]), own[id(p)][0]


@pytest.mark.parametrize("kind,family", SUPPORTED)
def test_swap_sets_and_back(kind, family):
    bb, batch = make(family)
    pets = PetManager(bb)
    cfg = ROWS[kind].configs[family]
    pets.add_set("a", cfg)
    pets.add_set("b", cfg)
    perturb(pets, "a", seed=1)
    perturb(pets, "b", seed=2)
    pets.set_active("a")
    out_a = feats(bb, batch)
    pets.set_active("b")
    out_b = feats(bb, batch)
    assert not torch.allclose(out_a, out_b, atol=1e-6)
    pets.set_active("a")
    assert torch.equal(feats(bb, batch), out_a)
    with pets.use("b"):
        assert torch.equal(feats(bb, batch), out_b)
        assert pets.active == ("b",)
    assert pets.active == ("a",) and torch.equal(feats(bb, batch), out_a)


@pytest.mark.parametrize("kind,family", SUPPORTED)
def test_state_dict_round_trip(kind, family):
    bb, batch = make(family)
    pets = PetManager(bb)
    cfg = ROWS[kind].configs[family]
    pets.add_set("a", cfg)
    perturb(pets, "a")
    saved = {k: v.clone() for k, v in pets.state_dict("a").items()}
    pets.add_set("c", cfg)
    assert list(pets.state_dict("c")) == list(saved)  # keys carry no set name
    pets.load_state_dict("c", saved)
    assert all(torch.equal(pets.state_dict("c")[k], v) for k, v in saved.items())
    pets.set_active("a")
    out_a = feats(bb, batch)
    pets.set_active("c")
    assert torch.equal(feats(bb, batch), out_a)
    with pytest.raises(ValueError) as err:
        pets.load_state_dict("c", {**saved, "nope.weight": torch.zeros(1)})
    assert "unexpected" in one_line(err)
    with pytest.raises(ValueError) as err:
        pets.load_state_dict("c", dict(list(saved.items())[1:]))
    assert "missing" in one_line(err)


@pytest.mark.parametrize("kind,family", SUPPORTED)
def test_ema_update(kind, family):
    bb, _ = make(family)
    pets = PetManager(bb)
    cfg = ROWS[kind].configs[family]
    pets.add_set("off", cfg)
    pets.add_set("on", cfg)
    perturb(pets, "off", seed=3)
    with torch.no_grad():
        for p in pets.parameters("on"):
            p.copy_(pets.state_dict("off")[[k for k, q in pets.named_parameters("on") if q is p][0]] + 1.0)
    old = {k: v.clone() for k, v in pets.state_dict("off").items()}
    new = {k: v.clone() for k, v in pets.state_dict("on").items()}
    pets.ema_update("off", "on", 1.0)  # keeps
    assert all(torch.equal(pets.state_dict("off")[k], old[k]) for k in old)
    pets.ema_update("off", "on", 0.9999)
    for k in old:
        expected = 0.9999 * old[k] + 0.0001 * new[k]
        assert torch.allclose(pets.state_dict("off")[k], expected, rtol=0, atol=1e-6), k
        assert not torch.allclose(pets.state_dict("off")[k], 0.999 * old[k] + 0.001 * new[k], rtol=0, atol=1e-6)
    assert all(torch.equal(pets.state_dict("on")[k], new[k]) for k in new)  # src untouched
    pets.ema_update("off", "on", 0.0)  # copies
    assert all(torch.equal(pets.state_dict("off")[k], new[k]) for k in new)


@pytest.mark.parametrize("kind,family", SUPPORTED)
def test_copy_set_is_deep(kind, family):
    bb, batch = make(family)
    pets = PetManager(bb)
    pets.add_set("online", ROWS[kind].configs[family])
    perturb(pets, "online")
    pets.set_active("online")
    out = feats(bb, batch)
    pets.copy_set("online", "offline")
    assert pets.config("offline") == pets.config("online") and pets.config("offline") is not pets.config("online")
    ptrs = {p.data_ptr() for p in pets.parameters("online")}
    assert not ptrs & {p.data_ptr() for p in pets.parameters("offline")}
    assert all(not p.requires_grad for p in pets.parameters("offline"))  # not live
    with pets.use("offline"):
        assert torch.equal(feats(bb, batch), out)
    perturb(pets, "online", seed=5)
    with pets.use("offline"):
        assert torch.equal(feats(bb, batch), out)


@pytest.mark.parametrize("kind,family", UNSUPPORTED)
def test_unsupported_combination_fails_in_one_line_and_leaves_model_untouched(kind, family):
    bb, _ = make(family)
    pets = PetManager(bb)
    pets.add_set("ok", ROWS["ssf"].configs[family])  # a model that already holds another set
    before = snapshot(bb)
    bad = ROWS[kind].configs[family]
    with pytest.raises(ValueError) as err:
        pets.add_set("bad", bad.cfg)
    assert bad.fragment in one_line(err)
    assert same_snapshot(before, snapshot(bb)) and pets.names() == ["ok"]


# ------------------------------------------------------------------------------------------- one-offs


@pytest.mark.parametrize("family,cfg,fragment", [
    ("vit", LoRAConfig(targets=("nope",)), "unknown target 'nope'"),
    ("vit", AdapterConfig.lae(), "block index 2 is out of range"),
    ("vit", LoRAConfig(targets=("qkv", "k")), "targets overlap"),
    ("vit", AdapterConfig(placement="pointwise-parallel"), "is for CNNs"),
    ("vit", SSFConfig(targets=("k",)), "slice of the fused"),
    ("bert", LoRAConfig(targets=("norm1",)), "is not a linear layer"),
    ("cnn", LoRAConfig(targets=("conv_dw",)), "is not a linear layer or pointwise conv"),
    ("cnn", LoRAConfig(targets=("conv_pwl",), blocks=(0,)), "nothing matched"),  # block 0 has no conv_pwl
    ("cnn", AdapterConfig(placement="pointwise-parallel", targets=("conv_pwl",), blocks=(0,)), "nothing matched"),
])
def test_bad_sites_fail_in_one_line(family, cfg, fragment):
    bb, _ = make(family)
    before = snapshot(bb)
    pets = PetManager(bb)
    with pytest.raises(ValueError) as err:
        pets.add_set("x", cfg)
    assert fragment in one_line(err)
    assert same_snapshot(before, snapshot(bb)) and pets.names() == []


def test_unsupported_backbone_fails_in_one_line():
    bb = build_backbone({"name": "tiny-mlp"})
    pets = PetManager(bb)
    with pytest.raises(ValueError) as err:
        pets.add_set("a", LoRAConfig())
    assert "no PET sites in TinyMLP" in one_line(err)
    assert bb.sites() == {}


def test_num_trainable_counts():
    bb, _ = make("vit", depth=5)  # width 32, 2 heads, 5 blocks: the LAE presets' blocks 0-4
    pets = PetManager(bb)
    d, r = 32, 5
    pets.add_set("adapter", AdapterConfig.lae())
    assert pets.num_trainable("adapter") == 5 * ((d * r + r) + (r * d + d) + 1)  # down, up, learnable scalar
    pets.add_set("lora", LoRAConfig.lae())
    assert pets.num_trainable("lora") == 5 * 2 * (r * d + d * r + 1)  # (A, B, scale) for K and for V
    pets.add_set("prefix", PrefixConfig.lae())
    assert pets.num_trainable("prefix") == 5 * (2 * 10 * d + 2)  # keys, values, two scales
    pets.add_set("aper", AdapterConfig.aper())
    assert pets.num_trainable("aper") == 5 * ((d * 64 + 64) + (64 * d + d))  # fixed scale 0.1
    pets.add_set("vpt", VPTConfig(length=5, deep=True))
    assert pets.num_trainable("vpt") == 5 * 5 * d
    pets.add_set("ssf", SSFConfig(targets=("qkv", "norm1")))
    assert pets.num_trainable("ssf") == 5 * 2 * (3 * d + d)
    assert pets.num_trainable() == 0  # nothing live
    pets.set_active(["adapter", "lora"])
    assert pets.num_trainable() == pets.num_trainable("adapter") + pets.num_trainable("lora")
    pets.freeze("lora")
    assert pets.num_trainable() == pets.num_trainable("adapter") and pets.is_frozen("lora")
    pets.unfreeze("lora")
    assert all(p.requires_grad for p in pets.parameters("lora"))


def test_set_active_switches_forward_and_requires_grad():
    bb, batch = make("vit")
    pets = PetManager(bb)
    pets.add_set("a", LoRAConfig(targets=("qkv",)))
    pets.add_set("b", LoRAConfig(targets=("qkv",)))
    perturb(pets, "a", 1)
    perturb(pets, "b", 2)
    pets.set_active("a")
    assert all(p.requires_grad for p in pets.parameters("a"))
    assert not any(p.requires_grad for p in pets.parameters("b"))
    out_a = feats(bb, batch)
    with torch.inference_mode(), pets.use("b"):  # a no-grad offline forward, e.g. LAE's ensemble
        assert all(p.requires_grad for p in pets.parameters("b"))
        out_b = bb.features(batch)
    assert pets.active == ("a",) and not any(p.requires_grad for p in pets.parameters("b"))
    assert not torch.allclose(out_a, out_b, atol=1e-6)
    qkv, x = bb.model.blocks[0].attn.qkv, torch.randn(2, 5, 32)
    y = {}
    with torch.no_grad():
        for name in (None, "a", "b"):
            pets.set_active(name)
            y[name] = qkv(x)
        pets.set_active(["a", "b"])  # several live sets compose: LoRA updates add up
        both = qkv(x)
    assert torch.allclose(both, y["a"] + y["b"] - y[None], atol=1e-5)
    with pytest.raises(KeyError):
        pets.set_active("nope")
    bb.requires_grad_(False)  # e.g. Method.setup freezing the whole backbone after the sets were added
    pets.set_active(["a", "b"])
    assert all(p.requires_grad for p in pets.parameters("a") + pets.parameters("b"))


def test_at_most_one_live_prefix_per_site():
    bb, _ = make("vit")
    pets = PetManager(bb)
    pets.add_set("p1", PrefixConfig())
    pets.add_set("p2", PrefixConfig())
    with pytest.raises(ValueError) as err:
        pets.set_active(["p1", "p2"])
    assert "at most one can be live" in one_line(err)


def test_delete_sets_restores_the_model():
    bb, batch = make("vit")
    plain = feats(bb, batch)
    before = snapshot(bb)
    pets = PetManager(bb)
    for name, cfg in [("a", AdapterConfig.lae(blocks=None)), ("p", PrefixConfig()), ("v", VPTConfig()),
                      ("s", SSFConfig()), ("l", LoRAConfig.lae(blocks=None))]:
        pets.add_set(name, cfg)
    pets.set_active("a")
    for name in list(pets.names()):
        pets.delete_set(name)
    assert pets.active == () and pets.names() == []
    assert not any(isinstance(m, PetWrapper) for m in bb.modules())
    assert same_snapshot(before, snapshot(bb))
    assert torch.equal(feats(bb, batch), plain)


def test_backbone_state_dict_keeps_its_keys():
    bb, _ = make("vit")
    plain_keys = list(bb.state_dict())
    pets = PetManager(bb)
    pets.add_set("a", AdapterConfig.lae(blocks=None))
    pets.add_set("l", LoRAConfig.lae(blocks=None))
    pets.add_set("s", SSFConfig())
    sd = bb.state_dict()
    assert [k for k in sd if ".pets." not in k] == plain_keys
    assert all(k.split(".pets.")[1].split(".")[0] in ("a", "l", "s") for k in sd if ".pets." in k)
    fresh, _ = make("vit")
    fresh.load_state_dict({k: v for k, v in sd.items() if ".pets." not in k}, strict=True)
    result = bb.load_state_dict(fresh.state_dict(), strict=False)
    assert not result.unexpected_keys and all(".pets." in k for k in result.missing_keys)
    bb.load_state_dict(sd, strict=True)


def test_new_set_follows_device_dtype_and_train_mode():
    bb, batch = make("vit")
    bb.double()
    pets = PetManager(bb)
    pets.add_set("a", AdapterConfig.aper())
    assert all(p.dtype == torch.float64 for p in pets.parameters("a"))
    assert not any(m.training for m in bb.modules())
    pets.set_active("a")
    assert bb.features(batch.double()).dtype == torch.float64


# ------------------------------------------------------------------------------------------- the math


def test_prefix_attention_compensation_puts_mass_one_on_the_prefix():
    gen = torch.Generator().manual_seed(0)
    B, H, T, P, d, at = 2, 3, 7, 4, 8, 1
    q, k, v = (torch.randn(B, H, T, d, generator=gen) for _ in range(3))
    kp, vp = torch.rand(1, H, P, d, generator=gen), torch.rand(1, H, P, d, generator=gen)
    out, w = prefix_attention(q, k, v, kp, vp, d ** -0.5, at=at, compensatory=True)
    assert torch.allclose(w[..., at:at + P].sum(-1), torch.ones(B, H, T), atol=1e-6)  # mass 1 per query
    keys = torch.cat([k[:, :, :at], kp.expand(B, -1, -1, -1), k[:, :, at:]], dim=2)
    vals = torch.cat([v[:, :, :at], vp.expand(B, -1, -1, -1), v[:, :, at:]], dim=2)
    soft = ((q @ keys.transpose(-2, -1)) * d ** -0.5).softmax(-1)
    rest = torch.cat([soft[..., :at], soft[..., at + P:]], -1)
    assert torch.allclose(torch.cat([w[..., :at], w[..., at + P:]], -1), rest, atol=1e-6)  # tokens left as is
    lam = soft[..., at:at + P].sum(-1, keepdim=True)
    manual = torch.cat([soft[..., :at], soft[..., at:at + P] / lam, soft[..., at + P:]], -1) @ vals
    assert torch.allclose(out, manual, atol=1e-5)
    plain, _ = prefix_attention(q, k, v, kp, vp, d ** -0.5, at=at, compensatory=False)
    assert torch.allclose(plain, F.scaled_dot_product_attention(q, keys, vals), atol=1e-5)
    # a padding mask hides tokens but never the prefix
    mask = torch.ones(B, 1, 1, T, dtype=torch.bool)
    mask[0, ..., -2:] = False
    _, wm = prefix_attention(q, k, v, kp, vp, d ** -0.5, at=at, mask=mask)
    assert torch.all(wm[0, ..., -2:] == 0) and torch.allclose(wm[..., at:at + P].sum(-1), torch.ones(B, H, T))


def test_bert_prefix_and_prompts_respect_padding():
    bb, batch = make("bert")
    pets = PetManager(bb)
    pets.add_set("p", PrefixConfig())
    pets.add_set("d", VPTConfig(deep=True))
    pets.add_set("s", VPTConfig(deep=False))
    for name in ("p", "d", "s"):
        pets.set_active(name)
        alone = feats(bb, bb.preprocess([TEXTS[1]], train=False))
        padded = feats(bb, batch)[1:2]  # the same sentence padded inside a batch
        assert torch.allclose(alone, padded, atol=1e-5), name


def test_lae_adapter_formula_on_a_timm_block():
    bb, _ = make("vit")
    pets = PetManager(bb)
    pets.add_set("a", AdapterConfig.lae(blocks=(0,)))
    perturb(pets, "a")
    pets.set_active("a")
    wrapper = bb.model.blocks[0]
    block, ad = wrapper.base, wrapper.pets["a"]
    x = torch.randn(2, 5, 32)
    h = block.norm1(x)
    x1 = x + block.attn(h) + ad.scale * ad.up(F.gelu(ad.down(h)))
    expected = x1 + block.mlp(block.norm2(x1))
    assert isinstance(ad.scale, nn.Parameter) and ad.up.weight.shape == (32, 5)
    assert torch.allclose(wrapper(x), expected, atol=1e-6)


def test_aper_adapter_formula_feeds_the_post_attention_stream():
    bb, _ = make("vit")
    pets = PetManager(bb)
    pets.add_set("a", AdapterConfig.aper(blocks=(1,)))
    perturb(pets, "a")
    pets.set_active("a")
    wrapper = bb.model.blocks[1]
    block, ad = wrapper.base, wrapper.pets["a"]
    assert ad.scale == 0.1 and ad.drop.p == 0.1 and ad.down.out_features == 64
    x = torch.randn(2, 5, 32)
    x1 = x + block.attn(block.norm1(x))
    expected = x1 + block.mlp(block.norm2(x1)) + 0.1 * ad.up(F.relu(ad.down(x1)))  # eval: no dropout
    assert torch.allclose(wrapper(x), expected, atol=1e-6)


def test_bert_adapter_sits_before_the_residual_layernorm():
    bb, _ = make("bert")
    pets = PetManager(bb)
    pets.add_set("a", AdapterConfig.lae(blocks=(0,)))
    perturb(pets, "a")
    pets.set_active("a")
    out = bb.model.encoder.layer[0].attention.output  # BertSelfOutput, wrapped
    ctx, x = torch.randn(2, 4, 32), torch.randn(2, 4, 32)
    b, ad = out.base, out.pets["a"]
    expected = b.LayerNorm(b.dense(ctx) + x + ad.scale * ad.up(F.gelu(ad.down(x))))
    assert torch.allclose(out(ctx, x), expected, atol=1e-6)


def test_lae_lora_touches_only_k_and_v():
    bb, _ = make("vit")
    pets = PetManager(bb)
    pets.add_set("l", LoRAConfig.lae(blocks=(0,)))
    perturb(pets, "l")
    pets.set_active("l")
    qkv = bb.model.blocks[0].attn.qkv
    lora = qkv.pets["l"]
    x = torch.randn(2, 5, 32)
    base, out = qkv.base(x), qkv(x)
    assert torch.equal(out[..., :32], base[..., :32])  # Q untouched
    for j, part in ((1, lora.k), (2, lora.v)):
        delta = part.scale * (x @ part.A.T @ part.B.T)
        assert torch.allclose(out[..., 32 * j:32 * (j + 1)], base[..., 32 * j:32 * (j + 1)] + delta, atol=1e-6)
    assert isinstance(lora.k.scale, nn.Parameter) and lora.k.A.shape == (5, 32)
    fresh = LoRAConfig.lae(blocks=(0,))
    pets.add_set("z", fresh)
    assert torch.count_nonzero(qkv.pets["z"].k.B) == 0  # B zero-initialised


def test_vpt_deep_replaces_and_shallow_carries_prompts():
    bb, batch = make("vit", depth=1)
    pets = PetManager(bb)
    pets.add_set("deep", VPTConfig(deep=True))
    pets.add_set("shallow", VPTConfig(deep=False))
    pets.load_state_dict("shallow", {k: v for k, v in zip(pets.state_dict("shallow"),
                                                          pets.state_dict("deep").values())})
    outs = []
    for name in ("deep", "shallow"):
        pets.set_active(name)
        outs.append(feats(bb, batch))
        assert bb.model.forward_features(batch).shape[1] == 1 + 16  # prompts are gone after the last block
    assert torch.equal(outs[0], outs[1])  # one block: deep == shallow
    bb2, _ = make("vit", depth=3)
    p2 = PetManager(bb2)
    p2.add_set("deep", VPTConfig(deep=True))
    p2.add_set("shallow", VPTConfig(deep=False))
    assert len(p2.sites("deep")) == 3 and p2.num_trainable("deep") == 3 * 5 * 32
    assert p2.num_trainable("shallow") == 5 * 32  # one set of prompts, carried through


def test_ssf_scale_and_shift_per_channel():
    bb, _ = make("cnn")
    pets = PetManager(bb)
    pets.add_set("s", SSFConfig(targets=("conv_pw",), blocks=(1,)))
    perturb(pets, "s")
    pets.set_active("s")
    conv = bb.model.blocks[1][0].conv_pw
    x = torch.randn(2, 16, 8, 8)
    s = conv.pets["s"]
    assert torch.allclose(conv(x), conv.base(x) * s.gamma.view(1, -1, 1, 1) + s.beta.view(1, -1, 1, 1), atol=1e-6)
    pets.add_set("r", SSFConfig.aper(targets=("conv_pw",), blocks=(1,)))
    assert not torch.equal(conv.pets["r"].gamma, torch.ones(96))  # reference init N(1, 0.02)


# ------------------------------------------------------------------------------------------- sites


def test_sites_of_the_three_families():
    vit = find_structure(build_backbone({"name": "tiny-vit"}))
    assert (vit.family, vit.dim, vit.heads, vit.token_at, len(vit.blocks)) == ("vit", 32, 2, 1, 2)
    assert vit.blocks[0].roles["qkv"] == "model.blocks.0.attn.qkv" and vit.blocks[0].slices["k"][1] == 1
    bert = find_structure(build_backbone({"name": "tiny-text"}))
    assert (bert.family, bert.dim, bert.token_at) == ("bert", 32, 1)
    assert bert.blocks[1].roles["v"] == "model.encoder.layer.1.attention.self.value"
    cnn = find_structure(make("cnn")[0])
    assert cnn.family == "cnn" and len(cnn.blocks) == 16
    assert cnn.blocks[0].groups["pointwise"] == ("conv_pw",)
    assert cnn.blocks[1].groups["pointwise"] == ("conv_pw", "conv_pwl")
    assert set(build_backbone({"name": "tiny-vit"}).sites()) >= {"block", "qkv", "fc1", "patch_embed"}


@pytest.mark.parametrize("conv_mlp", [False, True])
def test_convnext_pointwise_sites(conv_mlp):
    from timm.models.convnext import ConvNeXt

    torch.manual_seed(0)
    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=0, conv_mlp=conv_mlp).eval()
    x = torch.randn(2, 3, 32, 32)
    plain = model(x).detach()
    pets = PetManager(model)
    pets.add_set("a", AdapterConfig(placement="pointwise-parallel"))
    pets.add_set("l", LoRAConfig(rank=2))
    assert pets.sites("a")[:2] == ["stages.0.blocks.0.mlp.fc1", "stages.0.blocks.0.mlp.fc2"]
    for name in ("a", "l"):
        pets.set_active(name)
        assert torch.allclose(model(x), plain, atol=1e-6)
        perturb(pets, name)
        assert not torch.allclose(model(x), plain, atol=1e-6)


@pytest.mark.parametrize("model_name", ["vit_tiny_patch16_224", "vit_base_patch16_224", "vit_small_patch14_reg4_dinov2",
                                        "vit_base_patch16_rpn_224", "vit_base_patch16_siglip_224"])
def test_timm_vits_take_every_kind(model_name):
    """Plans and wraps on the meta device (no memory, no weights): each kind attaches to these vit_* models."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
    pets = PetManager(model)
    for name, cfg in [("ad", AdapterConfig.lae()), ("ap", AdapterConfig.aper()), ("lo", LoRAConfig.lae()),
                      ("pf", PrefixConfig.lae()), ("vp", VPTConfig()), ("ss", SSFConfig())]:
        pets.add_set(name, cfg)
    assert len(pets.sites("ad")) == 5 and len(pets.sites("ap")) == len(model.blocks)


def test_vit_tiny_patch16_224_identity():
    bb = build_backbone({"name": "timm", "model": "vit_tiny_patch16_224", "pretrained": False,
                         "image_size": 32}).eval()
    x = torch.randn(2, 3, 32, 32)
    plain = feats(bb, x)
    pets = PetManager(bb)
    for name, cfg in [("ad", AdapterConfig.lae()), ("lo", LoRAConfig.lae()), ("ss", SSFConfig())]:
        pets.add_set(name, cfg)
        pets.set_active(name)
        assert torch.allclose(feats(bb, x), plain, atol=1e-6)


# ------------------------------------------------------------------------------------------- configs


def test_every_kind_is_registered_with_its_config():
    assert PETS.names() == ["adapter", "lora", "prefix", "ssf", "vpt"]
    for name in PETS.names():
        kind = PETS.get(name)
        assert kind.Config.KIND == name and PETS.describe()[name]


@pytest.mark.parametrize("kind,bad,fragment", [
    ("adapter", {"placement": "sideways"}, "unknown placement 'sideways'"),
    ("adapter", {"bottleneck": 0}, "bottleneck must be a positive integer"),
    ("adapter", {"scale": "big"}, "scale must be a number or 'learnable'"),
    ("adapter", {"dropout": 1.5}, "dropout must be in [0, 1)"),
    ("adapter", {"targets": ["conv_pw"]}, "apply to placement 'pointwise-parallel'"),
    ("lora", {"rank": 0}, "rank must be a positive integer"),
    ("lora", {"alpha": 16, "scale": 2.0}, "either alpha"),
    ("lora", {"blocks": []}, "blocks is empty"),
    ("lora", {"blocks": [1, 1]}, "distinct non-negative"),
    ("prefix", {"length": 0}, "length must be a positive integer"),
    ("prefix", {"init_low": 1.0, "init_high": 0.0}, "init_low must be below init_high"),
    ("vpt", {"deep": False, "blocks": [0]}, "blocks applies to deep=True"),
    ("vpt", {"init": "normal"}, "unknown init 'normal'"),
    ("ssf", {"init_std": -1}, "init_std must be >= 0"),
    ("ssf", {"colour": "red"}, "has no key(s) colour"),
    ("nope", {}, "unknown PET kind 'nope'"),
])
def test_bad_configs_fail_in_one_line(kind, bad, fragment):
    with pytest.raises(ValueError) as err:
        pet_config({"kind": kind, **bad})
    assert fragment in one_line(err)


def test_presets_and_mappings():
    lae = AdapterConfig.lae()
    assert (lae.placement, lae.bottleneck, lae.activation, lae.scale, lae.blocks) == \
        ("attn-parallel", 5, "gelu", "learnable", (0, 1, 2, 3, 4))
    aper = AdapterConfig.aper()
    assert (aper.placement, aper.bottleneck, aper.activation, aper.dropout, aper.scale, aper.blocks) == \
        ("mlp-parallel", 64, "relu", 0.1, 0.1, None)
    assert (LoRAConfig.lae().rank, LoRAConfig.lae().targets, LoRAConfig.lae().scale) == (5, ("k", "v"), "learnable")
    assert LoRAConfig(rank=8, alpha=32).effective_scale == 4.0
    assert LoRAConfig(targets=("query", "value")).targets == ("q", "v")
    pf = PrefixConfig.lae()
    assert (pf.length, pf.compensatory, pf.init_low, pf.init_high, pf.key_scale) == (10, True, 0.0, 0.01, "learnable")
    assert pet_config({"kind": "lora", "rank": 5, "targets": ["k", "v"], "blocks": range(5)}) == \
        dataclasses.replace(LoRAConfig.lae(), scale=1.0)
    assert pet_config(lae) is lae
    assert math.isclose(VPTConfig.aper().length, 5) and VPTConfig.aper().init == "zeros"


def test_set_names_are_checked():
    bb, _ = make("vit")
    pets = PetManager(bb)
    for bad in ("", "a.b", "keys", "1x"):
        with pytest.raises(ValueError):
            pets.add_set(bad, LoRAConfig())
    pets.add_set("a", LoRAConfig())
    with pytest.raises(ValueError) as err:
        pets.add_set("a", LoRAConfig())
    assert "already exists" in one_line(err)
    with pytest.raises(ValueError) as err:
        PetManager(bb)
    assert "already holds PET wrappers" in one_line(err)
