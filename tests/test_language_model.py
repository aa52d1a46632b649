"""Character language modelling: the text datamodule, the task's loss and metrics, generation, the KV cache, the
recipes and sampling from a checkpoint with no data present."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import QUIET, quiet_trainer

import zoo
from datamodules import CharTextDataModule
from datamodules.text import IGNORE_INDEX, resolve_path
from recipes import shakespeare_char_gpt, shakespeare_char_lstm
from recipes.tools import predict

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40
SHAKESPEARE = Path(resolve_path("../shared/data/tinyshakespeare/input.txt"))


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_text_datamodule_splits_by_position_and_shifts_targets(text_file):
    data = CharTextDataModule(str(text_file), block_size=16, batch_size=4, batches_per_epoch=3, val_fraction=0.1)
    assert data.vocab == "".join(sorted(set(TEXT))) and data.vocab_size == len(set(TEXT))
    data.setup("fit")
    ids = data.encode(TEXT)
    n_val = round(len(ids) * 0.1)
    parts = data.split_ids()
    assert torch.equal(parts["train"], ids[: len(ids) - n_val]) and torch.equal(parts["val"], ids[-n_val:])
    assert torch.equal(parts["test"], parts["val"])  # test_fraction=0: nanoGPT's 90/10 split
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == y.shape == (4, 16) and len(data.train_dataloader()) == 3
    # Every target is the character after its input; training windows never leave the training text.
    train_text = parts["train"]
    for row_x, row_y in zip(x, y, strict=True):
        start = next(s for s in range(len(train_text) - 16) if torch.equal(train_text[s : s + 16], row_x))
        assert torch.equal(train_text[start + 1 : start + 17], row_y)
    # Validation covers each target of its text once; the last window is padded with ignored targets.
    targets = torch.cat([batch[1] for batch in data.val_dataloader()])
    counted = targets[targets != IGNORE_INDEX]
    assert torch.equal(counted, parts["val"][1:])


def test_missing_or_empty_text_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nothing.txt"
    with pytest.raises(FileNotFoundError, match=rf"No text file at {missing}\. Put a UTF-8 text file there"):
        _ = CharTextDataModule(str(missing)).vocab
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=rf"{empty} is empty\. Put a UTF-8 text file there"):
        CharTextDataModule(str(empty)).setup("fit")
    with pytest.raises(ValueError, match="too few"):
        short = tmp_path / "short.txt"
        short.write_text("abc")
        CharTextDataModule(str(short), block_size=8).setup("fit")


def test_loss_ignores_padded_targets_and_metrics_follow_the_loss(text_file):
    model = zoo.create_model("gpt_test").eval()
    x = torch.randint(0, 16, (2, 8))
    y = torch.randint(0, 16, (2, 8))
    padded = y.clone()
    padded[1, 5:] = IGNORE_INDEX
    logits = model(x)
    expected = torch.cat(
        [F.cross_entropy(logits[0], y[0], reduction="none"), F.cross_entropy(logits[1, :5], y[1, :5], reduction="none")]
    ).mean()
    torch.testing.assert_close(model.batch_loss((x, padded)), expected)

    data = CharTextDataModule(str(text_file), block_size=16, batch_size=8)
    gpt = zoo.GPT(vocab=data.vocab, block_size=16, n_layer=1, n_head=2, n_embd=16)
    trainer = quiet_trainer()
    (metrics,) = trainer.validate(gpt, data)
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-5)
    assert metrics["val/bpc"] == pytest.approx(metrics["val/loss"] / math.log(2), rel=1e-5)
    assert metrics["val/loss"] == pytest.approx(math.log(data.vocab_size), rel=0.05)  # untrained: near uniform


def test_prompt_outside_the_vocabulary_lists_the_characters():
    model = zoo.GPT(vocab="abc ", block_size=8, n_layer=1, n_head=2, n_embd=16)
    with pytest.raises(ValueError, match=r"characters \['X', 'z'\] are not in the model's vocabulary"):
        model.generate("abzX", max_new_tokens=3)
    with pytest.raises(ValueError, match="empty"):
        model.generate("", max_new_tokens=3)
    text = model.generate("ab", max_new_tokens=20, top_k=1)
    assert len(text) == 22 and text.startswith("ab") and set(text) <= set("abc ")


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_kv_cache_generation_equals_rerunning_the_full_sequence(position):
    torch.manual_seed(0)
    model = zoo.create_model("gpt_test", position=position).eval()  # block_size 16
    prompt = torch.randint(0, 16, (2, 5))
    # Cached logits of each new token equal the full forward over the whole sequence.
    ids, state, cached = prompt, None, []
    for _ in range(8):
        logits, state = model.next_token_logits(ids, state)
        cached.append(logits)
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    full = model(ids[:, :-1])[:, 4:]
    torch.testing.assert_close(torch.stack(cached, dim=1), full, atol=1e-5, rtol=0)
    # Greedy generation is the same with and without the cache, also past block_size (the context is cropped).
    with_cache = model.generate(prompt, max_new_tokens=20, temperature=0)
    plain = prompt
    for _ in range(20):
        plain = torch.cat([plain, model(plain[:, -16:])[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(with_cache, plain)


def test_sampling_obeys_top_k_and_temperature():
    torch.manual_seed(0)
    model = zoo.create_model("gpt_test").eval()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    allowed = set(model(prompt)[0, -1].topk(2).indices.tolist())
    draws = {
        int(model.generate(prompt, 1, top_k=2, generator=torch.Generator().manual_seed(s))[0, 1]) for s in range(30)
    }
    assert draws <= allowed
    greedy = model.generate(prompt, 6, temperature=0)
    assert torch.equal(greedy, model.generate(prompt, 6, temperature=0))


def test_warmup_and_decay_are_counted_in_steps(text_file):
    seen = []

    class RecordLR(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    data = CharTextDataModule(str(text_file), block_size=8, batch_size=2, batches_per_epoch=7)
    model = zoo.GPT(
        vocab=data.vocab, block_size=8, n_layer=1, n_head=2, n_embd=16, lr=1e-2, warmup_steps=5, min_lr_ratio=0.1
    )
    trainer = L.Trainer(
        max_steps=20,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=[RecordLR()],
    )
    trainer.fit(model, data)
    assert len(seen) == 20  # three "epochs" of 7 batches, cut at 20 steps
    assert seen[0] == pytest.approx(2e-3) and seen[4] == pytest.approx(1e-2)  # (step + 1) / 5 of the peak
    assert seen[5] > seen[10] > seen[19] >= 1e-3  # cosine decay over the 20 steps to 10%


def test_checkpoint_generates_with_no_data(text_file, tmp_path):
    data = CharTextDataModule(str(text_file), block_size=16)
    model = zoo.GPT(vocab=data.vocab, block_size=16, n_layer=1, n_head=2, n_embd=16)
    trainer = quiet_trainer(max_epochs=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "lm.ckpt")
    text_file.unlink()
    restored = zoo.GPT.load_from_checkpoint(tmp_path / "lm.ckpt", weights_only=True)
    assert restored.vocab == model.vocab
    first = restored.generate("Speak", 30, generator=torch.Generator().manual_seed(3))
    assert first == model.generate("Speak", 30, generator=torch.Generator().manual_seed(3)) and len(first) == 35


@pytest.mark.parametrize(
    ("recipe", "model_class"), [(shakespeare_char_gpt, zoo.GPT), (shakespeare_char_lstm, zoo.LSTMLanguageModel)]
)
def test_language_model_recipes_fast_dev_run(recipe, model_class, text_file):
    cli = recipe.main(["fit", "--trainer.fast_dev_run=2", f"--data.init_args.path={text_file}", *QUIET])
    assert isinstance(cli.model, model_class) and cli.model.vocab == cli.datamodule.vocab
    assert cli.model.block_size == cli.datamodule.block_size == 64
    assert cli.config.fit.trainer.max_steps == 4000 and cli.trainer.gradient_clip_val == 1.0
    # The default callbacks follow the task's metric: best checkpoint and early stopping on val/loss, lowest.
    assert (cli.trainer.checkpoint_callback.monitor, cli.trainer.checkpoint_callback.mode) == ("val/loss", "min")
    assert (cli.trainer.early_stopping_callback.monitor, cli.trainer.early_stopping_callback.mode) == (
        "val/loss",
        "min",
    )
    assert {"test/loss", "test/ppl", "test/bpc"} <= set(cli.trainer.callback_metrics)  # tested after fit


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} is not there")
def test_gpt_recipe_reads_tiny_shakespeare_by_default():
    cli = shakespeare_char_gpt.main(["fit", "--trainer.fast_dev_run=1", *QUIET])
    assert cli.model.vocab_size == 65 and cli.model.vocab.startswith("\n !")


def test_predict_text_continues_a_checkpoint_with_no_data(text_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--trainer.max_steps=2", "--data.init_args.batches_per_epoch=2", "--trainer.limit_val_batches=2"]
    cli = shakespeare_char_gpt.main(
        ["fit", f"--data.init_args.path={text_file}", "--test_after_fit=false", *args, *QUIET]
    )
    last = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    text_file.unlink()
    capsys.readouterr()
    args = ["--ckpt_path", str(last), "--text", "Speak", "--max_new_tokens", "25", "--sample_top_k", "5"]
    (answer,) = predict.main(args)
    text = answer["output"]
    assert capsys.readouterr().out == text + "\n" and text.startswith("Speak") and len(text) == 30
    with pytest.raises(SystemExit, match=r"characters \['#'\] are not in the model's vocabulary"):
        predict.main(["--ckpt_path", str(last), "--text", "Speak#"])
