"""Sequence tagging with a bidirectional LSTM: mark each token as a local maximum, a local minimum or neither.

python -m recipes.extrema_bilstm fit                               # 10k generated sequences of 2 to 64 tokens
python -m recipes.extrema_bilstm fit --model.init_args.bidirectional false   # one direction cannot be exact
python -m recipes.extrema_bilstm fit --trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed
python -m recipes.extrema_bilstm fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu
python -m recipes.extrema_bilstm test --ckpt_path logs/extrema_bilstm/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
