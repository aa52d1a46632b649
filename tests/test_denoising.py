"""The denoising task and its models: noise model, PSNR against an independent computation, CLI wiring."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import zoo
from recipes.console import main as zoo_main
from zoo.denoising import UNet

DENOISERS = zoo.list_models(task="denoising")
MEAN, STD = (0.3,), (0.4,)


def _images(n: int = 16, side: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth images in [0, 1]: a few low-frequency blobs, so there is structure to recover under the noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 4, 4, generator=generator)
    return F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)


def _multiple(side: int, stride: int) -> int:
    return -(-side // stride) * stride  # the nearest multiple of stride at or above side


#: The 31M-parameter U-Nets are left out (seconds each on 2 cores): test_textbook_unet_... checks the textbook one.
@pytest.mark.parametrize("name", [name for name in DENOISERS if zoo.model_info(name).num_params < 3_000_000])
def test_output_keeps_the_input_shape_and_wrong_channels_name_the_shape(name):
    model = zoo.create_model(name).eval()
    side, height, width = (_multiple(n, getattr(model, "stride", 1)) for n in (28, 36, 20))
    assert model(torch.rand(2, 1, side, side)).shape == (2, 1, side, side)
    assert model(torch.rand(1, 1, height, width)).shape == (1, 1, height, width)  # any size the strides divide
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 1, H, W\), got \(2, 3, 28, 28\)"):
        model(torch.rand(2, 3, 28, 28))


def test_unet_names_the_divisibility_it_needs():
    with pytest.raises(ValueError, match="divisible by 4"):
        zoo.create_model("unet_denoiser_small")(torch.rand(1, 1, 30, 30))


def test_dncnn_receptive_fields_match_the_papers():
    assert zoo.create_model("dncnn_s").receptive_field == 35  # 17 layers of 3x3
    assert zoo.create_model("ircnn").receptive_field == 33  # dilations 1-2-3-4-3-2-1


def test_logged_psnr_equals_an_independent_computation():
    """val/psnr and val/psnr_input from the Trainer equal 10 log10(1 / MSE) on the same fixed noise, in pixels."""
    torch.manual_seed(0)
    model = zoo.create_model("ircnn", img_size=16, noise_std=0.2, mean=MEAN, std=STD, noise_seed=3).eval()
    pixels = _images(12)
    normalized = (pixels - MEAN[0]) / STD[0]
    loader = DataLoader(TensorDataset(normalized, torch.zeros(12, dtype=torch.long)), batch_size=5)
    metrics = quiet_trainer().validate(model, loader, verbose=False)[0]

    squared_out, squared_in = 0.0, 0.0
    with torch.no_grad():
        for batch_idx, start in enumerate(range(0, 12, 5)):
            clean = pixels[start : start + 5]
            generator = torch.Generator().manual_seed(3 * 1_000_003 + batch_idx)
            noise = torch.randn(clean.shape, generator=generator) * 0.2
            noisy = clean + noise
            squared_out += ((model(noisy).clamp(0, 1) - clean) ** 2).sum().item()
            squared_in += ((noisy.clamp(0, 1) - clean) ** 2).sum().item()
    expected_out = 10 * math.log10(1 / (squared_out / pixels.numel()))
    expected_in = 10 * math.log10(1 / (squared_in / pixels.numel()))
    assert metrics["val/psnr"] == pytest.approx(expected_out, abs=1e-3)
    assert metrics["val/psnr_input"] == pytest.approx(expected_in, abs=1e-3)
    assert 12 < expected_in < 16  # sigma 0.2 -> about 14 dB before clipping; the noise was really added
    # fixed validation noise: a second pass gives the same numbers
    assert quiet_trainer().validate(model, loader, verbose=False)[0]["val/psnr"] == pytest.approx(metrics["val/psnr"])


def test_noise_models_and_batch_forms():
    model = zoo.create_model("ircnn", noise_std=0.5, mean=MEAN, std=STD)
    clean = torch.full((64, 1, 8, 8), 0.5)
    noise = model.add_noise(clean, torch.Generator().manual_seed(0)) - clean
    assert noise.std().item() == pytest.approx(0.5, rel=0.05)
    blind = zoo.create_model("ircnn", noise_std=0.5, blind=True)
    per_image = (blind.add_noise(clean, torch.Generator().manual_seed(0)) - clean).flatten(1).std(1)
    assert per_image.max() <= 0.5 * 1.3 and per_image.min() < 0.1 and per_image.std() > 0.1  # stds spread over [0, 0.5]

    normalized = (clean - MEAN[0]) / STD[0]
    noisy, target = model.noisy_clean_pair((normalized, torch.zeros(64, dtype=torch.long)))
    torch.testing.assert_close(target, clean)  # labels are ignored; the normalization is undone
    pair_noisy = normalized + 1.0
    noisy, target = model.noisy_clean_pair((pair_noisy, normalized))  # a (noisy, clean) pair is used as it is
    torch.testing.assert_close(noisy, clean + STD[0]) and torch.testing.assert_close(target, clean)


def test_predict_returns_denoised_pixels():
    model = zoo.create_model("unet_denoiser_small", img_size=16, mean=MEAN, std=STD).eval()
    loader = DataLoader(TensorDataset(torch.randn(6, 1, 16, 16)), batch_size=4)
    batches = quiet_trainer().predict(model, loader)
    assert [tuple(b.shape) for b in batches] == [(4, 1, 16, 16), (2, 1, 16, 16)]
    assert all(b.min() >= 0 and b.max() <= 1 for b in batches)


def test_zoo_cli_trains_a_denoiser_checkpointing_on_psnr(tmp_path):
    common = ["--data", "Digits", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    short = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2"]
    cli = zoo_main(["fit", "--model", "unet_denoiser_small", *common, *short, "--test_after_fit=true"])
    model, checkpoint = cli.model, cli.trainer.checkpoint_callback
    assert isinstance(model, zoo.UNetDenoiser) and model.img_size == (8, 8)
    assert tuple(model.hparams.mean) == (0.3055,) and tuple(model.hparams.std) == (0.3760,)  # linked from Digits
    assert checkpoint.monitor == "val/psnr" and checkpoint.mode == "max" and "val_psnr=" in checkpoint.best_model_path
    early_stopping = next(cb for cb in cli.trainer.callbacks if isinstance(cb, L.pytorch.callbacks.EarlyStopping))
    assert early_stopping.monitor == "val/psnr"
    assert "test/psnr" in cli.trainer.callback_metrics and "test/psnr_input" in cli.trainer.callback_metrics

    test = zoo_main(["test", "--model", "UNetDenoiser", *common, f"--ckpt_path={checkpoint.best_model_path}"])
    assert test.trainer.callback_metrics["test/psnr"] == pytest.approx(cli.trainer.callback_metrics["test/psnr"].item())


def test_zoo_cli_denoises_an_image_folder_with_its_normalization(tmp_path):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for index in range(8):
            folder = tmp_path / split / f"class{index % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 256, (16, 16, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"{index}.png")
    data = ["--data", "ImageFolder", f"--data.data_dir={tmp_path}", "--data.img_size=16", "--data.num_workers=0"]
    data += ["--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false"]
    cli = zoo_main(["fit", "--model", "ircnn", *data])
    assert cli.model.in_channels == 3 and tuple(cli.model.hparams.mean) == (0.485, 0.456, 0.406)  # linked
    assert "test/psnr" in cli.trainer.callback_metrics


# --- the textbook U-Net and its residual-encoder and attention-gate variants ----------------------------------------


def test_textbook_unet_has_the_reference_parameter_count_and_keeps_the_shape():
    """31,042,369 parameters: 3x3 convs with bias before BatchNorm, 2x2 up-convs to half the channels, a 1x1 head."""
    model = zoo.create_model("unet").eval()
    assert sum(p.numel() for p in model.parameters()) == 31_042_369
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9 * 2 + 1 and all(conv.bias is not None for conv in convs)  # 18 3x3 convs and the head
    ups = [(block.up.in_channels, block.up.out_channels, block.up.kernel_size) for block in model.decoder]
    assert ups == [(1024, 512, (2, 2)), (512, 256, (2, 2)), (256, 128, (2, 2)), (128, 64, (2, 2))]
    assert not model.residual_output  # the textbook maps its input straight to the output
    with torch.no_grad():
        assert model(torch.rand(2, 1, 64, 64)).shape == (2, 1, 64, 64)


def test_unet_names_the_divisibility_and_the_shape_it_got():
    model = zoo.create_model("unet_small")
    with pytest.raises(ValueError, match=r"divisible by 16, got \(1, 1, 48, 40\)"):
        model(torch.rand(1, 1, 48, 40))
    with pytest.raises(ValueError, match=r"img_size divisible by 16, got \(28, 28\)"):
        zoo.create_model("unet_small", img_size=28)
    with pytest.raises(ValueError, match="Unknown encoder 'resnet'"):
        UNet(encoder="resnet")
    with pytest.raises(ValueError, match="at least two positive"):
        UNet(widths=(64,))
    assert UNet(widths=(8, 16), img_size=2).stride == 2  # one pooling: even sides suffice


def test_output_is_the_network_or_the_input_plus_it():
    """With the 1x1 head zeroed the textbook output is 0 and the residual output is the noisy input."""
    x = torch.rand(2, 1, 16, 16)
    for residual_output, expected in ((False, torch.zeros_like(x)), (True, x)):
        model = UNet(widths=(8, 16, 32), img_size=16, residual_output=residual_output).eval()
        nn.init.zeros_(model.out.weight), nn.init.zeros_(model.out.bias)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_residual_encoder_shortcuts_project_only_when_the_width_changes():
    model = UNet(widths=(8, 8, 16), img_size=16, encoder="residual").eval()
    first, same, wider = model.encoder
    assert isinstance(same.shortcut, nn.Identity)
    assert first.shortcut[0].weight.shape == (8, 1, 1, 1) and wider.shortcut[0].weight.shape == (16, 8, 1, 1)
    assert first.shortcut[0].bias is None  # BatchNorm follows the projection
    x = torch.randn(2, 8, 8, 8)
    assert first(torch.randn(2, 1, 8, 8)).shape == (2, 8, 8, 8) and wider(x).shape == (2, 16, 8, 8)
    # With the body's last BatchNorm at gamma = beta = 0 the body adds nothing: an identity level is a ReLU.
    nn.init.zeros_(same.body[-1].weight), nn.init.zeros_(same.body[-1].bias)
    torch.testing.assert_close(same(x), torch.relu(x), rtol=0, atol=0)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 1, 16, 16)


def test_attention_coefficients_are_in_0_1_at_each_skips_size():
    model = zoo.create_model("unet_attention_small")
    maps = model.attention_maps(torch.rand(2, 1, 64, 64))
    assert model.training  # the maps are taken in eval mode, and the mode is given back
    assert list(maps) == ["decoder.0", "decoder.1", "decoder.2", "decoder.3"]  # the deepest skip first
    assert [tuple(alpha.shape) for alpha in maps.values()] == [(2, 1, side, side) for side in (8, 16, 32, 64)]
    assert all(((alpha > 0) & (alpha < 1)).all() and alpha.std() > 0 for alpha in maps.values())
    with pytest.raises(ValueError, match="attention_gates=False"):
        zoo.create_model("unet_small").attention_maps(torch.rand(1, 1, 64, 64))


def _gated_copy(plain: UNet, psi_bias: float) -> UNet:
    """The plain U-Net's weights in an attention U-Net whose gates all give ``sigmoid(psi_bias)``."""
    gated = UNet(widths=plain.hparams.widths, img_size=16, attention_gates=True).eval()
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".gate." in key for key in missing)
    for block in gated.decoder:
        nn.init.zeros_(block.gate.psi.weight), nn.init.constant_(block.gate.psi.bias, psi_bias)
    return gated


def test_gates_open_at_one_and_halve_the_skips_at_one_half():
    """psi = 0 with bias 50 lets every skip through (the plain U-Net's output); with bias 0 each skip is halved, which
    is the plain U-Net whose fusing conv has its skip weights halved (the skip comes first in the concatenation)."""
    torch.manual_seed(0)
    plain = UNet(widths=(8, 16, 32), img_size=16).eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(_gated_copy(plain, 50.0)(x), plain(x))
        half = _gated_copy(plain, 0.0)
        assert all((alpha == 0.5).all() for alpha in half.attention_maps(x).values())
        gated_output = half(x)
        for block in plain.decoder:
            block.conv[0].weight[:, : block.up.out_channels] *= 0.5
        torch.testing.assert_close(gated_output, plain(x))
