"""Classify scikit-learn's 8x8 digits read as sequences of 8 rows with a Transformer encoder (no download).

python -m recipes.digits_transformer fit
python -m recipes.digits_transformer fit --data.init_args.mode pixels     # 64 steps of one pixel
python -m recipes.digits_transformer fit --model.init_args.position rotary
python -m recipes.digits_transformer test --ckpt_path logs/digits_transformer/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
