"""The parts of the CIFAR-10 speedrun: the whitened network, batch-level flips and translations, and Lookahead."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import zoo
from callbacks import Lookahead
from datamodules import CIFAR10DataModule, MNISTDataModule
from datamodules.base import InMemoryImageDataset
from datamodules.transforms import BatchFlipTranslate
from zoo.whitened_vgg import PatchWhitening


def _correlated_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth, colour-correlated images: their 2x2 patches have a covariance far from the identity."""
    g = torch.Generator().manual_seed(seed)
    base = F.avg_pool2d(torch.randn(n, 1, 20, 20, generator=g), 3, 1, 1)
    noise = torch.randn(n, 2, 20, 20, generator=g)
    return torch.cat([base, 0.8 * base + 0.2 * noise[:, :1], 0.1 * noise[:, 1:] - base], dim=1)


def test_whitening_makes_the_patch_covariance_the_identity():
    images = _correlated_images()
    layer = PatchWhitening(3, 2, eps=0.0)
    layer.fit(images)
    out = F.conv2d(images, layer.weight[:12])  # the first half; the second is its negative
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    covariance = flat.T @ flat / len(flat)
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.float64), atol=1e-3)
    assert torch.equal(layer.weight[12:], -layer.weight[:12])


def test_whitening_is_fitted_on_the_first_training_batch_only_and_kept_in_the_state_dict():
    model = zoo.create_model("whitened_vgg_cifar", widths=(8, 16, 16))
    model.eval()
    model(torch.randn(2, 3, 32, 32))
    assert not model.whitening.fitted and not model.whitening.weight.any()  # evaluation does not fit it
    model.train()
    first = torch.randn(32, 3, 32, 32)
    model(first)
    fitted = model.whitening.weight.clone()
    reference = PatchWhitening(3, 2)
    reference.fit(first)
    assert torch.allclose(fitted, reference.weight)
    model(5 * torch.randn(32, 3, 32, 32))
    assert torch.equal(model.whitening.weight, fitted)  # not refitted
    again = zoo.create_model("whitened_vgg_cifar", widths=(8, 16, 16))
    again.load_state_dict(model.state_dict())
    assert again.whitening.fitted and torch.equal(again.whitening.weight, fitted)


def test_norm_shifts_train_faster_and_norm_scales_are_frozen():
    model = zoo.WhitenedVGG(widths=(8, 16, 16), lr=0.5, bias_lr_scale=64.0, optimizer="sgd")
    groups = model.optimizer_param_groups()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    shift_group = next(group for group in groups if group.get("lr") == 32.0)
    assert {id(p) for p in shift_group["params"]} == {id(m.bias) for m in norms}
    assert shift_group["weight_decay"] == 0.0
    assert all(not m.weight.requires_grad for m in norms)
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)  # each once


def test_the_network_rejects_images_too_small_for_its_pools():
    with pytest.raises(ValueError, match="at least 9"):
        zoo.WhitenedVGG(widths=(8, 16, 16))(torch.randn(1, 3, 8, 8))


# --- batch-level flips and translations ---------------------------------------------------------------------------
def test_batch_translate_equals_a_random_crop_of_the_reflect_padded_image():
    images = torch.randint(0, 256, (40, 3, 12, 10), dtype=torch.uint8)
    torch.manual_seed(1)
    out = BatchFlipTranslate(40, translate=2)(images, torch.arange(40))
    torch.manual_seed(1)
    shifts = torch.randint(-2, 3, (2, 40, 1))  # the draw the transform makes
    padded = F.pad(images.float(), (2, 2, 2, 2), mode="reflect")
    for b in range(40):
        dy, dx = int(shifts[0, b]), int(shifts[1, b])
        assert torch.equal(out[b].float(), padded[b, :, 2 + dy : 14 + dy, 2 + dx : 12 + dx])
    assert out.dtype == torch.uint8 and len({(int(a), int(b)) for a, b in shifts.squeeze(-1).T}) > 10


def test_alternating_flips_mirror_each_image_once_in_every_two_draws():
    images = torch.arange(8, dtype=torch.uint8).view(1, 1, 1, 8).repeat(100, 1, 1, 1)
    augment = BatchFlipTranslate(100, flip="alternating", seed=3)
    draws = []
    for _ in range(4):
        order = torch.randperm(100)
        out = torch.empty_like(images)
        out[order] = augment(images[order], order)
        draws.append(out[:, 0, 0, 0] == 7)  # mirrored
    assert all(bool((draws[k] != draws[k + 1]).all()) for k in range(3))
    assert 30 < int(draws[0].sum()) < 70  # the first draw is a coin per image


