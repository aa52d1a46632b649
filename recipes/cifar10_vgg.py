"""The textbook VGG-style net with BatchNorm (vgg_style_bn_cifar) on CIFAR-10: crop+flip, SGD+Nesterov, one-cycle.

python -m recipes.cifar10_vgg fit --data.data_dir ../shared/data
python -m recipes.cifar10_vgg fit -c recipes/fast.yaml --data.data_dir ../shared/data --trainer.max_epochs 1
python -m recipes.cifar10_vgg fit --model.init_args.batch_norm false --model.init_args.lr 0.01   # the plain VGG
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
