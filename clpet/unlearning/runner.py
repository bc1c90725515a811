"""The unlearning loop: train once on the whole stream, then serve each deletion request and evaluate.

A class-incremental scenario is taken whole: the union of its experiences' training sets is the one training set,
the union of their test sets the test set (the run log says so). The method (``s3t``, ``sisa``, ``retrain``) trains
with ``fit_all``; then, request after request, ``forget(ids)`` and a test evaluation. ``metrics.json`` holds under
``unlearning``: the accuracy before and after each request, each request's retraining work (optimizer steps,
samples x epochs, seconds, shards retrained from scratch), the offline training budget, and the headline: requests
served before the first full retrain (a shard, or the one model, trained again from its start). The checkpoint,
written atomically after training and after every request, holds the method's unlearning state, so a killed run
resumes at its next request and ``clpet unlearn RUN_DIR ids=FILE`` serves more requests on a finished run.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from clpet.scenarios.base import SampleSet, Scenario
from clpet.unlearning.requests import check_stream


def whole(scenario: Scenario) -> tuple:
    """(train, test): the union of every experience's sets."""
    return (SampleSet.concat([e.train for e in scenario]), SampleSet.concat([e.test for e in scenario]))


def served_request(method: Any, ids: Sequence[int], test: SampleSet, index: int) -> Dict[str, Any]:
    cost = method.forget(ids)
    return {"request": index, "n_ids": len(ids), "ids": [int(i) for i in ids], "acc": method.accuracy(test), **cost,
            "full_retrains": int(getattr(method, "full_retrains", 0))}


def summarize(history: List[Dict[str, Any]], initial_acc: float, offline: Dict[str, Any]) -> Dict[str, Any]:
    first_full = next((r["request"] for r in history if r["full_retrains"] > 0), None)
    return {
        "initial_acc": initial_acc,
        "final_acc": history[-1]["acc"] if history else initial_acc,
        "offline": dict(offline),
        "requests": [dict(r) for r in history],
        "n_requests": len(history),
        "n_deleted": sum(r["n_ids"] for r in history),
        # the headline: requests served before the first one that retrained a shard (or the model) from its start
        "deletions_before_full_retrain": (first_full - 1) if first_full is not None else len(history),
        "full_retrain_reached": first_full is not None,
        "retrain_samples": sum(r["train_samples"] for r in history),
        "retrain_steps": sum(r["optimizer_steps"] for r in history),
        "retrain_time_s": round(sum(r["train_time_s"] for r in history), 3),
    }


