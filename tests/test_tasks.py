"""The image-classification task base: losses, optimizer and schedules, metrics and logging in a real Trainer."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import quiet_trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger

import zoo
from datamodules import DigitsDataModule
from tests.conftest import read_csv
from zoo.layers import Mish, Swish, focal_loss, get_act_layer
from zoo.metrics import classification_metrics
from zoo.tasks.optim import build_optimizer, fused_supported, lr_factor


# --- losses and layers -------------------------------------------------------------------------------------------
def test_focal_loss_matches_its_formula_and_reduces_to_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(0, 5, (16,))
    torch.testing.assert_close(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target))
    p_t = logits.softmax(-1)[torch.arange(16), target]
    expected = (-((1 - p_t) ** 2) * p_t.log()).mean()
    torch.testing.assert_close(focal_loss(logits, target, gamma=2.0), expected)
    soft = F.one_hot(target, 5).float()
    torch.testing.assert_close(focal_loss(logits, soft, gamma=2.0), expected)
    smoothed = focal_loss(logits, target, gamma=0.0, label_smoothing=0.1)
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, target, label_smoothing=0.1))


def test_custom_activations_equal_torch_versions():
    x = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(Swish()(x), F.silu(x))
    torch.testing.assert_close(Mish()(x), F.mish(x))
    with pytest.raises(ValueError, match="Did you mean gelu"):
        get_act_layer("gelux")


def test_classifier_losses_and_soft_targets():
    model = zoo.MLP(num_classes=4, in_channels=1, img_size=4, hidden_dims=(8,), loss="focal", focal_gamma=0.0)
    x, y = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    output = model.step((x, y), 0, "train")
    torch.testing.assert_close(output.loss, F.cross_entropy(output.values["preds"], y))
    soft = model.step((x, F.one_hot(y, 4).float()), 0, "train")
    torch.testing.assert_close(soft.loss, output.loss)
    assert torch.equal(soft.values["target"], y) and output.size == 6
    with pytest.raises(ValueError, match="Unknown loss"):
        zoo.MLP(loss="hinge")


# --- optimizer and schedules -----------------------------------------------------------------------------------
def test_no_weight_decay_on_biases_and_norm_weights():
    model = zoo.MLP(hidden_dims=(16,), norm="batchnorm")
    optimizer = build_optimizer(model, "sgd", lr=0.1, weight_decay=0.5, momentum=0.9)
    decay = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    for name, param in model.named_parameters():
        assert (id(param) in decay) == (param.ndim > 1), name
    assert optimizer.param_groups[0]["nesterov"]


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_optimizers_are_fused_and_update_as_the_per_tensor_loop(name):
    torch.manual_seed(0)
    fused_model = zoo.MLP(hidden_dims=(16,), norm="batchnorm")
    loop_model = copy.deepcopy(fused_model)
    fused = build_optimizer(fused_model, name, lr=0.05, weight_decay=0.1, momentum=0.9)
    loop = build_optimizer(loop_model, name, lr=0.05, weight_decay=0.1, momentum=0.9)
    for group in loop.param_groups:
        group["fused"] = None  # PyTorch's per-tensor loop on a CPU
    assert all(group["fused"] for group in fused.param_groups)
    for _ in range(20):
        for fused_param, loop_param in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
            fused_param.grad = torch.randn_like(fused_param)
            loop_param.grad = fused_param.grad.clone()
        fused.step()
        loop.step()
    for fused_param, loop_param in zip(fused_model.parameters(), loop_model.parameters(), strict=True):
        torch.testing.assert_close(fused_param, loop_param)


def test_parameters_fused_kernels_cannot_take_leave_the_choice_to_pytorch():
    on_meta = torch.nn.Linear(2, 2, device="meta")
    assert build_optimizer(on_meta, "adamw", lr=0.1, weight_decay=0.0, momentum=0.0).param_groups[0]["fused"] is None
    integer = torch.nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)
    assert not fused_supported([{"params": [torch.nn.Parameter(torch.zeros(2)), integer]}])


def test_vit_position_embedding_and_class_token_are_not_decayed():
    model = zoo.create_model("vit_tiny_patch4_32")
    groups = model.optimizer_param_groups()  # what the default optimizer is built from
    no_decay = {id(p) for group in groups if group["weight_decay"] == 0 for p in group["params"]}
    assert id(model.pos_embed) in no_decay and id(model.cls_token) in no_decay
    assert id(model.patch_embed.proj.weight) not in no_decay


def test_lr_factor_schedules():
    assert [lr_factor(s, 100, 10, "cosine") for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine", min_lr_ratio=0.1) == pytest.approx(0.1)
    assert [lr_factor(s, 100, 0, "step") for s in (0, 49, 50, 75, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])
    assert lr_factor(75, 125, 25, "onecycle") == pytest.approx(0.5)
    assert lr_factor(50, 100, 0, "none") == 1.0


def test_warmup_cosine_schedule_in_a_real_trainer():
    """The learning rate the Trainer applies each step equals the schedule formula."""
    data = DigitsDataModule(batch_size=128)
    model = zoo.MLP(in_channels=1, img_size=8, hidden_dims=(16,), lr=0.1, scheduler="cosine", warmup_epochs=1)
    logger = CSVLogger(".", name="sched")
    trainer = L.Trainer(
        max_epochs=3, logger=logger, log_every_n_steps=1, callbacks=[LearningRateMonitor("step")],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, data)
    lrs = [lr for _, lr in sorted(read_csv(logger.log_dir)["lr-AdamW/pg1"].items())]
    steps_per_epoch = math.ceil(len(data.datasets["train"]) / 128)
    total = 3 * steps_per_epoch
    expected = [0.1 * lr_factor(step, total, steps_per_epoch, "cosine") for step in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_invalid_training_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="plateau"):
        zoo.MLP(scheduler="plateau", warmup_epochs=1)
    with pytest.raises(ValueError, match="lr must be a positive"):
        zoo.MLP(lr=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        zoo.MLP(label_smoothing=1.5)


# --- metrics ---------------------------------------------------------------------------------------------------
def test_metric_collection_keeps_top5_and_f1_apart():
    """A perfectly classified first batch must not fuse top-5 accuracy and F1 into one compute group."""
    metrics = classification_metrics(10)
    target = torch.arange(10)
    metrics.update(F.one_hot(target, 10).float(), target)
    wrong = 2 * torch.roll(F.one_hot(target, 10).float(), 1, dims=1) + F.one_hot(target, 10)  # right class 2nd
    metrics.update(wrong, target)
    values = metrics.compute()
    assert values["acc"] == pytest.approx(0.5) and values["f1"] < 0.7 and values["acc_top5"] == pytest.approx(1.0)


def test_logged_metrics_equal_an_independent_computation():
    torch.manual_seed(0)
    data = DigitsDataModule(batch_size=64)
    model = zoo.create_model("cnn_digits", lr=3e-3)
    logger = CSVLogger(".", name="metrics")
    trainer = L.Trainer(
        max_epochs=2, logger=logger, log_every_n_steps=5, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, data)
    metrics = read_csv(logger.log_dir)
    assert len(metrics["val/acc"]) == 2
    assert {"train/loss", "train/acc", "train/f1", "train/acc_top5", "val/loss", "val/f1"} <= set(metrics)
    assert len(metrics["train/loss_step"]) == trainer.global_step // 5
    last_val = {key: values[max(values)] for key, values in metrics.items() if key.startswith("val/")}

    model.eval()
    with torch.no_grad():
        batches = list(data.val_dataloader())
        logits = torch.cat([model(x) for x, _ in batches])
        target = torch.cat([y for _, y in batches])
    accuracy = (logits.argmax(-1) == target).float().mean().item()
    assert last_val["val/acc"] == pytest.approx(accuracy, abs=1e-6)
    assert last_val["val/loss"] == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-4)
    assert accuracy > 0.85  # two epochs on digits are plenty for a conv net


def test_predict_returns_probabilities():
    model = zoo.create_model("cnn_digits").eval()
    probs = model.predict_step(torch.randn(4, 1, 8, 8), 0)
    assert probs.shape == (4, 10)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    x = torch.randn(4, 1, 8, 8)  # inputs alone, as a TensorDataset of inputs yields them, or with targets
    torch.testing.assert_close(model.predict_step((x,), 0), model.predict_step((x, torch.zeros(4).long()), 0))


def test_model_works_in_a_plain_pytorch_loop():
    """No Trainer attached: the module is an ordinary nn.Module."""
    model = zoo.create_model("mlp_small", num_classes=2, img_size=4, hidden_dims=(8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    before = F.cross_entropy(model(x), y).item()
    for _ in range(20):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    assert F.cross_entropy(model(x), y).item() < before


def test_train_metrics_gathered_in_chunks_equal_the_whole_epoch():
    """With frozen weights, the epoch's train/acc and train/loss are the model's on the whole train split."""
    data = DigitsDataModule(batch_size=64, val_fraction=0.11)  # 1,280 train images: 20 full batches
    model = zoo.MLP(in_channels=1, img_size=8, hidden_dims=(32,), optimizer="sgd", lr=1e-30, momentum=0.0)
    model.metric_update_interval = 3  # 6 full chunks and a partial one flushed at the epoch's end
    logger = CSVLogger(".", name="chunks")
    trainer = L.Trainer(
        max_epochs=1, logger=logger, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, data)
    row = {key: next(iter(values.values())) for key, values in read_csv(logger.log_dir).items()}
    images, targets = data.datasets["train"].__getitems__(range(len(data.datasets["train"])))
    assert len(targets) == 1280
    with torch.no_grad():
        logits = model(images)
    assert row["train/acc"] == pytest.approx((logits.argmax(-1) == targets).float().mean().item(), abs=1e-6)
    assert row["train/loss"] == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-5)


def test_train_metric_buffer_is_bounded_in_elements(monkeypatch):
    """Large per-step outputs are flushed by size, long before `metric_update_interval` batches gather."""
    data = DigitsDataModule(batch_size=64, val_fraction=0.11)  # 20 full batches of (64, 10) logits
    model = zoo.MLP(in_channels=1, img_size=8, hidden_dims=(32,), optimizer="sgd", lr=1e-30, momentum=0.0)
    per_batch = 64 * 10 + 64  # the logits and the targets the metrics update with
    model.metric_update_interval, model.metric_buffer_elements = 1000, 2 * per_batch
    sizes = []
    flush = model.flush_train_buffer
    monkeypatch.setattr(model, "flush_train_buffer", lambda: sizes.append(model._train_buffer_elements) or flush())
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(model, data)
    assert sizes[:10] == [2 * per_batch] * 10  # every second batch, never more held
    images, targets = data.datasets["train"].__getitems__(range(len(data.datasets["train"])))
    with torch.no_grad():
        accuracy = (model(images).argmax(-1) == targets).float().mean()
    assert trainer.callback_metrics["train/acc"] == pytest.approx(accuracy.item(), abs=1e-6)


def test_loss_step_is_logged_on_the_trainers_logging_steps():
    model = zoo.MLP(in_channels=1, img_size=8, hidden_dims=(16,))
    logger = CSVLogger(".", name="steps")
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=7,
        limit_val_batches=0,
        log_every_n_steps=3,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, DigitsDataModule(batch_size=16))
    assert sorted(read_csv(logger.log_dir)["train/loss_step"]) == [2, 5]  # global steps 3 and 6, 0-based


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_fused_steps_match_the_loop_whatever_the_layouts_of_gradients_and_loaded_moments(name):
    """A channels-last weight given a contiguous gradient, then moments loaded from a run in the other layout: the
    fused update equals PyTorch's per-tensor loop (the fused CPU kernel alone reads them as flat memory)."""
    torch.manual_seed(0)
    start = torch.randn(4, 3, 5, 5)
    fused_weight = torch.nn.Parameter(start.clone().to(memory_format=torch.channels_last))
    loop_weight = torch.nn.Parameter(start.clone())
    groups = [{"params": [fused_weight], "weight_decay": 0.1}]
    fused = build_optimizer(groups, name, lr=0.1, weight_decay=0.1, momentum=0.9)
    loop = build_optimizer(
        [{"params": [loop_weight], "weight_decay": 0.1}], name, lr=0.1, weight_decay=0.1, momentum=0.9
    )
    loop.param_groups[0]["fused"] = None
    assert fused.param_groups[0]["fused"]

    def step_both(fused_layout: torch.memory_format) -> None:
        gradient = torch.randn(4, 3, 5, 5)
        fused_weight.grad, loop_weight.grad = gradient.clone(memory_format=fused_layout), gradient.clone()
        fused.step()
        loop.step()

    for _ in range(3):
        step_both(torch.contiguous_format)
    torch.testing.assert_close(fused_weight.detach(), loop_weight.detach())
    # The moments as a contiguous-layout run wrote them, read back into the channels-last run.
    saved = copy.deepcopy(loop.state_dict())
    saved["param_groups"][0]["fused"] = True
    moments = [t for t in saved["state"][0].values() if t.shape == start.shape]
    assert moments and all(t.stride() != fused_weight.stride() for t in moments)
    fused.load_state_dict(saved)
    fused_weight.data.copy_(loop_weight.detach())
    loaded = [t for t in fused.state[fused_weight].values() if t.shape == start.shape]
    assert len(loaded) == len(moments) and all(t.stride() == fused_weight.stride() for t in loaded)
    for _ in range(3):
        step_both(torch.channels_last)  # only the moments differ in layout now
    torch.testing.assert_close(fused_weight.detach(), loop_weight.detach())
