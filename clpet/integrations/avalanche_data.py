"""clpet scenarios <-> Avalanche benchmarks.

* :func:`as_avalanche_benchmark` turns a clpet ``Scenario`` into an Avalanche ``CLScenario`` with ``train`` and
  ``test`` streams: experience t of each stream is one ``TaskAwareSupervisedClassificationDataset`` whose items
  are ``(x, y, t)`` with ``x`` the clpet *raw* sample (a text, an image path or ``uint8`` array, a float vector),
  ``y`` the remapped label and ``t`` the task label (0 in class-incremental streams, the experience's
  ``task_id`` in task-incremental ones). The sample ids ride along as the data attribute ``sample_ids``. The
  datasets keep Avalanche's default collate (vectors stack into a tensor, texts stay a list); the clpet strategy
  loads them with its backbone's preprocessing instead (``avalanche_strategy``).
* :func:`from_avalanche` turns any Avalanche benchmark with a ``train_stream`` and a ``test_stream`` of
  classification experiences into a clpet ``Scenario``: Avalanche transforms are dropped (clpet backbones
  preprocess raw samples), inputs are converted to clpet raw samples (see :func:`to_raw_sample`), labels are
  remapped through the order in which the train stream introduces classes, and per-class caps apply.
  A benchmark made by :func:`as_avalanche_benchmark` carries ``clpet_meta`` (name, class names, original class
  order, modality, task ids), so the round trip gives back the same scenario.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from clpet.integrations.avalanche_compat import require_avalanche

require_avalanche("clpet's Avalanche integration")

from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets  # noqa: E402
from avalanche.benchmarks.scenarios.supervised import with_classes_timeline  # noqa: E402
from avalanche.benchmarks.scenarios.task_aware import with_task_labels  # noqa: E402
from avalanche.benchmarks.utils import DataAttribute  # noqa: E402
from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset  # noqa: E402
from PIL import Image  # noqa: E402

from clpet.scenarios.avalanche_scenario import AVALANCHE_BENCHMARKS  # noqa: E402
from clpet.scenarios.base import Experience, SampleSet, Scenario, cap_per_class  # noqa: E402

SAMPLE_IDS = "sample_ids"  # data attribute holding each sample's clpet id


# ------------------------------------------------------------------------------ clpet -> Avalanche
class _RawSamples(Dataset):
    """``(raw input, label)`` pairs of a ``SampleSet``; the task label is appended by its data attribute."""

    def __init__(self, samples: SampleSet) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Tuple[Any, int]:
        return self.samples.inputs[i], int(self.samples.targets[i])


def avalanche_dataset(samples: SampleSet, task_label: int = 0) -> TaskAwareSupervisedClassificationDataset:
    """An Avalanche classification dataset over the raw samples of ``samples``: items ``(x, y, task_label)``,
    data attributes ``targets``, ``targets_task_labels`` and ``sample_ids``."""
    n = len(samples)
    return TaskAwareSupervisedClassificationDataset(
        [_RawSamples(samples)],
        data_attributes=[
            DataAttribute(samples.targets.tolist(), "targets"),
            DataAttribute([int(task_label)] * n, "targets_task_labels", use_in_getitem=True),
            DataAttribute(samples.ids.tolist(), SAMPLE_IDS),
        ],
    )


def _task_label(scenario: Scenario, experience: Experience) -> int:
    """Avalanche's convention: task labels exist only where the protocol gives them at test time."""
    return int(experience.task_id) if scenario.protocol.startswith("task") else 0


def as_avalanche_benchmark(scenario: Scenario) -> Any:
    """The same experiences, class order and remapped labels as an Avalanche benchmark (``train_stream``,
    ``test_stream``; experiences have ``classes_in_this_experience`` and ``task_labels``)."""
    streams = {
        split: [avalanche_dataset(getattr(e, split), _task_label(scenario, e)) for e in scenario]
        for split in ("train", "test")
    }
    benchmark = with_task_labels(with_classes_timeline(benchmark_from_datasets(**streams)))
    benchmark.n_classes = scenario.n_classes
    benchmark.classes_order_original_ids = list(scenario.class_order)  # NCScenario's name for it
    benchmark.clpet_meta = {
        "name": scenario.name,
        "class_order": list(scenario.class_order),
        "class_names": list(scenario.class_names),
        "modality": scenario.modality,
        "protocol": scenario.protocol,
        "info": dict(scenario.info),
        "task_ids": [e.task_id for e in scenario],
        "task_names": [e.task_name for e in scenario],
    }
    return benchmark


