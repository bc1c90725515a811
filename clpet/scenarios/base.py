"""The Experience / Scenario contract (docs/architecture.md, "Scenarios and experiences").

A scenario is a deterministic list of experiences built from a dataset source and a protocol. Labels are
remapped through the scenario's class order, so experience t holds a contiguous block of global class ids,
as the reference code bases (SimpleCIL/APER, LAE) do.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from clpet.protocols import Protocol

#: what a ``SampleSet.inputs`` entry is: an image file path / uint8 array, a string, or a float vector.
MODALITIES = ("image", "text", "vector")


@dataclass
class SampleSet:
    """Raw samples of one split of one experience.

    ``inputs[i]`` is the raw sample (image path or ``uint8`` array for ``image``, ``str`` for ``text``, a float
    array for ``vector``); ``targets[i]`` its *remapped* global label; ``ids[i]`` a stable integer id of the
    sample in its source (unique within the source split), used for feature caching and unlearning.
    Preprocessing (transforms, tokenisation) is the backbone's job, not the data's.
    """

    inputs: Sequence[Any]
    targets: np.ndarray
    ids: np.ndarray
    modality: str
    split: str = "train"  # "train" or "test": the source split ``ids`` refer to

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=np.int64)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if not (len(self.inputs) == len(self.targets) == len(self.ids)):
            raise ValueError(
                f"SampleSet lengths differ: inputs {len(self.inputs)}, targets {len(self.targets)}, ids {len(self.ids)}"
            )
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality '{self.modality}'; valid: {', '.join(MODALITIES)}")

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: Sequence[int]) -> "SampleSet":
        index = np.asarray(index, dtype=np.int64)
        return SampleSet([self.inputs[i] for i in index], self.targets[index], self.ids[index], self.modality, self.split)

    @staticmethod
    def concat(sets: Sequence["SampleSet"]) -> "SampleSet":
        if not sets:
            raise ValueError("cannot concatenate zero SampleSets")
        inputs: List[Any] = []
        for s in sets:
            inputs.extend(s.inputs)
        return SampleSet(
            inputs,
            np.concatenate([s.targets for s in sets]),
            np.concatenate([s.ids for s in sets]),
            sets[0].modality,
            sets[0].split,
        )

    def fingerprint(self) -> str:
        """A short hash of (split, ids, targets): identifies the set for caches and determinism checks."""
        h = hashlib.sha1()
        h.update(self.split.encode())
        h.update(self.ids.tobytes())
        h.update(self.targets.tobytes())
        return h.hexdigest()[:16]


@dataclass
class Experience:
    """One step of a stream: what the method learns from (``train``) and is evaluated on (``test``)."""

    index: int
    train: SampleSet
    test: SampleSet
    classes: List[int]  # global remapped ids introduced in this experience
    class_names: List[str] = field(default_factory=list)
    task_id: int = 0
    task_name: str = ""
    #: task-incremental language tasks: what a method needs to prompt and score the task (``clpet.scenarios.tasks``)
    task: Optional[Any] = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass
class Scenario:
    """A deterministic list of experiences plus what describes them."""

    name: str
    experiences: List[Experience]
    class_order: List[int]  # original class id at each remapped position
    class_names: List[str]  # name of each remapped class id
    modality: str
    protocol: Protocol = Protocol.CLASS_INCREMENTAL
    info: Dict[str, Any] = field(default_factory=dict)
    #: whether evaluation gives the method the task id (task-incremental streams may; class-incremental never)
    task_id_at_eval: bool = False
    #: the evaluator that scores this stream (``clpet.registry.EVALUATORS``): accuracy | rank | generate
    evaluation: str = "accuracy"

    def __post_init__(self) -> None:
        self.protocol = Protocol.parse(self.protocol)
        if self.task_id_at_eval and self.protocol in (Protocol.CLASS_INCREMENTAL, Protocol.FEW_SHOT_CLASS_INCREMENTAL):
            raise ValueError(f"scenario '{self.name}': a {self.protocol.value} stream never gives the task id at evaluation")

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self):
        return iter(self.experiences)

    def __getitem__(self, i: int) -> Experience:
        return self.experiences[i]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def classes_seen(self, t: int) -> int:
        """Number of classes seen after learning experience ``t`` (0-based)."""
        return sum(e.n_classes for e in self.experiences[: t + 1])

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for e in self.experiences:
            h.update(e.train.fingerprint().encode())
            h.update(e.test.fingerprint().encode())
        return h.hexdigest()[:16]


def class_increments(n_classes: int, init: int, increment: int) -> List[int]:
    """Experience sizes for a "B{init} Inc{increment}" split; ``init=0`` means the first experience has
    ``increment`` classes too (the "B0" convention). The last experience takes the remainder."""
    if increment <= 0:
        raise ValueError(f"increment must be positive, got {increment}")
    if init < 0 or init > n_classes:
        raise ValueError(f"init must be in [0, {n_classes}], got {init}")
    sizes = [init] if init > 0 else []
    remaining = n_classes - sum(sizes)
    if remaining > 0 and increment > remaining:
        raise ValueError(f"increment {increment} is larger than the {remaining} classes left after the first "
                         f"experience (the stream has {n_classes}); choose increment <= {remaining}")
    while remaining > 0:
        sizes.append(min(increment, remaining))
        remaining -= sizes[-1]
    return sizes


def resolve_class_order(n_classes: int, order: Any, seed: int) -> List[int]:
    """The class order: ``"natural"``, ``"seed1993"`` (NumPy ``seed(1993); permutation``, as SimpleCIL/APER),
    ``"seed"`` (NumPy permutation with the run's seed), or an explicit list of all class ids."""
    if isinstance(order, str):
        if order == "natural":
            return list(range(n_classes))
        if order == "seed":
            return [int(c) for c in np.random.RandomState(seed).permutation(n_classes)]
        if order.startswith("seed") and order[4:].isdigit():
            return [int(c) for c in np.random.RandomState(int(order[4:])).permutation(n_classes)]
        raise ValueError(f"unknown class order '{order}'; valid: natural, seed, seed<N> (e.g. seed1993), or a list")
    order = [int(c) for c in order]
    if sorted(order) != list(range(n_classes)):
        raise ValueError(f"class order must be a permutation of 0..{n_classes - 1}, got {order}")
    return order


def build_class_incremental(
    name: str,
    train: SampleSet,
    test: SampleSet,
    class_names: Sequence[str],
    order: Any = "seed",
    init: int = 0,
    increment: int = 10,
    seed: int = 0,
    info: Optional[Dict[str, Any]] = None,
) -> Scenario:
    """Split a labelled source into class-incremental experiences.

    ``train``/``test`` hold *original* labels 0..C-1; the returned experiences hold remapped labels (position
    in the class order), so experience t covers a contiguous id block. Samples keep their source order within
    each experience, so the stream is identical for identical inputs and seed.
    """
    n = len(class_names)
    class_order = resolve_class_order(n, order, seed)
    remap = np.empty(n, dtype=np.int64)
    remap[class_order] = np.arange(n)
    sizes = class_increments(n, init, increment)
    experiences = []
    start = 0
    tr_new = remap[train.targets]
    te_new = remap[test.targets]
    for t, size in enumerate(sizes):
        classes = list(range(start, start + size))
        lo, hi = start, start + size
        tr_idx = np.nonzero((tr_new >= lo) & (tr_new < hi))[0]
        te_idx = np.nonzero((te_new >= lo) & (te_new < hi))[0]
        tr = train.subset(tr_idx)
        tr.targets = tr_new[tr_idx]
        te = test.subset(te_idx)
        te.targets = te_new[te_idx]
        names = [class_names[class_order[c]] for c in classes]
        experiences.append(Experience(t, tr, te, classes, names, task_id=t, task_name=f"classes {lo}-{hi - 1}"))
        start += size
    return Scenario(
        name=name,
        experiences=experiences,
        class_order=class_order,
        class_names=[class_names[c] for c in class_order],
        modality=train.modality,
        protocol=Protocol.CLASS_INCREMENTAL,
        info=dict(info or {}),
    )


@dataclass
class ScenarioConfig:
    """Keys every scenario YAML may set. A scenario's own ``Config`` subclasses this and adds its keys;
    an unknown key in ``scenario.*`` is rejected against that dataclass before any work starts."""

    name: str = ""
    order: Any = "seed"  # natural | seed (the run's seed) | seed<N> e.g. seed1993 | explicit list
    init: int = 0  # classes in the first experience; 0 = same as ``increment`` ("B0")
    increment: int = 10
    max_train_per_class: Optional[int] = None  # cap per class, drawn with ``data_seed`` (None = all)
    max_test_per_class: Optional[int] = None
    data_seed: int = 0  # which samples the caps keep; independent of the run seed
    val_fraction: float = 0.0  # > 0: evaluate on a per-class validation split of the training data, not test
    default_backbone: str = "minilm"  # used when ``backbone.name=auto``


class ScenarioBuilder:
    """Base of every registered scenario: a ``Config`` dataclass and ``build(cfg, seed, data_root)``.

    ``build`` must be deterministic: same config + seed + data => the same stream, byte for byte. A missing
    dataset raises ``FileNotFoundError`` with one line naming the path looked at and how to get the data.
    """

    Config = ScenarioConfig
    #: the protocol of the streams this builder makes (checked against the method before any data is read)
    protocol: Protocol = Protocol.CLASS_INCREMENTAL

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:  # pragma: no cover - abstract
        raise NotImplementedError


def cap_per_class(samples: SampleSet, cap: Optional[int], data_seed: int) -> SampleSet:
    """Keep at most ``cap`` samples per class, drawn with ``np.random.RandomState(data_seed)``; the kept
    samples stay in source order. ``cap=None`` keeps everything."""
    if cap is None:
        return samples
    if cap <= 0:
        raise ValueError(f"per-class cap must be positive, got {cap}")
    rng = np.random.RandomState(data_seed)
    keep = []
    for c in np.unique(samples.targets):
        idx = np.nonzero(samples.targets == c)[0]
        if len(idx) > cap:
            idx = np.sort(rng.choice(idx, size=cap, replace=False))
        keep.append(idx)
    return samples.subset(np.sort(np.concatenate(keep)))


class SeenView:
    """What a method may see of a stream: the experiences up to the current one, read-only
    (docs/architecture.md, "What a method sees").

    The runner advances it (``advance(t)``) before experience t is learned; ``experiences`` then holds experiences
    0..t. Stream-level facts that the protocol makes public (name, modality, protocol, the number of experiences)
    are readable; the data of future experiences is not. ``joint`` and ``multitask`` read the union of the seen
    training sets through ``seen_train()``.
    """

    def __init__(self, scenario: Scenario, current: int = -1) -> None:
        self._scenario = scenario
        self._current = int(current)

    def advance(self, t: int) -> None:
        if not -1 <= t < len(self._scenario):
            raise ValueError(f"experience {t} is outside the stream of {len(self._scenario)}")
        self._current = int(t)

    @property
    def current(self) -> int:
        """Index of the experience being learned (-1 before the first)."""
        return self._current

    @property
    def experiences(self) -> List[Experience]:
        return list(self._scenario.experiences[: self._current + 1])

    def __len__(self) -> int:
        return self._current + 1

    def __getitem__(self, i: int) -> Experience:
        return self.experiences[i]

    def __iter__(self):
        return iter(self.experiences)

    @property
    def name(self) -> str:
        return self._scenario.name

    @property
    def modality(self) -> str:
        return self._scenario.modality

    @property
    def protocol(self) -> Protocol:
        return self._scenario.protocol

    @property
    def task_id_at_eval(self) -> bool:
        return self._scenario.task_id_at_eval

    @property
    def n_experiences(self) -> int:
        return len(self._scenario)

    @property
    def info(self) -> Dict[str, Any]:
        return dict(self._scenario.info)

    def seen_train(self) -> SampleSet:
        """The union of the training sets of experiences 0..current."""
        return SampleSet.concat([e.train for e in self.experiences])
