"""Recipes and the `zoo` command through their real entry points (LightningCLI), on CPU with fast_dev_run."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import QUIET, make_mnist
from lightning.pytorch.profilers import SimpleProfiler

import zoo
from callbacks import NullProfiler
from recipes import (
    cifar10_cnn,
    digits_cnn,
    extrema_bilstm,
    mnist_denoise,
    parity_gru,
    smnist_lstm,
)
from recipes.cli import expand_short_names
from recipes.console import main as zoo_main

REPO = Path(__file__).resolve().parents[1]


def _fit(recipe, *args: str):
    return recipe.main(["fit", "--trainer.fast_dev_run=2", *QUIET, *args])


def _write_cifar_tree(root: Path, per_split: int = 12) -> None:
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for index in range(per_split):
            label = ("cat", "dog", "ship")[index % 3]
            pixels = torch.randint(0, 256, (32, 32, 3), generator=rng, dtype=torch.uint8).numpy()
            (root / split / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / split / label / f"{index}.png")


def test_digits_recipe_runs_with_no_argument(tmp_path):
    """`python -m recipes.digits_cnn fit` needs nothing else; a short real run leaves logs and checkpoints."""
    cli = digits_cnn.main(["fit", "--trainer.max_epochs=2", *QUIET])
    assert isinstance(cli.model, zoo.CNN) and cli.model.num_classes == 10 and cli.model.img_size == (8, 8)
    log_dir = Path(cli.trainer.logger.log_dir)
    assert log_dir.parent.name == "digits_cnn"
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(log_dir.glob("events.out.tfevents.*"))
    assert cli.trainer.callback_metrics["test/acc"] > 0.5  # test_after_fit ran on the best checkpoint


RECIPES = sorted(path.stem for path in (REPO / "recipes").glob("*.yaml") if path.with_suffix(".py").is_file())


def _data_for(recipe: str, root: Path) -> list[str]:
    """Options that point a recipe at small data of its format written under ``root`` (none for generated or
    embedded data)."""
    data_class = yaml.safe_load((REPO / "recipes" / f"{recipe}.yaml").read_text())["data"]["class_path"]
    name = data_class.rsplit(".", 1)[-1]
    if name in ("MNISTDataModule", "SequentialMNISTDataModule"):
        make_mnist(root)
        return [f"--data.data_dir={root}"]
    if name in ("CIFAR10DataModule", "ImageFolderDataModule"):
        _write_cifar_tree(root, per_split=6)
        options = [f"--data.data_dir={root}", "--data.num_workers=0", "--data.batch_size=4"]
        if name == "ImageFolderDataModule":  # the fine-tuning recipe, at CIFAR's size and without its download
            options += ["--data.img_size=32", "--model.init_args.pretrained=false"]
        return options
    if name == "CharTextDataModule":
        root.mkdir(parents=True)
        (root / "text.txt").write_text("To be, or not to be, that is the question.\n" * 40)
        return [f"--data.path={root / 'text.txt'}"]
    return []


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_fits_and_tests_under_fast_dev_run(recipe, tmp_path):
    """Each recipe through its entry point: two steps of fit, validation and test, watching its model's metric."""
    cli = importlib.import_module(f"recipes.{recipe}").main(
        ["fit", "--trainer.fast_dev_run=2", *QUIET, *_data_for(recipe, tmp_path / "data")]
    )
    monitor, mode = type(cli.model).monitor
    assert cli.trainer.state.finished and (
        cli.trainer.checkpoint_callback.monitor,
        cli.trainer.checkpoint_callback.mode,
    ) == (monitor, mode)
    assert "test/loss" in cli.trainer.callback_metrics  # test_after_fit ran


def test_smnist_lstm_recipe_fast_dev_run(mnist_dir):
    cli = _fit(smnist_lstm, f"--data.data_dir={mnist_dir}")
    assert isinstance(cli.model, zoo.RNNClassifier) and cli.model.hparams.num_layers == 2
    assert (cli.model.in_features, cli.model.max_length) == (28, 28)  # linked from the rows of the images
    assert cli.trainer.gradient_clip_val == 1.0 and "test/acc" in cli.trainer.callback_metrics
    pixels = _fit(smnist_lstm, f"--data.data_dir={mnist_dir}", "--data.init_args.mode=pixels")
    assert (pixels.model.in_features, pixels.model.max_length) == (1, 784)


