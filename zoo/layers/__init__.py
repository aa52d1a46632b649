"""Small layers shared by several model families."""

from zoo.layers.activations import ACTIVATIONS, Mish, Swish, get_act_layer
from zoo.layers.conv import ConvNormAct
from zoo.layers.conv_blocks import Conv1dStack, ConvStack, DilatedConvStack, UpsampleBlock, conv_stages
from zoo.layers.drop import DropPath, drop_path
from zoo.layers.init import InitScheme, init_weights
from zoo.layers.losses import focal_loss
from zoo.layers.norm import get_norm_layer
from zoo.layers.squeeze_excite import SqueezeExcite

__all__ = [
    "ACTIVATIONS",
    "Conv1dStack",
    "ConvNormAct",
    "ConvStack",
    "DilatedConvStack",
    "DropPath",
    "InitScheme",
    "Mish",
    "SqueezeExcite",
    "Swish",
    "UpsampleBlock",
    "conv_stages",
    "drop_path",
    "focal_loss",
    "get_act_layer",
    "get_norm_layer",
    "init_weights",
]
