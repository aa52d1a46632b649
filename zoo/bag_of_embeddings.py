"""Bag of embeddings: the fastText-style baseline of text classification (Joulin et al., 2017, "Bag of Tricks for
Efficient Text Classification").

A token embedding averaged over the valid tokens of each text (padding never counts), optionally beside their
element-wise maximum, then an MLP (:class:`~zoo.mlp.MLPStack`) and a linear head. With no hidden layer and mean
pooling it is fastText's linear model over averaged word vectors; fastText's word n-grams and hierarchical softmax are
left out. Word order is ignored: what a sequence model gains over it is what order is worth on the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from zoo.layers import SequencePooling
from zoo.mlp import MLPStack
from zoo.registry import InputSpec, register_model
from zoo.tasks import SequenceClassifier

BagPooling = Literal["mean", "max", "mean_max"]


class BagOfEmbeddings(SequenceClassifier):
    """Token embedding, mean (and/or max) over the valid tokens, an MLP and a linear head.

    Args:
        num_classes: number of classes.
        vocab_size: number of token ids (from the data).
        in_features: unused (token inputs only); kept so the data's sizes link as for every sequence classifier.
        max_length: the longest sequence accepted (0: any length).
        pooling: ``"mean"`` (fastText), ``"max"``, or ``"mean_max"`` (both, concatenated).
        embed_dim: token embedding size.
        hidden_dims: width of each hidden layer of the MLP (empty: the head reads the pooled embedding).
        dropout: dropout on the pooled embedding and after each hidden layer.
        act: activation of the hidden layers.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.SequenceClassifier`.

    >>> model = BagOfEmbeddings(num_classes=3, vocab_size=10, embed_dim=8, hidden_dims=(16,), pooling="mean_max")
    >>> model(torch.randint(0, 10, (2, 5)), torch.tensor([5, 2])).shape, model.num_features
    (torch.Size([2, 3]), 16)
    """

    def __init__(
        self,
        num_classes: int = 2,
        vocab_size: int = 1000,
        in_features: int = 1,
        max_length: int = 0,
        pooling: BagPooling = "mean",
        embed_dim: int = 64,
        hidden_dims: Sequence[int] = (64,),
        dropout: float = 0.0,
        act: str = "relu",
        **task_args: Any,
    ) -> None:
        if vocab_size < 1:
            raise ValueError(f"BagOfEmbeddings reads token ids: vocab_size must be at least 1, got {vocab_size}")
        if pooling not in ("mean", "max", "mean_max"):
            raise ValueError(f"Unknown pooling {pooling!r}; choose 'mean', 'max' or 'mean_max'.")
        super().__init__(
            num_classes=num_classes,
            vocab_size=vocab_size,
            in_features=in_features,
            max_length=max_length,
            pooling=pooling,
            **task_args,
        )
        self.embed = nn.Embedding(vocab_size, embed_dim)
        modes = ("mean", "max") if pooling == "mean_max" else (pooling,)
        self.pools = nn.ModuleList(SequencePooling(mode) for mode in modes)
        self.dropout = nn.Dropout(dropout)
        self.mlp = MLPStack(embed_dim * len(modes), tuple(hidden_dims), act=act, dropout=dropout)
        self.num_features = self.mlp.num_features
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """MLP features ``(B, num_features)`` of the pooled embeddings of the valid tokens."""
        lengths = self.check_input(x, lengths)
        tokens = self.embed(x)  # (B, T, embed_dim)
        pooled = torch.cat([pool(tokens, lengths) for pool in self.pools], dim=-1)  # (B, embed_dim * len(pools))
        return self.mlp(self.dropout(pooled))


def _tokens(length: int, vocab_size: int) -> InputSpec:
    return InputSpec((length,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=vocab_size)


@register_model(
    BagOfEmbeddings,
    input_size=_tokens(16, 8),
    num_params=404,
    source="tiny bag of embeddings (fastText-style) for fast tests",
    task="sequence_classification",
)
def bag_of_embeddings_test() -> dict[str, Any]:
    """Embeddings of 8 dims over an 8-id vocabulary, mean and max pooling, one hidden layer of 16."""
    return dict(num_classes=4, vocab_size=8, max_length=16, pooling="mean_max", embed_dim=8, hidden_dims=(16,))


@register_model(
    BagOfEmbeddings,
    input_size=_tokens(128, 1500),
    num_params=100_680,
    source="bag of embeddings (Joulin et al., 2017) on Shakespeare's speakers",
    task="sequence_classification",
)
def bag_of_embeddings_speakers() -> dict[str, Any]:
    """Embeddings of 64 dims over the 1,500 ids of ShakespeareSpeakersDataModule, mean pooling, one hidden layer of
    64, eight speakers."""
    return dict(
        num_classes=8, vocab_size=1500, max_length=128, pooling="mean", embed_dim=64, hidden_dims=(64,), dropout=0.3
    )
