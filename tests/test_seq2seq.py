"""Seq2seq: generated tasks with exact answers, teacher forcing, greedy and beam decoding, metrics and recipes."""

from __future__ import annotations

import pytest
import torch
from conftest import QUIET, quiet_trainer

import zoo
from datamodules import Seq2SeqDataModule
from datamodules.seq2seq import EOS, NUM_SPECIAL, PAD, answer
from recipes import seq2seq_reverse, seq2seq_reverse_lstm
from zoo.tasks import seq2seq as task


def test_token_conventions_agree_between_data_and_task():
    assert (PAD, EOS, NUM_SPECIAL) == (task.PAD, task.EOS, task.NUM_SPECIAL)


@pytest.mark.parametrize("name", ["reverse", "sort", "addition"])
def test_generated_pairs_have_exact_answers_and_held_out_splits(name):
    data = Seq2SeqDataModule(name, min_length=1, max_length=5, num_train=400, num_val=100, num_test=100)
    data.setup("fit")
    splits = {split: [source for source, _ in data.datasets[split].pairs] for split in ("train", "val", "test")}
    assert not set(splits["val"]) & set(splits["train"])
    assert not set(splits["test"]) & (set(splits["train"]) | set(splits["val"]))
    for source, target in data.datasets["train"].pairs:
        assert target == answer(name, source)
        if name == "addition":
            left, right = source.split("+")
            assert (int(target) == int(left) + int(right) and not left.startswith("0")) or left == "0"
    assert data.max_length == (11 if name == "addition" else 5)
    assert data.vocab == ("0123456789+" if name == "addition" else "0123456789")
    src, tgt, lengths = next(iter(data.val_dataloader()))
    for row in range(len(src)):
        source = "".join(data.vocab[i - NUM_SPECIAL] for i in src[row, : lengths[row]].tolist())
        assert (src[row, lengths[row] :] == PAD).all()
        written = tgt[row].tolist()
        end = written.index(EOS)
        assert "".join(data.vocab[i - NUM_SPECIAL] for i in written[:end]) == answer(name, source)
        assert all(i == PAD for i in written[end + 1 :])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown task 'copy'"):
        Seq2SeqDataModule("copy")
    with pytest.raises(ValueError, match="min_length <= max_length"):
        Seq2SeqDataModule(min_length=4, max_length=2)
    with pytest.raises(ValueError, match="cannot draw 500 distinct"):
        Seq2SeqDataModule(max_length=2, num_train=500).setup("fit")
    model = zoo.create_model("seq2seq_transformer_test")
    with pytest.raises(ValueError, match=r"characters \['x'\] are not in the model's vocabulary"):
        model.generate("12x")


@pytest.mark.parametrize("name", ["seq2seq_transformer_test", "lstm_seq2seq_test"])
def test_padding_never_changes_an_answer(name):
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    src, tgt, lengths = model.example_batch(4, torch.Generator().manual_seed(0))
    tgt_in = model.decoder_inputs(tgt)
    batched = model(src, lengths, tgt_in)
    for row in range(4):
        alone = model(src[row : row + 1, : lengths[row]], None, tgt_in[row : row + 1])
        torch.testing.assert_close(batched[row : row + 1], alone, atol=1e-5, rtol=0)
    garbage = src.clone()
    garbage[src == PAD] = NUM_SPECIAL + 1
    torch.testing.assert_close(model(garbage, lengths, tgt_in), batched, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["seq2seq_transformer_test", "lstm_seq2seq_test"])
def test_beam_search_finds_answers_at_least_as_likely_as_greedy(name):
    torch.manual_seed(0)
    model = zoo.create_model(name).eval()
    src, _, lengths = model.example_batch(6, torch.Generator().manual_seed(2))
    greedy = model.generate(src, lengths)
    assert torch.equal(model.generate(src, lengths, method="beam", beam_size=1), greedy)
    beam = model.generate(src, lengths, method="beam", beam_size=4)
    width = max(greedy.shape[1], beam.shape[1])

    def log_prob(answers: torch.Tensor) -> torch.Tensor:
        answers = torch.nn.functional.pad(answers, (0, width - answers.shape[1]), value=PAD)
        return model.sequence_log_prob(src, lengths, answers)

    assert (log_prob(beam) >= log_prob(greedy) - 1e-5).all()
    for row in greedy.tolist():  # every answer ends with EOS (or runs to the limit) and is PAD after it
        if EOS in row:
            assert all(i == PAD for i in row[row.index(EOS) + 1 :])


