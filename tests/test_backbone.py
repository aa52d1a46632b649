"""Transfer strategies of zoo.Backbone: exactly the intended parameters change after a real Trainer step."""

from __future__ import annotations

import lightning as L
import pytest
import timm
import torch
from conftest import quiet_trainer
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, TensorDataset

from zoo import Backbone


def _loader(batches: int = 2) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4 * batches, 3, 32, 32, generator=generator)
    y = torch.arange(4 * batches) % 3
    return DataLoader(TensorDataset(x, y), batch_size=4)


def _trainer(**kwargs) -> L.Trainer:
    # Two steps: timm zero-initializes each block's last BatchNorm weight, so the first step gives the rest of the
    # block no gradient.
    kwargs.setdefault("max_steps", 2)
    return quiet_trainer(
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **kwargs,
    )


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], model: torch.nn.Module, params_only: bool = True) -> set[str]:
    names = {name for name, _ in model.named_parameters()} if params_only else set(before)
    after = model.state_dict()
    return {name for name in names if not torch.equal(before[name], after[name])}


def _model(**kwargs) -> Backbone:
    torch.manual_seed(0)
    return Backbone(num_classes=3, img_size=32, backbone=kwargs.pop("backbone", "resnet18"), **kwargs)


HEAD = {"head.weight", "head.bias"}


def test_full_trains_everything():
    model = _model(strategy="full")
    before = _snapshot(model)
    _trainer().fit(model, _loader())
    assert _changed(before, model) == {name for name, _ in model.named_parameters()}


def test_linear_probe_changes_only_the_head_and_no_batchnorm_statistics():
    model = _model(strategy="linear_probe")
    before = _snapshot(model)
    _trainer().fit(model, _loader())
    # params_only=False: the backbone's BatchNorm running stats and counters must not move either
    assert _changed(before, model, params_only=False) == HEAD


@pytest.mark.parametrize(("backbone", "last", "expected"), [("resnet18", 1, 5), ("tv:resnet18", 2, 6)])
def test_partial_changes_the_last_stages_and_the_head(backbone, last, expected):
    model = _model(backbone=backbone, strategy="partial", unfreeze_last=last)
    assert len(model.stage_names) == expected  # timm: stem, layer1-4; torchvision: conv1, bn1, layer1-4
    before = _snapshot(model)
    _trainer().fit(model, _loader())
    trainable = {name for stage in model.stage_names[-last:] for name in stage}
    assert _changed(before, model) == trainable | HEAD
    trainable_modules = {name.rsplit(".", 1)[0] for name in trainable}
    frozen_buffers = {name for name in before if "running" in name and name.rsplit(".", 1)[0] not in trainable_modules}
    assert frozen_buffers and not _changed(before, model, params_only=False) & frozen_buffers


def test_discriminative_lrs_decay_per_stage_from_the_head():
    model = _model(strategy="discriminative", lr=0.1, lr_decay=0.5, scheduler="none")
    before = _snapshot(model)
    trainer = _trainer()
    trainer.fit(model, _loader())
    assert _changed(before, model) == {name for name, _ in model.named_parameters()}
    groups = trainer.optimizers[0].param_groups
    by_id = {id(param): group["lr"] for group in groups for param in group["params"]}
    named = dict(model.named_parameters())
    stages = len(model.stage_names)
    for k, stage in enumerate(model.stage_names):
        for name in stage:
            assert by_id[id(named[name])] == pytest.approx(0.1 * 0.5 ** (stages - k))
    assert by_id[id(model.head.weight)] == pytest.approx(0.1)
    assert {group["weight_decay"] for group in groups if any(p.ndim <= 1 for p in group["params"])} == {0.0}


def test_discriminative_keeps_the_schedule_ratios():
    model = _model(strategy="discriminative", lr=0.1, lr_decay=0.5, scheduler="cosine", min_lr_ratio=0.1)
    trainer = _trainer(max_steps=2)
    trainer.fit(model, _loader(batches=4))
    lrs = sorted({group["lr"] for group in trainer.optimizers[0].param_groups})
    assert lrs[-1] < 0.1  # the cosine schedule moved
    assert [lr / lrs[-1] for lr in lrs] == pytest.approx([0.5**d for d in range(len(lrs) - 1, -1, -1)])


def test_gradual_unfreezes_the_backbone_at_the_given_epoch():
    model = _model(strategy="gradual", unfreeze_at_epoch=1)
    snapshots = [_snapshot(model)]

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshots.append(_snapshot(pl_module))

    trainer = _trainer(max_steps=-1, max_epochs=2, callbacks=[Record()])
    trainer.fit(model, _loader())
    first = {name for name in snapshots[1] if not torch.equal(snapshots[0][name], snapshots[1][name])}
    assert first == HEAD  # epoch 0: backbone, BatchNorm statistics included, frozen
    second = {name for name, _ in model.named_parameters() if not torch.equal(snapshots[1][name], snapshots[2][name])}
    assert "backbone.conv1.weight" in second and "backbone.layer4.1.bn2.weight" in second and second >= HEAD
    assert (
        len(trainer.optimizers[0].param_groups) == 3
    )  # decay, no-decay and the backbone group BackboneFinetuning added


