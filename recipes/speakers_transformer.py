"""Which of eight Shakespeare characters speaks a speech, with a Transformer encoder (label smoothing, bf16 autocast):
the embedded ShakespeareSpeakersDataModule, no files needed.

python -m recipes.speakers_transformer fit                                  # 1,158 speeches of 8 speakers
python -m recipes.speakers_transformer fit --trainer.precision 32-true      # a CPU without native bf16
python -m recipes.speakers_transformer fit --data.init_args.max_length 256  # 99% of the speeches whole, slower
python -m recipes.speakers_transformer fit --trainer.accelerator gpu --trainer.devices 1
python -m recipes.speakers_transformer test --ckpt_path logs/speakers_transformer/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
