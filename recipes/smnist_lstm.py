"""Sequential MNIST with an LSTM: each image is 28 time steps of 28 pixels (rows), read by two LSTM layers of 128.

python -m recipes.smnist_lstm fit --data.data_dir data          # reads or downloads data/MNIST/raw/
python -m recipes.smnist_lstm fit --data.init_args.mode pixels --data.init_args.permute true   # permuted pixel MNIST
python -m recipes.smnist_lstm fit --trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed
python -m recipes.smnist_lstm fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu
python -m recipes.smnist_lstm test --ckpt_path logs/smnist_lstm/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
