"""ViT-Ti/4 on CIFAR-10 from scratch: RandAugment, AdamW with 5 warmup epochs then cosine, label smoothing.

    python -m recipes.cifar10_vit fit --data.data_dir data  # batches, folders or tarballs
    python -m recipes.cifar10_vit fit --data.data_dir ../shared/data --trainer.accelerator gpu \
        --trainer.devices 1 --trainer.precision bf16-mixed
    python -m recipes.cifar10_vit fit --trainer.strategy ddp --trainer.devices 2
    python -m recipes.cifar10_vit test --ckpt_path logs/cifar10_vit/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
