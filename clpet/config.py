"""Composing a run's config with Hydra, and validating it against the registries before any work starts.

The paper preset of the (method, scenario) pair (``clpet/presets.py``) is merged in by ``compose`` under the
command line. The Hydra trap (docs/architecture.md, "Configs"): a group override picks a file only when the group's folder equals the key, so the
defaults list uses ``scenarios@scenario`` / ``methods@method`` and the CLI rewrites ``scenario=X`` /
``method=X`` into those before Hydra sees them. Every node is then checked against the dataclass ``Config`` of
its registry entry, so a typo in any key fails with one line.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from clpet.registry import BACKBONES, METHODS, SCENARIOS

DEFAULT_SCENARIO = "wordnet"
DEFAULT_METHOD = "lae"
GROUPS = {"scenario": "scenarios", "method": "methods"}  # run key -> config folder


class ConfigError(ValueError):
    """A bad config: ``str()`` is one line saying what and where."""


@dataclass
class RunConfig:
    """Top-level keys of ``clpet run`` (the schema Hydra checks overrides against)."""

    defaults: List[Any] = field(
        default_factory=lambda: [
            {"scenarios@scenario": DEFAULT_SCENARIO},
            {"methods@method": DEFAULT_METHOD},
            "_self_",
        ]
    )
    scenario: Any = MISSING
    method: Any = MISSING
    backbone: Dict[str, Any] = field(default_factory=lambda: {"name": "auto"})
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32: autocast of forward passes
    data_root: Optional[str] = None  # where datasets live (image-folder, text-csv, paper-scale scenarios)
    out_dir: Optional[str] = None  # run folder; default runs/<scenario>_<method>_s<seed>_<time>
    resume: bool = False  # continue the run in out_dir after its last finished experience
    num_workers: int = 0  # DataLoader worker processes
    eval_batch_size: int = 128
    cache_dir: Optional[str] = None  # keep frozen-backbone features on disk across runs
    image_cache_mb: float = 2048  # decoded image files kept in memory, sized to the transform; 0 = off
    eval_future: bool = False  # also evaluate on future experiences (fills the upper triangle, for FWT)
    checkpoint: bool = True  # write checkpoint.pt after every experience (needed for resume)
    # under torchrun: shard a language model's frozen weights across the ranks (FSDP2; clpet.sharding)
    shard_backbone: bool = False
    plots: bool = True
    progress: bool = True
    # deletion requests served by the unlearning methods (s3t, sisa, retrain); clpet.unlearning.requests
    deletions: Dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    # the paper preset (clpet.presets): auto = presets/<method>/<scenario>.yaml when it exists, none, or a name
    preset: str = "auto"
    # filled in by compose: the preset's keys the command line set otherwise (such a run is not the paper setting)
    preset_overridden: List[str] = field(default_factory=list)
    # the metric a hyperparameter sweeper (hydra/sweeper=optuna) maximises; measured on validation data
    objective: str = "A_last"
    # experiment trackers mirroring the run folder (clpet.tracking): tensorboard, wandb (offline), mlflow, csv
    logger: List[str] = field(default_factory=list)


def config_dir() -> Path:
    """The folder holding ``scenarios/`` and ``methods/``: the package's ``conf/`` in an installed wheel, the
    repository root in a checkout."""
    import clpet

    pkg = Path(clpet.__file__).resolve().parent
    for candidate in (pkg / "conf", pkg.parent):
        if (candidate / "scenarios").is_dir() and (candidate / "methods").is_dir():
            return candidate
    raise ConfigError(f"clpet's config folders (scenarios/, methods/) were not found next to {pkg}; reinstall clpet")


def available(group_key: str) -> List[str]:
    """Names of the YAML files in a config group (``scenario`` or ``method``)."""
    folder = config_dir() / GROUPS[group_key]
    return sorted(p.stem for p in folder.glob("*.yaml"))


def check_choice(group_key: str, value: str) -> None:
    names = available(group_key)
    if value not in names:
        close = difflib.get_close_matches(value, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown {group_key} '{value}'{hint}; valid: {', '.join(names)}")


def register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="clpet", node=RunConfig)


def compose(overrides: List[str]) -> DictConfig:
    """Compose the run config from Hydra-syntax overrides (already rewritten by ``rewrite_overrides``)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schema()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = hydra_compose(config_name="clpet", overrides=overrides)
    except Exception as exc:  # Hydra's errors are multi-line; keep the first line
        msg = one_line(exc)
        if msg.startswith("Could not override '"):
            key = msg.split("'")[1]
            valid = [f.name for f in fields(RunConfig) if f.name != "defaults"]
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            msg = f"unknown key '{key}'{hint}; valid top-level keys: {', '.join(valid)}"
        raise ConfigError(msg) from None
    return with_preset(cfg, overrides)


