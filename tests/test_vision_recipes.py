"""The vision recipes through their real entry point (LightningCLI) under fast_dev_run, on a tiny PNG tree."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from conftest import QUIET

import zoo
from recipes import cifar10_efficientnet, cifar10_resnet18, cifar10_vit, finetune_imagefolder


@pytest.fixture(scope="module")
def cifar_tree(tmp_path_factory) -> Path:
    """``train/<class>/*.png`` and ``test/<class>/*.png`` with random 32x32 RGB images, three classes."""
    from PIL import Image

    root = tmp_path_factory.mktemp("cifar")
    rng = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for index in range(12):
            label = ("cat", "dog", "ship")[index % 3]
            pixels = torch.randint(0, 256, (32, 32, 3), generator=rng, dtype=torch.uint8).numpy()
            (root / split / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / split / label / f"{index}.png")
    return root


def _fit(recipe, data_dir: Path, *args: str):
    return recipe.main(
        [
            "fit",
            "--trainer.fast_dev_run=1",
            *QUIET,
            f"--data.data_dir={data_dir}",
            "--data.num_workers=0",
            "--data.batch_size=4",
            *args,
        ]
    )


def test_cifar10_resnet18(cifar_tree):
    cli = _fit(cifar10_resnet18, cifar_tree)
    hp = cli.model.hparams
    assert isinstance(cli.model, zoo.ResNet) and cli.trainer.state.finished
    assert hp.stem == "cifar" and tuple(hp.layers) == (2, 2, 2, 2) and hp.block == "basic"
    assert (hp.optimizer, hp.lr, hp.weight_decay, hp.scheduler, hp.label_smoothing) == (
        "sgd",
        0.1,
        5e-4,
        "onecycle",
        0.1,
    )
    assert cli.datamodule.hparams.augment == "standard" and cli.config.fit.trainer.max_epochs == 30
    # the same architecture as the registered preset
    assert sum(p.numel() for p in cli.model.parameters()) == zoo.model_info("resnet18_cifar").num_params
    assert isinstance(cli.trainer.optimizers[0], torch.optim.SGD) and cli.trainer.optimizers[0].defaults["nesterov"]


def test_cifar10_vit(cifar_tree):
    cli = _fit(cifar10_vit, cifar_tree)
    hp = cli.model.hparams
    assert isinstance(cli.model, zoo.VisionTransformer) and cli.trainer.state.finished
    assert (hp.patch_size, hp.embed_dim, hp.depth, hp.num_heads, hp.drop_path_rate) == (4, 192, 12, 3, 0.1)
    assert (hp.optimizer, hp.lr, hp.weight_decay, hp.warmup_epochs, hp.scheduler) == ("adamw", 1e-3, 0.05, 5, "cosine")
    assert sum(p.numel() for p in cli.model.parameters()) == zoo.model_info("vit_tiny_patch4_32").num_params
    assert cli.datamodule.hparams.augment == "randaugment" and cli.config.fit.trainer.max_epochs == 100


def test_cifar10_efficientnet(cifar_tree):
    cli = _fit(cifar10_efficientnet, cifar_tree)
    hp = cli.model.hparams
    assert isinstance(cli.model, zoo.EfficientNet) and cli.trainer.state.finished
    assert hp.stem_stride == 1 and tuple(hp.stage_strides) == (1, 1, 2, 2, 1, 2, 1)
    assert sum(p.numel() for p in cli.model.parameters()) == zoo.model_info("efficientnet_b0_cifar").num_params
    assert (hp.optimizer, hp.lr, hp.warmup_epochs, hp.label_smoothing) == ("adamw", 2e-3, 3, 0.1)
    assert cli.datamodule.hparams.augment == "autoaugment"


#: pretrained=false: the test machine has no cached ImageNet weights and no network.
FINETUNE_ARGS = ("--data.img_size=32", "--model.init_args.pretrained=false")


def test_finetune_imagefolder(cifar_tree):
    cli = _fit(finetune_imagefolder, cifar_tree, "--data.batch_size=4", *FINETUNE_ARGS)
    hp = cli.model.hparams
    assert isinstance(cli.model, zoo.Backbone) and cli.trainer.state.finished
    assert (hp.backbone, hp.strategy, hp.unfreeze_at_epoch, hp.lr) == ("resnet18", "gradual", 2, 5e-4)
    assert cli.model.num_classes == 3 and cli.model.img_size == (32, 32)  # linked from the folder tree
    assert sum(isinstance(cb, zoo.backbone.BackboneFinetuning) for cb in cli.trainer.callbacks) == 1
    # epoch 0 < unfreeze_at_epoch: the backbone is still frozen
    assert not any(p.requires_grad for p in cli.model.backbone.parameters())


def test_finetune_recipe_defaults_to_pretrained_weights_and_says_where_they_go(cifar_tree, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    # LightningCLI reports the model's RuntimeError inside its own ValueError; the message is what matters
    with pytest.raises((RuntimeError, ValueError), match=r"Download model.safetensors .* weights_path=<file>"):
        _fit(finetune_imagefolder, cifar_tree, "--data.img_size=32")


def test_finetune_checkpoint_tests_offline_without_the_pretrained_weights(cifar_tree, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # empty cache: pretrained=true would fail
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "weights.pt")
    data = [f"--data.data_dir={cifar_tree}", "--data.num_workers=0", "--data.batch_size=4", "--data.img_size=32"]
    one_step = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    weights = f"--model.init_args.weights_path={tmp_path / 'weights.pt'}"
    fit = finetune_imagefolder.main(["fit", *QUIET, *data, *one_step, weights, "--test_after_fit=false"])
    ckpt = Path(fit.trainer.checkpoint_callback.dirpath) / "last.ckpt"
    assert fit.model.hparams.pretrained and ckpt.is_file()
    (tmp_path / "weights.pt").unlink()  # the weights moved on; the checkpoint must not need them

    # The recipe's YAML still says pretrained: true; the checkpoint's hyperparameters say the weights are inside it.
    test = finetune_imagefolder.main(["test", f"--ckpt_path={ckpt}", *QUIET, *data])
    assert test.trainer.state.finished and not test.model.hparams.pretrained
    assert "test/acc" in test.trainer.callback_metrics
    restored = zoo.Backbone.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    for name, tensor in fit.model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], tensor)
