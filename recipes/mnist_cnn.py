"""LeNet-style conv-pool net with BatchNorm on MNIST: two epochs of one-cycle AdamW, label smoothing, channels-last.

python -m recipes.mnist_cnn fit --data.data_dir data          # reads or downloads data/MNIST/raw/
python -m recipes.mnist_cnn fit --trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed
python -m recipes.mnist_cnn fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu
python -m recipes.mnist_cnn test --ckpt_path logs/mnist_cnn/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