def with_preset(cfg: DictConfig, overrides: List[str]) -> DictConfig:
    """The paper preset of the run's method and scenario merged under ``overrides`` (``clpet.presets``)."""
    from clpet.presets import apply_preset

    if cfg.get("scenario") is None or cfg.get("method") is None:
        return cfg  # validate() says what is missing
    return apply_preset(cfg, overrides)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def with_default_method(args: List[str]) -> List[str]:
    """``scenario=X`` without ``method=``: X's YAML may name the method it runs by default (``default_method``;
    the task-incremental language streams run ``seq-lora``, since the class-incremental default ``lae`` does not
    support them). The run's default method otherwise."""
    keys = [a.partition("=")[0].lstrip("+~") for a in args]
    if "method" in keys or "methods@method" in keys:
        return args
    chosen = [a.partition("=")[2] for a in args if a.partition("=")[0] == "scenario"]
    if len(chosen) != 1 or "," in chosen[0]:
        return args
    path = config_dir() / GROUPS["scenario"] / f"{chosen[0]}.yaml"
    if not path.is_file():
        return args  # rewrite_overrides names the valid scenarios
    import yaml

    method = (yaml.safe_load(path.read_text()) or {}).get("default_method")
    return [*args, f"method={method}"] if method else args


def rewrite_overrides(args: List[str]) -> List[str]:
    """``scenario=X`` -> ``scenarios@scenario=X`` (checked against the YAMLs), ``method=X`` likewise, and
    ``scenario.k=v`` / ``method.k=v`` / ``backbone.k=v`` -> ``++...`` (add or override; the key itself is then
    checked against the entry's dataclass), ``backbone=X`` -> ``backbone.name=X`` and ``logger=a,b`` -> ``logger=[a,b]``."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        bare = key.lstrip("+~")
        if key.startswith("~") and bare not in GROUPS:  # ``~method`` / ``~scenario``: validate() names what is missing
            raise ConfigError(f"'{arg}': deleting a key is not supported (the run would silently take its default); "
                              f"set it instead: {bare}=VALUE")
        if sep and bare in GROUPS and key == bare:
            for choice in value.split(","):
                if choice and not any(ch in choice for ch in "()[]{}*$"):
                    check_choice(bare, choice.strip())
            out.append(f"{GROUPS[bare]}@{bare}={value}")
        elif sep and key == bare and bare.split(".")[0] in ("scenario", "method", "backbone", "deletions") and "." in bare:
            out.append(f"++{arg}")
        elif sep and key == "backbone":  # ``backbone=X``: the name (checked against the registry when resolved)
            out.append(f"++backbone.name={value}")
        elif sep and key == "logger" and not value.startswith("["):  # ``logger=a,b``: a list, never a sweep
            out.append(f"logger=[{value}]")
        else:
            out.append(arg)
    return out


@dataclass
class Resolved:
    """A validated run config: typed ``Config`` objects for each registry entry, plus the top-level keys."""

    run: RunConfig
    scenario: Any
    method: Any
    backbone: Any
    raw: Dict[str, Any]


def _typed(registry, node: Any, where: str, extra: Optional[Dict[str, Any]] = None) -> Any:
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{where} must be a mapping with a 'name' key, got {data!r}")
    data.update(extra or {})
    entry = registry.get(data["name"])
    schema = getattr(entry, "Config", None)
    if schema is None or not is_dataclass(schema):
        raise ConfigError(f"{where} '{data['name']}' has no Config dataclass (a bug in clpet)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), data)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        valid = ", ".join(f.name for f in fields(schema))
        msg = one_line(exc)
        if "Key '" in msg and "not in" in msg:
            bad = msg.split("Key '")[1].split("'")[0]
            raise ConfigError(f"unknown key '{where}.{bad}' for {where} '{data['name']}'; valid keys: {valid}") from None
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{where}.{key}: {msg}" if key else f"{where}: {msg}") from None
    except ValueError as exc:  # a Config's __post_init__ check
        raise ConfigError(f"{where}: {one_line(exc)}") from None


OBJECTIVES = ("A_last", "A_avg", "avg_task_acc", "plasticity")  # maximised by a sweeper (all: higher is better)
SEED_MAX = 2**32 - 1  # NumPy's legacy RandomState (class orders, caps) takes seeds in [0, 2**32 - 1]


def validate(cfg: DictConfig) -> Resolved:
    """Check every name and key against the registries; one ``ConfigError`` line on the first problem."""
    for key in ("scenario", "method"):  # `~method` deletes a node every run needs
        if key not in cfg or cfg.get(key) is None:
            raise ConfigError(f"'{key}' was deleted or emptied; every run needs a {key} (a file of "
                              f"{GROUPS[key]}/, e.g. {key}={DEFAULT_SCENARIO if key == 'scenario' else DEFAULT_METHOD})")
    return _validate(cfg)


def _validate(cfg: DictConfig) -> Resolved:
    from clpet.context import resolve_device, resolve_precision
    from clpet.protocols import check_pair
    from clpet.registry import UnknownNameError

    try:
        scenario = _typed(SCENARIOS, cfg.scenario, "scenario")
        method = _typed(METHODS, cfg.method, "method")
        bb = OmegaConf.to_container(cfg.backbone, resolve=True)
        if bb.get("name", "auto") == "auto":
            bb["name"] = scenario.default_backbone
        backbone = _typed(BACKBONES, bb, "backbone")
    except UnknownNameError as exc:
        raise ConfigError(str(exc)) from None
    valid = [f.name for f in fields(RunConfig) if f.name != "defaults"]
    unknown = sorted(set(cfg.keys()) - set(valid))
    if unknown:  # ``+key=value`` adds a top-level key no part of clpet reads
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown key '{unknown[0]}'{hint}; valid top-level keys: {', '.join(valid)}")
    try:
        top = {k: cfg[k] for k in valid if k not in ("scenario", "method", "backbone")}
        top = {k: OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v
               for k, v in top.items()}  # plain values (``deletions`` is a mapping that may hold lists)
    except OmegaConfBaseException as exc:  # e.g. an interpolation that does not resolve to the key's type
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{key}: {one_line(exc)}" if key else one_line(exc)) from None
    run = RunConfig(**top)
    try:
        resolve_precision(run.precision, resolve_device(run.device))
        check_pair(method.name, METHODS.get(method.name).protocols, scenario.name,
                   SCENARIOS.get(scenario.name).protocol)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for key in ("num_workers", "eval_batch_size"):
        if getattr(run, key) < (0 if key == "num_workers" else 1):
            raise ConfigError(f"{key} must be {'>= 0' if key == 'num_workers' else '>= 1'}, got {getattr(run, key)}")
    if not 0 <= run.seed <= SEED_MAX:
        raise ConfigError(f"seed must be in [0, {SEED_MAX}] (the range NumPy's RandomState takes), got {run.seed}")
    try:
        from clpet.tracking import check_loggers

        run.logger = check_loggers(run.logger)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    unlearning = getattr(METHODS.get(method.name), "unlearning", False)
    if run.logger and unlearning:
        raise ConfigError(f"logger= is not supported for the unlearning method {method.name} (its metrics.json and "
                          "plots/deletion_cost.png hold the run)")
    if run.eval_future and unlearning:
        raise ConfigError(f"eval_future=true does nothing for the unlearning method {method.name} (it trains once on "
                          "the whole stream: there are no future experiences)")
    if run.objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective '{run.objective}'; valid: {', '.join(OBJECTIVES)}")
    if not run.image_cache_mb >= 0:  # NaN too
        raise ConfigError(f"image_cache_mb must be >= 0 (0 turns the decoded-image cache off), got {run.image_cache_mb}")
    if run.out_dir is not None:
        if not str(run.out_dir).strip():
            raise ConfigError("out_dir is empty; give the run folder a path, or leave the key out for "
                              "runs/<scenario>_<method>_s<seed>_<time>")
        if Path(os.path.expanduser(run.out_dir)).is_file():
            raise ConfigError(f"out_dir {run.out_dir} is a file; the run folder must be a folder")
    if run.resume and not run.out_dir:
        raise ConfigError("resume=true needs out_dir=PATH (the run folder to continue)")
    if run.data_root is not None:
        run.data_root = os.path.expanduser(run.data_root)
    raw = {k: v for k, v in asdict(run).items() if k not in ("defaults", "scenario", "method", "backbone")}
    raw.update(scenario=asdict(scenario), method=asdict(method), backbone=asdict(backbone))
    return Resolved(run=run, scenario=scenario, method=method, backbone=backbone, raw=raw)
