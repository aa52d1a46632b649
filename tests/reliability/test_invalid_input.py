"""Property-based: invalid init arguments and CLI flags end in a clear error naming the argument, never in training."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo
from datamodules import DigitsDataModule
from recipes import digits_cnn

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
not_positive = st.one_of(st.floats(max_value=0.0), st.just(math.nan), st.just(math.inf))
outside_unit = st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-9), st.just(math.nan))

MODEL_CASES = {
    "lr": not_positive,
    "weight_decay": st.one_of(st.floats(max_value=-1e-9), st.just(math.nan)),
    "num_classes": st.integers(max_value=0),
    "label_smoothing": outside_unit,
    "min_lr_ratio": st.one_of(st.floats(min_value=1.0 + 1e-6), st.floats(max_value=-1e-9), st.just(math.nan)),
    "warmup_epochs": st.floats(max_value=-1e-9),
    "scheduler": st.text(min_size=1).filter(lambda t: t not in ("cosine", "onecycle", "step", "plateau", "none")),
    "optimizer": st.text(min_size=1).filter(lambda t: t not in ("adamw", "adam", "sgd")),
}


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
@pytest.mark.parametrize("preset", ["mlp_small", "cnn_digits", "gru_parity"])
def test_invalid_model_arguments_fail_at_construction_naming_the_argument(preset: str, name: str):
    @FAST
    @given(value=MODEL_CASES[name])
    def check(value):
        with pytest.raises((ValueError, TypeError), match=name):
            zoo.create_model(preset, **{name: value})

    check()


DATA_CASES = {
    "batch_size": st.one_of(st.integers(max_value=0), st.floats(allow_nan=True)),
    "val_fraction": st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-9), st.just(math.nan)),
}


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_invalid_datamodule_arguments_fail_at_construction_naming_the_argument(name: str):
    @FAST
    @given(value=DATA_CASES[name])
    def check(value):
        with pytest.raises((ValueError, TypeError), match=name):
            DigitsDataModule(**{name: value})

    check()


FLAGS = st.sampled_from(
    [
        ("--model.init_args.lr", st.sampled_from(["-1", "0", "nan", "abc"])),
        ("--data.init_args.batch_size", st.sampled_from(["0", "-3", "2.5", "x"])),
        ("--trainer.max_epochs", st.sampled_from(["abc", "1.5"])),
        ("--trainer.precision", st.sampled_from(["17", "fp8-nonsense"])),
        ("--model.init_args.scheduler", st.sampled_from(["cosin", "linear"])),
        ("--data.init_args.augment", st.sampled_from(["flip", "autoaug"])),
    ]
)


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_invalid_cli_flags_exit_nonzero_before_training(data):
    flag, values = data.draw(FLAGS)
    value = data.draw(values)
    args = ["fit", f"{flag}={value}", "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false"]
    with pytest.raises((SystemExit, ValueError, TypeError)) as caught:
        cli = digits_cnn.main(args)
        pytest.fail(f"{flag}={value} was accepted: trained {cli.trainer.global_step} steps")
    if isinstance(caught.value, SystemExit):
        assert caught.value.code not in (0, None)
    else:
        assert flag.rsplit(".", 1)[-1] in str(caught.value) or value in str(caught.value)
