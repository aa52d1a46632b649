"""Int8 quantization (torchao) of an MLP and a CNN trained briefly on the embedded digits: agreement with the float
model, size, save/load round trips, and clear errors for models without an int8 path."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

import zoo
from datamodules import DigitsDataModule
from recipes.tools.quantize import (
    UnsupportedModelError,
    load_quantized,
    quantize,
    quantize_linear,
    quantize_static,
    save_quantized,
    serialized_mb,
)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsDataModule:
    datamodule = DigitsDataModule(data_dir=str(tmp_path_factory.mktemp("digits")), batch_size=64, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


def _train(model: nn.Module, datamodule: DigitsDataModule, epochs: int = 4) -> nn.Module:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=datamodule)
    return model.eval()


@pytest.fixture(scope="module")
def mlp(digits: DigitsDataModule) -> nn.Module:
    return _train(zoo.create_model("mlp_small", img_size=8, lr=3e-3), digits)


@pytest.fixture(scope="module")
def cnn(digits: DigitsDataModule) -> nn.Module:
    return _train(zoo.create_model("cnn_digits", lr=3e-3), digits)


@torch.no_grad()
def _predict(model: nn.Module, datamodule: DigitsDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [(model(x).argmax(-1), y) for x, y in datamodule.test_dataloader()]
    return torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])


def _check_agreement(float_model: nn.Module, quantized: nn.Module, datamodule: DigitsDataModule) -> None:
    float_pred, target = _predict(float_model, datamodule)
    quant_pred, _ = _predict(quantized, datamodule)
    float_acc = (float_pred == target).float().mean().item()
    quant_acc = (quant_pred == target).float().mean().item()
    agree = (quant_pred == float_pred).float().mean().item()
    assert float_acc > 0.8, f"the float model did not learn the digits (test accuracy {float_acc:.3f})"
    assert agree >= 0.95, f"int8 agrees with float on {agree:.3f} of {len(target)} test digits"
    assert quant_acc >= float_acc - 0.03, f"accuracy {float_acc:.3f} -> {quant_acc:.3f}"


@pytest.mark.parametrize("weight_only", [False, True], ids=["dynamic", "weight_only"])
def test_linear_int8_agrees_is_smaller_and_round_trips(mlp, digits, weight_only: bool, tmp_path: Path) -> None:
    quantized = quantize_linear(mlp, weight_only=weight_only)
    _check_agreement(mlp, quantized, digits)
    assert serialized_mb(quantized) < serialized_mb(mlp) / 2  # int8 weights: a quarter, plus scales and pickle
    assert all(not type(p).__module__.startswith("torchao") for p in mlp.parameters())  # the float model untouched
    path = save_quantized(quantized, tmp_path / "mlp_int8.pt")
    restored = load_quantized(path, zoo.create_model("mlp_small", img_size=8))
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(restored(x), quantized(x))
    assert restored.state_dict().keys() == quantized.state_dict().keys()


def test_static_int8_cnn_agrees_is_smaller_and_round_trips(cnn, digits, tmp_path: Path) -> None:
    calibration = [x for index, (x, _) in zip(range(8), digits.train_dataloader(), strict=False) if index < 8]
    quantized = quantize_static(cnn, calibration)
    _check_agreement(cnn, quantized, digits)
    assert serialized_mb(quantized) < serialized_mb(cnn) / 2.5
    assert any(t.dtype == torch.int8 for t in quantized.state_dict().values())
    path = save_quantized(quantized, tmp_path / "cnn_int8.pt2")
    restored = load_quantized(path)
    x = torch.randn(7, 1, 8, 8)  # another batch size than the calibration's
    with torch.no_grad():
        assert torch.equal(restored(x), quantized(x))


def test_auto_picks_static_for_convolutions_and_dynamic_for_linear(mlp, cnn) -> None:
    assert isinstance(quantize(cnn, calibration=[torch.randn(4, 1, 8, 8)]), torch.fx.GraphModule)
    assert quantize(mlp).zoo_quantization == "dynamic"
    with pytest.raises(ValueError, match="static int8 needs calibration batches"):
        quantize(cnn, "static")
    with pytest.raises(ValueError, match="calibration gave no batch"):
        quantize_static(cnn, [])


@pytest.mark.parametrize("name", ["lstm_digits", "gru_parity", "lstm_lm_test"])
def test_recurrent_models_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(UnsupportedModelError, match=r"recurrent layers \((LSTM|GRU)\): torchao 0\.18 has no int8"):
        quantize(zoo.create_model(name))


def test_a_model_without_linear_layers_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match=r"no nn\.Linear layer for dynamic"):
        quantize_linear(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_load_errors_name_the_file(tmp_path: Path, mlp) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.pt: no such quantized model file"):
        load_quantized(tmp_path / "missing.pt", mlp)
    torch.save(mlp.state_dict(), tmp_path / "float.pt")
    with pytest.raises(ValueError, match=r"float\.pt holds no state dict written by save_quantized \(zoo quantize\)"):
        load_quantized(tmp_path / "float.pt", mlp)
    with pytest.raises(ValueError, match="pass the float model"):
        load_quantized(tmp_path / "float.pt")
    with pytest.raises(ValueError, match="takes a model from quantize_linear or quantize_static"):
        save_quantized(mlp, tmp_path / "x.pt")


@pytest.mark.slow  # about 10 s: two trainings and five measurements
def test_benchmark_writes_the_table_and_json(tmp_path: Path) -> None:
    import json

    from conftest import make_mnist, run_benchmark

    make_mnist(tmp_path / "mnist", n_train=512, n_test=64)
    out = tmp_path / "quantization.json"
    args = [f"--data_dir={tmp_path / 'mnist'}", "--limit_train_batches=2", "--calib_batches=2", "--iters=2"]
    finished = run_benchmark("quantization", *args, "--no_compile", f"--out={out}", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(out.read_text())
    methods = [(row["model"], row["method"].split(" (")[0]) for row in report["rows"]]
    assert methods == [
        ("mlp_base", "fp32"),
        ("mlp_base", "int8 dynamic"),
        ("mlp_base", "int8 weight-only"),
        ("cnn_bn", "fp32"),
        ("cnn_bn", "int8 static"),
    ]
    rows = {(row["model"], row["method"].split(" (")[0]): row for row in report["rows"]}
    assert rows[("cnn_bn", "int8 static")]["file_mb"] < rows[("cnn_bn", "fp32")]["file_mb"]
    assert rows[("mlp_base", "int8 dynamic")]["state_dict_mb"] < rows[("mlp_base", "fp32")]["state_dict_mb"] / 3
    assert all(row["ms_b1"] > 0 and 0 <= row["acc"] <= 1 for row in report["rows"])
