"""A validation split carved from the training data (``scenario.val_fraction``), for choosing schedules and
hyperparameters without looking at test data.

Per experience, ``val_fraction`` of each class's (language tasks: each label's) training samples are held out with
``holdout_split`` (drawn with the scenario's ``data_seed``, so the split is the same for every run seed and every
method); the experience trains on the rest and is *evaluated on the held-out part instead of its test set*. The
test sets are not read by such a run: the accuracy matrix, every metric and the summary are validation numbers,
and ``metrics.json`` says so (``evaluated_on: val``). A chosen setting is then run with ``val_fraction: 0`` on test.
"""
from __future__ import annotations

import dataclasses

from clpet.scenarios.base import Scenario, SampleSet
from clpet.scenarios.common import holdout_split


def check_val_fraction(value: float) -> float:
    if not (0.0 <= value < 1.0):
        raise ValueError(f"scenario.val_fraction must be in [0, 1); got {value}")
    return float(value)


def with_validation(scenario: Scenario, val_fraction: float, data_seed: int) -> Scenario:
    """``scenario`` with each experience's test set replaced by a per-class validation split of its training set
    (and the training set reduced by it); unchanged when ``val_fraction`` is 0."""
    if check_val_fraction(val_fraction) == 0.0:
        return scenario
    experiences = []
    for e in scenario.experiences:
        if len(e.train) < 2:
            raise ValueError(f"scenario.val_fraction: experience {e.index} has {len(e.train)} training sample(s), "
                             f"too few to hold any out")
        keep, held = holdout_split(e.train.targets, val_fraction, data_seed + e.index)
        if len(held) == 0:  # every class has one sample (a one-shot session): nothing to hold out
            raise ValueError(f"scenario.val_fraction: experience {e.index} has one training sample per class, none "
                             f"can be held out for validation")
        val = e.train.subset(held)
        val.split = "val"
        experiences.append(dataclasses.replace(e, train=e.train.subset(keep), test=val))
    return dataclasses.replace(scenario, experiences=experiences,
                               info={**scenario.info, "evaluated_on": "val", "val_fraction": float(val_fraction)})
