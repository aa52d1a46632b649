"""Recurrent networks: tanh RNN, LSTM and GRU, stacked and uni- or bidirectional, over padded batches.

:class:`RNNEncoder` is the plain ``nn.Module`` (token embedding or float features in, every step's states and the
final state out); variable-length batches are packed (``pack_padded_sequence``), so a padded batch gives each
sequence the outputs it has alone. :class:`RNNClassifier`, :class:`RNNTagger` and :class:`RNNRegressor` put it on
the sequence classification, tagging and per-step regression (denoising) tasks. Initialization follows common
practice for recurrent nets: orthogonal recurrent weights (Saxe et al., 2014), Xavier input weights, zero biases
except an LSTM forget-gate bias of 1 (Jozefowicz et al., 2015), which lets gradients flow through long sequences from
the first step.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from zoo.layers import PoolingName, SequencePooling
from zoo.registry import InputSpec, register_model
from zoo.tasks import SequenceClassifier, SequenceRegressor, SequenceTagger

CellName = Literal["rnn", "lstm", "gru"]
_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNNEncoder(nn.Module):
    """Stacked recurrent encoder over token ids ``(B, T)`` or features ``(B, T, in_features)``.

    Args:
        cell: ``"rnn"`` (tanh), ``"lstm"`` or ``"gru"``.
        vocab_size: number of token ids (an embedding of ``embed_dim``); 0 for float features.
        in_features: features per step of float inputs.
        embed_dim: token embedding size.
        hidden_size: state size per direction.
        num_layers: stacked layers.
        bidirectional: run a backward layer too; states are ``2 * hidden_size`` wide.
        dropout: dropout between stacked layers.

    >>> encoder = RNNEncoder("gru", in_features=3, hidden_size=8, bidirectional=True)
    >>> states, final = encoder(torch.randn(2, 5, 3), torch.tensor([5, 2]))
    >>> states.shape, final.shape
    (torch.Size([2, 5, 16]), torch.Size([2, 16]))
    """

    def __init__(
        self,
        cell: CellName = "lstm",
        vocab_size: int = 0,
        in_features: int = 1,
        embed_dim: int = 32,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"Unknown cell {cell!r}; choose from {', '.join(_CELLS)}.")
        self.cell = cell
        self.embed = nn.Embedding(vocab_size, embed_dim) if vocab_size else None
        self.rnn = _CELLS[cell](
            embed_dim if vocab_size else in_features,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.num_directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.num_directions
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Orthogonal recurrent and Xavier input weights per gate, zero biases, LSTM forget-gate bias 1."""
        hidden, gates = self.rnn.hidden_size, {"rnn": 1, "lstm": 4, "gru": 3}[self.cell]
        for name, param in self.rnn.named_parameters():
            if name.startswith("weight"):
                init = nn.init.orthogonal_ if name.startswith("weight_hh") else nn.init.xavier_uniform_
                for gate in range(gates):  # each gate's block on its own: (gates * H, in) stacks them
                    init(param.data[gate * hidden : (gate + 1) * hidden])
            else:
                nn.init.zeros_(param)
                if self.cell == "lstm" and name.startswith("bias_ih"):
                    param.data[hidden : 2 * hidden] = 1.0  # gate order i, f, g, o

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """States ``(B, T, output_size)`` (zero after each length) and the last layer's final state
        ``(B, output_size)`` (forward direction at step ``lengths - 1``, backward direction at step 0)."""
        inputs = self.embed(x) if self.embed is not None else x  # (B, T, E)
        steps = inputs.shape[1]
        lengths = None if lengths is None else lengths.cpu()  # packing needs them on the CPU: move them once
        if lengths is None or int(lengths.min()) == steps:
            states, final = self.rnn(inputs)
        else:
            packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
            states, final = self.rnn(packed)
            states, _ = pad_packed_sequence(states, batch_first=True, total_length=steps)
        hidden = final[0] if self.cell == "lstm" else final  # (layers * directions, B, H)
        last = hidden[-self.num_directions :].transpose(0, 1).flatten(1)  # (B, directions * H)
        return states, last


def _add_layers(
    model: SequenceClassifier | SequenceTagger,
    cell: CellName,
    embed_dim: int,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    dropout: float,
) -> None:
    """The encoder, dropout and linear head both task classes put on the network, sized from the task's inputs."""
    model.encoder = RNNEncoder(
        cell, model.vocab_size, model.in_features, embed_dim, hidden_size, num_layers, bidirectional, dropout
    )
    model.num_features = model.encoder.output_size
    model.dropout = nn.Dropout(dropout)
    model.head = nn.Linear(model.num_features, model.num_classes)


