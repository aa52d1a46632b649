"""EfficientNet-B0 with CIFAR strides on CIFAR-10: AutoAugment, AdamW with warmup then cosine, label smoothing.

    python -m recipes.cifar10_efficientnet fit --data.data_dir data  # batches, folders or tarballs
    python -m recipes.cifar10_efficientnet fit --data.data_dir ../shared/data --trainer.accelerator gpu \
        --trainer.devices 1 --trainer.precision bf16-mixed
    python -m recipes.cifar10_efficientnet fit --trainer.strategy ddp --trainer.devices 2
    python -m recipes.cifar10_efficientnet test --ckpt_path logs/cifar10_efficientnet/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