def test_gradual_defers_to_a_finetuning_callback_in_the_trainer():
    from lightning.pytorch.callbacks import BackboneFinetuning

    mine = BackboneFinetuning(unfreeze_backbone_at_epoch=5)
    trainer = _trainer(callbacks=[mine])
    trainer.fit(_model(strategy="gradual"), _loader())
    finetuning = [cb for cb in trainer.callbacks if isinstance(cb, BackboneFinetuning)]
    assert finetuning == [mine]


def test_frozen_batchnorm_stays_in_eval_mode():
    model = _model(strategy="partial", unfreeze_last=1)
    model.train()
    for name, module in model.backbone.named_modules():
        if isinstance(module, _BatchNorm):
            assert module.training == name.startswith("layer4"), name
    running = model.backbone.bn1.running_mean.clone()
    model(torch.randn(4, 3, 32, 32))
    torch.testing.assert_close(model.backbone.bn1.running_mean, running)
    model.eval()
    assert not any(module.training for module in model.modules())


@pytest.mark.parametrize("nested", [False, True])
def test_weights_path_loads_a_state_dict(tmp_path, nested):
    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False, num_classes=10)  # its fc.* keys are ignored
    state = source.state_dict()
    torch.save({"state_dict": state} if nested else state, tmp_path / "weights.pt")
    model = _model(pretrained=True, weights_path=str(tmp_path / "weights.pt"))
    for name, tensor in model.backbone.state_dict().items():
        torch.testing.assert_close(tensor, state[name])
    assert model.hparams.weights_path == str(tmp_path / "weights.pt")


def test_weights_path_with_missing_tensors_names_them(tmp_path):
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"lacks \d+ backbone tensors"):
        _model(pretrained=True, weights_path=str(tmp_path / "partial.pt"))


def test_pretrained_offline_without_cache_says_where_to_put_the_weights(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match=r"model.safetensors.*weights_path=.*cache dir .*models--timm--resnet18"):
        _model(pretrained=True)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch"))
    with pytest.raises(RuntimeError, match=r"resnet18-f37072fd.pth and pass weights_path"):
        _model(backbone="tv:resnet18", pretrained=True)


def test_invalid_arguments_raise_at_construction():
    with pytest.raises(ValueError, match="Unknown strategy"):
        _model(strategy="half")
    with pytest.raises(ValueError, match="unfreeze_last=9"):
        _model(strategy="partial", unfreeze_last=9)
    with pytest.raises(ValueError, match="3 channels"):
        Backbone(in_channels=1, backbone="tv:resnet18")


def test_gradual_run_resumes_after_the_unfreeze_epoch(tmp_path):
    """Interrupted after epoch 1 (backbone unfrozen at epoch 1), the run resumes with the backbone training."""

    class Interrupt(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                trainer.save_checkpoint(tmp_path / "interrupted.ckpt")
                trainer.should_stop = True

    _trainer(max_steps=-1, max_epochs=3, callbacks=[Interrupt()]).fit(
        _model(strategy="gradual", unfreeze_at_epoch=1), _loader()
    )
    resumed = _model(strategy="gradual", unfreeze_at_epoch=1)
    trainer = _trainer(max_steps=-1, max_epochs=3)
    trainer.fit(resumed, _loader(), ckpt_path=tmp_path / "interrupted.ckpt")
    assert trainer.current_epoch == 3 and len(trainer.optimizers[0].param_groups) == 3
    assert all(p.requires_grad for p in resumed.backbone.parameters())
    assert trainer.optimizers[0].param_groups[2]["lr"] > 0
    saved = torch.load(tmp_path / "interrupted.ckpt", weights_only=True)["state_dict"]["backbone.conv1.weight"]
    assert not torch.equal(saved, resumed.backbone.conv1.weight.detach())  # the backbone trained after resuming


@pytest.mark.parametrize("strategy", ["full", "discriminative"])
def test_backbone_no_weight_decay_names_reach_every_strategy(strategy):
    model = Backbone(num_classes=3, backbone="vit_tiny_patch16_224", img_size=224, strategy=strategy)
    groups = model.optimizer_param_groups()
    no_decay = {id(p) for group in groups if group["weight_decay"] == 0 for p in group["params"]}
    assert id(model.backbone.pos_embed) in no_decay and id(model.backbone.cls_token) in no_decay
    assert id(model.backbone.patch_embed.proj.weight) not in no_decay