def test_teacher_forcing_ratio_feeds_own_predictions_in_training_only():
    torch.manual_seed(0)
    forced = zoo.create_model("lstm_seq2seq_test", teacher_forcing_ratio=1.0)
    sampled = zoo.create_model("lstm_seq2seq_test", teacher_forcing_ratio=0.0)
    sampled.load_state_dict(forced.state_dict())
    src, tgt, lengths = forced.example_batch(8, torch.Generator().manual_seed(0))
    tgt_in = forced.decoder_inputs(tgt)
    assert not torch.allclose(forced(src, lengths, tgt_in), sampled(src, lengths, tgt_in))
    forced.eval(), sampled.eval()
    torch.testing.assert_close(forced(src, lengths, tgt_in), sampled(src, lengths, tgt_in))
    # With ratio 0 the decoder reads only its own guesses: the gold inputs after BOS change nothing.
    sampled.train()
    other = tgt_in.clone()
    other[:, 1:] = NUM_SPECIAL
    torch.testing.assert_close(sampled(src, lengths, tgt_in), sampled(src, lengths, other))
    with pytest.raises(ValueError, match="teacher_forcing_ratio"):
        zoo.LSTMSeq2Seq(teacher_forcing_ratio=1.5)


def test_metrics_of_a_perfect_and_a_wrong_decoder(monkeypatch):
    data = Seq2SeqDataModule("reverse", max_length=6, num_train=200, num_val=64, num_test=64, batch_size=32)
    model = zoo.Seq2SeqTransformer(vocab=data.vocab, max_length=6, embed_dim=16, num_heads=2)
    data.setup("fit")
    answers = {}
    for src, tgt, _ in data.val_dataloader():
        answers[tuple(src.flatten().tolist())] = tgt

    def oracle(src, src_lengths=None, method="greedy", beam_size=None, max_new_tokens=None):
        return answers[tuple(src.flatten().tolist())]

    monkeypatch.setattr(model, "generate", oracle)
    trainer = quiet_trainer()
    (perfect,) = trainer.validate(model, data)
    assert perfect["val/exact_match"] == 1.0 and perfect["val/bleu"] == pytest.approx(1.0)
    monkeypatch.setattr(model, "generate", lambda src, *args, **kwargs: torch.full_like(src[:, :1], EOS))
    (empty,) = trainer.validate(model, data)
    assert empty["val/exact_match"] == 0.0 and empty["val/bleu"] == 0.0
    assert 0 <= empty["val/token_acc"] <= 1


@pytest.mark.parametrize(
    ("recipe", "model_class"), [(seq2seq_reverse, zoo.Seq2SeqTransformer), (seq2seq_reverse_lstm, zoo.LSTMSeq2Seq)]
)
def test_seq2seq_recipes_run_with_no_argument(recipe, model_class):
    cli = recipe.main(["fit", "--trainer.fast_dev_run=2", *QUIET])
    assert isinstance(cli.model, model_class) and cli.model.vocab == cli.datamodule.vocab
    assert cli.model.max_length == cli.datamodule.max_length == 12
    checkpoint = cli.trainer.checkpoint_callback
    assert (checkpoint.monitor, checkpoint.mode) == ("val/exact_match", "max")
    assert {"test/token_acc", "test/bleu", "test/exact_match"} <= set(cli.trainer.callback_metrics)  # after fit


def test_trained_model_answers_text_after_a_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    data = Seq2SeqDataModule("reverse", min_length=2, max_length=4, num_train=2000, num_val=64, num_test=64)
    model = zoo.LSTMSeq2Seq(vocab=data.vocab, max_length=4, embed_dim=16, hidden_size=32, lr=1e-2)
    trainer = quiet_trainer(max_epochs=4)
    trainer.fit(model, data)
    assert trainer.callback_metrics["val/exact_match"] > 0.9
    trainer.save_checkpoint(tmp_path / "s2s.ckpt")
    restored = zoo.LSTMSeq2Seq.load_from_checkpoint(tmp_path / "s2s.ckpt", weights_only=True).eval()
    held_out = [source for source, _ in data.datasets["val"].pairs[:8]]
    answers = [restored.generate(source) for source in held_out]
    assert sum(a == s[::-1] for a, s in zip(answers, held_out, strict=True)) >= 7
    assert restored.generate(held_out[0], method="beam", beam_size=3) == answers[0]
