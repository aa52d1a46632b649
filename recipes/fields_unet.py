"""The textbook U-Net (quarter widths) denoising scientific fields under Poisson noise; checkpoints on val/psnr.

python -m recipes.fields_unet fit                                         # 64x64 fields, 10 photons for white
python -m recipes.fields_unet fit --model.init_args.noise gaussian --model.init_args.noise_std 0.15
python -m recipes.fields_unet fit --model.init_args.attention_gates true  # Attention U-Net
python -m recipes.fields_unet fit --model.init_args.encoder residual      # ResUNet encoder
python -m recipes.fields_unet test --ckpt_path logs/fields_unet/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
