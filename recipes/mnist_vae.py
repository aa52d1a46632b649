"""A convolutional VAE on MNIST digits (Bernoulli likelihood, 16-d latent); checkpoints on val/loss, the negative ELBO.

python -m recipes.mnist_vae fit --data.data_dir data                  # reads or downloads data/MNIST/raw/
python -m recipes.mnist_vae fit --data.data_dir ../shared/data/mnist  # the four .gz files in one folder
python -m recipes.mnist_vae fit --model.init_args.loss mse            # squared error instead of Bernoulli
python -m recipes.mnist_vae fit --trainer.accelerator gpu --trainer.devices 1
python -m recipes.mnist_vae test --ckpt_path logs/mnist_vae/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