class RNNClassifier(SequenceClassifier):
    """A recurrent encoder, pooling over valid steps (the final state by default) and a linear head.

    Args:
        num_classes: number of classes.
        vocab_size: number of token ids (0: float features).
        in_features: features per step of float inputs.
        max_length: longest sequence accepted (0: any).
        pooling: ``"last"`` (the final state of each direction), ``"mean"``, ``"max"`` or ``"attention"``.
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        embed_dim: token embedding size.
        hidden_size: state size per direction.
        num_layers: stacked layers.
        bidirectional: add a backward direction.
        dropout: dropout between layers and before the head.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.SequenceClassifier`.

    >>> model = RNNClassifier(num_classes=10, in_features=28, hidden_size=32)
    >>> model(torch.randn(4, 28, 28)).shape
    torch.Size([4, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        vocab_size: int = 0,
        in_features: int = 28,
        max_length: int = 0,
        pooling: PoolingName = "last",
        cell: CellName = "lstm",
        embed_dim: int = 32,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        **task_args: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            vocab_size=vocab_size,
            in_features=in_features,
            max_length=max_length,
            pooling=pooling,
            **task_args,
        )
        _add_layers(self, cell, embed_dim, hidden_size, num_layers, bidirectional, dropout)
        self.pool = SequencePooling(pooling, self.num_features)

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features ``(B, num_features)``."""
        given = lengths
        lengths = self.check_input(x, lengths)
        # Without lengths the encoder skips its data-dependent packing test, so the model exports (torch.export).
        states, last = self.encoder(x, given)
        return self.dropout(self.pool(states, lengths, last=last))


class RNNTagger(SequenceTagger):
    """A recurrent encoder with a linear head at every step (bidirectional: each tag sees the whole sequence).

    Args:
        num_classes: number of tags.
        vocab_size: number of token ids (0: float features).
        in_features: features per step of float inputs.
        max_length: longest sequence accepted (0: any).
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        embed_dim: token embedding size.
        hidden_size: state size per direction.
        num_layers: stacked layers.
        bidirectional: add a backward direction.
        dropout: dropout between layers and before the head.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.SequenceTagger`.

    >>> model = RNNTagger(num_classes=3, vocab_size=10, hidden_size=16, bidirectional=True)
    >>> model(torch.randint(0, 10, (2, 7))).shape
    torch.Size([2, 7, 3])
    """

    def __init__(
        self,
        num_classes: int = 3,
        vocab_size: int = 16,
        in_features: int = 1,
        max_length: int = 0,
        cell: CellName = "lstm",
        embed_dim: int = 32,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        **task_args: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes, vocab_size=vocab_size, in_features=in_features, max_length=max_length, **task_args
        )
        _add_layers(self, cell, embed_dim, hidden_size, num_layers, bidirectional, dropout)

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Per-step features ``(B, T, num_features)``, zero after each length."""
        given = lengths
        self.check_input(x, lengths)
        return self.dropout(self.encoder(x, given)[0])  # no lengths: no data-dependent packing test (exportable)


class RNNRegressor(SequenceRegressor):
    """A recurrent encoder with a linear head at every step: a real value per step (bidirectional: each value sees
    the whole sequence, as a denoiser should).

    Args:
        in_features: features per step (from the data).
        out_features: targets per step (from the data).
        max_length: longest sequence accepted (0: any).
        cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
        hidden_size: state size per direction.
        num_layers: stacked layers.
        bidirectional: add a backward direction.
        dropout: dropout between layers and before the head.
        **task_args: the data's statistics, loss, optimizer and schedule, see :class:`~zoo.tasks.SequenceRegressor`.

    >>> model = RNNRegressor(in_features=1, out_features=1, hidden_size=8)
    >>> model(torch.randn(2, 7, 1), torch.tensor([7, 4])).shape
    torch.Size([2, 7, 1])
    """

    def __init__(
        self,
        in_features: int = 1,
        out_features: int = 1,
        max_length: int = 0,
        cell: CellName = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        **task_args: Any,
    ) -> None:
        super().__init__(in_features=in_features, out_features=out_features, max_length=max_length, **task_args)
        sizes = dict(in_features=in_features, hidden_size=hidden_size, num_layers=num_layers)
        self.encoder = RNNEncoder(cell, **sizes, bidirectional=bidirectional, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.output_size, out_features)

    def forward_scaled(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # No lengths: no data-dependent packing test, so the model exports.
        states = self.encoder(x, lengths)[0]  # (B, T, directions * hidden)
        return self.head(self.dropout(states))  # (B, T, out_features)


_SMNIST = InputSpec((28, 28), kind="series")


@register_model(
    RNNClassifier,
    input_size=_SMNIST,
    num_params=214_282,
    source="LSTM on sequential MNIST rows",
    task="sequence_classification",
)
def lstm_smnist() -> dict[str, Any]:
    """Two LSTM layers of 128 over the 28 rows of an MNIST image (28 features a step)."""
    return dict(num_classes=10, in_features=28, max_length=28, cell="lstm", hidden_size=128, num_layers=2)


@register_model(
    RNNClassifier,
    input_size=InputSpec((8, 8), kind="series"),
    num_params=19_594,
    source="LSTM on the rows of 8x8 digits",
    task="sequence_classification",
)
def lstm_digits() -> dict[str, Any]:
    """One LSTM layer of 64 over the 8 rows of scikit-learn's 8x8 digits."""
    return dict(num_classes=10, in_features=8, max_length=8, cell="lstm", hidden_size=64)


