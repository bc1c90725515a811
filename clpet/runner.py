"""The continual loop (docs/architecture.md, "The runner"): learn experience t, evaluate on the test sets of every
experience seen so far, record row t of the accuracy matrix, write results, checkpoint. The runner owns
evaluation, through the evaluator the scenario names; a method never evaluates itself. A killed run resumes
after its last finished experience with identical results.

Task-incremental streams also measure ``b_j``, the untrained model's score on every task, before the first
experience, and score task t + 1 after learning task t, so forward transfer (FWT) is defined.
"""
from __future__ import annotations

import random
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import yaml

from clpet import distributed, sharding
from clpet.config import ConfigError, Resolved, one_line
from clpet.context import RunContext, resolve_device, resolve_precision
from clpet.evaluation import score_modes
from clpet.features import FeatureCache
from clpet.memory import PeakMemory
from clpet.methods.base import CheckpointMismatch, Method
from clpet.protocols import Protocol, check_pair
from clpet.scenarios.validation import with_validation
from clpet.registry import BACKBONES, EVALUATORS, METHODS, SCENARIOS
from clpet.scenarios.base import SampleSet, Scenario

SUMMARY_KEYS = ("A_last", "A_avg", "forgetting", "bwt", "plasticity", "wall_time_s")
LM_SUMMARY_KEYS = ("avg_task_acc", "A_last", "bwt", "fwt", "forgetting", "plasticity", "wall_time_s")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_out_dir(scenario: str, method: str, seed: int) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{scenario}_{method}_s{seed}_{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def build_method(cfg: Resolved, scenario: Scenario, device: Optional[torch.device] = None) -> Method:
    """Backbone, method and run context from ``cfg``, the method set up on ``scenario`` (PETs attached, heads
    ready) -- the order ``clpet run`` uses, so the same seed gives the same initial weights. Any rejection
    (unknown name, missing file, unsupported PET/backbone pair) is one ``ConfigError`` line, raised before work.
    The caller seeds the global RNGs first (``seed_everything``)."""
    run_cfg = cfg.run
    try:
        device = device if device is not None else resolve_device(run_cfg.device)
        backbone = BACKBONES.get(cfg.backbone.name).from_config(cfg.backbone)
        if backbone.modality != scenario.modality:
            raise ValueError(f"backbone '{cfg.backbone.name}' reads {backbone.modality} but scenario "
                             f"'{scenario.name}' is {scenario.modality}")
        backbone.enable_image_cache(run_cfg.image_cache_mb)
        method_cls = METHODS.get(cfg.method.name)
        check_pair(cfg.method.name, method_cls.protocols, scenario.name, scenario.protocol)
        if distributed.launched() and not method_cls.for_protocol(scenario.protocol).data_parallel:
            raise ValueError(f"method '{cfg.method.name}' does not run data-parallel (it keeps per-batch state of its "
                             f"own); run it as one process, without torchrun")
        method = method_cls.for_protocol(scenario.protocol)(cfg.method)
        ctx = RunContext(
            device=device, seed=run_cfg.seed, num_workers=run_cfg.num_workers, eval_batch_size=run_cfg.eval_batch_size,
            progress=run_cfg.progress, feature_cache=FeatureCache(run_cfg.cache_dir),
            precision=resolve_precision(run_cfg.precision, device),
        )
        shard = sharding.requested(run_cfg.shard_backbone)
        if shard:
            sharding.check(method, backbone)
        method.setup(backbone, scenario, ctx)  # attaches PETs: an unsupported combination fails here
        if shard:  # after setup: the backbone is on its device and frozen; adapters stay whole on every rank
            method.shard_info = sharding.shard_frozen_weights(backbone.model)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise ConfigError(one_line(exc)) from None
    return method


def build_scenario(cfg: Resolved) -> Scenario:
    """The run's stream: the scenario built from its config and seed, with its validation split when asked."""
    scenario = SCENARIOS.get(cfg.scenario.name).build(cfg.scenario, seed=cfg.run.seed, data_root=cfg.run.data_root)
    return with_validation(scenario, getattr(cfg.scenario, "val_fraction", 0.0), getattr(cfg.scenario, "data_seed", 0))


def prepare_folder(cfg: Resolved) -> Path:
    """The run folder: new, or (``resume=true``) an existing one whose config matches."""
    run = cfg.run
    if run.out_dir is None:
        return default_out_dir(cfg.scenario.name, cfg.method.name, run.seed)
    path = Path(run.out_dir)
    config_file = path / "config.yaml"
    if run.resume:
        if not config_file.exists():
            raise ConfigError(f"resume=true but {config_file} does not exist: nothing to resume")
        saved = yaml.safe_load(config_file.read_text())
        for key in ("scenario", "method", "backbone", "seed", "deletions"):
            if saved.get(key) != cfg.raw.get(key):
                raise ConfigError(f"resume=true but '{key}' differs from the run in {path}; start a new out_dir instead")
    elif (path / "metrics.json").exists() or (path / "checkpoint.pt").exists():
        raise ConfigError(f"{path} already holds a run; pass resume=true to continue it or choose another out_dir")
    return path


def run(cfg: Resolved, announce: Optional[Callable[[], None]] = None) -> Dict[str, Any]:
    """Run one continual-learning experiment end to end; returns the final metrics dict.

    Data, backbone and method are built (and so checked) first; ``announce`` is called once they are, before
    any training (the CLI prints the resolved config there)."""
    from clpet.results import folder_lock

    run_cfg = cfg.run
    device = distributed.init_from_env(resolve_device(run_cfg.device))  # one process: the device as resolved
    folder_path = distributed.broadcast(prepare_folder(cfg))  # under torchrun: rank 0's (a default name is timed)
    distributed.barrier()  # every rank has checked the folder before rank 0 writes to it
    seed_everything(run_cfg.seed)

    try:  # everything that can reject the config or miss a file, before any work
        scenario = build_scenario(cfg)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise ConfigError(one_line(exc)) from None
    method = build_method(cfg, scenario, device)
    requests = deletion_requests(run_cfg.deletions, scenario, method)
    if announce is not None and distributed.is_main():
        announce()

    main_rank = distributed.is_main()  # under torchrun only rank 0 writes and prints
    with folder_lock(folder_path) if main_rank else nullcontext():  # a second run on this folder fails here
        return _run_in_folder(cfg, scenario, method, requests, folder_path, device)


def _run_in_folder(cfg: Resolved, scenario: Scenario, method: Method, requests: List[List[int]], folder_path: Path,
                   device) -> Dict[str, Any]:
    """``run`` once the method is built and the folder is this process's: provenance, then the stream (or the
    unlearning job)."""
    from clpet.results import ReadOnlyRunFolder, RunFolder

    run_cfg, ctx = cfg.run, method.ctx
    main_rank = distributed.is_main()
    folder = RunFolder(str(folder_path)) if main_rank else ReadOnlyRunFolder(str(folder_path))

    def log(line: str) -> None:
        if main_rank:
            print(line, flush=True)
        folder.log(line)

    ctx.log = log
    from clpet.provenance import append_record, record

    if main_rank:
        partial = folder.remove_partial_writes()
        if partial:
            log(f"removed {len(partial)} partly written file(s) a killed run left: {', '.join(partial)}")
        append_record(folder, record(cfg, scenario, method, device))

    if getattr(method, "unlearning", False):
        return run_unlearning_job(cfg, scenario, method, requests, folder, log)
    from clpet.tracking import Tracker

    # read once (by rank 0 under torchrun, then sent to every rank): trackers and the stream resume from it
    saved = distributed.broadcast(folder.load_checkpoint() if run_cfg.resume and main_rank else None)
    tracker = Tracker(run_cfg.logger if main_rank else [], str(folder_path), cfg.raw, resumed=saved is not None,
                      step=(saved or {}).get("tracker_step", 0), experience=(saved or {}).get("next_experience", 0))
    ctx.tracker = tracker if tracker.active else None
    try:
        return run_stream(cfg, scenario, method, folder, folder_path, device, log, tracker, saved)
    finally:
        tracker.close()
        ctx.tracker = None


def run_stream(cfg: Resolved, scenario: Scenario, method: Method, folder, folder_path: Path, device, log,
               tracker, state: Optional[dict]) -> Dict[str, Any]:
    """The experience loop of ``run``: learn, evaluate, write metrics and checkpoint after each experience;
    ``state`` is the checkpoint a resumed run continues from (None: a fresh start)."""
    from clpet.results import rng_state, set_rng_state

    run_cfg, ctx = cfg.run, method.ctx

    T = len(scenario)
    counts = np.array([len(e.test) for e in scenario], dtype=np.float64)
    correct = np.full((T, T), np.nan)
    evaluator = EVALUATORS.get(scenario.evaluation)()
    task_incremental = scenario.protocol == Protocol.TASK_INCREMENTAL
    start, elapsed = 0, 0.0
    exp_times: list = []
    peaks: list = []
    baseline: Optional[list] = None

    def task_id(j: int) -> Optional[int]:
        return scenario[j].task_id if scenario.task_id_at_eval else None

    def evaluate(j: int) -> float:
        return evaluator.score(method, scenario[j], task_id(j))

    if state is not None:
        if state["scenario_fingerprint"] != scenario.fingerprint():
            raise ConfigError(f"resume: the scenario stream differs from the one in {folder_path} (data changed?)")
        try:
            method.load_extra_state(state["extra"])
            method.load_checkpoint_state_dict(state["method"])
        except (CheckpointMismatch, ValueError, KeyError) as exc:
            raise ConfigError(f"resume from {folder.checkpoint_path}: {one_line(exc)}") from None
        correct = state["correct"].double().numpy()
        start, elapsed, exp_times = int(state["next_experience"]), float(state["wall_time_s"]), list(state["exp_times"])
        peaks = list(state.get("peak_memory", []))
        baseline = None if state.get("baseline") is None else [float(v) for v in state["baseline"]]
        set_rng_state(state["rng"])
        log(f"resumed {folder_path} at experience {start}/{T}")
    else:
        folder.write_config(cfg.raw)
        log(f"run {folder_path}: scenario {scenario.name} ({T} experiences, {scenario.n_classes} classes, "
            f"{scenario.protocol.value}), method {cfg.method.name}, backbone {cfg.backbone.name}, seed {run_cfg.seed}, "
            f"device {device}, precision {ctx.precision}")
        if getattr(method, "shard_info", None):
            log(sharding.describe(method.shard_info))
        if scenario.info.get("evaluated_on") == "val":
            log(f"evaluating on a validation split ({scenario.info['val_fraction']:g} of each class's training data); "
                f"test sets are not read")
        if task_incremental:  # b_j: the untrained model on every task (FWT's reference)
            baseline = [float(100.0 * evaluate(j) / counts[j]) for j in range(T)]
            log("untrained model (b_j): " + " ".join(f"{b:.2f}" for b in baseline))

    metrics: Dict[str, Any] = {}
    for t in range(start, T):
        exp = scenario[t]
        distributed.sync_rng()  # under torchrun: every rank starts the experience from rank 0's RNG state
        tic = time.perf_counter()
        with PeakMemory(device) as peak:
            method.learn_experience(exp)
            train_s = time.perf_counter() - tic
            last = T if run_cfg.eval_future else min(T, t + 2) if task_incremental else t + 1
            for j in range(last):
                correct[t, j] = evaluate(j)
        exp_s = time.perf_counter() - tic
        elapsed += exp_s
        exp_times.append(exp_s)
        peaks.append(peak.record())
        metrics = stream_metrics(correct[: t + 1], counts, scenario, baseline)
        log(f"experience {t + 1}/{T}: {describe_experience(exp)}, {len(exp.train)} train samples, "
            f"A_t {metrics['A_t'][-1]:.2f}, train {train_s:.1f}s, total {exp_s:.1f}s, "
            f"peak memory {peak.describe()}")
        metrics.update(finish_metrics(cfg, method, elapsed, exp_times, scenario, peaks))
        if t == T - 1:
            metrics.update(final_diagnostics(method, evaluator, scenario, task_id))
        folder.write_acc_matrix(np.asarray([[np.nan if v is None else v for v in row] for row in metrics["acc_matrix"]]))
        folder.write_metrics(metrics)
        tracker.log_experience(t, metrics)
        if run_cfg.checkpoint and distributed.is_main():
            folder.save_checkpoint({
                "next_experience": t + 1,
                "correct": torch.from_numpy(correct),
                "wall_time_s": elapsed,
                "exp_times": exp_times,
                "peak_memory": peaks,
                "baseline": baseline,
                "method": method.checkpoint_state_dict(),
                "extra": method.extra_state(),
                "rng": rng_state(),
                "scenario_fingerprint": scenario.fingerprint(),
                "tracker_step": tracker.step,
            })
    if not metrics:  # resumed a finished run: the metrics it wrote are final
        metrics = folder.load_metrics()
    distributed.barrier()  # rank 0 has written the last metrics before any rank returns
    if run_cfg.plots and distributed.is_main():
        from clpet.plots import plot_run

        plot_run(str(folder_path))
    tracker.log_final(metrics, str(folder.plots_dir))
    metrics["run_dir"] = str(folder_path)
    return metrics


def deletion_requests(deletions: Dict[str, Any], scenario: Scenario, method: Method) -> List[List[int]]:
    """The run's deletion requests, checked before any work (``deletions`` without an unlearning method is refused:
    it would do nothing)."""
    from clpet.methods.unlearning import SISAConfig
    from clpet.unlearning.requests import DeletionsConfig, make_requests
    from clpet.unlearning.runner import whole

    try:
        d = DeletionsConfig(**dict(deletions or {}))
        if not getattr(method, "unlearning", False):
            if d.kind not in ("none", "auto"):
                raise ValueError(f"deletions: method '{method.cfg.name}' does not unlearn; deletion requests run with "
                                 f"s3t, sisa or retrain")
            return []
        if d.kind == "auto":
            d.kind = "uniform"
        for key in ("shards", "slices"):  # a skewed stream cuts the slices as the method does
            own = getattr(method.cfg, key, None)
            if getattr(d, key) is None:
                setattr(d, key, own if own is not None else getattr(SISAConfig, key))  # retrain: the sharded defaults
            elif own is not None and getattr(d, key) != own:
                raise ValueError(f"deletions.{key}={getattr(d, key)} differs from method.{key}={own}")
        d.__post_init__()
        return make_requests(d, whole(scenario)[0].ids, method.ctx.seed)
    except TypeError as exc:
        raise ConfigError(f"deletions: {one_line(exc)}") from None
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(one_line(exc)) from None


def run_unlearning_job(cfg: Resolved, scenario: Scenario, method: Method, requests: List[List[int]], folder, log
                       ) -> Dict[str, Any]:
    """The single-stream loop of the unlearning methods (``clpet.unlearning.runner``), with the run folder."""
    from clpet.unlearning.runner import run_unlearning

    run_cfg = cfg.run
    state = folder.load_checkpoint() if run_cfg.resume else None
    if state is None:
        folder.write_config(cfg.raw)
        log(f"run {folder.path}: scenario {scenario.name}, method {cfg.method.name}, backbone {cfg.backbone.name}, "
            f"seed {run_cfg.seed}, device {method.ctx.device}, {len(requests)} deletion request(s)")
    base = {"scenario": scenario.name, "method": cfg.method.name, "backbone": cfg.backbone.name, "seed": run_cfg.seed,
            "protocol": Protocol.SINGLE_STREAM.value, "precision": method.ctx.precision,
            "trainable_params": method.count_trainable_parameters(), "run_dir": str(folder.path)}
    metrics = run_unlearning(method, scenario, requests, folder, log, base, state, run_cfg.checkpoint)
    if run_cfg.plots:
        from clpet.plots import plot_deletion_cost

        plot_deletion_cost({cfg.method.name: metrics}, folder.plots_dir / "deletion_cost.png",
                           title=f"{cfg.method.name} / {scenario.name}")
    return metrics


def describe_experience(exp) -> str:
    """``9 new classes`` (class-incremental) or ``task 'bbc-news'`` (task-incremental)."""
    if exp.task is not None:
        return f"task '{exp.task_name}'"
    return f"{exp.n_classes} new classes"


def stream_metrics(correct: np.ndarray, counts: np.ndarray, scenario, baseline: Optional[list] = None) -> Dict[str, Any]:
    """Every CL metric of the rows done so far; FSCIL streams add the session/base/novel numbers, task-incremental
    streams the untrained model's scores ``b_j`` (``baseline``)."""
    from clpet.metrics import fscil_summary, summarize

    metrics = summarize(correct, counts, baseline)
    metrics["protocol"] = scenario.protocol.value
    metrics["evaluated_on"] = scenario.info.get("evaluated_on", "test")
    metrics["evaluation"] = scenario.evaluation
    if baseline is not None:
        metrics["baseline"] = baseline
    if scenario.protocol == Protocol.FEW_SHOT_CLASS_INCREMENTAL:
        metrics["fscil"] = fscil_summary(correct, counts)
    return metrics


def final_diagnostics(method: Method, evaluator, scenario: Scenario, task_id) -> Dict[str, Any]:
    """After the last experience: each prediction mode of the method scored on every test set, and the method's
    own diagnostics on the union of the test sets (handed to it by the runner)."""
    out = score_modes(method, evaluator, list(scenario), [task_id(j) for j in range(len(scenario))])
    if type(method).diagnostics is not Method.diagnostics:
        out.update(method.diagnostics(SampleSet.concat([e.test for e in scenario])))
    return out


def finish_metrics(cfg: Resolved, method, elapsed: float, exp_times: list, scenario, peaks: list) -> Dict[str, Any]:
    return {
        "scenario": cfg.scenario.name,
        "method": cfg.method.name,
        "backbone": cfg.backbone.name,
        "seed": cfg.run.seed,
        "n_experiences": len(scenario),
        "n_classes": scenario.n_classes,
        "wall_time_s": round(elapsed, 3),
        "experience_time_s": [round(x, 3) for x in exp_times],
        "trainable_params": method.count_trainable_parameters(),
        "precision": method.ctx.precision,
        "peak_memory": peaks,
        "peak_rss_mb": max((p["rss_mb"] for p in peaks), default=None),
    }


def summary_table(metrics: Dict[str, Any]) -> str:
    """The end-of-run summary as a small markdown table."""
    if "unlearning" in metrics:
        from clpet.unlearning.runner import unlearning_table

        return unlearning_table(metrics)

    def fmt(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    if metrics.get("protocol") == Protocol.TASK_INCREMENTAL.value:  # the numbers LM continual-learning tables report
        head = ("| scenario | method | average accuracy | whole accuracy | BWT | FWT | forgetting | plasticity "
                "| wall time (s) |")
        keys = LM_SUMMARY_KEYS
    else:
        head = "| scenario | method | A_last | A_avg | forgetting | BWT | plasticity | wall time (s) |"
        keys = SUMMARY_KEYS
    rule = "|" + "---|" * (len(keys) + 2)
    row = (f"| {metrics['scenario']} | {metrics['method']} | " + " | ".join(fmt(metrics.get(k)) for k in keys) + " |")
    lines = [head, rule, row]
    if metrics.get("evaluated_on") == "val":
        lines += ["", "validation numbers (scenario.val_fraction > 0): the test sets were not read"]
    if metrics.get("peak_rss_mb") is not None:
        lines += ["", f"trainable parameters {metrics['trainable_params']:,}, peak memory {metrics['peak_rss_mb']:.0f} MiB "
                      f"RSS, precision {metrics.get('precision')}"]
    if "fscil" in metrics:  # few-shot CIL: the numbers FSCIL tables report
        f = metrics["fscil"]
        sessions = " ".join(fmt(v) for v in f["session_acc"])
        lines += ["", f"FSCIL session accuracy: {sessions}",
                  f"base {fmt(f['base_acc'][-1])}, novel {fmt(f['novel_acc'][-1])}, "
                  f"performance drop {fmt(f['performance_drop'])}"]
    return "\n".join(lines)
