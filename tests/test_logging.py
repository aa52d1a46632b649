"""Loggers as users meet them: a real MLflow server, W&B offline run files, run folders that never collide."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from conftest import QUIET

from recipes import digits_cnn
from recipes.runs import git_commit, next_version_dir

SHORT = ["fit", "--trainer.max_epochs=2", "--trainer.log_every_n_steps=5", *QUIET]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a sqlite store and served artifacts in temp dirs; stopped after."""
    pytest.importorskip("mlflow.server", reason="the full `mlflow` package (not mlflow-skinny) runs the server")
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    command = [
        Path(sys.executable).with_name("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    log = (root / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its worker processes
        server.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_recipe_logs_params_metrics_config_and_best_checkpoint_to_a_real_mlflow_server(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    logger = ["--trainer.logger=MLFlowLogger", f"--trainer.logger.tracking_uri={mlflow_server}"]
    cli = digits_cnn.main([*SHORT, *logger, "--trainer.logger.log_model=all"])
    run_id = cli.trainer.logger.run_id
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "digits_cnn"

    params = run.data.params
    assert float(params["lr"]) == cli.model.hparams.lr == 0.003 and params["num_classes"] == "10"
    assert params["git_commit"] == git_commit() and run.data.tags["mlflow.source.git.commit"] == git_commit()

    steps = [m.step for m in client.get_metric_history(run_id, "train/loss_step")]
    assert steps == sorted(steps) and len(steps) >= 4  # 21 batches per epoch, one point every 5 steps
    val_acc = client.get_metric_history(run_id, "val/acc")
    assert len(val_acc) == 2  # one per epoch
    checkpoint = cli.trainer.checkpoint_callback
    assert max(m.value for m in val_acc) == pytest.approx(float(checkpoint.best_model_score))
    assert run.data.metrics["test/acc"] == pytest.approx(float(cli.trainer.callback_metrics["test/acc"]))

    config = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path))).read_text())
    assert config["model"]["init_args"]["lr"] == 0.003 and config["trainer"]["max_epochs"] == 2

    best = Path(checkpoint.best_model_path)
    assert best.parent == Path("logs", "digits_cnn", run_id, "checkpoints").resolve()  # beside the other runs
    uploaded = client.download_artifacts(run_id, f"{best.stem}/{best.name}", str(tmp_path))
    remote, local = torch.load(uploaded, weights_only=True), torch.load(best, weights_only=True)
    assert remote["state_dict"].keys() == local["state_dict"].keys()
    assert all(torch.equal(remote["state_dict"][k], v) for k, v in local["state_dict"].items())


def _wandb_records(path: Path):
    """The protobuf records of a W&B run file (``run-<id>.wandb``: LevelDB log blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2

    raw, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending + data)
            pending = b""
            yield record
        elif kind in (2, 3):  # FIRST, MIDDLE
            pending += data


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B stores some names with "/" as nested keys


def test_recipe_writes_a_wandb_offline_run_with_metrics_config_and_its_checkpoints_beside_the_other_runs():
    pytest.importorskip("wandb")
    cli = digits_cnn.main([*SHORT, "--trainer.logger=WandbLogger", "--trainer.logger.offline=true"])
    run_id = cli.trainer.logger.version
    run_file = Path(cli.trainer.logger.experiment.dir).parent / f"run-{run_id}.wandb"
    cli.trainer.logger.experiment.finish()
    deadline = time.monotonic() + 60
    while not any(record.HasField("exit") for record in _wandb_records(run_file)):  # W&B's service writes the file
        assert time.monotonic() < deadline, f"{run_file} never got its exit record"
        time.sleep(0.2)
    history, config = [], {}
    for record in _wandb_records(run_file):
        if record.HasField("history"):
            history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif record.HasField("config"):
            config.update({_key(item): json.loads(item.value_json) for item in record.config.update})

    assert config["lr"] == 0.003 and config["git_commit"] == git_commit()
    assert config["cli"]["model"]["init_args"]["lr"] == 0.003 and config["cli"]["trainer"]["max_epochs"] == 2
    val_acc = [row["val/acc"] for row in history if "val/acc" in row]
    assert len(val_acc) == 2 and max(val_acc) == pytest.approx(float(cli.trainer.checkpoint_callback.best_model_score))
    (test_row,) = [row for row in history if "test/acc" in row]
    assert test_row["test/acc"] == pytest.approx(float(cli.trainer.callback_metrics["test/acc"]))
    run_dir = Path("logs", "digits_cnn", run_id)
    assert Path(cli.trainer.checkpoint_callback.best_model_path).parent.resolve() == (run_dir / "checkpoints").resolve()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["max_epochs"] == 2


def test_each_run_writes_its_config_into_its_own_folder_and_a_fixed_version_is_never_overwritten():
    first = digits_cnn.main([*SHORT, "--trainer.max_epochs=1", "--trainer.logger.init_args.version=7"])
    run_dir = Path(first.trainer.logger.log_dir)
    config = run_dir / "config.yaml"
    assert config.read_text().startswith(f"# git commit: {git_commit()}\n")
    assert yaml.safe_load((run_dir / "hparams.yaml").read_text())["git_commit"] == git_commit()
    before = {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")}
    with pytest.raises(RuntimeError, match=r"version_7/config\.yaml already holds the config of an earlier run"):
        digits_cnn.main([*SHORT, "--trainer.logger.init_args.version=7", "--model.init_args.lr=0.1"])
    assert {path: path.stat().st_mtime_ns for path in run_dir.rglob("*")} == before  # nothing written
    second = digits_cnn.main([*SHORT, "--trainer.max_epochs=1"])
    assert Path(second.trainer.logger.log_dir).name == "version_8" and not Path("config.yaml").exists()


def test_a_run_without_logger_leaves_out_the_lr_monitor_and_gets_a_fresh_folder():
    runs = [digits_cnn.main([*SHORT, "--trainer.max_epochs=1", "--trainer.logger=false"]) for _ in range(2)]
    folders = [Path(cli.trainer.checkpoint_callback.dirpath).parent for cli in runs]
    assert folders == [Path("logs/digits_cnn/version_0").resolve(), Path("logs/digits_cnn/version_1").resolve()]
    for cli, folder in zip(runs, folders, strict=True):
        assert "LearningRateMonitor" not in {type(cb).__name__ for cb in cli.trainer.callbacks}
        assert (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "config.yaml").is_file()
    assert not Path("config.yaml").exists() and not Path("checkpoints").exists()


def test_next_version_dir_follows_tensorboard_numbering_and_claims_the_folder(tmp_path):
    assert next_version_dir(tmp_path) == str(tmp_path / "version_0") and (tmp_path / "version_0").is_dir()
    for name in ("version_3", "version_x", "other"):
        (tmp_path / name).mkdir()
    assert next_version_dir(tmp_path) == str(tmp_path / "version_4")
    assert next_version_dir(tmp_path) == str(tmp_path / "version_5")  # version_4 is taken now
