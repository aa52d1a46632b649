"""A training DataLoader whose position within the epoch is saved in Lightning checkpoints."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, RandomSampler


class ResumableRandomSampler(RandomSampler):
    """``RandomSampler`` whose permutation comes from a recorded seed and that can start part-way through it.

    :class:`ResumableLoader` calls :meth:`set_epoch` before each epoch; used alone, the sampler draws a new seed from
    the global generator at each iteration, as ``RandomSampler`` does. ``seed`` is the seed of the latest epoch.
    """

    def __init__(self, data_source: Dataset) -> None:
        super().__init__(data_source)
        self.seed: int | None = None
        self.skip = 0
        self._given = False  # whether the next iteration uses a seed given by set_epoch

    def set_epoch(self, seed: int, skip: int = 0) -> None:
        """Make the next iteration the permutation of ``seed``, starting after its first ``skip`` indices."""
        self.seed, self.skip, self._given = seed, skip, True

    def next_epoch(self) -> tuple[int, int]:
        """The seed and skip of the iteration starting now: those given by :meth:`set_epoch`, else a fresh seed."""
        if not self._given:
            self.seed = int(torch.empty((), dtype=torch.int64).random_().item())
        skip, self.skip, self._given = self.skip, 0, False
        return self.seed, skip

    def __iter__(self) -> Iterator[int]:
        seed, skip = self.next_epoch()
        self.generator = torch.Generator().manual_seed(seed)
        try:
            yield from itertools.islice(super().__iter__(), skip, None)
        finally:
            self.generator = None


class ResumableLoader(DataLoader):
    """A shuffling training DataLoader that Lightning can checkpoint mid-epoch and resume at the next unseen batch.

    Each epoch takes one seed from the global torch generator (the only draw data loading makes from it) for both
    the permutation and the worker processes' seeds. Lightning stores ``state_dict()`` (that seed and the batches
    handed out) in each checkpoint and calls ``load_state_dict`` when it resumes inside an epoch; the next
    iteration then replays the same permutation from the first batch not yet trained on (:class:`callbacks.ExactResume`
    loads it too, where Lightning skips it). With the generators restored by that callback, a resumed single-process
    run trains on exactly the batches, dropout masks and main-process augmentations of the uninterrupted one.

    Worker processes (``num_workers > 0``) keep random states of their own that no checkpoint holds, so their random
    augmentations differ after a resume (``ExactResume`` warns when that happens).

    Args:
        dataset: a map-style dataset.
        batch_size: samples per batch.
        shuffle: shuffle every epoch (without it, resuming still skips the batches already seen).
        **kwargs: other ``DataLoader`` arguments (``sampler`` replaces the shuffling sampler).

    Example:
        >>> loader = ResumableLoader(list(range(10)), batch_size=2, shuffle=True)
        >>> first = next(iter(loader))
        >>> loader.state_dict()["batches"]
        1
    """

    def __init__(self, dataset: Dataset, batch_size: int | None = 1, shuffle: bool = False, **kwargs: Any) -> None:
        if shuffle and kwargs.get("sampler") is None and kwargs.get("batch_sampler") is None:
            kwargs["sampler"] = ResumableRandomSampler(dataset)
            kwargs.setdefault("generator", torch.Generator())  # worker seeds follow the epoch's seed
            shuffle = False
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, **kwargs)
        self._batches = 0  # batches handed out in this epoch, as the training loop counts them
        self._seen = 0  # samples of this epoch's order handed out
        # The next epoch's (seed, samples already trained on, batches the loop counts as done), when it resumes.
        self._resume: tuple[int | None, int, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        # Lazy: nothing is drawn or skipped until the first batch is asked for, so a position loaded after the
        # iterator was made (Lightning makes one early when the schedule needs the step count) still applies.
        return self._epoch()

    def _epoch(self) -> Iterator[Any]:
        seed, seen, counted = self._resume or (None, 0, 0)
        self._resume = None
        size = self.batch_size or 1
        sampler = self.sampler if isinstance(self.sampler, ResumableRandomSampler) else None
        if sampler is not None:
            if seed is None:
                seed = int(torch.empty((), dtype=torch.int64).random_().item())
            sampler.set_epoch(seed, seen)
            if self.generator is not None:
                self.generator.manual_seed(seed)
            batches = super().__iter__()
        else:  # a sequential or user-given sampler: skip whole batches (a few samples again if the size changed)
            seen = seen // size * size
            batches = itertools.islice(super().__iter__(), seen // size, None)
        self._batches, self._seen = counted, seen
        for batch in batches:
            self._batches += 1
            self._seen = min(self._seen + size, len(self.dataset))
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The epoch's shuffle seed, the batches handed out in it and the samples of its order they held."""
        seed = self.sampler.seed if isinstance(self.sampler, ResumableRandomSampler) else None
        return {
            "seed": seed,
            "batches": self._batches,
            "batch_size": self.batch_size,
            "length": len(self),
            "samples": len(self.dataset),
            "seen": self._seen,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the epoch of ``state_dict`` at its first sample not yet handed out, in the same order.

        With another batch size the epoch continues over its remaining samples in batches of the new size; the
        training loop still counts the batches already done against this loader's length, so with a larger batch
        size it ends the epoch before every remaining sample is trained on (the warning says how many are not).
        """
        batches, length, size = state_dict["batches"], state_dict["length"], state_dict["batch_size"] or 1
        if batches >= length:  # at the end of an epoch the next one starts afresh
            return
        samples = state_dict.get("samples", len(self.dataset))
        if samples != len(self.dataset):
            rank_zero_warn(
                f"ResumableLoader: the checkpoint's epoch ran over {samples} samples, this dataset has "
                f"{len(self.dataset)}; the resumed epoch draws a new order, and the training loop, counting the "
                f"{batches} batches done, ends it after {max(len(self) - batches, 0)} of this loader's {len(self)}."
            )
            return
        seen = state_dict.get("seen", batches * size)
        self._resume = (state_dict["seed"], seen, batches)
        if size != (self.batch_size or 1):
            new = self.batch_size or 1
            left = samples - seen
            trained = min(left, max(len(self) - batches, 0) * new)
            ending = (
                "every one of them is trained on"
                if trained >= left
                else f"the training loop counts the {batches} batches done against this loader's {len(self)}, so it "
                f"ends the epoch after {trained // new} batches: {left - trained} samples of it are not trained on"
            )
            rank_zero_warn(
                f"ResumableLoader: the checkpoint's epoch trained on {batches} batches of {size} ({seen} of {samples} "
                f"samples); it continues over the other {left} in the same order, in batches of {new}, and {ending}."
            )