@pytest.mark.parametrize(("recipe", "model_class"), [(parity_gru, zoo.RNNClassifier), (extrema_bilstm, zoo.RNNTagger)])
def test_generated_sequence_recipes_run_with_no_argument(recipe, model_class):
    cli = _fit(recipe)
    assert isinstance(cli.model, model_class) and cli.trainer.gradient_clip_val == 1.0
    assert cli.model.vocab_size == cli.datamodule.vocab_size and cli.model.max_length == cli.datamodule.max_length
    assert cli.trainer.checkpoint_callback.monitor == "val/acc" and "test/acc" in cli.trainer.callback_metrics


def test_mnist_denoise_recipe_trains_ircnn_and_checkpoints_on_psnr(mnist_dir):
    cli = _fit(mnist_denoise, f"--data.data_dir={mnist_dir}")
    model = cli.model
    assert isinstance(model, zoo.DnCNN) and model.receptive_field == 33 and model.hparams.noise_std == 0.3
    assert sum(p.numel() for p in model.parameters()) == zoo.model_info("ircnn").num_params
    assert tuple(model.hparams.mean) == cli.datamodule.mean  # linked: the task denoises in pixel units
    assert cli.trainer.checkpoint_callback.monitor == "val/psnr"
    assert {"test/psnr", "test/psnr_input"} <= set(cli.trainer.callback_metrics)  # test_after_fit ran
    # another denoiser keeps the recipe's noise model; the IRCNN-only arguments are dropped
    unet = _fit(mnist_denoise, f"--data.data_dir={mnist_dir}", "--model=zoo.UNetDenoiser").model
    assert isinstance(unet, zoo.UNetDenoiser) and unet.hparams.noise_std == 0.3 and "dilations" not in unet.hparams


def test_cifar10_recipe_fast_dev_run(tmp_path):
    _write_cifar_tree(tmp_path / "cifar")
    cli = _fit(cifar10_cnn, f"--data.data_dir={tmp_path / 'cifar'}", "--data.num_workers=0")
    assert cli.model.hparams.optimizer == "sgd" and cli.model.hparams.label_smoothing == 0.1


def test_overrides_reach_model_data_and_trainer():
    cli = _fit(
        digits_cnn, "--model.init_args.lr=0.05", "--model.init_args.dropout=0.2", "--data.init_args.batch_size=16"
    )
    assert cli.model.hparams.lr == 0.05 and cli.model.hparams.dropout == 0.2
    assert cli.datamodule.batch_size == 16 and cli.trainer.fast_dev_run == 2


def test_cli_optimizer_and_scheduler_replace_the_defaults():
    cli = _fit(
        digits_cnn, "--optimizer=SGD", "--optimizer.lr=0.2", "--lr_scheduler=StepLR", "--lr_scheduler.step_size=1"
    )
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.2
    assert isinstance(cli.trainer.lr_scheduler_configs[0].scheduler, torch.optim.lr_scheduler.StepLR)


