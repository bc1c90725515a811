"""``clpet run | list | compare | plot | report | unlearn``.

``clpet run`` takes Hydra override syntax (``scenario=wordnet method=simplecil seed=1 method.optim.lr=0.01``)
and ``-m`` for multirun sweeps through Hydra's launchers. Every name and key is checked before any work starts;
a bad one ends the command with one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

USAGE = """usage: clpet run [-m] [key=value ...]     run a continual-learning experiment (Hydra overrides;
                                          --cfg job: print the resolved config and stop)
       clpet list                         scenarios, methods, backbones and presets, one line each
       clpet compare RUN_DIR... [--csv F] [--plot DIR] [--reference]   one table across runs (mean ± std
                                          over seeds); --reference: the paper's numbers beside them
       clpet plot RUN_DIR                 (re)draw a run's figures
       clpet report RUN_DIR... [--out F]  one self-contained HTML page: tables, curves, heatmaps, provenance
       clpet unlearn RUN_DIR ids=FILE     serve deletion requests (one per line) on an s3t / sisa / retrain run"""


def _fail(message: str) -> int:
    print(f"clpet: error: {message}", file=sys.stderr)
    return 2


def cmd_run(args: List[str]) -> int:
    from omegaconf import OmegaConf

    from clpet.config import ConfigError, compose, rewrite_overrides, validate, with_default_method

    multirun = any(a in ("-m", "--multirun") for a in args)
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    show_only, overrides = _cfg_flag(overrides)
    bad = [a for a in overrides if a.startswith("-")]
    if bad:
        return _fail(f"unknown option {bad[0]}; clpet run takes key=value overrides, -m and --cfg job")
    if show_only is not None and show_only != "job":
        return _fail(f"--cfg {show_only}: clpet run prints the resolved run config with --cfg job only")
    try:
        rewritten = rewrite_overrides(with_default_method(overrides))
        if show_only is not None:  # Hydra's --cfg job: the resolved config, no data or weights touched
            if multirun:
                return _fail("--cfg job prints one run's config; drop -m")
            print(OmegaConf.to_yaml(OmegaConf.create(validate(compose(rewritten)).raw)), end="", flush=True)
            return 0
        if multirun:
            if tuned(rewritten):
                check_tuning(rewritten)
                return launch_multirun(rewritten)
            jobs = expand_sweep(rewritten)
            for job in jobs:  # check every combination before the first job starts
                validate(compose(job))
            return launch_multirun(rewritten)
        cfg = validate(compose(rewritten))
    except ConfigError as exc:
        return _fail(str(exc))
    return _execute(cfg, lambda: print(OmegaConf.to_yaml(OmegaConf.create(cfg.raw)), flush=True))


def _cfg_flag(args: List[str]):
    """(value of ``--cfg``, the other args): ``--cfg job`` or ``--cfg=job``; (None, args) without it."""
    for i, arg in enumerate(args):
        if arg == "--cfg":
            return (args[i + 1] if i + 1 < len(args) else ""), args[:i] + args[i + 2:]
        if arg.startswith("--cfg="):
            return arg.split("=", 1)[1], args[:i] + args[i + 1:]
    return None, args


def _execute(cfg, announce) -> int:
    from clpet.config import ConfigError
    from clpet.runner import run, summary_table

    from clpet.distributed import is_main, launched, shutdown
    from clpet.results import RunFileError

    try:
        metrics = run(cfg, announce=announce)
    except (ConfigError, FileNotFoundError, RunFileError) as exc:
        return _fail(str(exc).strip().splitlines()[0])
    main_rank = is_main()
    if launched():
        shutdown()
    if not main_rank:  # under torchrun rank 0 prints the summary
        return 0
    print()
    print(summary_table(metrics))
    print(f"\nrun folder: {metrics['run_dir']}")
    return 0


def expand_sweep(overrides: List[str]) -> List[List[str]]:
    """All override combinations of a Hydra sweep (``a=1,2 b=x,y`` -> four lists)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = OverridesParser.create().parse_overrides(overrides)
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def tuned(overrides: List[str]) -> bool:
    """A hyperparameter search (``hydra/sweeper=optuna``) rather than a grid."""
    return any(a.partition("=")[0] == "hydra/sweeper" and a.partition("=")[2] != "basic" for a in overrides)


