"""Generated signals whose answers are known exactly: a sine or a cosine, and noisy sums of sinusoids.

- :class:`SineCosineDataModule`: is a noisy window a sine or a cosine? One label per fixed-length window.
- :class:`NoisySinesDataModule`: smooth signals (sums of sinusoids) plus Gaussian noise in, the clean value of every
  step out: a sequence denoising (per-step regression) task, with variable lengths.

The data is drawn from ``seed`` at construction, so every run sees the same windows and the statistics a model
takes from the data are there before ``setup``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.base import SavesPreprocessing, SplitLoaders, check_batch_and_split, make_loader
from datamodules.sequence import SequenceBatch, SequenceDataModule

SPLITS = ("train", "val", "test")


class SineCosineDataModule(SequenceDataModule):
    """Windows of ``A sin(2 pi f t + phi)`` (class 0) or ``A cos(2 pi f t + phi)`` (class 1) plus Gaussian noise.

    Every window starts at ``t = 0`` (steps ``t = 0 .. length - 1``), with a random frequency ``f`` (cycles per
    step), amplitude ``A`` and a small phase offset ``|phi| <= max_phase``. The fixed time origin is what makes the
    task well posed: ``sin(x) = cos(x - pi / 2)``, so with an arbitrary phase a sine *is* a shifted cosine and no
    classifier could tell them apart. With ``max_phase < pi / 4`` the two classes' phases stay at least
    ``pi / 2 - 2 max_phase`` apart: a clean sine starts within ``A sin(max_phase)`` of 0 and rises, a clean cosine
    starts within ``A (1 - cos(max_phase))`` of its peak ``A``. Labels are drawn at random (balanced on average).

    Args:
        num_train: training windows (split into train/val).
        num_test: test windows.
        length: steps per window.
        min_frequency: lowest frequency, in cycles per step.
        max_frequency: highest frequency, in cycles per step (below 0.5, the Nyquist limit of one sample a step).
        min_amplitude: smallest amplitude ``A``.
        max_amplitude: largest amplitude ``A``.
        max_phase: largest phase offset in radians; must be below ``pi / 4``.
        noise_std: standard deviation of the Gaussian noise added to every step.
        batch_size: windows per batch.
        val_fraction: fraction of the training windows held out for validation.
        seed: seed of the windows (the test split uses ``seed + 1``) and of the split.
        data_dir: unused (the data is generated).

    >>> data = SineCosineDataModule(num_train=6, num_test=2, noise_std=0.0, max_phase=0.0)
    >>> windows, labels = data.load_sequences(train=True)
    >>> tuple(windows.shape), (windows[:, 0, 0] > 0.4).long().tolist() == labels.tolist()  # a cosine starts at A
    ((6, 64, 1), True)
    """

    num_classes = 2
    in_features = 1

    def __init__(
        self,
        num_train: int = 10_000,
        num_test: int = 2_000,
        length: int = 64,
        min_frequency: float = 0.02,
        max_frequency: float = 0.1,
        min_amplitude: float = 0.5,
        max_amplitude: float = 2.0,
        max_phase: float = 0.3,
        noise_std: float = 0.3,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: int = 42,
        data_dir: str = "data",
    ) -> None:
        if num_train < 1 or num_test < 1 or length < 2:
            raise ValueError(f"need num_train, num_test >= 1 and length >= 2, got {num_train}, {num_test}, {length}")
        if not 0 < min_frequency <= max_frequency < 0.5:
            raise ValueError(f"need 0 < min_frequency <= max_frequency < 0.5, got {min_frequency}, {max_frequency}")
        if not 0 < min_amplitude <= max_amplitude:
            raise ValueError(f"need 0 < min_amplitude <= max_amplitude, got {min_amplitude}, {max_amplitude}")
        if not 0 <= max_phase < math.pi / 4:
            raise ValueError(
                f"max_phase must be in [0, pi/4), got {max_phase}: at pi/4 a sine of phase +pi/4 is a cosine of "
                "phase -pi/4, and the classes overlap"
            )
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        super().__init__(data_dir, batch_size, val_fraction, "random", 0, None, seed)
        self.num_train, self.num_test, self.max_length = num_train, num_test, length
        self.frequency, self.amplitude = (min_frequency, max_frequency), (min_amplitude, max_amplitude)
        self.max_phase, self.noise_std = max_phase, noise_std

    def load_sequences(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``(N, length, 1)`` and labels ``(N,)`` (0 sine, 1 cosine) of the train or test split."""
        generator = torch.Generator().manual_seed(self.seed + (0 if train else 1))
        n = self.num_train if train else self.num_test

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, 1, generator=generator)

        labels = torch.randint(0, 2, (n,), generator=generator)
        frequency, amplitude = uniform(*self.frequency), uniform(*self.amplitude)
        phase = uniform(-self.max_phase, self.max_phase) + labels.unsqueeze(1) * (math.pi / 2)  # cos x = sin(x + pi/2)
        steps = torch.arange(self.max_length, dtype=torch.float32)
        clean = amplitude * torch.sin(2 * math.pi * frequency * steps + phase)  # (N, T)
        noisy = clean + self.noise_std * torch.randn(clean.shape, generator=generator)
        return noisy.unsqueeze(-1), labels


