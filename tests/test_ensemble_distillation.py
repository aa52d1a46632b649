"""Checkpoint ensembles and knowledge distillation, on tiny classifiers trained and saved by a real Trainer."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import QUIET, quiet_trainer, read_csv
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

import zoo
from datamodules import DigitsDataModule
from recipes.console import main as zoo_main
from zoo.tasks.sequence import IGNORE_INDEX


class TinyImages(L.LightningDataModule):
    """48 random 1x4x4 images whose class is the brightest of their first ``num_classes`` pixels."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.x = torch.randn(48, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        self.y = self.x.flatten(1)[:, :num_classes].argmax(-1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=16, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=16)


def mlp(num_classes: int = 3, **kwargs) -> zoo.MLP:
    return zoo.MLP(num_classes=num_classes, in_channels=1, img_size=4, **{"hidden_dims": (8,), **kwargs})


def fit(
    model: L.LightningModule, data: L.LightningDataModule, path: Path | None = None, steps: int = 4, **kwargs
) -> L.Trainer:
    """``steps`` optimizer steps of ``model`` on ``data``, saved to ``path`` by the Trainer when given."""
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0, **kwargs)
    trainer.fit(model, datamodule=data)
    if path is not None:
        trainer.save_checkpoint(path)
    return trainer


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Three trained 3-class MLPs (one with BatchNorm and dropout, which must not act in an ensemble) and a 4-class
    one."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for name, model in (
        ("a", mlp()),
        ("b", mlp(hidden_dims=(6, 5), norm="batchnorm", dropout=0.5)),
        ("c", mlp(hidden_dims=(4,))),
        ("four", mlp(num_classes=4)),
    ):
        torch.manual_seed(len(paths))
        paths[name] = folder / f"{name}.ckpt"
        fit(model, TinyImages(model.num_classes), paths[name])
    return paths


