"""Sequential MNIST with a 1-d CNN: each image is 28 time steps of 28 pixels, read by a Conv1d stack.

python -m recipes.mnist_seqcnn fit --data.data_dir data          # reads or downloads data/MNIST/raw/
python -m recipes.mnist_seqcnn fit --trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed
python -m recipes.mnist_seqcnn fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu
python -m recipes.mnist_seqcnn test --ckpt_path logs/mnist_seqcnn/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
