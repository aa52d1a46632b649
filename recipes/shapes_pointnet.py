"""PointNet classifies point clouds of eight generated shapes (sphere, cube, cylinder, cone, torus, pyramid, capsule,
octahedron), sampled on their surfaces, upright at random angles: no download needed.

python -m recipes.shapes_pointnet fit                                          # CPU, a few minutes
python -m recipes.shapes_pointnet fit --data.init_args.rotation so3            # train on any orientation
python -m recipes.shapes_pointnet fit --trainer.accelerator gpu --trainer.devices 1
python -m recipes.shapes_pointnet test --ckpt_path logs/shapes_pointnet/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
