"""Train a small MLP for a fixed number of steps on 1 or N CPU processes and save the final weights.

Run as a script (Lightning's ``ddp`` strategy re-launches this very file once per extra rank)::

    python tests/_ddp_train.py --devices 1 --batch-size 32 --steps 20 --out one.pt
    python tests/_ddp_train.py --devices 2 --batch-size 16 --steps 20 --out two.pt  # the same global batches

The data is a fixed seeded tensor set read in order: rank ``r`` of N reads the samples ``r, r + N, r + 2N, ...``
(``DistributedSampler(shuffle=False)``), so N ranks at batch ``B / N`` see together the batches one process sees at
batch ``B``. The sampler is given here because Lightning's own shuffles a *training* loader under DDP whatever its
``shuffle`` says (``_process_dataloader`` passes ``shuffle=True`` for the training stage). The model has neither
batch norm nor dropout and the schedule is constant, so the only difference between the two runs is the order of
the float additions in the gradient averaging.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import zoo

NUM_SAMPLES = 192  # divisible by every global batch the test uses: no rank gets padded samples
NUM_CLASSES = 10


def dataset(seed: int = 0) -> TensorDataset:
    """Gaussian 8x8 images whose class is readable from the mean of one row, so the loss keeps falling."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, NUM_CLASSES, (NUM_SAMPLES,), generator=generator)
    images = torch.randn(NUM_SAMPLES, 1, 8, 8, generator=generator)  # (N, C, H, W)
    images[torch.arange(NUM_SAMPLES), 0, targets % 8] += 1.0 + (targets // 8).float()[:, None]
    return TensorDataset(images, targets)


def build_model(optimizer: str = "sgd") -> zoo.MLP:
    """A seeded MLP without batch norm or dropout: the same initial weights in every process."""
    L.seed_everything(0, verbose=False)
    return zoo.MLP(
        num_classes=NUM_CLASSES,
        in_channels=1,
        img_size=8,
        hidden_dims=(32, 32),
        dropout=0.0,
        optimizer=optimizer,
        lr=0.1 if optimizer == "sgd" else 0.01,
        scheduler="none",  # a schedule over estimated stepping batches would differ between the two runs
    )


class OrderedData(L.LightningDataModule):
    """:func:`dataset` in order, sharded over the ranks without shuffling or padding."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        data = dataset()
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=False) if world > 1 else None
        return DataLoader(data, batch_size=self.batch_size, shuffle=False, sampler=sampler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--batch-size", type=int, required=True, help="per process")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    model = build_model(args.optimizer)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        max_steps=args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=OrderedData(args.batch_size))
    if trainer.global_step != args.steps:
        raise RuntimeError(f"trained {trainer.global_step} steps, expected {args.steps}")
    if trainer.is_global_zero:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.out)


if __name__ == "__main__":
    main()
