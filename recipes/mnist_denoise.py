"""IRCNN denoiser on MNIST digits with Gaussian noise (sigma 0.3 in [0, 1] pixels); checkpoints on val/psnr.

python -m recipes.mnist_denoise fit --data.data_dir data          # reads or downloads data/MNIST/raw/
python -m recipes.mnist_denoise fit --model.init_args.blind true  # one model for every sigma up to 0.3
python -m recipes.mnist_denoise fit --model zoo.UNetDenoiser      # the U-Net instead
python -m recipes.mnist_denoise predict --ckpt_path logs/mnist_denoise/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