class _PairedSequences(Dataset):
    """Inputs and per-step targets held padded ``(N, T_max, F)``, with lengths; a batch is cut to its longest."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> None:
        self.inputs, self.targets, self.lengths = inputs, targets, lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> SequenceBatch:
        return SequenceBatch(*(part[0] for part in self.__getitems__([index])))

    def __getitems__(self, indices: Sequence[int]) -> SequenceBatch:
        index = torch.as_tensor(indices)
        lengths = self.lengths[index]
        steps = int(lengths.max())
        return SequenceBatch(self.inputs[index, :steps], self.targets[index, :steps], lengths)


def _identity(batch: SequenceBatch) -> SequenceBatch:
    return batch


class NoisySinesDataModule(SavesPreprocessing, SplitLoaders, L.LightningDataModule):
    """Clean smooth signals (sums of ``num_components`` sinusoids) plus Gaussian noise; the clean value per step.

    Each sequence has ``min_length`` to ``max_length`` steps; each component a random amplitude, frequency (cycles
    per step) and phase. Batches are :class:`~datamodules.sequence.SequenceBatch` ``(noisy (B, T, 1), clean
    (B, T, 1), lengths (B,))``: inputs in original units, targets standardized with the training split's mean and
    standard deviation over valid steps, both zero after each length. The statistics of inputs and targets are
    attributes (``feature_mean``, ``feature_std``, ``target_mean``, ``target_std``) that the CLI links into the
    model, so it standardizes its own input and answers in original units. The noise is ``noise_std`` in every
    split: the MSE of the noisy input itself (about ``noise_std ** 2``) is the baseline a denoiser must beat.

    Args:
        num_train: training sequences.
        num_val: validation sequences.
        num_test: test sequences.
        min_length: shortest sequence.
        max_length: longest sequence.
        num_components: sinusoids summed per signal.
        min_frequency: lowest frequency, cycles per step.
        max_frequency: highest frequency, cycles per step.
        max_amplitude: each component's amplitude is uniform in ``[0.2, 1] * max_amplitude``.
        noise_std: standard deviation of the Gaussian noise.
        batch_size: sequences per batch.
        seed: seed of the signals and the noise.
        num_workers: loader worker processes (in-memory tensors need none).
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
        data_dir: unused (the data is generated).

    >>> dm = NoisySinesDataModule(num_train=8, num_val=4, num_test=4, noise_std=0.0)
    >>> noisy, targets, lengths = next(iter(dm.train_dataloader()))
    >>> clean = targets[0, : lengths[0]] * dm.target_std[0] + dm.target_mean[0]
    >>> torch.allclose(noisy[0, : lengths[0]], clean, atol=1e-5)  # without noise the input is the clean signal
    True
    """

    in_features = 1
    out_features = 1

    def __init__(
        self,
        num_train: int = 8_000,
        num_val: int = 1_000,
        num_test: int = 2_000,
        min_length: int = 32,
        max_length: int = 64,
        num_components: int = 3,
        min_frequency: float = 0.01,
        max_frequency: float = 0.08,
        max_amplitude: float = 1.0,
        noise_std: float = 0.3,
        batch_size: int = 64,
        seed: int = 42,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        data_dir: str = "data",
    ) -> None:
        super().__init__()
        check_batch_and_split(batch_size, 0.0)
        if min(num_train, num_val, num_test) < 1 or not 1 <= min_length <= max_length or num_components < 1:
            raise ValueError(
                "need num_train, num_val, num_test, num_components >= 1 and 1 <= min_length <= max_length, got "
                f"{num_train}, {num_val}, {num_test}, {num_components}, {min_length}, {max_length}"
            )
        if not 0 < min_frequency <= max_frequency < 0.5 or max_amplitude <= 0 or noise_std < 0:
            raise ValueError(
                "need 0 < min_frequency <= max_frequency < 0.5, max_amplitude > 0 and noise_std >= 0, got "
                f"{min_frequency}, {max_frequency}, {max_amplitude}, {noise_std}"
            )
        self.save_hyperparameters(logger=False)
        self.data_dir = os.path.expanduser(data_dir)
        self.max_length, self.batch_size = max_length, batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        generator = torch.Generator().manual_seed(seed)
        sizes = {"train": num_train, "val": num_val, "test": num_test}
        n = sum(sizes.values())
        lengths = torch.randint(min_length, max_length + 1, (n,), generator=generator)

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, num_components, 1, generator=generator)

        amplitude = uniform(0.2 * max_amplitude, max_amplitude)  # (N, K, 1)
        frequency, phase = uniform(min_frequency, max_frequency), uniform(0.0, 2 * math.pi)
        steps = torch.arange(max_length, dtype=torch.float32)
        clean = (amplitude * torch.sin(2 * math.pi * frequency * steps + phase)).sum(1)  # (N, T)
        noisy = clean + noise_std * torch.randn(clean.shape, generator=generator)
        valid = steps < lengths.unsqueeze(1)  # (N, T)
        clean, noisy = clean.masked_fill(~valid, 0.0), noisy.masked_fill(~valid, 0.0)
        train_valid = valid[:num_train]
        self._stats = {
            name: (values[:num_train][train_valid].mean(), values[:num_train][train_valid].std(correction=0))
            for name, values in (("feature", noisy), ("target", clean))
        }
        mean, std = self._stats["target"]
        targets = ((clean - mean) / std).masked_fill(~valid, 0.0)
        self.datasets: dict[str, _PairedSequences] = {}
        start = 0
        for split, size in sizes.items():
            part = slice(start, start + size)
            self.datasets[split] = _PairedSequences(
                noisy[part].unsqueeze(-1), targets[part].unsqueeze(-1), lengths[part]
            )
            start += size

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Series in original units (the model standardizes them itself)."""
        return {"input": "series", "in_features": 1, "out_features": 1, "max_length": self.max_length}

    @property
    def feature_mean(self) -> list[float]:
        """Mean of the noisy inputs over the training split's valid steps."""
        return [float(self._stats["feature"][0])]

    @property
    def feature_std(self) -> list[float]:
        """Standard deviation of the noisy inputs over the training split's valid steps."""
        return [float(self._stats["feature"][1])]

    @property
    def target_mean(self) -> list[float]:
        """Mean of the clean values over the training split's valid steps (original = scaled * std + mean)."""
        return [float(self._stats["target"][0])]

    @property
    def target_std(self) -> list[float]:
        """Standard deviation of the clean values over the training split's valid steps."""
        return [float(self._stats["target"][1])]

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return make_loader(self.datasets[split], self.batch_size, shuffle, self.num_workers, self.pin_memory, _identity)
