"""Forecasters of one task, from rules to networks: naive, seasonal naive and window mean, an LSTM with attention,
a dilated causal CNN (TCN), an MLP of N-BEATS blocks and an encoder-only Transformer.

Every model here takes ``(B, L, F)`` scaled windows and forecasts ``(B, H, T)`` on
:class:`~zoo.tasks.forecasting.Forecaster`, so rules and networks share the loop, the metrics and the table.

- The rules (Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*, ch. 5.2) forecast by their rule
  alone; with ``distribution="gaussian"`` (their default) their one parameter set is the standard deviation of each
  horizon step, which training fits to the training residuals (the maximum-likelihood interval); the point forecast
  never changes. With ``distribution="none"`` they have no parameter and ``fit`` only evaluates.
- :class:`LSTMForecaster`: stacked LSTM states (:class:`~zoo.rnn.RNNEncoder`), attention over them with the final
  state as query (Luong et al., 2015, "general" score), both into a linear head for the whole horizon.
- :class:`RecursiveLSTMForecaster`: the recursive (iterated) strategy: a one-step LSTM forecaster rolled out over the
  horizon, each forecast fed back as the next input (Hyndman & Athanasopoulos, ch. 12.4; Taieb et al., 2012, compare
  it with the direct strategy of the other networks here, one output per horizon step).
- :class:`TCNForecaster`: residual blocks of two dilated causal convolutions (Bai et al., 2018), the last step's
  channels into the head; the receptive field is ``1 + 2 (k - 1) sum(dilations)``.
- :class:`MLPForecaster`: the generic N-BEATS architecture (Oreshkin et al., 2020): blocks of fully connected layers
  over the flattened window, each removing its backcast from the input of the next and adding its forecast.
- :class:`TransformerForecaster`: pre-norm encoder blocks (:mod:`zoo.transformer`) over the steps, a flatten head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.attention import PositionName, build_position_encoding
from zoo.registry import InputSpec, register_model
from zoo.rnn import RNNEncoder
from zoo.tasks.forecasting import MIN_SCALE, DistributionName, Forecaster
from zoo.transformer import TransformerEncoder


class ForecastHead(nn.Module):
    """Linear map from features ``(B, D)`` to the horizon's outputs ``(B, H, T, P)``."""

    def __init__(self, in_features: int, horizon: int, targets: int, params_per_step: int) -> None:
        super().__init__()
        self.shape = (horizon, targets, params_per_step)
        self.linear = nn.Linear(in_features, horizon * targets * params_per_step)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).view(-1, *self.shape)  # (B, H, T, P)


# --- rules --------------------------------------------------------------------------------------------------------


