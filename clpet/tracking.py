"""Experiment tracking through the field's loggers: ``logger=[tensorboard,wandb,mlflow,csv]`` (any subset).

Each logger receives the run's resolved config at the start, every optimizer step's loss terms and learning rate
(a global step counted over the whole run), every experience's A_t and accuracy-matrix row, and at the end the
final metrics, the accuracy matrix and the plots. clpet's own run folder (``metrics.json``, ``acc_matrix.csv``)
stays the source of truth: a logger only mirrors it, and every logger writes under the run folder:

* ``tensorboard`` -- ``torch.utils.tensorboard.SummaryWriter`` event files in ``<run>/tensorboard/``;
* ``wandb`` -- an **offline** W&B run in ``<run>/wandb/`` (``wandb sync`` uploads it later; nothing goes online);
* ``mlflow`` -- an MLflow run in the local file store ``<run>/mlruns/`` (``mlflow ui --backend-store-uri``);
* ``csv`` -- ``<run>/train_steps.csv``: long format, one row per optimizer step and value (step, experience,
  name, value: each loss term, the total loss and the lr), so terms that appear later (O-LoRA's) keep their name.

tensorboard, wandb and mlflow are optional extras (``pip install clpet[track]``); asking for one that is not
installed fails before any work with the pip command. What clpet adds: one fan-out of CL events (steps,
experiences, the matrix) to these libraries; the logging itself is theirs.
"""
from __future__ import annotations

import csv
import importlib.util
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence  # noqa: F401

LOGGERS = ("tensorboard", "wandb", "mlflow", "csv")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def check_loggers(names: Sequence[str]) -> List[str]:
    """The requested loggers, validated: unknown names and missing packages fail with one line."""
    names = [str(n) for n in names]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ValueError(f"unknown logger '{unknown[0]}'; valid: {', '.join(LOGGERS)}")
    missing = [n for n in names if n in PACKAGES and importlib.util.find_spec(PACKAGES[n]) is None]
    if missing:
        raise ValueError(f"logger {missing[0]} needs the package {PACKAGES[missing[0]]}: pip install 'clpet[track]'")
    return list(dict.fromkeys(names))


def flat(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def scalars(values: Mapping[str, Any]) -> Dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker:
    """Fans the run's events out to the chosen loggers (no-ops without any)."""

    def __init__(self, names: Iterable[str], run_dir: str, config: Mapping[str, Any], resumed: bool = False,
                 step: int = 0, experience: int = 0) -> None:
        self.names = check_loggers(list(names))
        self.run_dir = Path(run_dir)
        self.step = int(step)  # a resumed run continues its global step count (saved in the checkpoint)
        self.experience = int(experience)
        self._tb = self._wandb = self._mlflow = None
        self._csv = None
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            self._tb.add_text("config", "\n".join(f"    {k}: {v}" for k, v in flat(config).items()))
        if "wandb" in self.names:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb = wandb.init(mode="offline", dir=str(self.run_dir), config=dict(config),
                                     name=self.run_dir.name, reinit=True)
        if "mlflow" in self.names:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a local folder store, no server
            import mlflow

            mlflow.set_tracking_uri((self.run_dir / "mlruns").resolve().as_uri())
            mlflow.set_experiment("clpet")
            self._mlflow = mlflow
            mlflow.start_run(run_name=self.run_dir.name)
            params = {k: str(v)[:500] for k, v in flat(config).items()}
            mlflow.log_params(params)
        if "csv" in self.names:
            path = self.run_dir / "train_steps.csv"
            fresh = not (resumed and path.is_file())
            self._csv = open(path, "w" if fresh else "a", newline="")
            self._csv_writer = csv.writer(self._csv)
            if fresh:
                self._csv_writer.writerow(["step", "experience", "name", "value"])

    @property
    def active(self) -> bool:
        return bool(self.names)

    def log_step(self, values: Mapping[str, float]) -> None:
        """One optimizer step: its loss terms and learning rate."""
        self.step += 1
        values = scalars(values)
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"train/{k}", v, self.step)
        if self._wandb is not None:
            self._wandb.log({f"train/{k}": v for k, v in values.items()}, step=self.step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({f"train.{k}": v for k, v in values.items()}, step=self.step)
        if self._csv is not None:
            self._csv_writer.writerows([self.step, self.experience, k, v] for k, v in values.items())

    def log_experience(self, t: int, metrics: Mapping[str, Any]) -> None:
        """After experience ``t`` (0-based): A_t and the row of the accuracy matrix."""
        self.experience = t + 1
        row = [v for v in (metrics.get("acc_matrix") or [[]])[t] if v is not None]
        values = {"A_t": metrics["A_t"][t], **{f"acc_on_{j}": v for j, v in enumerate(row)}}
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"stream/{k}", v, t + 1)
        if self._wandb is not None:
            self._wandb.log({f"stream/{k}": v for k, v in values.items()}, step=self.step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({f"stream.{k}": v for k, v in values.items()}, step=t + 1)

    def log_final(self, metrics: Mapping[str, Any], plots_dir: Optional[str] = None) -> None:
        """The final metrics, the accuracy matrix and the plots."""
        final = scalars({k: v for k, v in metrics.items() if k not in ("seed",)})
        plots = sorted(Path(plots_dir).glob("*.png")) if plots_dir and Path(plots_dir).is_dir() else []
        matrix = self.run_dir / "acc_matrix.csv"
        if self._tb is not None:
            for k, v in final.items():
                self._tb.add_scalar(f"final/{k}", v, self.experience)
            if matrix.is_file():
                self._tb.add_text("acc_matrix", "    " + matrix.read_text().replace("\n", "\n    "))
            self._tb_images(plots)
        if self._wandb is not None:
            import wandb

            self._wandb.summary.update(final)
            if matrix.is_file():
                rows = [line.split(",") for line in matrix.read_text().strip().splitlines()]
                self._wandb.log({"acc_matrix": wandb.Table(columns=rows[0], data=rows[1:])}, step=self.step)
            for p in plots:
                self._wandb.log({f"plots/{p.stem}": wandb.Image(str(p))}, step=self.step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({f"final.{k}": v for k, v in final.items()})
            if matrix.is_file():
                self._mlflow.log_artifact(str(matrix))
            for p in plots:
                self._mlflow.log_artifact(str(p), artifact_path="plots")

    def _tb_images(self, plots: List[Path]) -> None:
        import numpy as np
        from PIL import Image

        for p in plots:
            img = np.asarray(Image.open(p).convert("RGB"))
            self._tb.add_image(f"plots/{p.stem}", img, self.experience, dataformats="HWC")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            self._mlflow.end_run()
        if self._csv is not None:
            self._csv.close()
