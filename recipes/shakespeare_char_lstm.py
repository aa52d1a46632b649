"""Character-level LSTM language model on Tiny Shakespeare: the recurrent baseline beside shakespeare_char_gpt.

The same text, split, windows, batch, steps, warmup and cosine decay as shakespeare_char_gpt, with its own peak rate
(2e-3 against GPT's 1e-3): two LSTM layers of 256, 877k parameters, against GPT's 810k.

python -m recipes.shakespeare_char_lstm fit
python -m recipes.shakespeare_char_lstm fit --trainer.accelerator gpu --trainer.devices 1
zoo predict --ckpt_path logs/shakespeare_char_lstm/version_0/checkpoints/last.ckpt --text "ROMEO:"
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