# --- ensembles ---------------------------------------------------------------------------------------------------
def test_ensemble_output_is_the_log_of_the_mean_member_probability(checkpoints):
    files = [str(checkpoints[name]) for name in ("a", "b", "c")]
    x = TinyImages().x
    with torch.no_grad():
        probs = torch.stack([zoo.load_from_checkpoint(path)(x).softmax(-1) for path in files])  # (3, B, C)
        ensemble = zoo.CheckpointEnsemble(files).train()  # members stay in eval mode: dropout and BatchNorm off
        torch.testing.assert_close(ensemble(x), probs.mean(0).log(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ensemble(x).softmax(-1), probs.mean(0))
        weighted = zoo.CheckpointEnsemble(files, weights=[2.0, 1.0, 1.0])
        expected = (probs * torch.tensor([0.5, 0.25, 0.25]).view(3, 1, 1)).sum(0)
        torch.testing.assert_close(weighted(x).exp(), expected)
    assert all(not member.training for member in ensemble.members)
    assert not any(param.requires_grad for param in ensemble.parameters())
    assert dict(ensemble.hparams) == {"checkpoints": files, "weights": None}
    assert ensemble.num_classes == 3 and ensemble.preprocessing() == ensemble.members[0].preprocessing()


def test_trainer_test_and_predict_give_the_metrics_of_the_mean_probability(checkpoints):
    files = [str(checkpoints["a"]), str(checkpoints["b"])]
    data = TinyImages()
    with torch.no_grad():
        mean = torch.stack([zoo.load_from_checkpoint(path)(data.x).softmax(-1) for path in files]).mean(0)
    ensemble = zoo.CheckpointEnsemble(files)
    (results,) = quiet_trainer().test(ensemble, datamodule=data, verbose=False)
    assert set(results) == {"test/loss", "test/acc", "test/f1"}  # what one member logs
    assert results["test/acc"] == pytest.approx((mean.argmax(-1) == data.y).float().mean().item(), abs=1e-7)
    assert results["test/loss"] == pytest.approx(F.nll_loss(mean.log(), data.y).item(), rel=1e-5)
    loader = DataLoader(TensorDataset(data.x), batch_size=16)
    predicted = torch.cat(quiet_trainer().predict(ensemble, dataloaders=loader))
    torch.testing.assert_close(predicted, mean)


def test_a_one_member_ensemble_is_the_member(checkpoints):
    path, data = str(checkpoints["b"]), TinyImages()
    member, ensemble = zoo.load_from_checkpoint(path), zoo.CheckpointEnsemble([path])
    with torch.no_grad():
        torch.testing.assert_close(ensemble(data.x), member(data.x).log_softmax(-1))
    (alone,) = quiet_trainer().test(member, datamodule=data, verbose=False)
    (together,) = quiet_trainer().test(ensemble, datamodule=data, verbose=False)
    assert together.keys() == alone.keys() and together["test/acc"] == alone["test/acc"]
    assert together["test/loss"] == pytest.approx(alone["test/loss"], rel=1e-6)


def test_ensemble_refuses_members_that_do_not_fit(checkpoints):
    a, four = str(checkpoints["a"]), str(checkpoints["four"])
    with pytest.raises(ValueError, match="num_classes=4 against 3") as error:
        zoo.CheckpointEnsemble([a, four])
    assert a in str(error.value) and four in str(error.value)
    with pytest.raises(ValueError, match="at least one"):
        zoo.CheckpointEnsemble([])
    with pytest.raises(ValueError, match="2 weights for 1 checkpoints"):
        zoo.CheckpointEnsemble([a], weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="positive finite"):
        zoo.CheckpointEnsemble([a, a], weights=[1.0, math.nan])
    with pytest.raises(ValueError, match="TinyImages has num_classes=4"):
        quiet_trainer().test(zoo.CheckpointEnsemble([a]), datamodule=TinyImages(num_classes=4), verbose=False)


def test_zoo_test_runs_an_ensemble(tmp_path):
    """`zoo test --model CheckpointEnsemble`: LightningCLI builds the ensemble inside its context of hyperparameters,
    which must not reach the members it builds."""
    files = []
    for hidden in (16, 8):
        member = zoo.MLP(num_classes=10, in_channels=1, img_size=8, hidden_dims=(hidden,))
        files.append(tmp_path / f"digits{hidden}.ckpt")
        fit(member, DigitsDataModule(), files[-1], steps=3)
    args = ["test", "--model", "CheckpointEnsemble", "--model.checkpoints", f"[{files[0]}, {files[1]}]"]
    cli = zoo_main([*args, "--data", "Digits", *QUIET])
    assert isinstance(cli.model, zoo.CheckpointEnsemble)
    assert [dict(m.hparams) for m in cli.model.members] == [zoo.read_checkpoint(f)["hyper_parameters"] for f in files]
    (expected,) = quiet_trainer().test(zoo.CheckpointEnsemble(files), datamodule=DigitsDataModule(), verbose=False)
    assert cli.trainer.callback_metrics["test/acc"].item() == expected["test/acc"]


@pytest.fixture(scope="module")
def taggers(tmp_path_factory) -> tuple[list[Path], tuple[torch.Tensor, ...]]:
    """Two trained per-step taggers (``gru_tagger_test``) and the batch of padded sequences they trained on."""
    folder, files = tmp_path_factory.mktemp("taggers"), []
    for seed in range(2):
        torch.manual_seed(seed)
        tagger = zoo.create_model("gru_tagger_test")
        batch = tagger.example_batch(8, torch.Generator().manual_seed(0))  # (x (B, T, F), tags (B, T), lengths (B,))
        files.append(folder / f"tagger{seed}.ckpt")
        fit(tagger, L.LightningDataModule.from_datasets(TensorDataset(*batch), batch_size=8), files[-1], steps=1)
    return files, batch


def test_tagger_ensemble_scores_only_the_valid_steps(taggers):
    files, (x, tags, lengths) = taggers
    ensemble = zoo.CheckpointEnsemble(files)
    with torch.no_grad():
        mean = torch.stack([zoo.load_from_checkpoint(f)(x, lengths).softmax(-1) for f in files]).mean(0)  # (B, T, C)
        output = ensemble.step((x, tags, lengths), 0, "test")
    valid = tags != IGNORE_INDEX
    assert output.size == int(valid.sum()) < tags.numel()
    torch.testing.assert_close(output.loss, F.nll_loss(mean[valid].log(), tags[valid]), rtol=1e-5, atol=1e-6)


# --- distillation ------------------------------------------------------------------------------------------------
def test_distillation_loss_is_hintons(checkpoints):
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    teacher_logits = torch.tensor([[1.0, 0.0, 4.0], [-1.0, 2.0, 0.0]])
    student = mlp(teacher_checkpoint=str(checkpoints["b"]), distill_temperature=2.0, distill_weight=0.25)
    p_teacher, p_student = (teacher_logits / 2).softmax(-1), (logits / 2).softmax(-1)
    kl = (p_teacher * (p_teacher.log() - p_student.log())).sum(-1).mean()
    torch.testing.assert_close(student.distillation_loss(logits, teacher_logits), 4 * kl)
    # The training step: (1 - w) * cross-entropy + w * T^2 * KL, with the teacher of the file.
    x, y = TinyImages().x[:8], TinyImages().y[:8]
    output = student.step((x, y), 0, "train")
    with torch.no_grad():
        teacher_out, student_out = zoo.load_from_checkpoint(str(checkpoints["b"]))(x), student(x)
        p_teacher, p_student = (teacher_out / 2).softmax(-1), (student_out / 2).softmax(-1)
        kl = (p_teacher * (p_teacher.log() - p_student.log())).sum(-1).mean()
        hard = F.cross_entropy(student_out, y)
    torch.testing.assert_close(output.loss, 0.75 * hard + 0.25 * 4 * kl)
    torch.testing.assert_close(output.values["loss_distill"], (4 * kl).expand(8))
    assert student.step((x, y), 0, "val").loss == hard  # evaluation keeps the hard-label loss


def test_tagger_student_distills_on_the_valid_steps_only(taggers):
    (teacher_file, _), (x, tags, lengths) = taggers
    student = zoo.create_model("gru_tagger_test", teacher_checkpoint=str(teacher_file), distill_weight=1.0)
    output = student.step((x, tags, lengths), 0, "train")
    valid = tags != IGNORE_INDEX
    with torch.no_grad():
        teacher_logits = zoo.load_from_checkpoint(teacher_file)(x, lengths)
        expected = student.distillation_loss(student(x, lengths)[valid], teacher_logits[valid])
    torch.testing.assert_close(output.loss, expected)


def test_distill_weight_zero_trains_exactly_as_without_a_teacher(checkpoints, tmp_path):
    runs = {}
    for name, teacher in (("plain", None), ("weight0", str(checkpoints["b"]))):
        torch.manual_seed(7)
        model = mlp(hidden_dims=(5,), teacher_checkpoint=teacher, distill_weight=0.0)
        logger = CSVLogger(tmp_path, name=name)
        fit(model, TinyImages(), steps=6, logger=logger, log_every_n_steps=1)
        runs[name] = model.state_dict(), read_csv(logger.log_dir)
    (plain, plain_log), (distilled, distilled_log) = runs["plain"], runs["weight0"]
    assert plain.keys() == distilled.keys()
    assert all(torch.equal(plain[key], distilled[key]) for key in plain)
    for key in ("train/loss_step", "train/loss", "train/acc"):
        assert distilled_log[key] == plain_log[key], key
    # The epoch's hard-label loss is a mean of the same values as train/loss without a teacher, summed in another order.
    assert distilled_log["train/loss_hard"] == pytest.approx(plain_log["train/loss"], rel=1e-6)
    assert len(plain_log["train/loss"]) == 2  # two epochs of three batches


def test_teacher_is_frozen_not_saved_and_not_needed_to_load_the_student(checkpoints, tmp_path):
    mlp(teacher_checkpoint=str(tmp_path / "missing.ckpt"))  # nothing is read at init
    teacher_file, saved_path = tmp_path / "teacher.ckpt", tmp_path / "student.ckpt"
    teacher_file.write_bytes(checkpoints["b"].read_bytes())
    before = zoo.read_checkpoint(teacher_file)["state_dict"]
    student = mlp(hidden_dims=(5,), teacher_checkpoint=str(teacher_file), distill_weight=0.4)
    logger = CSVLogger(tmp_path, name="student")
    fit(student, TinyImages(), saved_path, logger=logger)
    logged = {key: values[max(values)] for key, values in read_csv(logger.log_dir).items()}
    combined = 0.6 * logged["train/loss_hard"] + 0.4 * logged["train/loss_distill"]
    assert logged["train/loss"] == pytest.approx(combined, rel=1e-6)
    teacher = student.distillation_teacher()
    assert not teacher.training and not any(param.requires_grad for param in teacher.parameters())
    after = teacher.state_dict()  # BatchNorm's running statistics included
    assert before.keys() == after.keys() and all(torch.equal(before[key], after[key]) for key in before)
    # The student's parameters, state_dict and checkpoint are those of a model without a teacher.
    plain_keys = mlp(hidden_dims=(5,)).state_dict().keys()
    saved = zoo.read_checkpoint(saved_path)["state_dict"]
    assert student.state_dict().keys() == saved.keys() == plain_keys
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in mlp(hidden_dims=(5,)).parameters())
    teacher_file.unlink()
    for loaded in (zoo.load_from_checkpoint(saved_path), zoo.MLP.load_from_checkpoint(saved_path)):
        assert loaded.hparams.teacher_checkpoint == str(teacher_file)
        torch.testing.assert_close(loaded(TinyImages().x), student.eval()(TinyImages().x))
    (results,) = quiet_trainer().test(zoo.load_from_checkpoint(saved_path), datamodule=TinyImages(), verbose=False)
    assert "test/acc" in results
    with pytest.raises(FileNotFoundError, match=r"teacher\.ckpt"):  # fitting again needs the teacher
        fit(zoo.load_from_checkpoint(saved_path), TinyImages())


def test_distillation_arguments_are_checked(checkpoints):
    with pytest.raises(ValueError, match="distill_temperature"):
        mlp(distill_temperature=0.0)
    with pytest.raises(ValueError, match="distill_temperature"):
        mlp(distill_temperature=math.nan)
    with pytest.raises(ValueError, match="distill_weight"):
        mlp(distill_weight=1.5)
    with pytest.raises(ValueError, match="empty string"):
        mlp(teacher_checkpoint="")
    four = str(checkpoints["four"])
    with pytest.raises(ValueError, match="num_classes=4") as error:
        mlp(teacher_checkpoint=four).distillation_teacher()
    assert four in str(error.value)
