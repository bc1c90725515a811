"""CPE-CLIP and zero-shot CLIP: few-shot class-incremental learning on a frozen CLIP.

CPE-CLIP -- D'Alessandro et al., "Multimodal Parameter-Efficient Few-Shot Class Incremental Learning" (ICCVW
2023, arXiv 2303.04751), Sec. 3; reference code neuraptic/cpe-clip (``CoLeLib/models/clip_models.py``,
``CoLeLib/training/strategies/clip_pe.py``, ``train.py``). CLIP is frozen; what trains:

* **language prompts** ``g`` of shape (deep, L_g, D_text) (12 layers x 2 prompts, Xavier-uniform on the 3-D tensor):
  at the text encoder's input they are *inserted* after the start token, before the position embeddings (so the
  prompts take positions 1..L_g and the words shift by L_g); at every later layer i < deep the L_g prompt slots are
  *replaced* by ``g[i]`` (the previous layer's prompt outputs are dropped). The causal mask and padding mask cover
  the lengthened sequence; the text feature is the end token's, L_g positions later (Sec. 3.2).
* **vision prompts**, one shared ``Linear(D_text, D_vision)`` (with bias) of the same ``g``: ``proj(g[0])`` is
  appended after the patch tokens before CLIP's pre-LayerNorm; at each later layer i < deep, ``proj(g[i])`` is
  appended to the sequence (*accumulate*: earlier prompt outputs stay), so layer i sees L_g (i + 1) prompt tokens;
  the image feature is the CLS token's (Sec. 3.3).
* logits ``100 * cos(image, text)`` over every class seen so far, text = ``template.format(class name)``
  (the reference's ``"{}."``); in incremental sessions the old classes' logits are set to -9999 during training
  (so the loss is over the new classes); evaluation is unmasked;
* from the second session on, the gradients of ``g`` and of the projection are multiplied by
  |new classes| / |classes seen| before each update ("session-aware" balance, Sec. 3.4).

Optimisation as the reference runs it: SGD momentum 0.9, weight decay 1e-5, the schedule of
``CosineAnnealingWarmupRestarts(first_cycle_steps=200, warmup_steps=50, max_lr=0.1, min_lr=0.001)`` stepped per
epoch and rebuilt every session -- here timm's ``CosineLRScheduler`` with the same warmup (identical LRs over the
first 200 epochs; ``optim.scheduler: cosine-restarts``). FINDING: the reference's ``lr=0.00325`` argument is never
used -- that scheduler overwrites every group's LR with ``min_lr`` at construction -- and its 5-6-epoch sessions
stay inside the 50-epoch warmup, so the LRs actually used are 0.001, 0.00298, ... 0.0109 (linear warmup only).
clpet reproduces that schedule (``lr`` = the schedule's max) rather than the nominal 0.00325. Base session: batch
32, 5 epochs (CUB: batch 4, 6 epochs); incremental sessions: batch 4, 5 epochs (presets per dataset). fp32.

Deviations: clpet calls transformers' own CLIP encoder layers (the reference re-implements their attention for
transformers 4.26); the text is padded to the longest prompt as there. ``clip-zeroshot``: the same logits with the
frozen encoders and CLIP's template ``"a photo of a {}."``, no training (the baseline of every CLIP FSCIL table).

What clpet adds here: prompts inserted into transformers' CLIP through its layer lists (forward pre-hooks on the
vision side, the text side driven layer by layer), since PEFT has no deep-prompt tuner for CLIP's two encoders.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clpet.backbones.clip import ClipBackbone, class_prompts, clip_backbone_or_fail
from clpet.methods.base import Method, MethodConfig
from clpet.protocols import CLASS_PROTOCOLS
from clpet.registry import METHODS
from clpet.scenarios.base import Experience
from clpet.training import OptimConfig, fit

OLD_CLASS_LOGIT = -9999.0  # the reference's value for masked old classes (not -inf: finite in fp16 / bf16 too)


def cpe_optim() -> OptimConfig:
    return OptimConfig(epochs=5, batch_size=32, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-5,
                       scheduler="cosine-restarts", warmup_epochs=50, warmup_lr=0.001, min_lr=0.001, cycle_epochs=150)


def check_prompting(who: str, template: str, logit_scale: float) -> None:
    """One line for a template without exactly one ``{}`` or a logit scale that is not a finite positive number."""
    if template.count("{}") != 1 or template.count("{") != 1:
        raise ValueError(f"{who}: template must hold '{{}}' exactly once for the class name, got {template!r}")
    if not 0 < logit_scale < float("inf"):
        raise ValueError(f"{who}: logit_scale must be a finite number > 0, got {logit_scale}")


@dataclass
class ClipZeroShotConfig(MethodConfig):
    name: str = "clip-zeroshot"
    template: str = "a photo of a {}."
    logit_scale: float = 100.0

    def __post_init__(self) -> None:
        check_prompting(self.name, self.template, self.logit_scale)


@dataclass
class CPECLIPConfig(MethodConfig):
    name: str = "cpe-clip"
    prompt_length: int = 2  # L_g: prompts per layer
    prompt_depth: Optional[int] = None  # layers with prompts, the first of each encoder (None: all; ViT-B/16: 12)
    template: str = "{}."
    logit_scale: float = 100.0
    balance: bool = True  # scale the prompt gradients by |new| / |seen| from the second session on
    mask_old_classes: bool = True
    optim: OptimConfig = field(default_factory=cpe_optim)  # the base session
    incremental_batch_size: int = 4
    incremental_epochs: int = 5

    def __post_init__(self) -> None:
        if self.prompt_length < 1 or (self.prompt_depth is not None and self.prompt_depth < 1):
            raise ValueError(f"cpe-clip: prompt_length and prompt_depth must be >= 1, got {self.prompt_length}, "
                             f"{self.prompt_depth}")
        if self.incremental_batch_size < 1 or self.incremental_epochs < 0:
            raise ValueError("cpe-clip: incremental_batch_size must be >= 1 and incremental_epochs >= 0")
        check_prompting(self.name, self.template, self.logit_scale)


def cosine_logits_scaled(image: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).t()


def call_layer(layer: nn.Module, hidden: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """One transformers CLIP encoder layer with an additive 4-D ``mask`` (causal + padding combined); the layer
    signature differs across transformers versions (4.x takes a separate causal mask and returns a tuple)."""
    if "causal_attention_mask" in inspect.signature(layer.forward).parameters:
        out = layer(hidden, mask, None)
    else:
        out = layer(hidden, mask)
    return out[0] if isinstance(out, tuple) else out


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, L, L) additive mask: causal, and padded keys (``keep`` 0) masked."""
    B, L = keep.shape
    neg = torch.finfo(dtype).min
    causal = torch.full((L, L), neg, dtype=dtype, device=keep.device).triu(1)
    pad = (1.0 - keep[:, None, None, :].to(dtype)) * neg
    return (causal[None, None] + pad).clamp(min=neg)