@register_model(
    RNNClassifier,
    input_size=InputSpec((64,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=2),
    num_params=15_906,
    source="GRU on variable-length bit strings (parity)",
    task="sequence_classification",
)
def gru_parity() -> dict[str, Any]:
    """One GRU layer of 64 over bits (embedded in 16 dims), up to 64 steps, final-state pooling."""
    return dict(num_classes=2, vocab_size=2, max_length=64, cell="gru", embed_dim=16, hidden_size=64)


@register_model(
    RNNTagger,
    input_size=InputSpec((64,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=16),
    num_params=51_075,
    source="bidirectional LSTM tagger (Graves & Schmidhuber, 2005)",
    task="sequence_tagging",
)
def bilstm_tagger() -> dict[str, Any]:
    """A bidirectional LSTM layer of 64 per direction over tokens of a 16-id vocabulary, a tag per step."""
    return dict(num_classes=3, vocab_size=16, max_length=64, cell="lstm", hidden_size=64, bidirectional=True)


@register_model(
    RNNClassifier,
    input_size=InputSpec((64, 1), kind="series"),
    num_params=4_546,
    source="LSTM telling a noisy sine from a cosine",
    task="sequence_classification",
)
def lstm_sincos() -> dict[str, Any]:
    """One LSTM layer of 32 over windows of 64 steps of one value, final-state pooling, two classes."""
    return dict(num_classes=2, in_features=1, max_length=64, cell="lstm", hidden_size=32)


@register_model(
    RNNRegressor,
    input_size=InputSpec((64, 1), kind="series", variable_length=True),
    num_params=34_113,
    source="bidirectional LSTM denoiser of a series (a clean value per step)",
    task="regression",
)
def bilstm_denoiser() -> dict[str, Any]:
    """Two bidirectional LSTM layers of 32 per direction over one value a step, a linear head per step."""
    return dict(in_features=1, out_features=1, max_length=64, cell="lstm", hidden_size=32, num_layers=2)


@register_model(
    RNNClassifier,
    input_size=InputSpec((16,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=8),
    num_params=1_573,
    source="tiny tanh RNN (Elman, 1990) for fast tests",
    task="sequence_classification",
)
def rnn_tanh_test() -> dict[str, Any]:
    """A tanh RNN of 32 units with attention pooling over tokens of an 8-id vocabulary."""
    return dict(
        num_classes=4, vocab_size=8, max_length=16, cell="rnn", embed_dim=8, hidden_size=32, pooling="attention"
    )


@register_model(
    RNNTagger,
    input_size=InputSpec((16, 4), kind="series", variable_length=True),
    num_params=2_722,
    source="tiny two-layer GRU tagger for fast tests",
    task="sequence_tagging",
)
def gru_tagger_test() -> dict[str, Any]:
    """Two GRU layers of 16 over 4 features a step, a tag per step."""
    return dict(
        num_classes=2,
        vocab_size=0,
        in_features=4,
        max_length=16,
        cell="gru",
        hidden_size=16,
        num_layers=2,
        bidirectional=False,
    )


@register_model(
    RNNClassifier,
    input_size=InputSpec((128,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=1500),
    num_params=292_360,
    source="bidirectional LSTM with max pooling over words (Conneau et al., 2017) on Shakespeare's speakers",
    task="sequence_classification",
)
def lstm_speakers() -> dict[str, Any]:
    """A bidirectional LSTM layer of 64 per direction over 128-dim embeddings of ShakespeareSpeakersDataModule's
    1,500 ids, max pooling over the valid words, eight speakers."""
    return dict(
        num_classes=8,
        vocab_size=1500,
        max_length=128,
        cell="lstm",
        embed_dim=128,
        hidden_size=64,
        bidirectional=True,
        pooling="max",
        dropout=0.5,
    )
