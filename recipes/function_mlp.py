"""An MLP regressor fits the textbook's 2-D test function ``sin 5x cos 5y + 0.5 sin 10x + 0.3 cos 10y`` on
``[-1, 1]^2`` from 8,192 generated points: no download needed.

python -m recipes.function_mlp fit                                  # CPU, about two minutes
python -m recipes.function_mlp fit --data.init_args.noise_std 0.1   # noisy training targets, exact test targets
python -m recipes.function_mlp fit --trainer.accelerator gpu --trainer.devices 1
python -m recipes.function_mlp test --ckpt_path logs/function_mlp/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