class _RuleForecaster(Forecaster):
    """A forecasting rule; with a Gaussian head a learned standard deviation per horizon step and target."""

    #: The point forecast never changes: only the interval trains, so checkpoints follow the likelihood.
    monitor = ("val/loss", "min")
    #: The period of the series this rule forecasts exactly (what :meth:`example_batch` generates).
    rule_period: int = 1

    def __init__(self, distribution: DistributionName = "gaussian", **task_args: Any) -> None:
        super().__init__(distribution=distribution, **task_args)
        if distribution == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(self.horizon, self.out_features))

    def point(self, x: torch.Tensor) -> torch.Tensor:
        """The rule's forecast ``(B, H, T)`` from the window ``(B, L, F)``."""
        raise NotImplementedError

    def forecast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        loc = self.point(x[..., : self.out_features])
        if self.distribution != "gaussian":
            return loc, None
        return loc, self.log_scale.exp().clamp(min=MIN_SCALE).expand_as(loc)

    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Series that repeat a random pattern of ``rule_period`` steps: the rule forecasts them exactly."""
        pattern = torch.randn(batch_size, self.rule_period, self.in_features, generator=generator)
        steps = torch.arange(self.input_size + self.horizon) % self.rule_period
        series = pattern[:, steps]  # (B, L + H, F)
        target = series[:, self.input_size :, : self.out_features]
        return series[:, : self.input_size], target, torch.ones_like(target, dtype=torch.bool)


class NaiveForecaster(_RuleForecaster):
    """The last observed value, repeated over the horizon (a random walk's optimal forecast).

    Args:
        distribution: ``"gaussian"`` (a learned standard deviation per step) or ``"none"`` (no parameter).
        **task_args: data sizes, metrics and optimizer, see :class:`~zoo.tasks.forecasting.Forecaster`.

    >>> model = NaiveForecaster(input_size=4, horizon=2)
    >>> model(torch.tensor([[[1.0], [2.0], [3.0], [5.0]]])).flatten().tolist()
    [5.0, 5.0]
    """

    def point(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:].expand(-1, self.horizon, -1)


class SeasonalNaiveForecaster(_RuleForecaster):
    """The value one season earlier: step ``h`` of the horizon repeats step ``L - m + (h mod m)`` of the window.

    Args:
        season_length: the period ``m`` in steps (from the data), at most ``input_size``.
        distribution: ``"gaussian"`` or ``"none"``.
        **task_args: see :class:`~zoo.tasks.forecasting.Forecaster`.

    >>> model = SeasonalNaiveForecaster(season_length=2, input_size=4, horizon=3)
    >>> model(torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])).flatten().tolist()
    [3.0, 4.0, 3.0]
    """

    data_links = (*Forecaster.data_links, "season_length")

    def __init__(self, season_length: int = 12, distribution: DistributionName = "gaussian", **task_args: Any) -> None:
        super().__init__(distribution=distribution, **task_args)
        if not 1 <= season_length <= self.input_size:
            raise ValueError(f"season_length must be in [1, input_size={self.input_size}], got {season_length}")
        self.rule_period = season_length
        self.register_buffer(
            "season_index",
            self.input_size - season_length + torch.arange(self.horizon) % season_length,
            persistent=False,
        )

    def point(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.season_index]


class WindowMeanForecaster(_RuleForecaster):
    """The mean of the last ``window`` steps of the context (all of it by default), repeated over the horizon.

    Args:
        window: steps averaged (0: the whole context).
        distribution: ``"gaussian"`` or ``"none"``.
        **task_args: see :class:`~zoo.tasks.forecasting.Forecaster`.

    >>> WindowMeanForecaster(input_size=4, horizon=1)(torch.tensor([[[1.0], [2.0], [3.0], [6.0]]])).item()
    3.0
    """

    def __init__(self, window: int = 0, distribution: DistributionName = "gaussian", **task_args: Any) -> None:
        super().__init__(distribution=distribution, **task_args)
        if not 0 <= window <= self.input_size:
            raise ValueError(f"window must be in [0, input_size={self.input_size}], got {window}")
        self.window = window or self.input_size

    def point(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -self.window :].mean(1, keepdim=True).expand(-1, self.horizon, -1)


# --- networks -----------------------------------------------------------------------------------------------------


class LSTMForecaster(Forecaster):
    """Stacked LSTM over the window, attention over its states (query: the final state), a linear head.

    Args:
        hidden_size: LSTM state size.
        num_layers: stacked LSTM layers.
        dropout: dropout between layers and before the head.
        attention: attend over the states (else the final state alone feeds the head).
        **task_args: data sizes, distribution, loss, metrics and optimizer, see
            :class:`~zoo.tasks.forecasting.Forecaster`.

    >>> model = LSTMForecaster(input_size=16, horizon=4, in_features=3, out_features=2, hidden_size=8)
    >>> model(torch.randn(5, 16, 3)).shape
    torch.Size([5, 4, 2])
    """

    def __init__(
        self,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
        attention: bool = True,
        **task_args: Any,
    ) -> None:
        super().__init__(**task_args)
        self.encoder = RNNEncoder(
            "lstm", in_features=self.in_features, hidden_size=hidden_size, num_layers=num_layers, dropout=dropout
        )
        self.query = nn.Linear(hidden_size, hidden_size, bias=False) if attention else None
        self.dropout = nn.Dropout(dropout)
        self.num_features = hidden_size * (2 if attention else 1)
        self.head = ForecastHead(self.num_features, self.horizon, self.out_features, self.num_params_per_step)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, num_features)``: the final state and, with attention, the attended states."""
        states, last = self.encoder(x)  # (B, L, D), (B, D)
        if self.query is None:
            return self.dropout(last)
        scores = torch.einsum("bld,bd->bl", states, self.query(last))  # (B, L)
        attended = torch.einsum("bl,bld->bd", scores.softmax(-1), states)  # (B, D)
        return self.dropout(torch.cat([last, attended], dim=-1))

    def forward_params(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class RecursiveLSTMForecaster(Forecaster):
    """A one-step LSTM forecaster rolled out ``horizon`` times, feeding each forecast back as the next input.

    The LSTM reads the window; a linear head maps its top state to the next step's targets (and, with a Gaussian
    head, their scale). That forecast's mean becomes the next input, with the covariates held at their last values
    (their future is not known at the origin), and the LSTM goes on from its state for ``horizon - 1`` more steps. A
    Python loop over the horizon: an export unrolls it for the preset's fixed horizon.

    Training runs through the rollout on the whole horizon, not on teacher-forced one-step targets: the loss is the
    task's over the ``H`` steps, as for the direct models, so the comparison is like with like; the model trains on
    its own fed-back forecasts, as it will forecast (no exposure bias); and each step's standard deviation is fitted
    to that step's errors (a Gaussian head feeds back only the mean, so the intervals are those of the mean path,
    learned per step). The weights do not depend on ``horizon``: built with another horizon, the same weights give
    the same first steps.

    Args:
        hidden_size: LSTM state size.
        num_layers: stacked LSTM layers.
        dropout: dropout between layers and before the head.
        **task_args: data sizes, distribution, loss, metrics and optimizer, see
            :class:`~zoo.tasks.forecasting.Forecaster`.

    >>> model = RecursiveLSTMForecaster(input_size=16, horizon=4, in_features=3, out_features=2, hidden_size=8)
    >>> model(torch.randn(5, 16, 3)).shape
    torch.Size([5, 4, 2])
    """

    def __init__(self, hidden_size: int = 64, num_layers: int = 2, dropout: float = 0.0, **task_args: Any) -> None:
        super().__init__(**task_args)
        self.encoder = RNNEncoder(
            "lstm", in_features=self.in_features, hidden_size=hidden_size, num_layers=num_layers, dropout=dropout
        )
        self.dropout = nn.Dropout(dropout)
        self.head = ForecastHead(hidden_size, 1, self.out_features, self.num_params_per_step)  # one step ahead

    def forward_params(self, x: torch.Tensor) -> torch.Tensor:
        states, state = self.encoder.rnn(x)  # (B, L, D), and (h, c) of (layers, B, D) each
        covariates = x[:, -1:, self.out_features :]  # (B, 1, F - T): held at their last values
        steps = []
        for step in range(self.horizon):
            params = self.head(self.dropout(states[:, -1]))  # (B, 1, T, P): the next step
            steps.append(params)
            if step + 1 < self.horizon:
                fed = torch.cat([params[..., 0], covariates], dim=-1)  # (B, 1, F): the forecast mean as input
                states, state = self.encoder.rnn(fed, state)
        return torch.cat(steps, dim=1)  # (B, H, T, P)


class CausalConvBlock(nn.Module):
    """Two dilated causal convs (padded on the left only) with ReLU and dropout, plus the input (1x1 conv if needed).

    >>> CausalConvBlock(3, 8, dilation=4)(torch.randn(2, 3, 10)).shape
    torch.Size([2, 8, 10])
    """

    def __init__(
        self, in_channels: int, channels: int, kernel_size: int = 3, dilation: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.conv1 = nn.Conv1d(in_channels, channels, kernel_size, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv1d(in_channels, channels, 1) if in_channels != channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(F.relu(self.conv1(F.pad(x, (self.pad, 0)))))  # (B, C, L): step t sees steps <= t only
        h = self.dropout(F.relu(self.conv2(F.pad(h, (self.pad, 0)))))
        return F.relu(h + self.skip(x))


class TCNForecaster(Forecaster):
    """Residual dilated causal conv blocks over the window; the last step's channels feed a linear head.

    Args:
        channels: width of every block.
        dilations: dilation of each block (doubling: the receptive field grows exponentially).
        kernel_size: temporal kernel size.
        dropout: dropout inside the blocks.
        **task_args: see :class:`~zoo.tasks.forecasting.Forecaster`.

    >>> model = TCNForecaster(input_size=32, horizon=8, channels=8)
    >>> model(torch.randn(2, 32, 1)).shape, model.receptive_field
    (torch.Size([2, 8, 1]), 61)
    """

    def __init__(
        self,
        channels: int = 32,
        dilations: Sequence[int] = (1, 2, 4, 8),
        kernel_size: int = 3,
        dropout: float = 0.0,
        **task_args: Any,
    ) -> None:
        super().__init__(**task_args)
        widths = [self.in_features, *[channels] * len(dilations)]
        self.blocks = nn.Sequential(
            *(CausalConvBlock(widths[i], channels, kernel_size, d, dropout) for i, d in enumerate(dilations))
        )
        self.receptive_field = 1 + 2 * (kernel_size - 1) * sum(dilations)
        self.num_features = channels
        self.head = ForecastHead(channels, self.horizon, self.out_features, self.num_params_per_step)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last step's channels ``(B, channels)``."""
        return self.blocks(x.transpose(1, 2))[..., -1]  # (B, L, F) -> (B, F, L) -> (B, C, L) -> (B, C)

    def forward_params(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class NBeatsBlock(nn.Module):
    """Fully connected layers over a flat window, then a linear backcast ``(B, L*F)`` and forecast ``(B, out)``."""

    def __init__(self, in_features: int, out_features: int, hidden_size: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for index in range(num_layers):
            layers += [
                nn.Linear(in_features if index == 0 else hidden_size, hidden_size),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
        self.body = nn.Sequential(*layers)
        self.backcast = nn.Linear(hidden_size, in_features)
        self.forecast = nn.Linear(hidden_size, out_features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.backcast(h), self.forecast(h)


class MLPForecaster(Forecaster):
    """An MLP over the whole window as N-BEATS blocks: each fits what the blocks before it left of the input.

    Args:
        hidden_size: width of the fully connected layers.
        num_layers: layers per block.
        num_blocks: blocks (1: a plain MLP with a backcast nobody reads).
        dropout: dropout after each hidden layer.
        **task_args: see :class:`~zoo.tasks.forecasting.Forecaster`.

    >>> MLPForecaster(input_size=12, horizon=3, hidden_size=16)(torch.randn(2, 12, 1)).shape
    torch.Size([2, 3, 1])
    """

    def __init__(
        self,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_blocks: int = 3,
        dropout: float = 0.0,
        **task_args: Any,
    ) -> None:
        super().__init__(**task_args)
        if num_blocks < 1 or num_layers < 1:
            raise ValueError(f"num_blocks and num_layers must be positive, got {num_blocks}, {num_layers}")
        window = self.input_size * self.in_features
        self.out_shape = (self.horizon, self.out_features, self.num_params_per_step)
        outputs = self.horizon * self.out_features * self.num_params_per_step
        self.blocks = nn.ModuleList(
            NBeatsBlock(window, outputs, hidden_size, num_layers, dropout) for _ in range(num_blocks)
        )

    def forward_params(self, x: torch.Tensor) -> torch.Tensor:
        residual, forecast = x.flatten(1), 0.0  # (B, L * F)
        for block in self.blocks:
            backcast, block_forecast = block(residual)
            residual, forecast = residual - backcast, forecast + block_forecast
        return forecast.view(-1, *self.out_shape)  # (B, H, T, P)


class TransformerForecaster(Forecaster):
    """An encoder-only Transformer over the window's steps (:class:`~zoo.transformer.TransformerEncoder`), every
    step's state flattened into a linear head (the flatten head of PatchTST, Nie et al., 2023, one step a token).

    Args:
        embed_dim: model width (each step's columns are projected to it).
        depth: encoder blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width over ``embed_dim``.
        dropout: attention, residual and head dropout.
        position: ``"sinusoidal"``, ``"learned"``, ``"rotary"`` or ``"none"``.
        **task_args: see :class:`~zoo.tasks.forecasting.Forecaster`.

    >>> TransformerForecaster(input_size=12, horizon=3, embed_dim=16, num_heads=2)(torch.randn(2, 12, 1)).shape
    torch.Size([2, 3, 1])
    """

    def __init__(
        self,
        embed_dim: int = 32,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        position: PositionName = "sinusoidal",
        **task_args: Any,
    ) -> None:
        super().__init__(**task_args)
        self.embed = nn.Linear(self.in_features, embed_dim)
        self.position = build_position_encoding(position, embed_dim, self.input_size)
        self.encoder = TransformerEncoder(embed_dim, depth, num_heads, mlp_ratio, dropout, rotary=position == "rotary")
        self.dropout = nn.Dropout(dropout)
        self.num_features = embed_dim * self.input_size
        self.head = ForecastHead(self.num_features, self.horizon, self.out_features, self.num_params_per_step)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Every step's state, flattened: ``(B, L * embed_dim)``."""
        h = self.embed(x)  # (B, L, D)
        if self.position is not None:
            h = self.position(h)
        states, _ = self.encoder(self.dropout(h))  # (B, L, D)
        return self.dropout(states.flatten(1))

    def forward_params(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# --- presets --------------------------------------------------------------------------------------------------


#: Preset sizes: 32 steps of one series -> 8 steps (the sunspots recipe's window); the CLI links the data's own.
_WINDOW = dict(input_size=32, horizon=8, in_features=1, out_features=1)
_SERIES = InputSpec((32, 1), kind="series")


@register_model(
    NaiveForecaster, input_size=_SERIES, num_params=8, source="naive forecast (last value)", task="forecasting"
)
def naive_forecast() -> dict[str, Any]:
    """The last value over the horizon, with a learned standard deviation per step."""
    return dict(_WINDOW)


@register_model(
    SeasonalNaiveForecaster, input_size=_SERIES, num_params=8, source="seasonal naive forecast", task="forecasting"
)
def seasonal_naive_forecast() -> dict[str, Any]:
    """The value one season (12 steps unless linked from the data) earlier, with a learned standard deviation."""
    return dict(_WINDOW, season_length=12)


@register_model(
    WindowMeanForecaster, input_size=_SERIES, num_params=8, source="window mean forecast", task="forecasting"
)
def window_mean_forecast() -> dict[str, Any]:
    """The mean of the context window over the horizon, with a learned standard deviation."""
    return dict(_WINDOW)


@register_model(
    LSTMForecaster,
    input_size=_SERIES,
    num_params=55_560,
    source="stacked LSTM with attention (Luong et al., 2015)",
    task="forecasting",
)
def lstm_attn_forecast() -> dict[str, Any]:
    """Two LSTM layers of 64, attention over the states, a linear head for the horizon."""
    return dict(_WINDOW, hidden_size=64, num_layers=2, attention=True)


@register_model(
    RecursiveLSTMForecaster,
    input_size=_SERIES,
    num_params=50_497,
    source="recursive (iterated one-step) LSTM forecaster",
    task="forecasting",
)
def lstm_recursive_forecast() -> dict[str, Any]:
    """Two LSTM layers of 64 and a one-step head, rolled out over the horizon on its own forecasts."""
    return dict(_WINDOW, hidden_size=64, num_layers=2)


@register_model(
    TCNForecaster, input_size=_SERIES, num_params=22_184, source="TCN (Bai et al., 2018)", task="forecasting"
)
def tcn_forecast() -> dict[str, Any]:
    """Four residual blocks of 32 channels, dilations 1, 2, 4, 8 (receptive field 61 steps)."""
    return dict(_WINDOW, channels=32, dilations=(1, 2, 4, 8), kernel_size=3)


@register_model(
    MLPForecaster,
    input_size=_SERIES,
    num_params=77_688,
    source="N-BEATS generic (Oreshkin et al., 2020)",
    task="forecasting",
)
def nbeats_forecast() -> dict[str, Any]:
    """Three N-BEATS blocks of two 128-wide layers over the flattened window."""
    return dict(_WINDOW, hidden_size=128, num_layers=2, num_blocks=3)


@register_model(
    TransformerForecaster,
    input_size=_SERIES,
    num_params=25_416,
    source="encoder-only Transformer (Vaswani et al., 2017)",
    task="forecasting",
)
def transformer_forecast() -> dict[str, Any]:
    """Two pre-norm encoder blocks of width 32 (4 heads) over the 32 steps, a flatten head for the horizon."""
    return dict(_WINDOW, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0)
