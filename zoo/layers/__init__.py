"""Small layers shared by several model families."""

from zoo.layers.activations import ACTIVATIONS, LearnableSwish, Mish, Swish, get_act_layer, inplace_activation
from zoo.layers.batchnorm import BatchNorm2dScratch
from zoo.layers.conv import ConvNormAct
from zoo.layers.conv_blocks import Conv1dStack, ConvStack, DilatedConvStack, UpsampleBlock, conv_stages
from zoo.layers.init import InitScheme, init_weights
from zoo.layers.losses import focal_loss
from zoo.layers.norm import ChannelLayerNorm, get_norm_layer
from zoo.layers.sequence import PoolingName, SequencePooling, lengths_to_mask

__all__ = [
    "ACTIVATIONS",
    "BatchNorm2dScratch",
    "ChannelLayerNorm",
    "Conv1dStack",
    "ConvNormAct",
    "ConvStack",
    "DilatedConvStack",
    "InitScheme",
    "LearnableSwish",
    "Mish",
    "PoolingName",
    "SequencePooling",
    "Swish",
    "UpsampleBlock",
    "conv_stages",
    "focal_loss",
    "get_act_layer",
    "get_norm_layer",
    "init_weights",
    "inplace_activation",
    "lengths_to_mask",
]
