"""Which of eight Shakespeare characters speaks a speech, with a bag of embeddings (the fastText-style baseline):
the embedded ShakespeareSpeakersDataModule, no files needed.

python -m recipes.speakers_bag fit                                          # 1,158 speeches of 8 speakers
python -m recipes.speakers_bag fit --model.init_args.hidden_dims []         # fastText's linear model
python -m recipes.speakers_bag fit --model.init_args.pooling mean_max
python -m recipes.speakers_bag fit --trainer.accelerator gpu --trainer.devices 1
python -m recipes.speakers_bag test --ckpt_path logs/speakers_bag/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
