"""Small conv-BN net on scikit-learn's embedded 8x8 digits: the demo, no download needed.

python -m recipes.digits_cnn fit                                   # CPU, about a minute
python -m recipes.digits_cnn fit --trainer.accelerator gpu --trainer.devices 1
python -m recipes.digits_cnn fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu
python -m recipes.digits_cnn test --ckpt_path logs/digits_cnn/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
