"""``zoo tune``: the space file, the trial reporter and pruning, and an end-to-end search by two worker processes on
one storage, resumed, whose best configuration trains with ``fit -c``."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import quiet_trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from recipes.tools import tune
from zoo.checkpoint import read_checkpoint

optuna = pytest.importorskip("optuna")
REPO = Path(__file__).resolve().parents[1]


def test_space_entries_become_distributions_on_fit_keys():
    lr = tune.parse_param("lr", "loguniform 1e-4 1e-2")
    assert (lr.key, lr.kind, lr.low, lr.high, lr.log) == ("model.init_args.lr", "loguniform", 1e-4, 1e-2, True)
    batch = tune.parse_param("data.init_args.batch_size", "int 16 128 log")
    assert (batch.key, batch.low, batch.high, batch.log) == ("data.init_args.batch_size", 16, 128, True)
    hidden = tune.parse_param("--model.init_args.hidden_dims", "choice [[128], [256]]")
    assert hidden.key == "model.init_args.hidden_dims" and hidden.choices == ([128], [256])
    assert tune.parse_param("act", ["relu", "gelu"]).choices == ("relu", "gelu")
    assert hidden.argument([256]) == "--model.init_args.hidden_dims=[256]"


@pytest.mark.parametrize(
    "spec", ["normal 0 1", "uniform 1", "uniform 2 1", "loguniform 0 1", "int 1 2 linear", "choice []", "choice 3"]
)
def test_a_malformed_space_entry_is_named(spec):
    with pytest.raises(ValueError, match="search space entry lr"):
        tune.parse_param("lr", spec)


def test_a_space_file_without_params_or_with_unknown_keys_is_refused(tmp_path):
    path = tmp_path / "space.yaml"
    with pytest.raises(FileNotFoundError, match=str(path)):
        tune.read_space(path)
    path.write_text("lr: loguniform 1e-4 1e-2\n")
    with pytest.raises(ValueError, match="params"):
        tune.read_space(path)
    path.write_text("params: {lr: uniform 0 1}\ntrials: 3\n")
    with pytest.raises(ValueError, match=r"unknown keys \['trials'\]"):
        tune.read_space(path)


def test_choices_of_lists_reach_the_trial_as_lists():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    param = tune.parse_param("hidden_dims", "choice [[128], [256], 64]")
    drawn = [param.suggest(study.ask()) for _ in range(12)]
    assert {json.dumps(value) for value in drawn} == {"[128]", "[256]", "64"}


class _EpochMetric(BoringModel):
    """Logs ``val/score`` = 10 - epoch: a known value per validation round."""

    def validation_step(self, batch, batch_idx):
        self.log("val/score", 10.0 - self.current_epoch)
        return super().validation_step(batch, batch_idx)


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_the_reporter_reports_every_round_keeps_the_best_and_prunes_when_told(tmp_path):
    trainer_args = dict(max_epochs=3, limit_train_batches=2, limit_val_batches=1)
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    reporter = tune.TrialReporter(trial, "val/score", maximize=False)
    quiet_trainer(callbacks=[reporter], **trainer_args).fit(_EpochMetric())
    assert reporter.rounds == 3 and reporter.best == 8.0
    study.tell(trial, reporter.best)
    assert study.trials[0].intermediate_values == {1: 10.0, 2: 9.0, 3: 8.0}

    pruning = optuna.create_study(pruner=_AlwaysPrune())
    trial = pruning.ask()
    with pytest.raises(optuna.TrialPruned, match="after 1 validation rounds"):
        quiet_trainer(callbacks=[tune.TrialReporter(trial, "val/score", True)], **trainer_args).fit(_EpochMetric())
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 10.0}


def test_a_metric_the_run_does_not_log_is_named(tmp_path):
    trial = optuna.create_study().ask()
    trainer = quiet_trainer(callbacks=[tune.TrialReporter(trial, "val/acc", True)], max_epochs=1)
    with pytest.raises(ValueError, match=r"no 'val/acc'.*val/score"):
        trainer.fit(_EpochMetric())


def _zoo(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "recipes.console", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _finish(process: subprocess.Popen, timeout: float = 240) -> str:
    output = process.communicate(timeout=timeout)[0].decode()
    assert process.returncode == 0, output[-3000:]
    return output


def _digits_study(tmp_path: Path, space: str) -> tuple[str, list[str]]:
    """A space file for digits_cnn in ``tmp_path``; the study's storage URL and the ``zoo tune`` arguments."""
    (tmp_path / "space.yaml").write_text(space)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    return storage, ["tune", "--recipe", "digits_cnn", "--space", "space.yaml", "--storage", storage, "--out", "study"]


