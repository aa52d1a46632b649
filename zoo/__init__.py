"""lightning-zoo: registered architectures, each a LightningModule whose training comes from a task base.

>>> import zoo
>>> model = zoo.create_model("cnn_bn", num_classes=10)
>>> zoo.list_models("cnn*")[:2]
['cnn_bn', 'cnn_bn_cifar']
"""

from zoo.autoencoder import ConvAutoencoder, ConvVAE
from zoo.backbone import Backbone
from zoo.bag_of_embeddings import BagOfEmbeddings
from zoo.captioning import ImageCaptioner
from zoo.checkpoint import load_from_checkpoint, read_checkpoint
from zoo.classical_denoising import ClassicalDenoiser
from zoo.cnn import CNN, SimpleCNN
from zoo.cnn1d import SequenceCNN
from zoo.denoising import DnCNN, UNet, UNetDenoiser
from zoo.densenet import DenseNet
from zoo.efficientnet import EfficientNet
from zoo.ensemble import CheckpointEnsemble
from zoo.forecasters import (
    LSTMForecaster,
    MLPForecaster,
    NaiveForecaster,
    RecursiveLSTMForecaster,
    SeasonalNaiveForecaster,
    TCNForecaster,
    TransformerForecaster,
    WindowMeanForecaster,
)
from zoo.mlp import MLP, MLPRegressor
from zoo.mlp_variants import ImageTabularRegressor, ResidualMLPRegressor
from zoo.pointnet import PointNet
from zoo.registry import (
    InputSpec,
    ModelInfo,
    UnknownModelError,
    create_model,
    is_model,
    list_models,
    model_info,
    preset_config,
    register_model,
)
from zoo.resnet import ResNet
from zoo.rnn import RNNClassifier, RNNEncoder, RNNRegressor, RNNTagger
from zoo.rnn_lm import LSTMLanguageModel
from zoo.seq2seq_rnn import LSTMSeq2Seq
from zoo.tasks import (
    CaptioningTask,
    ClassificationTask,
    Denoiser,
    Forecaster,
    ImageClassifier,
    LanguageModel,
    Reconstruction,
    Regressor,
    Seq2SeqTask,
    SequenceClassifier,
    SequenceRegressor,
    SequenceTagger,
    TaskModule,
    VariationalReconstruction,
)
from zoo.transformer import GPT, Seq2SeqTransformer, TransformerClassifier
from zoo.vgg import VGGStyleNet
from zoo.vit import VisionTransformer
from zoo.volumetric import CNN3D
from zoo.weights import Weights, get_weights, list_weights, load_weights
from zoo.whitened_vgg import WhitenedVGG

__all__ = [
    "CNN",
    "CNN3D",
    "GPT",
    "MLP",
    "Backbone",
    "BagOfEmbeddings",
    "CaptioningTask",
    "CheckpointEnsemble",
    "ClassicalDenoiser",
    "ClassificationTask",
    "ConvAutoencoder",
    "ConvVAE",
    "Denoiser",
    "DenseNet",
    "DnCNN",
    "EfficientNet",
    "Forecaster",
    "ImageCaptioner",
    "ImageClassifier",
    "ImageTabularRegressor",
    "InputSpec",
    "LSTMForecaster",
    "LSTMLanguageModel",
    "LSTMSeq2Seq",
    "LanguageModel",
    "MLPForecaster",
    "MLPRegressor",
    "ModelInfo",
    "NaiveForecaster",
    "PointNet",
    "RNNClassifier",
    "RNNEncoder",
    "RNNRegressor",
    "RNNTagger",
    "Reconstruction",
    "RecursiveLSTMForecaster",
    "Regressor",
    "ResNet",
    "ResidualMLPRegressor",
    "SeasonalNaiveForecaster",
    "Seq2SeqTask",
    "Seq2SeqTransformer",
    "SequenceCNN",
    "SequenceClassifier",
    "SequenceRegressor",
    "SequenceTagger",
    "SimpleCNN",
    "TCNForecaster",
    "TaskModule",
    "TransformerClassifier",
    "TransformerForecaster",
    "UNet",
    "UNetDenoiser",
    "UnknownModelError",
    "VGGStyleNet",
    "VariationalReconstruction",
    "VisionTransformer",
    "Weights",
    "WhitenedVGG",
    "WindowMeanForecaster",
    "create_model",
    "get_weights",
    "is_model",
    "list_models",
    "list_weights",
    "load_from_checkpoint",
    "load_weights",
    "model_info",
    "preset_config",
    "read_checkpoint",
    "register_model",
]
