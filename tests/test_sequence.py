"""The recurrent family, the sequence task bases and the sequence datamodules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import quiet_trainer

import zoo
from datamodules import (
    IGNORE_INDEX,
    DigitsDataModule,
    DigitsSequenceDataModule,
    LocalExtremaDataModule,
    ParityDataModule,
    SequenceDataModule,
    SequenceDataset,
    SequentialMNISTDataModule,
    pad_collate,
)
from datamodules.sequence import split_positions
from datamodules.synthetic import local_extrema_tags
from zoo.layers import SequencePooling


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_batch_equals_each_sequence_alone(cell, bidirectional):
    torch.manual_seed(0)
    encoder = zoo.RNNEncoder(cell, in_features=3, hidden_size=8, num_layers=2, bidirectional=bidirectional).eval()
    lengths = torch.tensor([6, 2, 4])
    sequences = [torch.randn(n, 3) for n in lengths]
    batch = pad_collate([(s, torch.tensor(0)) for s in sequences])
    batch.inputs[1, 2:] = 99.0  # whatever the padding holds
    states, last = encoder(batch.inputs, batch.lengths)
    for index, sequence in enumerate(sequences):
        alone_states, alone_last = encoder(sequence.unsqueeze(0))
        n = len(sequence)
        torch.testing.assert_close(states[index, :n], alone_states[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(last[index], alone_last[0], atol=1e-6, rtol=1e-5)
        assert (states[index, n:] == 0).all()


def test_recurrent_init_orthogonal_per_gate_and_forget_bias_one():
    encoder = zoo.RNNEncoder("lstm", in_features=5, hidden_size=6)
    weight_hh = encoder.rnn.weight_hh_l0.detach()  # (4 * H, H): gates i, f, g, o
    for gate in weight_hh.split(6):
        torch.testing.assert_close(gate @ gate.T, torch.eye(6), atol=1e-5, rtol=0)
    bias = encoder.rnn.bias_ih_l0.detach() + encoder.rnn.bias_hh_l0.detach()
    assert (bias[6:12] == 1).all() and (bias[:6] == 0).all() and (bias[12:] == 0).all()


@pytest.mark.parametrize("mode", ["last", "mean", "max", "attention"])
def test_pooling_ignores_padded_steps(mode):
    torch.manual_seed(0)
    pool = SequencePooling(mode, dim=4)
    states, lengths = torch.randn(2, 5, 4), torch.tensor([5, 3])
    noisy = states.clone()
    noisy[1, 3:] = 1e4
    torch.testing.assert_close(pool(states, lengths), pool(noisy, lengths))
    expected = {"last": states[1, 2], "mean": states[1, :3].mean(0), "max": states[1, :3].amax(0)}
    if mode in expected:
        torch.testing.assert_close(pool(states, lengths)[1], expected[mode])


def test_tagger_metrics_and_loss_count_valid_steps_only():
    """val/acc and val/loss equal an independent computation over the valid steps of the split."""
    torch.manual_seed(0)
    data = LocalExtremaDataModule(num_train=200, num_test=20, max_length=12, batch_size=32, val_fraction=0.5)
    model = zoo.RNNTagger(num_classes=3, vocab_size=16, max_length=12, hidden_size=8)
    trainer = quiet_trainer()
    metrics = trainer.validate(model, data, verbose=False)[0]
    batch = pad_collate([data.datasets["val"][i] for i in range(len(data.datasets["val"]))])
    with torch.no_grad():
        logits = model(batch.inputs, batch.lengths)
    valid = batch.targets != IGNORE_INDEX
    assert int(valid.sum()) == int(batch.lengths.sum())
    accuracy = (logits.argmax(-1)[valid] == batch.targets[valid]).float().mean()
    assert metrics["val/acc"] == pytest.approx(accuracy.item(), abs=1e-6)
    # each batch's loss is weighted by its valid steps, so the epoch's value is the mean over every valid step
    assert metrics["val/loss"] == pytest.approx(F.cross_entropy(logits[valid], batch.targets[valid]).item(), rel=1e-5)


def test_classifier_trains_on_variable_length_batches_in_a_trainer():
    data = ParityDataModule(num_train=256, num_test=64, max_length=6, batch_size=32)
    model = zoo.create_model("gru_parity", max_length=6, lr=1e-2)
    trainer = quiet_trainer(max_epochs=12)
    trainer.fit(model, data)
    assert trainer.test(model, data, verbose=False)[0]["test/acc"] > 0.9  # parity of up to 6 bits is learnable


def test_bad_sequence_inputs_name_what_is_expected():
    tokens = zoo.create_model("gru_parity")  # vocab 2, max_length 64
    with pytest.raises(ValueError, match=r"token ids of shape \(B, T\) and dtype torch\.long, got torch\.float32"):
        tokens(torch.rand(2, 5))
    with pytest.raises(ValueError, match=r"vocab_size=2: token ids must be in \[0, 1\], got values in \[0, 3\]"):
        tokens(torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="at most max_length=64 steps, got T=65"):
        tokens(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match=r"empty sequences at batch positions \[1\]"):
        tokens(torch.zeros(2, 4, dtype=torch.long), torch.tensor([4, 0]))
    with pytest.raises(ValueError, match="empty sequences"):
        tokens(torch.zeros(2, 0, dtype=torch.long))
    series = zoo.create_model("lstm_smnist")
    with pytest.raises(ValueError, match=r"float features of shape \(B, T, 28\)"):
        series(torch.randn(2, 28, 27))
    with pytest.raises(ValueError, match=r"num_classes=10: targets must be in \[0, 9\], got values in \[0, 12\]"):
        series.batch_loss((torch.randn(2, 28, 28), torch.tensor([0, 12])))


def test_sequence_dataset_checks_every_sequence_once():
    with pytest.raises(ValueError, match=r"toy\[1\]: empty sequence"):
        SequenceDataset([torch.tensor([1]), torch.tensor([], dtype=torch.long)], [0, 1], 2, vocab_size=4, name="toy")
    with pytest.raises(ValueError, match=r"toy\[0\]: 5 steps, more than max_length=4"):
        SequenceDataset([torch.zeros(5, dtype=torch.long)], [0], 2, vocab_size=4, max_length=4, name="toy")
    with pytest.raises(ValueError, match=r"token ids must be integers \(torch\.long\), got torch\.float32"):
        SequenceDataset([torch.zeros(3)], [0], 2, vocab_size=4, name="toy")
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 1\] \(num_classes=2\), got values in"):
        SequenceDataset([torch.zeros(3, dtype=torch.long)], torch.tensor([2]), 2, vocab_size=4, name="toy")
    with pytest.raises(ValueError, match="float features with 3 per step"):
        SequenceDataset(torch.zeros(4, 5, 2), torch.zeros(4, dtype=torch.long), 2, in_features=3, name="toy")


def test_pad_collate_pads_inputs_with_zero_and_tags_with_ignore_index():
    batch = pad_collate([(torch.tensor([3, 4]), torch.tensor([1, 2])), (torch.tensor([5]), torch.tensor([0]))])
    assert batch.inputs.tolist() == [[3, 4], [5, 0]] and batch.lengths.tolist() == [2, 1]
    assert batch.targets.tolist() == [[1, 2], [0, IGNORE_INDEX]]


def test_chronological_split_validates_on_the_last_part_only():
    train, val = split_positions(10, 0.3, seed=0, split="chronological")
    assert train.tolist() == list(range(7)) and val.tolist() == [7, 8, 9]
    random_train, random_val = split_positions(10, 0.3, seed=0, split="random")
    assert sorted(random_train.tolist() + random_val.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="chronological"):
        SequenceDataModule(split="by_date")


@pytest.mark.parametrize(("mode", "permute"), [("rows", False), ("pixels", False), ("pixels", True)])
def test_sequential_mnist_reads_idx_files(mnist_dir, mode, permute):
    from conftest import make_mnist

    arrays = make_mnist(mnist_dir)  # the same files, rewritten: their arrays
    data = SequentialMNISTDataModule(str(mnist_dir), mode=mode, permute=permute, batch_size=16, download=False)
    data.prepare_data()
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    images, labels = arrays["t10k"]
    steps, features = (28, 28) if mode == "rows" else (784, 1)
    assert batch.inputs.shape == (16, steps, features) and (data.max_length, data.in_features) == (steps, features)
    assert batch.targets.tolist() == labels[:16].tolist() and (batch.lengths == steps).all()
    expected = (torch.from_numpy(images[:16]).float() / 255 - 0.1307) / 0.3081
    flat = batch.inputs.reshape(16, -1)
    if permute:  # the same pixels in one fixed order for every image
        order = torch.randperm(784, generator=torch.Generator().manual_seed(42))
        torch.testing.assert_close(flat, expected.flatten(1)[:, order])
    else:
        torch.testing.assert_close(flat, expected.flatten(1))


def test_sequential_mnist_missing_files_are_named(tmp_path):
    data = SequentialMNISTDataModule(str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz.*MNIST/raw"):
        data.prepare_data()


def test_digits_as_sequences_are_embedded_and_split():
    data = DigitsSequenceDataModule()
    data.setup()
    sizes = {split: len(dataset) for split, dataset in data.datasets.items()}
    assert sum(sizes.values()) == 1797 and sizes["test"] == round(1797 * 0.2)
    x, y = data.datasets["train"][0]
    assert x.shape == (8, 8) and 0 <= int(y) < 10
    images, labels = DigitsDataModule().load_arrays(train=False)  # the same test split, as images
    pixels = DigitsSequenceDataModule(mode="pixels")
    pixels.setup("test")
    expected = (images.float() / 255 - DigitsDataModule.mean[0]) / DigitsDataModule.std[0]
    torch.testing.assert_close(pixels.datasets["test"].sequences, expected.flatten(1).unsqueeze(-1))
    assert (pixels.max_length, pixels.in_features) == (64, 1) and torch.equal(pixels.datasets["test"].targets, labels)


def test_generated_tasks_have_exact_answers():
    parity = ParityDataModule(num_train=50, num_test=10, min_length=3, max_length=9)
    bits, labels = parity.load_sequences(train=True)
    assert all(3 <= len(b) <= 9 and int(b.sum()) % 2 == int(y) for b, y in zip(bits, labels, strict=True))
    test_bits, _ = parity.load_sequences(train=False)
    assert not any(torch.equal(a, b) for a, b in zip(bits, test_bits, strict=False) if len(a) == len(b) > 8)
    assert local_extrema_tags(torch.tensor([2, 2, 5, 1, 1, 0, 3])).tolist() == [0, 0, 1, 0, 0, 2, 1]
    extrema = LocalExtremaDataModule(num_train=20, num_test=5)
    tokens, tags = extrema.load_sequences(train=True)
    assert all(torch.equal(local_extrema_tags(t), g) for t, g in zip(tokens, tags, strict=True))
    with pytest.raises(ValueError, match="min_length <= max_length"):
        ParityDataModule(min_length=5, max_length=4)