# ------------------------------------------------------------------------------ Avalanche -> clpet
def to_raw_sample(x: Any) -> Tuple[Any, str]:
    """``(clpet raw sample, modality)`` of one Avalanche input ``x`` (transforms already dropped).

    ``str`` -> text; ``PIL.Image`` -> ``uint8`` array (image); ``uint8`` (H, W[, C]) or (C, H, W) array/tensor
    -> ``uint8`` (H, W[, C]) image; float (C, H, W) with C in {1, 3} and values in [0, 1] (what ``ToTensor``
    makes, e.g. Avalanche's ``TensorMNIST``) -> ``uint8`` image (``round(255 x)``, exact for such data);
    any other 1-D numeric -> float32 vector. Anything else raises ``ValueError``.
    """
    if isinstance(x, str):
        return x, "text"
    if isinstance(x, Image.Image):
        img = x if x.mode in ("L", "RGB", "RGBA") else x.convert("RGB")
        return np.asarray(img, dtype=np.uint8), "image"
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype == np.uint8 and arr.ndim in (2, 3):
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3, 4):
            arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
        return np.ascontiguousarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr), "image"
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and np.issubdtype(arr.dtype, np.floating):
        if arr.size and 0.0 <= float(arr.min()) and float(arr.max()) <= 1.0:
            img = np.rint(np.moveaxis(arr, 0, -1) * 255.0).astype(np.uint8)
            return np.ascontiguousarray(img[..., 0] if img.shape[2] == 1 else img), "image"
    if arr.ndim == 1 and np.issubdtype(arr.dtype, np.number):
        return arr.astype(np.float32), "vector"
    raise ValueError(f"cannot turn an Avalanche input of type {type(x).__name__} with shape {arr.shape} "
                     f"(dtype {arr.dtype}) into a clpet raw sample (text, image or 1-D vector)")


class _LazyInputs(Sequence):
    """The raw inputs of an Avalanche dataset, fetched and converted on access (so caps fetch only what they
    keep); every input must have ``modality``."""

    def __init__(self, dataset: Any, convert: Callable[[Any], Tuple[Any, str]], modality: str) -> None:
        self.dataset, self.convert, self.modality = dataset, convert, modality

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        value, modality = self.convert(self.dataset[int(i)][0])
        if modality != self.modality:
            raise ValueError(f"Avalanche sample {i} is {modality} but the stream's first sample is {self.modality}")
        return value


def _targets(dataset: Any) -> np.ndarray:
    return np.asarray([int(y) for y in dataset.targets], dtype=np.int64)


def _class_order(train_targets: List[np.ndarray]) -> List[int]:
    """Labels in the order the train stream introduces them (sorted within an experience); a label in two train
    experiences is not class-incremental and raises."""
    order: List[int] = []
    first_seen: Dict[int, int] = {}
    for t, targets in enumerate(train_targets):
        for c in sorted(set(targets.tolist())):
            if c in first_seen:
                raise ValueError(f"class {c} is in train experiences {first_seen[c]} and {t}: clpet needs a "
                                 "class-incremental benchmark (each class in one experience)")
            first_seen[c] = t
            order.append(c)
    return order


def _stream_samples(
    stream: Any, split: str, remap: Dict[int, int], meta: Optional[Dict[str, Any]]
) -> List[SampleSet]:
    """One lazy ``SampleSet`` per experience (remapped labels; ids from ``sample_ids`` or stream positions)."""
    out, offset = [], 0
    for t, exp in enumerate(stream):
        data = exp.dataset.remove_current_transform_group()  # clpet backbones preprocess raw samples
        if len(data) == 0:
            raise ValueError(f"{split} experience {t} of the Avalanche benchmark is empty")
        if meta is not None:  # made by as_avalanche_benchmark: raw samples already
            modality = meta["modality"]
            convert: Callable[[Any], Tuple[Any, str]] = lambda x, m=modality: (x, m)  # noqa: E731
        else:
            convert = to_raw_sample
            modality = to_raw_sample(data[0][0])[1]
        targets = _targets(data)
        unknown = sorted(set(targets.tolist()) - set(remap))
        if unknown:
            raise ValueError(f"{split} experience {t} holds classes {unknown[:5]} that no train experience has")
        ids = (np.asarray(list(getattr(data, SAMPLE_IDS)), dtype=np.int64) if hasattr(data, SAMPLE_IDS)
               else offset + np.arange(len(data), dtype=np.int64))
        remapped = np.asarray([remap[c] for c in targets.tolist()], dtype=np.int64)
        out.append(SampleSet(_LazyInputs(data, convert, modality), remapped, ids, modality, split))
        offset += len(data)
    return out