@METHODS.register("clip-zeroshot")
class ClipZeroShot(Method):
    """Zero-shot CLIP: cosine similarity of the image to each seen class's text prompt, no training."""

    Config = ClipZeroShotConfig
    protocols = CLASS_PROTOCOLS

    def setup(self, backbone, scenario, ctx) -> None:
        clip_backbone_or_fail(backbone, self.cfg.name)
        class_prompts(self.cfg.template, scenario.class_names)  # a scenario without names fails here
        super().setup(backbone, scenario, ctx)
        self._text: Optional[torch.Tensor] = None

    def seen_prompts(self) -> List[str]:
        return class_prompts(self.cfg.template, self.stream.class_names[: self.n_seen])

    def learn(self, experience: Experience) -> None:
        self.n_seen += experience.n_classes
        self._text = None

    def text_features(self) -> torch.Tensor:
        if self._text is None or self._text.shape[0] != self.n_seen:
            with torch.no_grad():
                self._text = self.backbone.encode_text(self.seen_prompts()).float()
        return self._text

    def predict(self, batch: Any) -> torch.Tensor:
        return cosine_logits_scaled(self.backbone.features(batch), self.text_features(), self.cfg.logit_scale)


@METHODS.register("cpe-clip")
class CPECLIP(Method):
    """CPE-CLIP: deep language prompts, vision prompts projected from them, masked old logits, balanced gradients."""

    Config = CPECLIPConfig
    protocols = CLASS_PROTOCOLS

    def setup(self, backbone, scenario, ctx) -> None:
        clip = clip_backbone_or_fail(backbone, self.cfg.name)
        class_prompts(self.cfg.template, scenario.class_names)
        n_text, n_vision = len(clip.text_layers), len(clip.vision_layers)
        self.depth = int(self.cfg.prompt_depth or min(n_text, n_vision))
        if self.depth > min(n_text, n_vision):
            raise ValueError(f"cpe-clip: prompt_depth {self.depth} exceeds the encoders' layers "
                             f"({n_text} text, {n_vision} vision)")
        if self.cfg.prompt_length > clip.tokens.context_length - 3:
            raise ValueError(f"cpe-clip: prompt_length {self.cfg.prompt_length} leaves no room for the class name in "
                             f"CLIP's {clip.tokens.context_length}-token context")
        text_dim = clip.model.config.text_config.hidden_size
        vision_dim = clip.model.config.vision_config.hidden_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)  # the reference builds the projection, then the prompts
            self.prompt_proj = nn.Linear(text_dim, vision_dim)
            self.prompts = nn.Parameter(torch.zeros(self.depth, self.cfg.prompt_length, text_dim))
            nn.init.xavier_uniform_(self.prompts)
        super().setup(backbone, scenario, ctx)
        self.n_old = 0
        self.session = 0
        self._text: Optional[torch.Tensor] = None
        self._hooks = [clip.model.vision_model.pre_layrnorm.register_forward_pre_hook(self._append_vision(0))]
        self._hooks += [layer.register_forward_pre_hook(self._append_vision(i))
                        for i, layer in enumerate(clip.vision_layers) if 0 < i < self.depth]

    # -- prompts ----------------------------------------------------------------------------------------------
    def _append_vision(self, i: int):
        """A pre-hook appending ``proj(g[i])`` to the vision tokens (i = 0: before the pre-LayerNorm)."""
        def hook(module: nn.Module, args: tuple):
            hidden = args[0]
            new = self.prompt_proj(self.prompts[i]).to(hidden.dtype).expand(hidden.shape[0], -1, -1)
            return (torch.cat([hidden, new], dim=1), *args[1:])
        return hook

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(pixels)  # the hooks add the vision prompts

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Prompted text features (Sec. 3.2): insert after the start token, then replace at each layer < depth."""
        model = self.backbone.model
        text = model.text_model
        tok = self.backbone.tokens.tokenizer(list(texts), padding=True, truncation=True,
                                             max_length=self.backbone.tokens.context_length - self.cfg.prompt_length,
                                             return_tensors="pt")
        ids, keep = tok["input_ids"].to(self.prompts.device), tok["attention_mask"].to(self.prompts.device)
        B, L = ids.shape[0], self.cfg.prompt_length
        words = text.embeddings.token_embedding(ids)
        g = self.prompts.to(words.dtype)
        x = torch.cat([words[:, :1], g[0].expand(B, -1, -1), words[:, 1:]], dim=1)
        positions = torch.arange(x.shape[1], device=x.device)
        x = x + text.embeddings.position_embedding(positions)[None]
        keep = torch.cat([keep[:, :1], torch.ones(B, L, dtype=keep.dtype, device=keep.device), keep[:, 1:]], dim=1)
        mask = additive_mask(keep, x.dtype)
        for i, layer in enumerate(self.backbone.text_layers):
            if 0 < i < self.depth:
                x = torch.cat([x[:, :1], g[i].expand(B, -1, -1), x[:, 1 + L:]], dim=1)
            x = call_layer(layer, x, mask)
        x = text.final_layer_norm(x)
        eos = int(model.config.text_config.eos_token_id)
        end = ids.argmax(dim=-1) if eos == 2 else (ids == eos).int().argmax(dim=-1)  # transformers' own rule
        pooled = x[torch.arange(B, device=x.device), end + L]
        return model.text_projection(pooled)

    def seen_prompts(self) -> List[str]:
        return class_prompts(self.cfg.template, self.stream.class_names[: self.n_seen])

    def logits(self, pixels: torch.Tensor, text: Optional[torch.Tensor] = None) -> torch.Tensor:
        text = self.text_features(self.seen_prompts()) if text is None else text
        return cosine_logits_scaled(self.image_features(pixels), text, self.cfg.logit_scale)

    # -- training ---------------------------------------------------------------------------------------------
    def loss_terms(self, batch: Any, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        logits = self.logits(batch)
        if self.session > 0 and self.cfg.mask_old_classes:
            old = torch.arange(logits.shape[1], device=logits.device) < self.n_old
            logits = logits.masked_fill(old[None], OLD_CLASS_LOGIT)
        return {"ce": F.cross_entropy(logits, targets)}

    def balance_factor(self) -> float:
        """|new classes| / |classes seen| in an incremental session, 1 in the base session (Sec. 3.4)."""
        return (self.n_seen - self.n_old) / self.n_seen if self.session > 0 and self.cfg.balance else 1.0

    def before_update(self) -> None:
        factor = self.balance_factor()
        if factor != 1.0:
            for p in (self.prompts, *self.prompt_proj.parameters()):
                if p.grad is not None:
                    p.grad.mul_(factor)

    def after_step(self) -> None:
        self._text = None

    def session_optim(self) -> OptimConfig:
        if self.session == 0:
            return self.cfg.optim
        return replace(self.cfg.optim, batch_size=self.cfg.incremental_batch_size, epochs=self.cfg.incremental_epochs)

    def learn(self, experience: Experience) -> None:
        self.session = experience.index
        self.n_old, self.n_seen = self.n_seen, self.n_seen + experience.n_classes
        self._text = None
        params = [self.prompts, *self.prompt_proj.parameters()]
        fit(self, experience.train, self.session_optim(), seed=self.ctx.seed * 1000 + experience.index,
            param_groups=[{"params": params}], desc=f"session {experience.index}")
        self._text = None

    # -- prediction -------------------------------------------------------------------------------------------
    def predict(self, batch: Any) -> torch.Tensor:
        if self._text is None or self._text.shape[0] != self.n_seen:
            self._text = self.text_features(self.seen_prompts()).float()
        return self.logits(batch, self._text)

    def extra_state(self) -> Dict[str, Any]:
        return {**super().extra_state(), "n_old": self.n_old, "session": self.session}

    def load_extra_state(self, state: Dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.n_old, self.session = int(state["n_old"]), int(state["session"])
        self._text = None
