"""Parity of variable-length bit strings (1 to 32 bits) with a GRU: generated data, no files needed.

python -m recipes.parity_gru fit                                   # 20k generated strings
python -m recipes.parity_gru fit --data.init_args.max_length 64    # longer strings (the model follows the link)
python -m recipes.parity_gru fit --trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed
python -m recipes.parity_gru fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu
python -m recipes.parity_gru test --ckpt_path logs/parity_gru/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