def run_unlearning(method: Any, scenario: Scenario, requests: List[List[int]], folder: Any,
                   log: Callable[[str], None], base_metrics: Dict[str, Any], resume_state: Optional[dict],
                   checkpoint: bool, extra_state: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train (or resume), serve the requests not served yet (``requests[len(history):]``); returns metrics.json's
    content. ``extra_state`` is saved in the checkpoint too (``clpet unlearn``'s pending request file)."""
    from clpet.config import ConfigError, one_line

    train, test = whole(scenario)
    tic = time.perf_counter()
    if resume_state is not None:
        if "unlearning" not in resume_state or resume_state.get("train_fingerprint") != train.fingerprint():
            raise ConfigError(f"the checkpoint in {folder.path} is not an unlearning checkpoint of this training set")
        try:
            method.load_unlearning_state(resume_state["unlearning"], train)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"resume from {folder.checkpoint_path}: {one_line(exc)}") from None
        served = [r["ids"] for r in resume_state["history"]]
        if "pending_file" not in resume_state and served != [list(map(int, r)) for r in requests[:len(served)]]:
            raise ConfigError("resume: the deletion stream differs from the one this run served (deletions.*)")
        history, initial_acc = list(resume_state["history"]), float(resume_state["initial_acc"])
        elapsed = float(resume_state["wall_time_s"])
        log(f"resumed at request {len(history) + 1}/{len(requests)}")
    else:
        log(f"scenario {scenario.name} taken whole: {len(train)} training and {len(test)} test samples, "
            f"{scenario.n_classes} classes, one training set ({scenario.protocol.value} stream)")
        offline = method.fit_all(train)
        initial_acc = method.accuracy(test)
        history, elapsed = [], 0.0
        log(f"trained: accuracy {initial_acc:.2f}, {offline['optimizer_steps']} optimizer steps, "
            f"{offline['train_samples']} samples x epochs, {offline['train_time_s']:.1f}s")
    check_stream(requests[len(history):], train.ids, method.deleted)

    def save() -> Dict[str, Any]:
        metrics = {**base_metrics, "unlearning": summarize(history, initial_acc, method.offline),
                   "wall_time_s": round(elapsed + time.perf_counter() - tic, 3),
                   "n_requests_planned": len(requests)}
        folder.write_metrics(metrics)
        if checkpoint:
            folder.save_checkpoint({"unlearning": method.unlearning_state(), "history": history,
                                    "initial_acc": initial_acc, "wall_time_s": metrics["wall_time_s"],
                                    "train_fingerprint": train.fingerprint(),
                                    **(extra_state or {})})
        return metrics

    metrics = save()
    for r in range(len(history), len(requests)):
        entry = served_request(method, requests[r], test, r + 1)
        history.append(entry)
        log(f"request {r + 1}/{len(requests)}: {entry['n_ids']} sample(s) deleted, accuracy {entry['acc']:.2f}, "
            f"retraining {entry['train_samples']} samples x epochs ({entry['train_time_s']:.2f}s), "
            f"{entry['full_retrains']} full retrain(s)")
        metrics = save()
    return metrics


def unlearning_table(metrics: Dict[str, Any]) -> str:
    u = metrics["unlearning"]
    head = ("| scenario | method | accuracy before | after | requests | deletions before full retrain | "
            "retraining (samples x epochs) | retraining (s) | training (s) |")
    before = f"{u['deletions_before_full_retrain']}" + ("" if u["full_retrain_reached"] else "+")
    row = (f"| {metrics['scenario']} | {metrics['method']} | {u['initial_acc']:.2f} | {u['final_acc']:.2f} | "
           f"{u['n_requests']} | {before} | {u['retrain_samples']:,} | {u['retrain_time_s']:.2f} | "
           f"{u['offline']['train_time_s']:.1f} |")
    return "\n".join([head, "|" + "---|" * 9, row])


def unlearn(run_dir: str, ids_file: str, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """``clpet unlearn RUN_DIR ids=FILE``: serve the requests of FILE (one per line) on a finished (or killed)
    unlearning run, from its checkpoint. Each served request is written atomically, so a killed ``unlearn`` leaves
    the model of the last served request; run the same command again to go on with the rest of the file."""
    from clpet.config import ConfigError
    from clpet.results import RunFolder, folder_lock

    folder = RunFolder(run_dir)
    if not folder.config_path.exists():
        raise ConfigError(f"{run_dir} holds no run (no config.yaml)")
    with folder_lock(run_dir):  # not while a run or another unlearn writes this folder
        return _unlearn_locked(folder, run_dir, ids_file, log)


def _unlearn_locked(folder: Any, run_dir: str, ids_file: str, log: Callable[[str], None]) -> Dict[str, Any]:
    import hashlib

    import yaml
    from omegaconf import OmegaConf

    from clpet.config import ConfigError, one_line, validate
    from clpet.context import resolve_device
    from clpet.runner import build_method, build_scenario
    from clpet.unlearning.requests import read_requests

    state = folder.load_checkpoint()
    if state is None or "unlearning" not in state:
        raise ConfigError(f"{run_dir} holds no unlearning checkpoint (run s3t, sisa or retrain there first)")
    try:
        new = read_requests(ids_file)
        cfg = validate(OmegaConf.create(yaml.safe_load(folder.config_path.read_text())))
        scenario = build_scenario(cfg)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise ConfigError(one_line(exc)) from None
    method = build_method(cfg, scenario, resolve_device(cfg.run.device))
    with open(os.path.expanduser(ids_file), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    history = list(state["history"])
    pending = state.get("pending_file")
    done = len(history) - int(pending["start"]) if pending and pending["sha256"] == digest else 0
    start = len(history) - done
    requests = [r["ids"] for r in history[:start]] + new
    try:
        check_stream(requests[len(history):], whole(scenario)[0].ids, state["unlearning"]["deleted"])
    except ValueError as exc:
        raise ConfigError(one_line(exc)) from None
    metrics = load_base(folder)
    log(f"unlearn {run_dir}: {len(new)} request(s) from {ids_file}" + (f", {done} served before" if done else ""))
    return run_unlearning(method, scenario, requests, folder, log, metrics, state, checkpoint=True,
                          extra_state={"pending_file": {"sha256": digest, "start": start}})


def load_base(folder: Any) -> Dict[str, Any]:
    """The run's metrics without its unlearning part (rewritten by the requests served now)."""
    metrics = dict(folder.load_metrics())
    for key in ("unlearning", "wall_time_s", "n_requests_planned"):
        metrics.pop(key, None)
    return metrics
