"""Exact unlearning by sharded, sliced PET training: S3T, SISA and full retraining (docs/methods.md, "S3T").

Every method here trains on one training set (a class-incremental scenario is taken whole) and then serves
deletion requests: ``forget(ids)`` returns the retraining work the request cost, after which the served model is
exactly a model trained without the deleted samples (same seeds, same slice order). The loop that drives them is
``clpet.unlearning.runner``.

* ``s3t`` -- Chowdhury et al., "Towards Scalable Exact Machine Unlearning Using Parameter-Efficient Fine-Tuning"
  (arXiv 2406.16257, Sec. 3-4; reference code brcsomnath/S3T). The data is split into ``shards`` (one model each;
  predictions are the mean of the served shards' logits) and each shard into ``slices``. Layer-sliced training,
  top-down: stage i trains the LoRA of the i-th block group from the top, plus the head, on the sequence's first
  i+1 slices together, every other parameter frozen; the LoRA and head after each stage are kept. Each shard is
  trained along ``sequences`` (B) slice orders (``clpet.unlearning.sequences``). A deleted sample in slice s cuts
  every sequence of its shard to the prefix before s: the stages trained on s and after are dropped (no
  retraining), and the shard serves its longest surviving prefix (the LoRA of those blocks, the head of its last
  stage; the blocks below stay pre-trained). A shard with no prefix left retrains on its remaining data.
  Why top-down makes this exact: stage i's input is the output of the frozen pre-trained blocks below it plus the
  blocks trained at stages < i, which saw only the slices of the prefix, so dropping the later stages leaves a
  model that never saw the later slices -- the one training on the prefix alone gives. Bottom-up, a later (lower)
  stage would change the inputs of the blocks trained before it, and dropping it would not restore them.
* ``sisa`` -- Bourtoule et al., "Machine Unlearning" (IEEE S&P 2021): shards x slices, one model per shard (a LoRA on
  every block + head) trained slice-incrementally (stage i continues from stage i-1 on slices 0..i), a checkpoint
  after each slice; a deletion in slice s restores the shard's checkpoint before s and retrains from there.
* ``retrain`` -- one model on all data, trained again from scratch without the deleted samples at every request.

Where clpet differs from the S3T reference code: stage parameters are matched by exact block index (the
reference's substring match also unfreezes layers 10-19 when it means layer 1); each stage's LoRA is stored
explicitly (the reference reloads adapters under one name, which can re-initialise earlier blocks); slices are
equal in size up to one sample (the reference's percentage splits are not); there is no model selection on test.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clpet.methods.base import Method, MethodConfig, eval_mode
from clpet.methods.lm_base import peft_lora
from clpet.pet import LoRAConfig, PetManager
from clpet.protocols import CLASS_PROTOCOLS, Protocol
from clpet.registry import METHODS
from clpet.scenarios.base import SampleSet
from clpet.training import OptimConfig, fit
from clpet.unlearning.requests import slice_assignment
from clpet.unlearning.sequences import SELECTIONS, make_sequences

State = Dict[str, torch.Tensor]


@dataclass
class RetrainConfig(MethodConfig):
    name: str = "retrain"
    rank: int = 8  # LoRA rank (every block's q/v unless ``targets``)
    alpha: float = 8.0
    targets: Optional[List[str]] = None
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        epochs=3, batch_size=16, optimizer="adamw", lr=1e-3, weight_decay=0.0))

    def __post_init__(self) -> None:
        if self.rank <= 0 or not 0 < self.alpha < math.inf:
            raise ValueError(f"need rank > 0 and a finite alpha > 0; got {self.rank}, {self.alpha}")
        if self.targets is not None and not list(self.targets):
            raise ValueError("targets is empty; use null for q and v")


@dataclass
class SISAConfig(RetrainConfig):
    name: str = "sisa"
    shards: int = 5
    slices: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shards <= 0 or self.slices <= 0:
            raise ValueError(f"shards and slices must be positive; got {self.shards}, {self.slices}")


@dataclass
class S3TConfig(SISAConfig):
    name: str = "s3t"
    sequences: int = 2  # B slice orders per shard
    selection: str = "cyclic"  # cyclic | matching | random
    deletion_probs: Optional[List[float]] = None  # per slice, for ``matching`` (null: uniform)
    blocks_per_slice: Optional[int] = None  # blocks trained per stage (null: blocks // slices)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown sequence selection '{self.selection}'; valid: {', '.join(SELECTIONS)}")
        if not 0 < self.sequences <= self.slices:
            raise ValueError(f"sequences must be in 1..slices ({self.slices}); got {self.sequences}")
        if self.blocks_per_slice is not None and self.blocks_per_slice <= 0:
            raise ValueError(f"blocks_per_slice must be positive or null; got {self.blocks_per_slice}")
        if self.deletion_probs is not None and len(self.deletion_probs) != self.slices:
            raise ValueError(f"deletion_probs lists {len(self.deletion_probs)} values for {self.slices} slices")


class UnlearningMethod(Method):
    """Shared machinery: the data assignment, the training primitive, the served logits, deletion bookkeeping."""

    protocols = CLASS_PROTOCOLS + (Protocol.SINGLE_STREAM,)
    unlearning = True  # the runner drives it with ``fit_all`` / ``forget``, not ``learn`` per experience

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.pets: Optional[PetManager] = None
        self.head: nn.Linear
        self.store: Dict[str, State] = {}  # "<key>": tensors of a kept stage (LoRA and head)
        self.deleted: set = set()
        self.offline = {"optimizer_steps": 0, "train_samples": 0, "train_time_s": 0.0}
        self._work = {"optimizer_steps": 0, "train_samples": 0}
        self._logit_cache: Dict[Any, torch.Tensor] = {}
        self.full_retrains = 0  # shards (or the model) the last request retrained from their start

    def setup(self, backbone, scenario, ctx) -> None:
        """Heads on ``backbone.features``; clpet's LoRA sets on encoders (MiniLM, ViT), PEFT LoRAs restricted to
        layers (``layers_to_transform``) on a language model (SmolLM2: the mean last hidden state of the text)."""
        self.head = nn.Linear(backbone.feature_dim, scenario.n_classes)
        super().setup(backbone, scenario, ctx)
        self.language_model = bool(getattr(backbone, "is_language_model", False))
        if self.language_model:
            from clpet.pet.peft_sets import PeftSets

            self.pets = PeftSets(backbone.model)
            self.n_blocks = int(backbone.model.config.num_hidden_layers)
        else:
            self.pets = PetManager(backbone)
            self.n_blocks = len(self.pets.structure.blocks)
        self.make_sets()
        self.to(ctx.device)

    def make_sets(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def lora(self, blocks: Optional[Sequence[int]]) -> Any:
        """A LoRA on ``blocks`` (None: every block): clpet's ``LoRAConfig``, or a PEFT LoRA on a language model."""
        if self.language_model:
            return peft_lora(self.cfg, self.backbone, blocks)
        return LoRAConfig(rank=self.cfg.rank, alpha=self.cfg.alpha, blocks=None if blocks is None else tuple(blocks),
                          targets=None if self.cfg.targets is None else tuple(self.cfg.targets))

    # -- data ---------------------------------------------------------------------------------------------------
    def assign(self, train: SampleSet, shards: int, slices: int) -> None:
        """Shard and slice of every training sample (``slice_assignment`` with the run seed)."""
        shard, slc = slice_assignment(len(train), shards, slices, self.ctx.seed)
        self.train_set, self.shard_of, self.slice_of = train, shard, slc
        self.row_of = {int(i): r for r, i in enumerate(train.ids)}

    def samples(self, shard: Optional[int], slices: Optional[Iterable[int]]) -> SampleSet:
        """The not-deleted training samples of ``shard`` (None: all) in ``slices`` (None: all), in source order."""
        keep = np.ones(len(self.train_set), dtype=bool)
        if shard is not None:
            keep &= self.shard_of == shard
        if slices is not None:
            keep &= np.isin(self.slice_of, list(slices))
        if self.deleted:
            keep &= ~np.isin(self.train_set.ids, list(self.deleted))
        return self.train_set.subset(np.flatnonzero(keep))

    def cells(self, ids: Sequence[int]) -> List[Tuple[int, int]]:
        """(shard, slice) of each training sample id."""
        return [(int(self.shard_of[self.row_of[i]]), int(self.slice_of[self.row_of[i]])) for i in ids]

    def check_request(self, ids: Sequence[int]) -> List[int]:
        """The request's ids as ints; ValueError (one line, naming them) for unknown or already deleted ids."""
        ids = [int(i) for i in ids]
        unknown = [i for i in ids if i not in self.row_of]
        if unknown:
            raise ValueError(f"deletion request: {len(unknown)} unknown sample id(s): {unknown[:10]}")
        gone = sorted({i for i in ids if i in self.deleted})
        if gone:
            raise ValueError(f"deletion request: {len(gone)} id(s) already deleted: {gone[:10]}")
        if len(set(ids)) != len(ids):
            raise ValueError("deletion request: an id is named twice")
        return ids

    # -- training -----------------------------------------------------------------------------------------------
    def fresh(self, names: Sequence[str], seed: int, head: bool) -> None:
        """Re-initialise the sets ``names`` (and the head) deterministically from ``seed``."""
        torch.manual_seed(seed)
        for name in names:
            if self.language_model:  # PEFT re-initialises an adapter in place (it cannot delete its last one)
                from peft.tuners.lora import LoraLayer

                for module in self.backbone.model.modules():
                    if isinstance(module, LoraLayer) and name in module.lora_A:
                        module.reset_lora_parameters(name, True)
                continue
            cfg = self.pets.config(name)
            self.pets.delete_set(name)
            self.pets.add_set(name, cfg)
        if head:
            self.head.reset_parameters()
        self.to(self.ctx.device)

    def train_stage(self, samples: SampleSet, trained: Sequence[str], live: Sequence[str], seed: int) -> None:
        """Train the sets ``trained`` and the head on ``samples`` with ``live`` sets acting (the rest frozen)."""
        self.pets.set_active(list(live))
        for name in live:
            for p in self.pets.parameters(name):
                p.requires_grad_(name in trained)
        params = [p for n in trained for p in self.pets.parameters(n)] + list(self.head.parameters())
        if len(samples) == 0:
            return
        torch.manual_seed(seed)  # dropout draws too: a stage's result is a function of its data and seed only
        fit(self, samples, self.cfg.optim, seed=seed, param_groups=[{"params": params}], desc="stage")
        self._work["train_samples"] += len(samples) * self.cfg.optim.epochs

    def loss_terms(self, batch: Any, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(self.head(self.backbone.features(batch)).float(), targets)}

    def after_step(self) -> None:
        self._work["optimizer_steps"] += 1

    def snapshot(self, names: Sequence[str]) -> State:
        out = {f"head.{k}": v.detach().clone() for k, v in self.head.state_dict().items()}
        for n in names:
            out.update({f"{n}.{k}": v.detach().clone() for k, v in self.pets.state_dict(n).items()})
        return out

    def restore(self, state: State, names: Sequence[str]) -> None:
        self.head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
        for n in names:
            self.pets.load_state_dict(n, {k[len(n) + 1:]: v for k, v in state.items() if k.startswith(f"{n}.")})

    def measured(self, work: Callable[[], None]) -> Dict[str, Any]:
        """Run ``work()`` and return the training it cost (optimizer steps, samples x epochs, seconds)."""
        self._work = {"optimizer_steps": 0, "train_samples": 0}
        tic = time.perf_counter()
        work()
        return {**self._work, "train_time_s": round(time.perf_counter() - tic, 3)}

    # -- serving ------------------------------------------------------------------------------------------------
    def fit_all(self, train: SampleSet) -> Dict[str, Any]:
        self.prepare(train)
        self.offline = self.measured(self.train_everything)
        self._logit_cache.clear()
        return dict(self.offline)

    def prepare(self, train: SampleSet) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def train_everything(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def served_models(self) -> List[Tuple[int, str, List[str]]]:  # pragma: no cover - abstract
        """(shard, store key of its served stage, live sets) for every shard that serves."""
        raise NotImplementedError

    @torch.inference_mode()
    def logits_of(self, samples: SampleSet) -> torch.Tensor:
        """Mean over the serving shards of their logits (S3T's aggregation; one model: its logits)."""
        from clpet.backbones.base import batch_to
        from clpet.data import make_loader

        outs = []
        for shard, key, live in self.served_models():
            cache_key = (shard, key, samples.fingerprint())
            if cache_key not in self._logit_cache:
                self.restore(self.store[key], live)
                rows = []
                with eval_mode(self), self.pets.use(live):
                    for batch, _, _ in make_loader(samples, self.backbone.preprocess_fn(train=False),
                                                   self.ctx.eval_batch_size):
                        with self.ctx.autocast():
                            rows.append(self.head(self.backbone.features(batch_to(batch, self.ctx.device))).float().cpu())
                self._logit_cache[cache_key] = torch.cat(rows)
            outs.append(self._logit_cache[cache_key])
        if not outs:
            raise RuntimeError("no shard serves a model")
        return torch.stack(outs).mean(dim=0)

    def predict_set(self, samples: SampleSet, experience: Any = None, task_id: Optional[int] = None) -> np.ndarray:
        return self.logits_of(samples).argmax(dim=1).numpy()

    def accuracy(self, samples: SampleSet) -> float:
        return round(100.0 * float((self.predict_set(samples) == samples.targets).mean()), 4)

    def forget(self, ids: Sequence[int]) -> Dict[str, Any]:
        ids = self.check_request(ids)
        return self.measured(lambda: self.remove(ids))

    def retrained(self, shards: Iterable[int]) -> None:
        """Drop the cached test logits of ``shards`` (their kept stages were trained again). A shard a request
        only cut to a shorter prefix keeps its cache: its stages are unchanged, so a request evaluates only the
        shards it retrained (or whose served stage moved)."""
        shards = set(shards)
        for key in [key for key in self._logit_cache if key[0] in shards]:
            del self._logit_cache[key]

    def remove(self, ids: List[int]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def learn(self, experience) -> None:  # pragma: no cover - the unlearning runner calls fit_all
        raise NotImplementedError(f"{type(self).__name__} trains once on the whole stream (fit_all)")

    def count_trainable_parameters(self) -> int:
        return sum(self.pets.num_trainable(n) for n in self.pets.names()) + sum(p.numel() for p in self.head.parameters())

    def unlearning_state(self) -> Dict[str, Any]:
        """Everything ``clpet unlearn`` needs to continue serving requests (tensors and plain values)."""
        return {"store": self.store, "deleted": sorted(self.deleted), "offline": dict(self.offline),
                "shard_of": torch.as_tensor(self.shard_of), "slice_of": torch.as_tensor(self.slice_of)}

    def load_unlearning_state(self, state: Dict[str, Any], train: SampleSet) -> None:
        self.prepare(train)
        if not np.array_equal(self.shard_of, state["shard_of"].numpy()) or \
                not np.array_equal(self.slice_of, state["slice_of"].numpy()):
            raise ValueError("the saved shard/slice assignment does not match this training set")
        self.store = dict(state["store"])
        self.deleted = {int(i) for i in state["deleted"]}
        self.offline = dict(state["offline"])
        self._logit_cache.clear()


def stage_seed(run_seed: int, *parts: int) -> int:
    """A training seed for one stage, a function of the run seed and the stage's coordinates only."""
    h = run_seed
    for p in parts:
        h = (h * 1_000_003 + int(p) + 1) % (2**31 - 1)
    return h


@METHODS.register("retrain")
class Retrain(UnlearningMethod):
    """One model (LoRA on every block + head) on all data; every deletion retrains it from scratch."""

    Config = RetrainConfig
    SET = "full"

    def make_sets(self) -> None:
        self.pets.add_set(self.SET, self.lora(None))

    def prepare(self, train: SampleSet) -> None:
        self.assign(train, 1, 1)

    def train_everything(self) -> None:
        seed = stage_seed(self.ctx.seed, 0)
        self.fresh([self.SET], seed, head=True)
        self.train_stage(self.samples(None, None), [self.SET], [self.SET], seed)
        self.store["full"] = self.snapshot([self.SET])

    def served_models(self):
        return [(0, "full", [self.SET])]

    def remove(self, ids: List[int]) -> None:
        self.deleted.update(ids)
        self.train_everything()
        self.full_retrains = 1
        self.retrained([0])


@METHODS.register("sisa")
class SISA(UnlearningMethod):
    """Shards x slices, one model per shard trained slice after slice with a checkpoint after each."""

    Config = SISAConfig
    SET = "sisa"

    def make_sets(self) -> None:
        self.pets.add_set(self.SET, self.lora(None))

    def prepare(self, train: SampleSet) -> None:
        self.assign(train, self.cfg.shards, self.cfg.slices)

    def train_shard_from(self, k: int, start: int) -> None:
        """Stages ``start``..L-1 of shard k, from the checkpoint after stage ``start - 1`` (fresh at 0)."""
        if start == 0:
            self.fresh([self.SET], stage_seed(self.ctx.seed, k), head=True)
        else:
            self.restore(self.store[f"k{k}/s{start - 1}"], [self.SET])
        for i in range(start, self.cfg.slices):
            self.train_stage(self.samples(k, range(i + 1)), [self.SET], [self.SET], stage_seed(self.ctx.seed, k, i))
            self.store[f"k{k}/s{i}"] = self.snapshot([self.SET])

    def train_everything(self) -> None:
        for k in range(self.cfg.shards):
            self.train_shard_from(k, 0)

    def served_models(self):
        return [(k, f"k{k}/s{self.cfg.slices - 1}", [self.SET]) for k in range(self.cfg.shards)]

    def remove(self, ids: List[int]) -> None:
        self.deleted.update(ids)
        first: Dict[int, int] = {}
        for k, s in self.cells(ids):
            first[k] = min(first.get(k, s), s)
        for k, s in sorted(first.items()):
            self.train_shard_from(k, s)
        self.full_retrains = sum(1 for s in first.values() if s == 0)  # restarted from the shard's first slice
        self.retrained(first)


@METHODS.register("s3t")
class S3T(UnlearningMethod):
    """Sharded, sliced, sequence-aware training: layer-sliced LoRA stages, B slice orders per shard."""

    Config = S3TConfig

    def make_sets(self) -> None:
        per = self.cfg.blocks_per_slice or self.n_blocks // self.cfg.slices
        if per <= 0 or per * self.cfg.slices > self.n_blocks:
            raise ValueError(f"s3t: {self.cfg.slices} slices x {per} block(s) per slice need that many blocks; the "
                             f"backbone has {self.n_blocks} (lower slices or set blocks_per_slice)")
        top = self.n_blocks - 1
        self.stage_blocks = [[top - (i * per + j) for j in range(per)] for i in range(self.cfg.slices)]
        for i, blocks in enumerate(self.stage_blocks):
            self.pets.add_set(self.stage(i), self.lora(blocks))
        self.sequences = make_sequences(self.cfg.selection, self.cfg.slices, self.cfg.sequences, self.ctx.seed,
                                        self.cfg.deletion_probs)
        self.prefix: List[List[int]] = []

    @staticmethod
    def stage(i: int) -> str:
        return f"stage{i}"

    def prepare(self, train: SampleSet) -> None:
        self.assign(train, self.cfg.shards, self.cfg.slices)
        self.prefix = [[self.cfg.slices] * len(self.sequences) for _ in range(self.cfg.shards)]

    def train_shard(self, k: int) -> None:
        """Every sequence of shard k, stage by stage (top-down), each stage's LoRA and head kept."""
        for b, seq in enumerate(self.sequences):
            for i in range(self.cfg.slices):
                seed = stage_seed(self.ctx.seed, k, b, i)
                self.fresh([self.stage(i)], seed, head=(i == 0))
                if i > 0:
                    self.restore(self.store[f"k{k}/b{b}/s{i - 1}"], [self.stage(j) for j in range(i)])
                live = [self.stage(j) for j in range(i + 1)]
                self.train_stage(self.samples(k, seq[: i + 1]), [self.stage(i)], live, seed)
                self.store[f"k{k}/b{b}/s{i}"] = self.snapshot(live)
        self.prefix[k] = [self.cfg.slices] * len(self.sequences)

    def train_everything(self) -> None:
        for k in range(self.cfg.shards):
            self.train_shard(k)

    def served_prefix(self, k: int) -> Tuple[int, int]:
        """(sequence, stages) the shard serves: its longest surviving prefix (the first such sequence)."""
        best = int(np.argmax(self.prefix[k]))
        return best, self.prefix[k][best]

    def served_models(self):
        out = []
        for k in range(self.cfg.shards):
            b, p = self.served_prefix(k)
            if p > 0:
                out.append((k, f"k{k}/b{b}/s{p - 1}", [self.stage(j) for j in range(p)]))
        return out

    def remove(self, ids: List[int]) -> None:
        self.deleted.update(ids)
        for k, s in self.cells(ids):
            self.prefix[k] = [min(p, seq.index(s)) for p, seq in zip(self.prefix[k], self.sequences)]
        dead = [k for k in range(self.cfg.shards) if max(self.prefix[k]) == 0]
        for k in dead:  # nothing left to serve: the shard trains again on its remaining data
            self.train_shard(k)
        self.full_retrains = len(dead)
        self.retrained(dead)

    def unlearning_state(self) -> Dict[str, Any]:
        return {**super().unlearning_state(), "prefix": [list(p) for p in self.prefix],
                "sequences": [list(s) for s in self.sequences]}

    def load_unlearning_state(self, state: Dict[str, Any], train: SampleSet) -> None:
        super().load_unlearning_state(state, train)
        if [list(s) for s in state["sequences"]] != self.sequences:
            raise ValueError("the saved slice sequences differ from this config's")
        self.prefix = [list(map(int, p)) for p in state["prefix"]]