@pytest.mark.slow
def test_two_workers_share_one_study_then_it_resumes_and_its_best_config_trains(tmp_path):
    storage, common = _digits_study(
        tmp_path,
        "params:\n  lr: loguniform 1e-3 3e-2\n  channels: choice [[8, 16], [16, 32]]\n"
        "pruner: none\nfit_args: [--trainer.max_epochs=2, --trainer.limit_train_batches=4]\n",
    )
    # A DDP request: the trials run in one process each, and say so.
    fit_args = ["--", "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.enable_progress_bar=false"]
    workers = [_zoo(*common, "--n_trials", "4", *fit_args, cwd=tmp_path) for _ in range(2)]
    outputs = [_finish(worker) for worker in workers]
    assert all("each trial runs in one process" in output for output in outputs)

    study = optuna.load_study(study_name="digits_cnn", storage=storage)
    trials = study.get_trials()
    numbers = [trial.number for trial in trials]
    assert len(numbers) == len(set(numbers)) and 4 <= len(trials) <= 5  # a race may start one extra, never a rerun
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
    assert len({trial.user_attrs["worker"] for trial in trials}) == 2  # both ran trials of the one study
    run_dirs = [Path(trial.user_attrs["run_dir"]) for trial in trials]
    assert len(set(run_dirs)) == len(trials)
    for trial, run_dir in zip(trials, run_dirs, strict=True):
        # The trial's value is the best val/acc of its run, as its own checkpoint callback recorded it.
        (best,) = (run_dir / "checkpoints").glob("epoch=*.ckpt")
        state = read_checkpoint(best)["callbacks"]
        scores = [value["best_model_score"] for key, value in state.items() if key.startswith("PortableModelCheck")]
        assert trial.value == pytest.approx(float(next(s for s in scores if s is not None)))
        trainer = yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]
        assert (str(trainer["devices"]), trainer["strategy"]) == ("1", "auto")

    # Stopped and started again with a larger budget: the study goes on where it was.
    before = len(trials)
    _finish(_zoo(*common, "--n_trials", str(before + 1), cwd=tmp_path))
    assert len(optuna.load_study(study_name="digits_cnn", storage=storage).trials) == before + 1

    out = tmp_path / "study"
    summary = json.loads((out / "summary.json").read_text())
    best = max((t for t in optuna.load_study(study_name="digits_cnn", storage=storage).trials), key=lambda t: t.value)
    assert summary["best_trial"] == best.number and summary["best_value"] == pytest.approx(best.value)
    with open(out / "trials.csv") as file:
        assert len(list(csv.DictReader(file))) == before + 1
    assert (out / "history.png").stat().st_size > 1000 and (out / "importances.png").stat().st_size > 1000

    # The best configuration trains as it is: its searched values reach the model.
    overrides = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--test_after_fit=false"]
    cli = _finish(
        _zoo(
            "fit",
            "-c",
            str(out / "best.yaml"),
            *overrides,
            "--trainer.logger.init_args.save_dir=fit_logs",
            cwd=tmp_path,
        )
    )
    assert "error" not in cli.lower()
    (checkpoint,) = (tmp_path / "fit_logs").rglob("last.ckpt")
    hparams = read_checkpoint(checkpoint)["hyper_parameters"]
    args = summary["best_args"]
    assert hparams["lr"] == pytest.approx(args["model.init_args.lr"])
    assert list(hparams["channels"]) == args["model.init_args.channels"]


def test_the_tool_names_a_missing_space_and_a_bad_pruner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"function_mlp\.tune\.yaml does not exist"):
        tune.main(["--recipe", "function_mlp"])
    (tmp_path / "space.yaml").write_text("params: {lr: uniform 0.001 0.01}\n")
    with pytest.raises(SystemExit, match="--pruner 'asah': choose one of asha"):
        tune.main(["--recipe", "digits_cnn", "--space", "space.yaml", "--pruner", "asah"])
    with pytest.raises(SystemExit, match=r"unknown recipe 'digit_cnn'\. Did you mean digits_cnn"):
        tune.main(["--recipe", "digit_cnn", "--space", "space.yaml"])


@pytest.mark.slow
def test_the_trial_of_a_killed_worker_is_failed_by_its_heartbeat_and_run_again(tmp_path):
    storage, common = _digits_study(
        tmp_path,
        "params:\n  lr: loguniform 1e-3 3e-2\npruner: none\nheartbeat: 1\n"
        "fit_args: [--trainer.limit_train_batches=4, --trainer.enable_progress_bar=false]\n",
    )
    # The first worker's trial is long; it is killed while it trains.
    doomed = _zoo(*common, "--n_trials", "1", "--trainer.max_epochs=1000", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "study" / "trials").glob("trial_0/checkpoints/*.ckpt")):
            assert doomed.poll() is None and time.monotonic() < deadline, "the first trial never started training"
            time.sleep(0.2)
    finally:
        doomed.kill()
        doomed.wait(timeout=30)
    study = optuna.load_study(study_name="digits_cnn", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]  # nobody knows it is dead yet
    time.sleep(3)  # past the grace period of two missed heartbeats
    _finish(_zoo(*common, "--n_trials", "2", "--trainer.max_epochs=1", cwd=tmp_path))

    trials = optuna.load_study(study_name="digits_cnn", storage=storage).trials
    states = optuna.trial.TrialState
    assert [t.state for t in trials] == [states.FAIL, states.COMPLETE, states.COMPLETE]
    assert optuna.storages.RetryFailedTrialCallback.retried_trial_number(trials[1]) == 0
    assert trials[1].params == trials[0].params  # the killed trial, run again


_OPEN_ON_GO = """
import sys, time
from pathlib import Path
from recipes.tools.tune import open_storage
print("ready", flush=True)
while not Path("go").exists():
    time.sleep(0.001)
print(len(open_storage(sys.argv[1], Path("."), heartbeat=60).get_all_studies()))
"""


def test_workers_opening_a_new_database_at_once_all_get_it(tmp_path):
    """Workers racing to create the tables of one new SQLite study, and to stamp its schema version, all open it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    url = f"sqlite:///{tmp_path / 'study.db'}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_ON_GO, url],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    assert all(worker.stdout.readline() == b"ready\n" for worker in workers)
    (tmp_path / "go").touch()
    assert all(_finish(worker, timeout=120).split()[-1] == "0" for worker in workers)


def test_a_schema_race_lost_is_retried(tmp_path, monkeypatch):
    from sqlalchemy.exc import IntegrityError

    made = []
    real = optuna.storages.RDBStorage

    def lose_the_first_race(url, **kwargs):
        if not made:
            made.append(url)
            raise IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
        return real(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", lose_the_first_race)
    storage = tune.open_storage(None, tmp_path, heartbeat=60)
    assert made and storage.get_all_studies() == []