def _materialize(samples: SampleSet, cap: Optional[int], data_seed: int) -> SampleSet:
    """Per-class cap (drawn with ``data_seed``, as every clpet loader does), then the inputs as a list."""
    capped = cap_per_class(samples, cap, data_seed)
    return capped if isinstance(capped.inputs, list) else capped.subset(np.arange(len(capped)))


def from_avalanche(
    benchmark: Any,
    *,
    name: Optional[str] = None,
    max_train_per_class: Optional[int] = None,
    max_test_per_class: Optional[int] = None,
    data_seed: int = 0,
    info: Optional[Dict[str, Any]] = None,
) -> Scenario:
    """A clpet ``Scenario`` from an Avalanche benchmark's ``train_stream`` / ``test_stream`` (experience t of the
    test stream is evaluated as experience t; it may only hold classes the train stream introduces)."""
    train_stream, test_stream = list(benchmark.train_stream), list(benchmark.test_stream)
    if len(train_stream) != len(test_stream) or not train_stream:
        raise ValueError(f"the Avalanche benchmark has {len(train_stream)} train and {len(test_stream)} test "
                         "experiences; clpet needs the same number (>= 1) in both")
    meta = getattr(benchmark, "clpet_meta", None)
    labels = _class_order([_targets(e.dataset) for e in train_stream])
    remap = {c: i for i, c in enumerate(labels)}
    train = _stream_samples(train_stream, "train", remap, meta)
    test = _stream_samples(test_stream, "test", remap, meta)
    n = len(labels)
    original = getattr(benchmark, "classes_order_original_ids", None)
    if meta is not None:
        class_order = list(meta["class_order"])
    elif labels == list(range(n)) and original is not None and len(original) == n:
        class_order = [int(c) for c in original]  # labels already remapped by Avalanche
    else:
        class_order = labels
    class_names = list(meta["class_names"]) if meta is not None else [str(c) for c in class_order]
    experiences, start = [], 0
    for t, (tr, te) in enumerate(zip(train, test)):
        size = len(set(tr.targets.tolist()))
        classes = list(range(start, start + size))
        extra = sorted(set(te.targets.tolist()) - set(classes))
        if extra:
            raise ValueError(f"test experience {t} holds classes {extra[:5]} that train experience {t} does not "
                             "introduce; clpet evaluates experience t on its own classes")
        task_id = meta["task_ids"][t] if meta is not None else t
        task_name = meta["task_names"][t] if meta is not None else f"classes {start}-{start + size - 1}"
        experiences.append(Experience(
            t, _materialize(tr, max_train_per_class, data_seed), _materialize(te, max_test_per_class, data_seed),
            classes, class_names[start:start + size], task_id=task_id, task_name=task_name,
        ))
        start += size
    details = dict(meta["info"]) if meta is not None else {"source": "avalanche", "benchmark": type(benchmark).__name__}
    details.update(info or {})
    return Scenario(
        name=name or (meta["name"] if meta is not None else "avalanche"),
        experiences=experiences,
        class_order=class_order,
        class_names=class_names,
        modality=train[0].modality,
        protocol=meta["protocol"] if meta is not None else "class-incremental",
        info=details,
    )


# ------------------------------------------------------------------------------ classic benchmarks
def load_classic_benchmark(name: str, n_experiences: int, seed: int, dataset_root: Optional[str]) -> Any:
    """``avalanche.benchmarks.classic.<name>(n_experiences, seed=seed, dataset_root=...)`` for a name in the
    allow-list. Missing data that cannot be downloaded (offline) raises ``FileNotFoundError`` in one line."""
    if name not in AVALANCHE_BENCHMARKS:
        raise ValueError(f"unknown Avalanche benchmark '{name}'; valid: {', '.join(AVALANCHE_BENCHMARKS)}")
    from avalanche.benchmarks import classic

    constructor = getattr(classic, name)
    try:
        return constructor(n_experiences=n_experiences, seed=seed, dataset_root=dataset_root)
    except (OSError, RuntimeError) as err:  # URLError is an OSError: the download failed
        where = os.path.expanduser(dataset_root) if dataset_root else "Avalanche's default folder (~/.avalanche/data)"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise FileNotFoundError(
            f"Avalanche benchmark {name}: its data is not in {where} and could not be downloaded ({reason}); "
            "download it on a machine with internet access and copy it there, or set scenario.dataset_root=PATH"
        ) from None
