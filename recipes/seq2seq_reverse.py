"""Reverse digit strings (1 to 12 digits) with an encoder-decoder Transformer: generated data, no files needed.

Exact-match accuracy is measured on held-out strings (none of them in the training set); the attentional LSTM on the
same data is recipes/seq2seq_reverse_lstm.py.

python -m recipes.seq2seq_reverse fit
python -m recipes.seq2seq_reverse fit --data.init_args.task sort            # or addition: "12+345" -> "357"
python -m recipes.seq2seq_reverse fit --model.init_args.decoding beam      # validate and test with beam search
python -m recipes.seq2seq_reverse fit --trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed
python -m recipes.seq2seq_reverse test --ckpt_path logs/seq2seq_reverse/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
