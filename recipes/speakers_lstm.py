"""Which of eight Shakespeare characters speaks a speech, with a bidirectional LSTM max-pooled over the words: the
embedded ShakespeareSpeakersDataModule, no files needed.

python -m recipes.speakers_lstm fit                                         # 1,158 speeches of 8 speakers
python -m recipes.speakers_lstm fit --model.init_args.cell gru
python -m recipes.speakers_lstm fit --trainer.accelerator gpu --trainer.devices 1
python -m recipes.speakers_lstm fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu
python -m recipes.speakers_lstm test --ckpt_path logs/speakers_lstm/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
