"""Reverse digit strings with an attentional LSTM encoder-decoder: the recurrent baseline of seq2seq_reverse.

The same generated data and held-out test set as recipes/seq2seq_reverse.py.

python -m recipes.seq2seq_reverse_lstm fit
python -m recipes.seq2seq_reverse_lstm fit --model.init_args.teacher_forcing_ratio 1.0   # always the gold token
python -m recipes.seq2seq_reverse_lstm test --ckpt_path logs/seq2seq_reverse_lstm/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
