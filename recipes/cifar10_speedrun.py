"""CIFAR-10 speedrun on the CPU: WhitenedVGG, batch-level alternating flips and 2-pixel translations, Nesterov SGD
with a one-cycle schedule, label smoothing, Lookahead weight averaging and flip TTA (airbench94's recipe).

    python -m recipes.cifar10_speedrun fit --data.data_dir ../shared/data     # JPEG tarballs, batches or folders
    python -m recipes.cifar10_speedrun fit --data.data_dir data --trainer.accelerator gpu --trainer.devices 1
    python benchmarks/cifar10_speedrun.py --seeds 0 1 2                        # timed runs, the curve, the table
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
