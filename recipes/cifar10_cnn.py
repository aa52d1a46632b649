"""Six-layer conv-BN-ReLU net on CIFAR-10 with crop+flip, SGD+Nesterov, one-cycle and label smoothing.

    python -m recipes.cifar10_cnn fit --data.data_dir data        # pickled batches, image folders or JPEG tarballs
    python -m recipes.cifar10_cnn fit --data.data_dir ../shared/data --trainer.accelerator gpu --trainer.devices 1 \
        --trainer.precision bf16-mixed
    python -m recipes.cifar10_cnn fit --trainer.strategy ddp --trainer.devices 2
    python -m recipes.cifar10_cnn test --ckpt_path logs/cifar10_cnn/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
