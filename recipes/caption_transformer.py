"""Caption scenes of 2 to 4 handwritten digits ("a seven above a two") with a conv encoder and a Transformer
decoder whose cross-attention reads the image grid: the embedded digit scenes, no files needed.

python -m recipes.caption_transformer fit                                    # 4,000 scenes (16,000 captions), 8 epochs
python -m recipes.caption_transformer fit --model.init_args.decoding beam    # validate and test with beam search
python -m recipes.caption_transformer fit --model.init_args.image_blind true # the baseline that never sees the image
python -m recipes.caption_transformer fit --trainer.callbacks+=callbacks.CaptionAttentionLogger  # attention per word
python -m recipes.caption_transformer test --ckpt_path logs/caption_transformer/version_0/checkpoints/last.ckpt
zoo predict --ckpt_path logs/caption_transformer/version_0/checkpoints/last.ckpt --inputs scene.png
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
