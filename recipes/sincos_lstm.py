"""Sine or cosine? An LSTM classifies noisy windows of either (random frequency, amplitude and a small phase offset,
every window starting at t = 0): generated data, no files needed.

python -m recipes.sincos_lstm fit                                     # 10k windows of 64 steps, noise std 0.3
python -m recipes.sincos_lstm fit --data.init_args.noise_std 0.6      # noisier windows
python -m recipes.sincos_lstm fit --data.init_args.length 128         # longer windows (the model follows the link)
python -m recipes.sincos_lstm fit --trainer.accelerator gpu --trainer.devices 1
python -m recipes.sincos_lstm fit --trainer.strategy ddp --trainer.devices 2 --trainer.accelerator cpu
python -m recipes.sincos_lstm test --ckpt_path logs/sincos_lstm/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
