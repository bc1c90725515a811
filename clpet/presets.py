"""Paper presets: what a method's reference code set for one paper scenario, applied by default.

A preset is ``presets/<method>/<scenario>.yaml`` in clpet's config folder. ``clpet run scenario=imagenet-r
method=lae`` applies ``presets/lae/imagenet-r.yaml`` (``preset: auto``, the default); ``preset=none`` turns it off;
``preset=lae/imagenet-r`` names one (it must be for the run's method and scenario). Every key the user sets on the
command line wins over the preset's value, and the resolved config records which preset applied (``preset:``) and
which of its keys the command line changed (``preset_overridden:``), so the run folder's ``config.yaml`` says so.
The offline scenarios keep their CPU defaults, except where a schedule was chosen on validation data (the presets
made by ``experiments/tuning/*.sh``, e.g. ``adam/wordnet``, ``ilora/lm-offline``).

A preset file holds ``scenario``, ``method`` and ``backbone`` mappings (merged into those nodes), the top-level
``seed`` and ``precision``, and ``reported`` (the paper's numbers for that setting, each with the config values it
holds for: A_last, A_avg, source). Its header comment cites the reference config file and lists the reference values,
one per line as ``#   <reference key>: <value> -> <clpet key>``; the tests check each preset against its header.

What Hydra lacks and this adds: a config chosen by a *pair* of group choices, applied under the user's overrides
(Hydra's defaults list cannot interpolate ``scenarios@scenario`` choices, and a group override there would sit
above the command line).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from omegaconf import DictConfig, OmegaConf, open_dict

PRESET_KEYS = ("scenario", "method", "backbone", "seed", "precision", "reported")
HEADER_LINE = re.compile(r"^#\s+(\S+):\s+(\S+)\s+->\s+(\S+)\s*$")


def preset_dir() -> Path:
    from clpet.config import config_dir

    return config_dir() / "presets"


def available_presets() -> List[str]:
    """Every preset name, ``<method>/<scenario>``."""
    folder = preset_dir()
    return sorted(f"{p.parent.name}/{p.stem}" for p in folder.glob("*/*.yaml")) if folder.is_dir() else []


def describe_preset(name: str) -> str:
    """One line for ``clpet list``, from the preset's header comment: its first sentence (what it is, up to the
    source it cites), marked as a paper setting (with the first reported A_last when it has one) or, where the
    header says ``not a paper setting``, as a schedule chosen on validation data."""
    header = " ".join(line.lstrip("#").strip() for line in _header_lines(name))
    if "not a paper setting" in header:
        return f"{header.split(', not a paper')[0]}; schedule chosen on validation data"
    subject = header.split(" Source:")[0].rstrip(". ")
    reported = load_preset(name).get("reported") or []
    score = f", reported A_last {reported[0]['A_last']}" if reported and "A_last" in reported[0] else ""
    return f"paper setting: {subject}{score}"


def _header_lines(name: str) -> List[str]:
    lines = preset_path(name).read_text().splitlines()
    return lines[: next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))]


def preset_path(name: str) -> Path:
    return preset_dir() / f"{name}.yaml"


def load_preset(name: str) -> Dict[str, Any]:
    """A preset's content (unknown top-level keys fail: a typo in a preset must not be silently dropped)."""
    from clpet.config import ConfigError
    import yaml

    data = yaml.safe_load(preset_path(name).read_text()) or {}
    bad = sorted(set(data) - set(PRESET_KEYS))
    if bad:
        raise ConfigError(f"preset {name}: unknown key(s) {', '.join(bad)}; valid: {', '.join(PRESET_KEYS)}")
    return data


def header_values(name: str) -> List[Tuple[str, Any, str]]:
    """(reference key, value, clpet key) of every ``#   key: value -> clpet.key`` line of the preset's header."""
    import yaml

    out = []
    for line in _header_lines(name):
        match = HEADER_LINE.match(line)
        if match:
            out.append((match.group(1), yaml.safe_load(match.group(2)), match.group(3)))
    return out


def flatten(node: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"method": {"optim": {"lr": 1}}}`` -> ``{"method.optim.lr": 1}`` (lists stay values)."""
    out: Dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def user_keys(overrides: Iterable[str]) -> List[str]:
    """The dotted keys a list of (rewritten) overrides sets: ``++method.optim.lr=1`` -> ``method.optim.lr``."""
    keys = []
    for arg in overrides:
        key, sep, _ = arg.partition("=")
        if sep and "@" not in key and not key.startswith("hydra"):
            keys.append(key.lstrip("+~"))
    return keys


def _covered(key: str, keys: Iterable[str]) -> bool:
    """The user set ``key`` itself, a node above it, or a key below it."""
    return any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in keys)


def choose(requested: str, method: str, scenario: str) -> Optional[str]:
    """The preset a run applies: ``auto`` -> ``<method>/<scenario>`` when that file exists, ``none`` -> None, a
    name -> that preset, which must exist and be for this method and scenario."""
    from clpet.config import ConfigError

    if requested == "none":
        return None
    if requested == "auto":
        name = f"{method}/{scenario}"
        return name if preset_path(name).is_file() else None
    names = available_presets()
    if requested not in names:
        import difflib

        close = difflib.get_close_matches(requested, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown preset '{requested}'{hint}; valid: auto, none, {', '.join(names)}")
    if requested != f"{method}/{scenario}":
        raise ConfigError(f"preset {requested} is for method {requested.split('/')[0]} on scenario "
                          f"{requested.split('/')[1]}; this run is method {method} on scenario {scenario}")
    return requested


def apply_preset(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
    """Merge the chosen preset into the composed ``cfg`` under the command line (a key in ``overrides`` keeps its
    value) and record its name in ``cfg.preset``. The preset's backbone keys apply only when the run uses the
    preset's backbone (``backbone=minilm`` on a preset for ``timm`` drops them, which the record shows)."""
    requested = str(cfg.get("preset", "auto"))
    name = choose(requested, str(cfg.method.name), str(cfg.scenario.name))
    with open_dict(cfg):
        cfg.preset = name or "none"
    if name is None:
        return cfg
    keys = user_keys(overrides)
    preset = load_preset(name)
    values = flatten({k: v for k, v in preset.items() if k != "reported"})
    chosen_backbone = OmegaConf.select(cfg, "backbone.name", default="auto")
    preset_backbone = values.get("backbone.name")
    if _covered("backbone.name", keys) and preset_backbone is not None and chosen_backbone != preset_backbone:
        values = {k: v for k, v in values.items() if not k.startswith("backbone.")}
        with open_dict(cfg):
            cfg.preset = f"{name} (without its backbone keys: backbone {chosen_backbone})"
    overridden = []
    with open_dict(cfg):
        for key, value in values.items():
            if not _covered(key, keys):
                OmegaConf.update(cfg, key, value, merge=False, force_add=True)
            elif OmegaConf.select(cfg, key, default=None) != value:
                overridden.append(key)
        cfg.preset_overridden = overridden
    return cfg


def reported(name: str) -> List[Dict[str, Any]]:
    """The paper numbers a preset lists (``reported:``): entries ``{label, when, A_last, A_avg, source}``, ``when``
    the config values a run must have for the entry to be its reference (e.g. ``{"method.pet": "prefix"}``)."""
    return [dict(entry) for entry in load_preset(name).get("reported") or []]
