"""Few-shot class-incremental streams (FSCIL; Tao et al., "Few-Shot Class-Incremental Learning", TOPIC, CVPR
2020, arXiv 2004.10956; protocol as in CEC, Zhang et al. CVPR 2021, icoz69/CEC-CVPR2021): a base session with many
classes and all their training samples, then sessions of N new classes with K training samples each
(N-way K-shot). Evaluation after session t covers the test samples of every class seen so far: experience t's
``test`` holds its own classes' test samples and the runner evaluates on all seen experiences, so the union is
the cumulative test set (``fscil_summary`` in ``clpet.metrics`` turns the rows into session, base and novel
accuracies and the performance drop).

The builder takes the shots from index files when given (the standard lists; see ``fscil_benchmarks.py``) and
otherwise draws them deterministically: for each novel class, ``shots`` of its training samples drawn without
replacement by ``np.random.RandomState([data_seed, original class id])``, so a class's shots depend only on the
data seed and the class, not on the class order or on the run seed; every method sees the same shots.

Also here: the offline FSCIL scenarios on the packaged data, ``clipart-fscil`` and ``wordnet-fscil``, whose class
order (which classes are base, which novel) follows the run's seed (``order=seed``), so three seeds are three
different base/novel partitions with the same shots per class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from clpet.protocols import Protocol
from clpet.registry import SCENARIOS
from clpet.scenarios import clipart as _clipart
from clpet.scenarios import wordnet as _wordnet
from clpet.scenarios._paper import resolve_order
from clpet.scenarios.base import Experience, SampleSet, Scenario, ScenarioBuilder, ScenarioConfig, cap_per_class
from clpet.scenarios.common import as_config

PROTOCOL = Protocol.FEW_SHOT_CLASS_INCREMENTAL


@dataclass
class FSCILConfig(ScenarioConfig):
    """Keys of every FSCIL scenario. ``init``/``increment`` (class-incremental keys) are not used: set
    ``base_classes``, ``ways`` and ``shots``."""

    base_classes: int = 60  # classes of the base session (all their training samples)
    ways: int = 5  # new classes per incremental session
    shots: int = 5  # training samples per new class
    sessions: Optional[int] = None  # incremental sessions after the base one; None = as many as fit
    order: Any = "natural"
    increment: int = 0  # unused (FSCIL uses ways); must stay 0

    def __post_init__(self) -> None:
        if self.init or self.increment:
            raise ValueError("FSCIL scenarios use base_classes / ways / shots, not init / increment")
        if self.base_classes <= 0 or self.ways <= 0 or self.shots <= 0:
            raise ValueError(
                f"base_classes, ways and shots must be positive, got {self.base_classes}, {self.ways}, {self.shots}"
            )
        if self.sessions is not None and self.sessions < 0:
            raise ValueError(f"sessions must be >= 0, got {self.sessions}")


def session_sizes(n_classes: int, base: int, ways: int, sessions: Optional[int]) -> List[int]:
    """[base, ways, ways, ...]: ``sessions`` incremental sessions, or as many as fit in ``n_classes``."""
    if base > n_classes:
        raise ValueError(f"base_classes={base} but the data has only {n_classes} classes")
    fit = (n_classes - base) // ways
    if sessions is None:
        sessions = fit
    elif sessions > fit:
        raise ValueError(
            f"{base} base classes + {sessions} sessions x {ways} ways = {base + sessions * ways} classes, "
            f"but the data has {n_classes}"
        )
    return [base] + [ways] * sessions


def sample_shots(targets: np.ndarray, cls: int, shots: int, data_seed: int) -> np.ndarray:
    """Positions of ``shots`` samples of original class ``cls``, drawn with ``RandomState([data_seed, cls])``,
    returned in source order."""
    idx = np.nonzero(targets == cls)[0]
    if len(idx) < shots:
        raise ValueError(f"class {cls} has {len(idx)} training samples, fewer than shots={shots}")
    rng = np.random.RandomState([int(data_seed), int(cls)])
    return np.sort(rng.choice(idx, size=shots, replace=False))


def build_few_shot_incremental(
    name: str,
    train: SampleSet,
    test: SampleSet,
    class_names: Sequence[str],
    *,
    base_classes: int,
    ways: int,
    shots: int,
    sessions: Optional[int] = None,
    order: Any = "natural",
    seed: int = 0,
    data_seed: int = 0,
    dataset: str = "",
    session_ids: Optional[Mapping[int, Sequence[int]]] = None,
    session_sources: Optional[Mapping[int, str]] = None,
    info: Optional[Dict[str, Any]] = None,
) -> Scenario:
    """Split a labelled source (original labels 0..C-1) into a base session and N-way K-shot sessions.

    ``order`` decides which classes come when (position p of the order gets remapped id p; the base session is
    positions 0..base-1). ``session_ids[s]`` lists the *sample ids* (``train.ids``) of session s's training set,
    read from index files; sessions without an entry take every training sample of their classes (s = 0) or
    draw ``shots`` per class (s >= 1, see ``sample_shots``). A listed session must hold only its own classes and,
    for s >= 1, exactly ``shots`` samples per class; ``session_sources[s]`` (the file) is named in the error.
    Classes beyond the last full session are left out (listed in ``info['unused_classes']``).
    """
    n = len(class_names)
    sizes = session_sizes(n, base_classes, ways, sessions)
    used = sum(sizes)
    full_order, order_name = resolve_order(order, n, seed, dataset)
    class_order = full_order[:used]
    remap = np.full(n, -1, dtype=np.int64)
    remap[class_order] = np.arange(used)
    position = {int(i): k for k, i in enumerate(train.ids.tolist())}
    session_ids = dict(session_ids or {})
    session_sources = dict(session_sources or {})
    experiences: List[Experience] = []
    start = 0
    te_new = remap[test.targets]
    for s, size in enumerate(sizes):
        original = class_order[start : start + size]
        if s in session_ids:
            where = session_sources.get(s, f"session {s + 1} index")
            try:
                tr_idx = np.asarray([position[int(i)] for i in session_ids[s]], dtype=np.int64)
            except KeyError as exc:
                raise ValueError(f"{where}: sample {exc.args[0]} is not in the training set") from None
            listed = train.targets[tr_idx]
            stray = sorted(set(listed.tolist()) - set(original))
            if stray:
                raise ValueError(
                    f"{where}: lists classes {stray[:5]} outside session {s + 1}'s classes {sorted(original)[:10]} "
                    "(index files follow the natural class order: use order=natural)"
                )
            if s > 0:
                got = {c: int((listed == c).sum()) for c in original}
                if any(k != shots for k in got.values()):
                    raise ValueError(f"{where}: expected {shots} samples per class, got {got}")
        elif s == 0:
            tr_idx = np.nonzero(np.isin(train.targets, original))[0]
        else:
            tr_idx = np.concatenate([sample_shots(train.targets, c, shots, data_seed) for c in original])
        te_idx = np.nonzero((te_new >= start) & (te_new < start + size))[0]
        tr = train.subset(tr_idx)
        tr.targets = remap[tr.targets]
        te = test.subset(te_idx)
        te.targets = te_new[te_idx]
        classes = list(range(start, start + size))
        label = f"base session ({size} classes)" if s == 0 else f"session {s + 1}: {size}-way {shots}-shot"
        experiences.append(Experience(s, tr, te, classes, [class_names[c] for c in original], task_id=s, task_name=label))
        start += size
    info = dict(info or {})
    info.update(
        protocol=PROTOCOL, base_classes=base_classes, ways=ways, shots=shots, n_sessions=len(sizes),
        n_classes=used, class_order_name=order_name,
        shots_source=(
            "index files" if any(s > 0 for s in session_ids) else f"sampled per class with data_seed={data_seed}"
        ),
        unused_classes=[class_names[c] for c in full_order[used:]],
    )
    if session_sources:
        info["index_files"] = [session_sources[s] for s in sorted(session_sources)]
    return Scenario(
        name=name, experiences=experiences, class_order=list(class_order),
        class_names=[class_names[c] for c in class_order], modality=train.modality, protocol=PROTOCOL, info=info,
    )


def finish_fscil(
    cfg: FSCILConfig,
    default_name: str,
    train: SampleSet,
    test: SampleSet,
    class_names: Sequence[str],
    seed: int,
    dataset: str = "",
    session_ids: Optional[Mapping[int, Sequence[int]]] = None,
    session_sources: Optional[Mapping[int, str]] = None,
    info: Optional[Dict[str, Any]] = None,
) -> Scenario:
    """Caps (drawn with ``data_seed``; shots are then drawn from the capped pool), then the FSCIL split."""
    train = cap_per_class(train, cfg.max_train_per_class, cfg.data_seed)
    test = cap_per_class(test, cfg.max_test_per_class, cfg.data_seed)
    return build_few_shot_incremental(
        cfg.name or default_name, train, test, class_names, base_classes=cfg.base_classes, ways=cfg.ways,
        shots=cfg.shots, sessions=cfg.sessions, order=cfg.order, seed=seed, data_seed=cfg.data_seed,
        dataset=dataset, session_ids=session_ids, session_sources=session_sources, info=info,
    )


# ------------------------------------------------------------------------------ packaged offline FSCIL streams


@SCENARIOS.register("clipart-fscil")
class ClipartFSCIL(ScenarioBuilder):
    """OpenClipart topics as FSCIL: 14 base classes + 4 sessions of 5-way 5-shot (Debian openclipart-png)."""
    protocol = Protocol.FEW_SHOT_CLASS_INCREMENTAL

    @dataclass
    class Config(FSCILConfig):
        name: str = "clipart-fscil"
        root: Optional[str] = None  # default /usr/share/openclipart/png
        exclude: List[str] = field(default_factory=lambda: list(_clipart.DEFAULT_EXCLUDE))
        min_images_per_class: int = 30
        max_megapixels: float = 40.0
        test_fraction: float = 0.3
        base_classes: int = 14
        ways: int = 5
        shots: int = 5
        order: Any = "seed"  # the run's seed picks which classes are base and which are novel
        max_train_per_class: Optional[int] = 40
        max_test_per_class: Optional[int] = 20
        default_backbone: str = "efficientnet-lite0"

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        train, test, names, info = _clipart.load_clipart(cfg, data_root)
        return finish_fscil(cfg, "clipart-fscil", train, test, names, seed, info=info)


@SCENARIOS.register("wordnet-fscil")
class WordNetFSCIL(ScenarioBuilder):
    """WordNet supersenses as FSCIL: 25 base classes + 4 sessions of 5-way 5-shot (Debian wordnet-base)."""
    protocol = Protocol.FEW_SHOT_CLASS_INCREMENTAL

    @dataclass
    class Config(FSCILConfig):
        name: str = "wordnet-fscil"
        root: Optional[str] = None  # folder with data.{adj,adv,noun,verb}; default /usr/share/wordnet
        test_fraction: float = 0.3
        base_classes: int = 25
        ways: int = 5
        shots: int = 5
        order: Any = "seed"  # the run's seed picks which classes are base and which are novel
        max_train_per_class: Optional[int] = 60
        max_test_per_class: Optional[int] = 30
        default_backbone: str = "minilm"

    @classmethod
    def build(cls, cfg: Any, seed: int, data_root: Optional[str]) -> Scenario:
        cfg = as_config(cls.Config, cfg)
        train, test, names, info = _wordnet.load_wordnet(cfg, data_root)
        return finish_fscil(cfg, "wordnet-fscil", train, test, names, seed, info=info)