def test_print_config_round_trip(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        digits_cnn.main(["fit", "--model.init_args.lr=0.02", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    config = yaml.safe_load(printed)
    assert config["model"]["init_args"]["lr"] == 0.02 and config["data"]["class_path"].endswith("DigitsDataModule")
    path = tmp_path / "config.yaml"
    path.write_text(printed)
    with pytest.raises(SystemExit):
        digits_cnn.main(["fit", f"--config={path}", "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out) == config


def test_invalid_config_value_exits_non_zero_with_a_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        digits_cnn.main(["fit", "--model.init_args.scheduler=cosinus"])
    assert exit_info.value.code != 0
    assert "cosinus" in capsys.readouterr().err


def test_test_and_predict_from_a_checkpoint_rebuild_the_saved_model(tmp_path):
    fit = digits_cnn.main(["fit", "--trainer.max_epochs=1", "--test_after_fit=false", *QUIET])
    ckpt = Path(fit.trainer.logger.log_dir) / "checkpoints" / "last.ckpt"
    # Other model arguments than the checkpoint's: the model is rebuilt from the saved hyperparameters.
    test = digits_cnn.main(["test", f"--ckpt_path={ckpt}", "--model.init_args.channels=[8, 16]", *QUIET])
    assert test.model.hparams.channels == [32, 64]
    assert test.trainer.callback_metrics["test/acc"] > 0.5
    predict = digits_cnn.main(["predict", f"--ckpt_path={ckpt}", *QUIET])
    probabilities = torch.cat(predict.trainer.predict_loop.predictions)
    assert probabilities.shape == (len(predict.datamodule.datasets["test"]), 10)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(len(probabilities)))


def test_progress_bar_flag_wins_over_the_default_callback():
    cli = _fit(digits_cnn)
    assert cli.trainer.progress_bar_callback is None
    names = [type(callback).__name__ for callback in cli.trainer.callbacks]
    assert {"PortableModelCheckpoint", "EarlyStopping", "LearningRateMonitor"} <= set(names)


def test_recipes_profile_nothing_by_default_and_profile_on_request():
    assert isinstance(_fit(digits_cnn).trainer.profiler, NullProfiler)
    profiler = _fit(digits_cnn, "--trainer.profiler=simple").trainer.profiler
    assert isinstance(profiler, SimpleProfiler)
    assert len(profiler.recorded_durations["[Callback]NonFiniteGuard.on_before_optimizer_step"]) == 2


# --- the `zoo` command ---------------------------------------------------------------------------------------------
def test_zoo_list_prints_every_model(capsys):
    zoo_main(["list"])
    out = capsys.readouterr().out
    assert all(name in out for name in zoo.list_models()) and "MNIST" in out and "ImageFolder" in out
    row = next(line for line in out.splitlines() if "gru_parity" in line)
    assert "sequence_classification" in row and "tokens (T<=64,) int64, ids < 2" in row
    assert "SequentialMNIST" in out and "tokens, ids < 2" in out  # the Parity datamodule


def test_zoo_fit_links_only_what_the_model_task_takes():
    """A denoiser on Digits takes in_channels/img_size/mean/std from the data, not num_classes."""
    cli = zoo_main(["fit", "--model", "ircnn", "--data", "Digits", "--trainer.fast_dev_run=1", *QUIET])
    assert cli.model.in_channels == 1 and tuple(cli.model.hparams.img_size) == (8, 8)
    assert "num_classes" not in cli.model.hparams and "vocab_size" not in cli.model.hparams
    cli = zoo_main(
        [
            "fit",
            "--model",
            "gru_parity",
            "--data",
            "Parity",
            "--data.init_args.max_length=12",
            "--data.init_args.num_train=64",
            "--trainer.fast_dev_run=1",
            *QUIET,
        ]
    )
    assert isinstance(cli.model, zoo.RNNClassifier) and cli.model.max_length == 12  # linked from the data
    assert cli.model.hparams.cell == "gru" and "img_size" not in cli.model.hparams


def test_zoo_fit_a_model_and_datamodule_sharing_an_argument_name(tmp_path):
    """CNN's `channels` and the image folder's arguments live side by side; merging hparams does not break."""
    _write_cifar_tree(tmp_path / "tree", per_split=6)
    cli = zoo_main(
        [
            "fit",
            "--model",
            "CNN",
            "--data",
            "ImageFolder",
            f"--data.data_dir={tmp_path / 'tree'}",
            "--data.img_size=32",
            "--data.num_workers=0",
            "--model.init_args.channels=[8, 16]",
            "--trainer.fast_dev_run=1",
            *QUIET,
        ]
    )
    assert cli.model.num_classes == 3 and cli.model.hparams.channels == [8, 16] and cli.trainer.state.finished


def test_zoo_fit_with_preset_and_datamodule_names():
    cli = zoo_main(["fit", "--model", "cnn_digits", "--data", "Digits", "--trainer.fast_dev_run=1", *QUIET])
    assert isinstance(cli.model, zoo.CNN) and cli.model.hparams.channels == [32, 64]
    cli = zoo_main(
        [
            "fit",
            "--model=MLP",
            "--data=Digits",
            "--model.init_args.hidden_dims=[16]",
            "--trainer.fast_dev_run=1",
            *QUIET,
        ]
    )
    assert isinstance(cli.model, zoo.MLP) and cli.model.img_size == (8, 8)


def test_zoo_unknown_names_suggest_close_matches():
    with pytest.raises(SystemExit, match="Did you mean cnn_digits"):
        expand_short_names(["fit", "--model", "cnn_digit"])
    with pytest.raises(SystemExit, match="Did you mean MNIST"):
        expand_short_names(["fit", "--data=MNSIT"])


def test_recipe_callbacks_match_default_callbacks():
    """defaults.yaml and callbacks.default_callbacks() describe the same set; neither drifts alone."""
    from callbacks import default_callbacks

    cli = digits_cnn.main(["fit", "--trainer.fast_dev_run=1", "--trainer.enable_model_summary=false"])
    from_recipe = {type(cb).__name__ for cb in cli.trainer.callbacks}
    assert {type(cb).__name__ for cb in default_callbacks()} <= from_recipe


@pytest.mark.parametrize(
    "averaging", ["callbacks.StochasticWeightAveraging --trainer.callbacks.swa_lrs=0.01", "EMAWeightAveraging"]
)
def test_weight_averaging_is_appended_to_the_default_callbacks(averaging):
    class_path, *init = averaging.split(" ")
    cli = _fit(digits_cnn, f"--trainer.callbacks+={class_path}", *init)
    names = {type(cb).__name__ for cb in cli.trainer.callbacks}
    assert {"PortableModelCheckpoint", "EarlyStopping", "GradientStatsMonitor", class_path.rsplit(".")[-1]} <= names


def test_test_after_fit_reports_the_averaged_weights_of_the_best_checkpoint():
    """With EMA the checkpoint holds the averaged model; the test after fit must evaluate exactly those weights."""
    cli = digits_cnn.main(["fit", "--trainer.max_epochs=2", "--trainer.callbacks+=EMAWeightAveraging", *QUIET])
    best = cli.trainer.checkpoint_callback.best_model_path
    checkpoint = torch.load(best, weights_only=True)
    assert "current_model_state" in checkpoint  # written by EMAWeightAveraging: raw weights kept for resuming
    model = zoo.CNN.load_from_checkpoint(best, weights_only=True).eval()
    data = cli.datamodule
    with torch.no_grad():
        correct = sum((model(x).argmax(-1) == y).sum().item() for x, y in data.test_dataloader())
    assert float(cli.trainer.callback_metrics["test/acc"]) == pytest.approx(correct / len(data.datasets["test"]))


def test_zoo_console_script_is_installed():
    script = Path(sys.executable).with_name("zoo")
    result = subprocess.run([str(script), "list"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "mlp_small" in result.stdout
    result = subprocess.run([str(script), "fit", "--model", "nope"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "unknown model 'nope'" in result.stderr


def test_loggers_are_chosen_from_the_command_line(tmp_path, monkeypatch):
    short = ["fit", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
             "--trainer.limit_test_batches=1", "--trainer.log_every_n_steps=1", *QUIET]  # fmt: skip
    cli = digits_cnn.main([*short, "--trainer.logger=CSVLogger"])
    assert type(cli.trainer.logger).__name__ == "CSVLogger"
    assert "test/acc" in (Path(cli.trainer.logger.log_dir) / "metrics.csv").read_text()
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local folder instead of a tracking server
    tracking = f"--trainer.logger.tracking_uri=file:{tmp_path / 'mlruns'}"
    cli = digits_cnn.main([*short, "--trainer.logger=MLFlowLogger", tracking])
    run = cli.trainer.logger.experiment.get_run(cli.trainer.logger.run_id)
    assert {"train/loss_step", "val/acc", "test/acc"} <= set(run.data.metrics)


def test_zoo_console_script_exits_zero_after_a_tool_run(tmp_path):
    """The installed `zoo` script: a successful run exits 0 and prints no return value to stderr."""
    script = Path(sys.executable).with_name("zoo")
    out = tmp_path / "mlp.pt2"
    result = subprocess.run(
        [str(script), "export", "--model", "mlp_small", "--output", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.is_file() and str(out) not in result.stderr
