"""Sequence denoising with a bidirectional LSTM: noisy sums of sinusoids (32 to 64 steps) in, the clean value of
every step out; generated data, no files needed. ``val/mse_input`` and ``test/mse_input`` are the MSE of the noisy
input itself, the baseline the model's ``mse`` must beat.

python -m recipes.sequence_denoise_bilstm fit                                   # 8k sequences, noise std 0.3
python -m recipes.sequence_denoise_bilstm fit --data.init_args.noise_std 0.5    # noisier input
python -m recipes.sequence_denoise_bilstm fit --model.init_args.bidirectional false   # past steps only
python -m recipes.sequence_denoise_bilstm fit --trainer.accelerator gpu --trainer.devices 1
python -m recipes.sequence_denoise_bilstm test --ckpt_path logs/sequence_denoise_bilstm/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
