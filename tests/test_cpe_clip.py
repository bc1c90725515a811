"""CPE-CLIP and zero-shot CLIP on a tiny CLIP: the prompts and their projection are the only trained tensors; old
classes are masked in incremental sessions only; the prompt gradients are scaled by |new| / |seen|; zero-shot is
the cosine of the two encoders' outputs by hand; the prompt projection reaches the vision encoder and the deep
prompts reach both; a killed run resumes to the same numbers; the run writes the FSCIL metrics."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clpet.cli import main
from clpet.config import ConfigError
from tests.method_fixtures import kill_and_resume
from tests.test_fscil import make_clipart_tree

CLIPART = ["scenario=clipart-fscil", "scenario.exclude=[]", "scenario.min_images_per_class=6",
           "scenario.base_classes=4", "scenario.ways=2", "scenario.shots=3", "backbone=tiny-clip", "progress=false",
           "plots=false"]
FAST = ["method.optim.epochs=2", "method.incremental_epochs=1", "method.optim.batch_size=8"]


def built(tmp_path, method="cpe-clip", *extra):
    from clpet.config import compose, rewrite_overrides, validate
    from clpet.runner import build_method, build_scenario

    root = make_clipart_tree(tmp_path / "png", n_classes=8, per_class=10)
    fast = FAST if method == "cpe-clip" else []
    cfg = validate(compose(rewrite_overrides([*CLIPART, f"scenario.root={root}", f"method={method}", *fast, *extra])))
    torch.manual_seed(0)
    scenario = build_scenario(cfg)
    return build_method(cfg, scenario, torch.device("cpu")), scenario


def pixels(method, experience, n=4):
    return method.backbone.preprocess(list(experience.train.inputs[:n]), train=False)


def test_only_the_prompts_and_their_projection_train(tmp_path):
    m, scenario = built(tmp_path)
    before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {"prompts", "prompt_proj.weight", "prompt_proj.bias"}
    p0 = m.prompts.detach().clone()
    m.learn_experience(scenario[0])
    assert not torch.equal(p0, m.prompts.detach())
    assert all(torch.equal(v, m.backbone.state_dict()[k]) for k, v in before.items())
    assert m.count_trainable_parameters() == m.prompts.numel() + sum(p.numel() for p in m.prompt_proj.parameters())


def test_old_classes_are_masked_in_incremental_sessions_only(tmp_path):
    m, scenario = built(tmp_path)
    m.n_seen, m.n_old, m.session = 4, 0, 0
    x, y = pixels(m, scenario[0]), torch.tensor([0, 1, 2, 3])
    logits = m.logits(x)
    assert torch.allclose(m.loss_terms(x, y)["ce"], F.cross_entropy(logits, y))  # base session: no mask
    m.n_seen, m.n_old, m.session = 6, 4, 1
    y = torch.tensor([4, 5, 4, 5])
    logits = m.logits(x)
    masked = logits.clone()
    masked[:, :4] = -9999.0
    loss = m.loss_terms(x, y)["ce"]
    assert torch.allclose(loss, F.cross_entropy(masked, y)) and not torch.allclose(loss, F.cross_entropy(logits, y))
    assert (m.predict(x)[:, :4] > -9999.0).all()  # evaluation is never masked


def test_prompt_gradients_are_scaled_by_new_over_seen(tmp_path):
    m, scenario = built(tmp_path)
    x = pixels(m, scenario[0])
    for session, n_old, n_seen, factor in ((0, 0, 4, 1.0), (1, 4, 6, 2 / 6), (2, 6, 8, 2 / 8)):
        m.session, m.n_old, m.n_seen = session, n_old, n_seen
        m.zero_grad()
        m.loss_terms(x, torch.full((4,), n_seen - 1))["ce"].backward()
        raw = [p.grad.clone() for p in (m.prompts, *m.prompt_proj.parameters())]
        m.before_update()
        assert m.balance_factor() == pytest.approx(factor)
        for g, p in zip(raw, (m.prompts, *m.prompt_proj.parameters())):
            assert torch.allclose(p.grad, g * factor)


def test_zero_shot_is_the_cosine_of_the_encoders_by_hand(tmp_path):
    m, scenario = built(tmp_path, "clip-zeroshot")
    m.learn_experience(scenario[0])
    clip = m.backbone.model
    x = pixels(m, scenario[0])
    names = [scenario.class_names[c].replace("_", " ") for c in range(4)]
    tok = m.backbone.tokens([f"a photo of a {n}." for n in names])
    with torch.no_grad():
        image = clip.visual_projection(clip.vision_model(pixel_values=x).pooler_output)
        text = clip.text_projection(clip.text_model(**tok).pooler_output)
        expected = 100 * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
        assert torch.allclose(m.predict(x), expected, atol=1e-4)


def test_the_prompts_reach_both_encoders(tmp_path):
    m, scenario = built(tmp_path, "cpe-clip", "method.prompt_depth=2")
    x = pixels(m, scenario[0])
    with torch.no_grad():
        image, text = m.image_features(x), m.text_features(["cat.", "a dog."])
        m.prompt_proj.weight.add_(torch.randn_like(m.prompt_proj.weight))  # prompts the vision side only
        assert not torch.allclose(m.image_features(x), image)
        assert torch.allclose(m.text_features(["cat.", "a dog."]), text)
        m.prompts[1].add_(torch.randn_like(m.prompts[1]))  # a deep prompt: replaced in the text, accumulated in the vision encoder
        assert not torch.allclose(m.text_features(["cat.", "a dog."]), text)
    tokens_seen = []
    hook = m.backbone.vision_layers[1].register_forward_pre_hook(lambda mod, a: tokens_seen.append(a[0].shape[1]))
    with torch.no_grad():
        m.image_features(x)
    hook.remove()
    patches = (32 // 8) ** 2 + 1
    assert tokens_seen == [patches + 2 * 2]  # layer 1 sees the prompts of layer 0 and its own (accumulate)
    with torch.no_grad():
        prompted = m.image_features(x)
        for hook in m._hooks:  # without the vision prompts: plain CLIP features
            hook.remove()
        assert not torch.allclose(m.image_features(x), prompted)


def test_a_clip_method_needs_a_clip_backbone_and_class_names(tmp_path):
    root = make_clipart_tree(tmp_path / "png", n_classes=8, per_class=10)
    args = [a for a in CLIPART if a != "backbone=tiny-clip"] + [f"scenario.root={root}", "method=cpe-clip",
                                                                  "backbone=tiny-vit"]
    from clpet.config import compose, rewrite_overrides, validate
    from clpet.runner import build_method, build_scenario

    cfg = validate(compose(rewrite_overrides(args)))
    with pytest.raises(ConfigError, match="needs a CLIP backbone"):
        build_method(cfg, build_scenario(cfg), torch.device("cpu"))


def test_cpe_clip_run_writes_fscil_metrics_and_resumes(tmp_path, monkeypatch):
    root = make_clipart_tree(tmp_path / "png", n_classes=8, per_class=10)

    def run_args(out):
        return ["run", *CLIPART, f"scenario.root={root}", "method=cpe-clip", *FAST, f"out_dir={out}"]

    full, _ = kill_and_resume(tmp_path, monkeypatch, "cpe-clip", run_args, dies_at=2)
    m = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert m["protocol"] == "few-shot-class-incremental" and len(m["fscil"]["session_acc"]) == 3
    assert np.isfinite(m["A_last"])


def test_hf_clip_loads_a_local_clip_folder_and_names_a_missing_one(tmp_path, capsys):
    from clpet.backbones import build_backbone

    tiny = build_backbone({"name": "tiny-clip"})
    tiny.model.save_pretrained(tmp_path / "clip")
    tiny.tokens.tokenizer.save_pretrained(tmp_path / "clip")
    loaded = build_backbone({"name": "hf-clip", "model": str(tmp_path / "clip")})
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.features(x), tiny.features(x), atol=1e-5)
        assert torch.allclose(loaded.encode_text(["a cat."]), tiny.encode_text(["a cat."]), atol=1e-5)
    assert loaded.weight_path == str(tmp_path / "clip")
    assert main(["run", "scenario=cifar100-fscil", "method=cpe-clip", "backbone.name=hf-clip",
                 "backbone.model=/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/nonexistent" in err


def test_the_reference_schedule_gives_the_learning_rates_it_used():
    """CosineAnnealingWarmupRestarts(200, warmup 50, max 0.1, min 0.001) stepped per epoch and rebuilt per
    session: linear warmup from 0.001, +0.00198 per epoch, back to 0.001 in every session (fit restarts epochs)."""
    from clpet.methods.cpe_clip import cpe_optim
    from clpet.training import OptimConfig, lr_at_epoch

    cfg = cpe_optim()
    assert [round(lr_at_epoch(cfg, e), 6) for e in range(6)] == [0.001, 0.00298, 0.00496, 0.00694, 0.00892, 0.0109]
    assert lr_at_epoch(cfg, 50) == pytest.approx(0.1) and lr_at_epoch(cfg, 199) == pytest.approx(0.001, abs=1e-4)
    with pytest.raises(ValueError, match="min_lr <= lr"):
        OptimConfig(scheduler="cosine-restarts", lr=0.01, min_lr=0.1)


def test_vision_prompts_by_hand_equal_the_hooked_forward(tmp_path):
    """The reference's vision branch written out: proj(g[0]) appended before the pre-LayerNorm, proj(g[i]) appended
    at each later prompted layer (accumulate), the CLS token after the post-LayerNorm, projected."""
    from clpet.methods.cpe_clip import call_layer

    m, scenario = built(tmp_path, "cpe-clip", "method.prompt_depth=2")
    vision = m.backbone.model.vision_model
    x = pixels(m, scenario[0])
    with torch.no_grad():
        m.prompts.normal_()
        hooked = m.image_features(x)
        for hook in m._hooks:  # the hand-written forward below must not be prompted twice
            hook.remove()
        g = m.prompt_proj(m.prompts)
        h = vision.embeddings(x)
        h = vision.pre_layrnorm(torch.cat([h, g[0].expand(len(x), -1, -1)], dim=1))
        for i, layer in enumerate(vision.encoder.layers):
            if 0 < i < 2:
                h = torch.cat([h, g[i].expand(len(x), -1, -1)], dim=1)
            h = call_layer(layer, h, None)
        expected = m.backbone.model.visual_projection(vision.post_layernorm(h[:, 0]))
        assert torch.allclose(hooked, expected, atol=1e-5)