def test_a_datamodule_applies_batch_augmentation_to_training_batches_only(tmp_path):
    from tests.test_recipes import _write_cifar_tree

    _write_cifar_tree(tmp_path, per_split=12)
    plain = CIFAR10DataModule(str(tmp_path), batch_size=12, val_fraction=0.0, num_workers=0)
    flipped = CIFAR10DataModule(str(tmp_path), batch_size=12, val_fraction=0.0, num_workers=0, batch_flip="alternating")
    for dm in (plain, flipped):
        dm.setup("fit")
        dm.setup("test")
    index = list(range(12))
    first = flipped.datasets["train"].__getitems__(index)[0]
    second = flipped.datasets["train"].__getitems__(index)[0]
    reference = plain.datasets["train"].__getitems__(index)[0]
    for b in range(12):  # each image: once as it is, once mirrored
        assert {torch.equal(first[b], reference[b]), torch.equal(second[b], reference[b])} == {True, False}
        assert torch.equal(first[b] + second[b], reference[b] + reference[b].flip(-1))
    assert isinstance(flipped.datasets["test"], InMemoryImageDataset)
    assert flipped.datasets["test"].batch_transform is None


def test_batch_flips_are_refused_where_a_mirror_image_changes_the_class_and_bad_values_raise(tmp_path):
    with pytest.raises(ValueError, match="mirrored"):
        MNISTDataModule(str(tmp_path), batch_flip="random")
    MNISTDataModule(str(tmp_path), batch_translate=2)  # shifts keep a digit
    with pytest.raises(ValueError, match="Unknown batch flip"):
        CIFAR10DataModule(str(tmp_path), batch_flip="sometimes")
    with pytest.raises(ValueError, match="whole number"):
        CIFAR10DataModule(str(tmp_path), batch_translate=-1)


# --- Lookahead ----------------------------------------------------------------------------------------------------
class _Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))

    def training_step(self, batch, batch_idx):
        x, t = batch
        return F.mse_loss(self.net(x), t)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _batches(n: int = 40) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n * 4, 3, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def _trainer(tmp_path, callbacks, **kwargs) -> L.Trainer:
    return L.Trainer(
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def test_lookahead_equals_the_loop_written_out(tmp_path):
    steps, k = 40, 5
    model = _Net()
    _trainer(
        tmp_path,
        [Lookahead(every_n_steps=k, decay=0.9, decay_power=2.0, start_fraction=0.25)],
        max_steps=steps,
        enable_checkpointing=False,
    ).fit(model, _batches(steps))

    reference = _Net()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    slow = None
    for step, (x, t) in enumerate(_batches(steps), start=1):
        optimizer.zero_grad()
        F.mse_loss(reference.net(x), t).backward()
        optimizer.step()
        if step % k or step < 0.25 * steps:
            continue
        state = {key: v for key, v in reference.state_dict().items() if v.is_floating_point()}
        if slow is None:
            slow = {key: v.clone() for key, v in state.items()}
            continue
        rho = 0.9**k * (step / steps) ** 2.0
        with torch.no_grad():
            for key, v in state.items():
                slow[key] = slow[key] + (1 - rho) * (v - slow[key])
                v.copy_(slow[key])
    for key, value in reference.state_dict().items():
        assert torch.allclose(model.state_dict()[key], value, atol=1e-6), key
    assert model.net[1].running_mean.abs().sum() > 0  # the statistics were averaged too, not left at zero


def test_lookahead_resumes_its_slow_weights_from_a_checkpoint(tmp_path):
    def callback():
        return Lookahead(every_n_steps=2, decay=0.9, start_fraction=0.0)

    from lightning.pytorch.callbacks import ModelCheckpoint

    whole = _Net()
    every_epoch = ModelCheckpoint(tmp_path / "epochs", filename="{epoch}", save_top_k=-1)
    _trainer(tmp_path / "a", [callback(), every_epoch], max_epochs=4).fit(whole, _batches(10))
    resumed = _Net()
    looked = callback()
    _trainer(tmp_path / "b", [looked], max_epochs=4).fit(
        resumed, _batches(10), ckpt_path=tmp_path / "epochs/epoch=1.ckpt"
    )
    assert looked.slow is not None
    for key, value in whole.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key], value, atol=1e-6), key


def test_lookahead_rejects_bad_options():
    with pytest.raises(ValueError, match="every_n_steps"):
        Lookahead(every_n_steps=0)
    with pytest.raises(ValueError, match="decay"):
        Lookahead(decay=1.0)
