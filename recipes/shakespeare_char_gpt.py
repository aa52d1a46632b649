"""Character-level GPT on Tiny Shakespeare (nanoGPT's CPU shakespeare_char size): 4 layers, 4 heads, width 128.

python -m recipes.shakespeare_char_gpt fit                         # ../shared/data/tinyshakespeare/input.txt
python -m recipes.shakespeare_char_gpt fit --data.init_args.path my_corpus.txt --trainer.max_steps 20000
python -m recipes.shakespeare_char_gpt fit --trainer.accelerator gpu --trainer.devices 1 --trainer.precision bf16-mixed
python -m recipes.shakespeare_char_gpt fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu
zoo predict --ckpt_path logs/shakespeare_char_gpt/version_0/checkpoints/last.ckpt --text "ROMEO:"
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