def check_tuning(overrides: List[str]) -> None:
    """Before the first trial: every fixed key validates, and the search selects on validation data -- a sweep
    that would maximise a test-set number fails here (``scenario.val_fraction`` must be above 0)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from clpet.config import ConfigError, compose, validate

    parser = OverridesParser.create()
    fixed = [a for a in overrides if not a.startswith("hydra") and not parser.parse_override(a).is_sweep_override()]
    cfg = validate(compose(fixed))
    if not getattr(cfg.scenario, "val_fraction", 0) > 0:
        raise ConfigError("a hyperparameter search selects on validation data: set scenario.val_fraction (e.g. 0.1); "
                          "the objective is never measured on test sets")


def objective_of(metrics: dict, objective: str) -> Optional[float]:
    """What a sweeper (Optuna) maximises for a job; the basic sweeper ignores it."""
    value = metrics.get(objective)
    return None if value is None else float(value)


def job_state(resolved) -> str:
    """``finished`` / ``resume`` / ``stale`` / ``new`` for a sweep job's run folder: a folder holding the same
    resolved config (``config.yaml``, run-location keys aside) with finished metrics is skipped, one with a
    checkpoint resumes; a folder of another config (an Optuna trial with other values) or without a checkpoint is
    ``stale`` (moved aside before the job runs)."""
    from pathlib import Path

    from clpet.results import RunFolder, load_metrics, run_finished

    folder = RunFolder(resolved.run.out_dir) if Path(resolved.run.out_dir, "config.yaml").is_file() else None
    if folder is None:
        return "new"
    saved = folder.read_config() or {}
    ignore = ("out_dir", "resume", "progress")
    if {k: v for k, v in saved.items() if k not in ignore} != {k: v for k, v in resolved.raw.items() if k not in ignore}:
        return "stale"
    if folder.metrics_path.is_file() and run_finished(load_metrics(folder.path)):
        return "finished"
    return "resume" if folder.checkpoint_path.is_file() else "stale"


def launch_multirun(overrides: List[str]) -> int:
    """Hand the sweep to Hydra's own multirun machinery (basic launcher, or the joblib / submitit launchers when
    the user selects them with ``hydra/launcher=...``); each job runs the same ``run``. Without ``out_dir``, a
    job's run folder is its Hydra job folder ``<sweep dir>/<job number>`` (sweep dir: ``hydra.sweep.dir``, default
    ``runs/multirun/<time>``); run again with the same ``hydra.sweep.dir``, finished jobs are skipped and killed
    ones resume. A comparison table across the sweep is printed at the end."""
    from datetime import datetime

    import hydra

    from clpet.config import config_dir, register_schema, validate

    register_schema()
    given = [a.partition("=")[2] for a in overrides if a.partition("=")[0] == "hydra.sweep.dir"]
    sweep_dir = given[-1] if given else os.path.join("runs", "multirun", datetime.now().strftime("%Y%m%d-%H%M%S"))

    @hydra.main(version_base=None, config_path=str(config_dir()), config_name="clpet")
    def _job(cfg) -> Optional[float]:
        from hydra.core.hydra_config import HydraConfig

        from clpet.runner import run, summary_table

        from clpet.config import with_preset

        resolved = validate(with_preset(cfg, list(HydraConfig.get().overrides.task)))
        if resolved.run.out_dir is None:
            resolved.run.out_dir = HydraConfig.get().runtime.output_dir
            resolved.raw["out_dir"] = resolved.run.out_dir
        state = job_state(resolved)
        if state == "finished":  # a sweep run again: this job's run folder holds this config, finished
            from clpet.results import load_metrics

            print(f"finished already: {resolved.run.out_dir}")
            return objective_of(load_metrics(resolved.run.out_dir), resolved.run.objective)
        if state == "resume":
            resolved.run.resume, resolved.raw["resume"] = True, True
        elif state == "stale":  # another config's or an unresumable folder: kept, renamed aside, never overwritten
            aside = f"{resolved.run.out_dir.rstrip(os.sep)}.replaced-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
            os.rename(resolved.run.out_dir, aside)
            print(f"{resolved.run.out_dir} held another run: moved to {aside}")
        metrics = run(resolved)
        print(summary_table(metrics))
        print(f"run folder: {metrics['run_dir']}")
        return objective_of(metrics, resolved.run.objective)

    search = []
    if tuned(overrides) and not any(a.startswith("hydra.sweeper.direction=") for a in overrides):
        search = ["hydra.sweeper.direction=maximize"]  # every clpet objective is higher-is-better
    argv = sys.argv
    sys.argv = [
        "clpet", "--multirun", *overrides, *search,
        "hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled",
        f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}",
    ]
    try:
        _job()
    finally:
        sys.argv = argv
    if os.path.isdir(sweep_dir):
        from clpet.compare import compare_runs

        print(f"\nsweep {sweep_dir}:")
        print(compare_runs([sweep_dir], out_csv=os.path.join(sweep_dir, "compare.csv")))
        best = os.path.join(sweep_dir, "optimization_results.yaml")
        if os.path.isfile(best):  # the Optuna sweeper's best trial
            with open(best) as f:
                print(f"best trial ({best}):\n{f.read()}")
    return 0


def cmd_list(_: List[str]) -> int:
    """Scenarios (with their protocol), methods (with the protocols they support), backbones and presets, one
    line each."""
    from clpet.config import available
    from clpet.registry import BACKBONES, METHODS, SCENARIOS

    for title, registry, group in (("scenarios", SCENARIOS, "scenario"), ("methods", METHODS, "method"), ("backbones", BACKBONES, None)):
        print(f"{title}:")
        names = available(group) if group else registry.names()
        described = registry.describe()
        for name in names:
            entry = _yaml_entry(group, name) if group else name  # a YAML names its registry entry in `name:`
            protocols = ""
            if group == "scenario":
                protocols = f"[{registry.get(entry).protocol.value}] "
            elif group == "method":
                protocols = f"[{', '.join(p.value for p in registry.get(entry).protocols)}] "
            print(f"  {name:<22} {protocols}{described.get(entry, '')}")
    from clpet.presets import available_presets, describe_preset

    print("presets (applied by default to their method and scenario; preset=none turns them off):")
    for name in available_presets():
        print(f"  {name:<29} {describe_preset(name)}")
    return 0


def _yaml_entry(group: str, name: str) -> str:
    import yaml

    from clpet.config import GROUPS, config_dir

    data = yaml.safe_load((config_dir() / GROUPS[group] / f"{name}.yaml").read_text()) or {}
    return str(data.get("name", name))


def cmd_compare(args: List[str]) -> int:
    from clpet.compare import compare_runs

    parser = argparse.ArgumentParser(prog="clpet compare")
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--csv", default="compare.csv", help="where to write the table as CSV (default compare.csv)")
    parser.add_argument("--plot", default=None, metavar="DIR", help="also draw A_t curves and a stability-plasticity scatter")
    parser.add_argument("--reference", action="store_true",
                        help="also print the paper's reported numbers beside the runs made with a preset, with the delta")
    ns = parser.parse_args(args)
    try:
        print(compare_runs(ns.run_dirs, out_csv=ns.csv, plot_dir=ns.plot))
        if ns.reference:
            from clpet.reference import reference_table

            print("reported (paper) vs measured (these runs):\n")
            print(reference_table(ns.run_dirs))
    except (FileNotFoundError, ValueError) as exc:
        return _fail(str(exc).strip().splitlines()[0])
    return 0


def cmd_plot(args: List[str]) -> int:
    from clpet.plots import plot_run

    if len(args) != 1:
        return _fail("usage: clpet plot RUN_DIR")
    try:
        plot_run(args[0])
    except (FileNotFoundError, ValueError) as exc:
        return _fail(str(exc).strip().splitlines()[0])
    print(f"plots written to {os.path.join(args[0], 'plots')}")
    return 0


def cmd_report(args: List[str]) -> int:
    """``clpet report RUN_DIR... [--out report.html]``: the HTML page of ``clpet.report``."""
    from clpet.report import write_report

    parser = argparse.ArgumentParser(prog="clpet report")
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--out", default="report.html", help="where to write the page (default report.html)")
    ns = parser.parse_args(args)
    try:
        path = write_report(ns.run_dirs, ns.out)
    except (FileNotFoundError, ValueError) as exc:
        return _fail(str(exc).strip().splitlines()[0])
    print(f"report written to {path}")
    return 0


def cmd_unlearn(args: List[str]) -> int:
    """``clpet unlearn RUN_DIR ids=FILE``: serve more deletion requests on an unlearning run (s3t, sisa, retrain)."""
    from clpet.config import ConfigError
    from clpet.runner import summary_table
    from clpet.unlearning.runner import unlearn

    files = [a.split("=", 1)[1] for a in args[1:] if a.startswith("ids=")]
    if len(args) != 2 or len(files) != 1:
        return _fail("usage: clpet unlearn RUN_DIR ids=FILE (one request of sample ids per line)")
    try:
        metrics = unlearn(args[0], files[0])
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as exc:
        return _fail(str(exc).strip().splitlines()[0])
    print()
    print(summary_table(metrics))
    return 0


COMMANDS = {"run": cmd_run, "list": cmd_list, "compare": cmd_compare, "plot": cmd_plot, "report": cmd_report,
            "unlearn": cmd_unlearn}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _fail(f"unknown command '{command}'; valid: {', '.join(COMMANDS)}")
    return COMMANDS[command](rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
