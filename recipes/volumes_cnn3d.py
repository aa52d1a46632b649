"""A 3-d CNN classifies generated 16x16x16 volumes of one solid each (ball, cube, cylinder, hollow shell, cross,
torus) at random positions, sizes and orientations, with noise: no download needed.

python -m recipes.volumes_cnn3d fit                                   # CPU, a few minutes
python -m recipes.volumes_cnn3d fit --data.init_args.size 28          # 28^3 volumes (MedMNIST's 3-d size)
python -m recipes.volumes_cnn3d fit --trainer.accelerator gpu --trainer.devices 1
python -m recipes.volumes_cnn3d test --ckpt_path logs/volumes_cnn3d/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
