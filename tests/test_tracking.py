"""Experiment trackers mirror the run: TensorBoard event files, an offline W&B run and an MLflow file-store run
read back with each library's own reader hold every optimizer step's loss and the stream's A_t and final
metrics; the CSV step log has one row per step; an unknown logger fails before work."""
import csv
import json

import pytest

from clpet.cli import main

RUN = ["run", "scenario=synthetic", "method=finetune", "progress=false", "method.optim.epochs=1"]


def wandb_records(raw: bytes):
    """The protobuf records of an offline ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then
    LevelDB-log blocks of 32 KiB, each record chunk = crc (4) + length (2, little-endian) + type (1: full, 2: first,
    3: middle, 4: last) + data (the reader wandb's own Python package no longer ships)."""
    assert raw[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(raw):
        room = block - pos % block
        if room < 7:  # the block's tail is padding
            pos += room
            continue
        length, kind = int.from_bytes(raw[pos + 4:pos + 6], "little"), raw[pos + 6]
        chunk, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):
            yield pending
            pending = b""


def steps_of(out):
    """One row per optimizer step: its ``loss`` rows of the long-format CSV."""
    with open(out / "train_steps.csv") as f:
        return [r for r in csv.DictReader(f) if r["name"] == "loss"]


@pytest.mark.timeout(300)
def test_the_loggers_write_readable_runs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN, f"out_dir={out}", "logger=tensorboard,wandb,mlflow,csv"]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    rows = steps_of(out)
    assert rows and [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {int(r["experience"]) for r in rows} == {0, 1, 2}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    assert len(acc.Scalars("train/loss")) == len(rows)
    assert [e.value for e in acc.Scalars("stream/A_t")] == pytest.approx(metrics["A_t"])
    assert acc.Scalars("final/A_last")[0].value == pytest.approx(metrics["A_last"])
    assert acc.Tags()["images"]  # the plots

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("clpet").experiment_id])
    assert run.data.metrics["final.A_last"] == pytest.approx(metrics["A_last"])
    assert len(client.get_metric_history(run.info.run_id, "train.loss")) == len(rows)
    assert run.data.params["method.name"] == "finetune"

    from wandb.proto import wandb_internal_pb2

    (record_file,) = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    keys, summary = set(), {}
    for data in wandb_records(record_file.read_bytes()):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            keys |= {item.key or "/".join(item.nested_key) for item in rec.history.item}
        if rec.WhichOneof("record_type") == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in rec.summary.update})
    assert {"train/loss", "train/lr", "stream/A_t"} <= keys
    assert summary["A_last"] == pytest.approx(metrics["A_last"])


def test_an_unknown_or_missing_logger_fails_before_work(tmp_path, capsys):
    assert main([*RUN, f"out_dir={tmp_path / 'r'}", "logger=neptune"]) == 2
    assert "unknown logger 'neptune'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_resumed_run_continues_the_step_count(tmp_path, monkeypatch, capsys):
    from tests.method_fixtures import kill_and_resume

    def run_args(out):
        return [*RUN, f"out_dir={out}", "logger=csv,tensorboard"]

    kill_and_resume(tmp_path, monkeypatch, "finetune", run_args, dies_at=2)
    full, cut = steps_of(tmp_path / "full"), steps_of(tmp_path / "cut")
    assert [(r["step"], r["experience"]) for r in cut] == [(r["step"], r["experience"]) for r in full]
    capsys.readouterr()
