"""Generated sequence tasks whose answers are known exactly, so what a model learns is checkable.

- :class:`ParityDataModule`: is the number of ones in a variable-length bit string odd? One label per sequence,
  and it depends on every step: a classic hard case for recurrent nets as the strings grow.
- :class:`LocalExtremaDataModule`: tag each token of a variable-length sequence as a local maximum, a local
  minimum or neither. Each tag depends on both neighbours, so a unidirectional tagger cannot be exact; a
  bidirectional one can.

The data is drawn from ``seed`` (the test split from ``seed + 1``), so every run sees the same sequences.
"""

from __future__ import annotations

import torch

from datamodules.sequence import SequenceDataModule


def _random_lengths(n: int, low: int, high: int, generator: torch.Generator) -> list[int]:
    return torch.randint(low, high + 1, (n,), generator=generator).tolist()


class _GeneratedSequences(SequenceDataModule):
    """Shared arguments of the generated tasks."""

    def __init__(
        self,
        num_train: int,
        num_test: int,
        min_length: int,
        max_length: int,
        batch_size: int,
        val_fraction: float,
        seed: int,
        data_dir: str,
    ) -> None:
        if not 1 <= min_length <= max_length:
            raise ValueError(f"need 1 <= min_length <= max_length, got {min_length} and {max_length}")
        if num_train < 1 or num_test < 1:
            raise ValueError(f"num_train and num_test must be positive, got {num_train} and {num_test}")
        super().__init__(data_dir, batch_size, val_fraction, "random", 0, None, seed)
        self.num_train, self.num_test, self.min_length, self.max_length = num_train, num_test, min_length, max_length

    def _generator(self, train: bool) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + (0 if train else 1))

    def _lengths(self, train: bool, generator: torch.Generator) -> list[int]:
        return _random_lengths(self.num_train if train else self.num_test, self.min_length, self.max_length, generator)


class ParityDataModule(_GeneratedSequences):
    """Bit strings of ``min_length`` to ``max_length`` bits (tokens 0 and 1); the label is their parity.

    Args:
        num_train: training strings (split into train/val).
        num_test: test strings.
        min_length: shortest string.
        max_length: longest string.
        batch_size: strings per batch.
        val_fraction: fraction of the training strings held out for validation.
        seed: seed of the strings and the split.
        data_dir: unused (the data is generated).

    >>> data = ParityDataModule(num_train=4, num_test=2, max_length=5)
    >>> bits, labels = data.load_sequences(train=True)
    >>> all(int(b.sum()) % 2 == int(y) for b, y in zip(bits, labels))
    True
    """

    num_classes = 2
    vocab_size = 2

    def __init__(
        self,
        num_train: int = 20_000,
        num_test: int = 2_000,
        min_length: int = 1,
        max_length: int = 32,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: int = 42,
        data_dir: str = "data",
    ) -> None:
        super().__init__(num_train, num_test, min_length, max_length, batch_size, val_fraction, seed, data_dir)

    def load_sequences(self, train: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        generator = self._generator(train)
        bits = [torch.randint(0, 2, (n,), generator=generator) for n in self._lengths(train, generator)]
        return bits, torch.stack([b.sum() % 2 for b in bits])


def local_extrema_tags(tokens: torch.Tensor) -> torch.Tensor:
    """Tag 1 where a token is above each neighbour, 2 where below each, 0 otherwise (ties, flat steps).

    >>> local_extrema_tags(torch.tensor([1, 3, 2, 2, 0, 5])).tolist()
    [2, 1, 0, 0, 2, 1]
    """
    padded = torch.cat([tokens[1:2], tokens, tokens[-2:-1]])  # an edge has one neighbour: compare with it twice
    left, right = padded[:-2], padded[2:]
    above = (tokens > left) & (tokens > right) if len(tokens) > 1 else torch.zeros_like(tokens, dtype=torch.bool)
    below = (tokens < left) & (tokens < right) if len(tokens) > 1 else torch.zeros_like(tokens, dtype=torch.bool)
    return above.long() + 2 * below.long()


class LocalExtremaDataModule(_GeneratedSequences):
    """Token sequences of ``min_length`` to ``max_length`` ids below ``vocab_size``; a tag per token
    (:func:`local_extrema_tags`: 0 neither, 1 local maximum, 2 local minimum).

    Args:
        vocab_size: number of token ids.
        num_train: training sequences (split into train/val).
        num_test: test sequences.
        min_length: shortest sequence.
        max_length: longest sequence.
        batch_size: sequences per batch.
        val_fraction: fraction of the training sequences held out for validation.
        seed: seed of the sequences and the split.
        data_dir: unused (the data is generated).
    """

    num_classes = 3

    def __init__(
        self,
        vocab_size: int = 16,
        num_train: int = 10_000,
        num_test: int = 1_000,
        min_length: int = 2,
        max_length: int = 64,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: int = 42,
        data_dir: str = "data",
    ) -> None:
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
        super().__init__(num_train, num_test, min_length, max_length, batch_size, val_fraction, seed, data_dir)
        self.vocab_size = vocab_size

    def load_sequences(self, train: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        generator = self._generator(train)
        vocab = self.vocab_size
        tokens = [torch.randint(0, vocab, (n,), generator=generator) for n in self._lengths(train, generator)]
        return tokens, [local_extrema_tags(t) for t in tokens]
