"""Yearly sunspot numbers (statsmodels package data, 1700-2008): 32 years of context -> the next 8 years.

python -m recipes.forecast_sunspots fit                                        # N-BEATS MLP with Gaussian intervals
python -m recipes.forecast_sunspots fit --model zoo.LSTMForecaster             # any forecaster; sizes follow the data
python -m recipes.forecast_sunspots fit --model zoo.SeasonalNaiveForecaster    # a rule: only its interval trains
python -m recipes.forecast_sunspots fit --data.init_args.dataset co2 --data.init_args.input_size 104 \
    --data.init_args.horizon 13                                                # another statsmodels series
python -m recipes.forecast_sunspots fit --data.init_args.csv_path my.csv --data.init_args.time_column date
python -m recipes.forecast_sunspots predict --ckpt_path logs/forecast_sunspots/version_0/checkpoints/last.ckpt
python benchmarks/forecast_table.py                                            # every model on this split, one table

Checkpoints and early stopping follow the task's monitor (``val/mae``, min; ``val/loss`` for the rules).
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
