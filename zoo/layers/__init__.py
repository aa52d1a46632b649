"""Small layers shared by several model families."""

from zoo.layers.activations import ACTIVATIONS, Mish, Swish, get_act_layer
from zoo.layers.conv import ConvNormAct
from zoo.layers.init import InitScheme, init_weights
from zoo.layers.losses import focal_loss
from zoo.layers.norm import get_norm_layer

__all__ = [
    "ACTIVATIONS",
    "ConvNormAct",
    "InitScheme",
    "Mish",
    "Swish",
    "focal_loss",
    "get_act_layer",
    "get_norm_layer",
    "init_weights",
]
