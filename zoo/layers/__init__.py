"""Small layers shared by several model families."""

from zoo.layers.activations import ACTIVATIONS, Mish, Swish, get_act_layer
from zoo.layers.conv import ConvNormAct
from zoo.layers.conv_blocks import Conv1dStack, ConvStack, DilatedConvStack, UpsampleBlock, conv_stages
from zoo.layers.init import InitScheme, init_weights
from zoo.layers.losses import focal_loss
from zoo.layers.norm import get_norm_layer

__all__ = [
    "ACTIVATIONS",
    "Conv1dStack",
    "ConvNormAct",
    "ConvStack",
    "DilatedConvStack",
    "InitScheme",
    "Mish",
    "Swish",
    "UpsampleBlock",
    "conv_stages",
    "focal_loss",
    "get_act_layer",
    "get_norm_layer",
    "init_weights",
]
