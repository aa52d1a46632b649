"""LightningDataModules with real loading code.

Image datamodules expose ``num_classes``, ``in_channels``, ``img_size``, ``mean`` and ``std``; sequence datamodules
expose ``num_classes``, ``vocab_size``, ``in_features`` and ``max_length``; captioning datamodules the image sizes and
statistics with ``vocab``, ``vocab_size`` and ``max_length``; regression and forecasting datamodules the sizes and
statistics of their features and targets. The CLI links these into the model.
"""

from __future__ import annotations

import difflib

import lightning as L

from datamodules.base import (
    EvalDistributedSampler,
    ImageDataModule,
    InMemoryImageDataset,
    TensorSplitsDataModule,
    make_loader,
    split_indices,
)
from datamodules.captions import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    UNK,
    CaptionBatch,
    CaptionDataModule,
    CaptionDataset,
    COCOCaptionsDataModule,
    FlickrCaptionsDataModule,
    build_vocab,
    collate_captions,
    decode_caption,
    encode_caption,
    split_by_image,
    tokenize,
)
from datamodules.cifar import CIFAR10DataModule
from datamodules.digit_scenes import DigitScene, DigitScenesCaptionsDataModule, compose_scenes, scene_captions
from datamodules.digits import DigitsDataModule
from datamodules.fields import (
    FIELD_KINDS,
    ScientificFieldsDataModule,
    gaussian_random_field,
    heat_snapshot,
    microscopy_blobs,
)
from datamodules.image_csv import BalancedSampler, ImageCSVDataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from datamodules.pointcloud import ModelNetDataModule, ShapesPointCloudDataModule, read_off
from datamodules.regression import FUNCTIONS, CSVRegressionDataModule, FunctionDataModule, RegressionDataModule
from datamodules.resumable import ResumableLoader, ResumableRandomSampler
from datamodules.seq2seq import Seq2SeqBatch, Seq2SeqDataModule
from datamodules.sequence import IGNORE_INDEX, SequenceBatch, SequenceDataModule, SequenceDataset, pad_collate
from datamodules.sequential_mnist import DigitsSequenceDataModule, SequentialMNISTDataModule
from datamodules.signals import NoisySinesDataModule, SineCosineDataModule
from datamodules.synthetic import LocalExtremaDataModule, ParityDataModule
from datamodules.text import CharTextDataModule
from datamodules.text_classification import (
    ShakespeareSpeakersDataModule,
    TextClassificationDataModule,
    TextCSVDataModule,
    TextFolderDataModule,
)
from datamodules.timeseries import NAMED_SERIES, ForecastBatch, TimeSeriesDataModule
from datamodules.transforms import AUGMENTATIONS, build_augmentation
from datamodules.volumes import NpyVolumeFolderDataModule, ShapesVolumeDataModule

#: Short names accepted by the ``zoo`` command (``zoo fit --data MNIST``).
DATAMODULES: dict[str, type[L.LightningDataModule]] = {
    "Digits": DigitsDataModule,
    "MNIST": MNISTDataModule,
    "FashionMNIST": FashionMNISTDataModule,
    "CIFAR10": CIFAR10DataModule,
    "ImageFolder": ImageFolderDataModule,
    "ImageCSV": ImageCSVDataModule,
    "SequentialMNIST": SequentialMNISTDataModule,
    "DigitsSequence": DigitsSequenceDataModule,
    "Parity": ParityDataModule,
    "LocalExtrema": LocalExtremaDataModule,
    "SineCosine": SineCosineDataModule,
    "NoisySines": NoisySinesDataModule,
    "TimeSeries": TimeSeriesDataModule,
    "CharText": CharTextDataModule,
    "TextFolder": TextFolderDataModule,
    "TextCSV": TextCSVDataModule,
    "ShakespeareSpeakers": ShakespeareSpeakersDataModule,
    "Seq2Seq": Seq2SeqDataModule,
    "Function": FunctionDataModule,
    "CSVRegression": CSVRegressionDataModule,
    "ShapesPointCloud": ShapesPointCloudDataModule,
    "ModelNet": ModelNetDataModule,
    "ShapesVolume": ShapesVolumeDataModule,
    "NpyVolumeFolder": NpyVolumeFolderDataModule,
    "ScientificFields": ScientificFieldsDataModule,
    "FlickrCaptions": FlickrCaptionsDataModule,
    "COCOCaptions": COCOCaptionsDataModule,
    "DigitScenesCaptions": DigitScenesCaptionsDataModule,
}


def get_datamodule_class(name: str) -> type[L.LightningDataModule]:
    """Datamodule class by short name (``"MNIST"``) or class name (``"MNISTDataModule"``); suggests close matches."""
    by_name = {**DATAMODULES, **{cls.__name__: cls for cls in DATAMODULES.values()}}
    if name in by_name:
        return by_name[name]
    close = difflib.get_close_matches(name, by_name, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"Unknown datamodule {name!r}.{hint} Available: {', '.join(DATAMODULES)}.")


__all__ = [
    "AUGMENTATIONS",
    "BOS",
    "DATAMODULES",
    "EOS",
    "FIELD_KINDS",
    "FUNCTIONS",
    "IGNORE_INDEX",
    "NAMED_SERIES",
    "PAD",
    "SPECIALS",
    "UNK",
    "BalancedSampler",
    "CIFAR10DataModule",
    "COCOCaptionsDataModule",
    "CSVRegressionDataModule",
    "CaptionBatch",
    "CaptionDataModule",
    "CaptionDataset",
    "CharTextDataModule",
    "DigitScene",
    "DigitScenesCaptionsDataModule",
    "DigitsDataModule",
    "DigitsSequenceDataModule",
    "EvalDistributedSampler",
    "FashionMNISTDataModule",
    "FlickrCaptionsDataModule",
    "ForecastBatch",
    "FunctionDataModule",
    "ImageCSVDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "InMemoryImageDataset",
    "LocalExtremaDataModule",
    "MNISTDataModule",
    "ModelNetDataModule",
    "NoisySinesDataModule",
    "NpyVolumeFolderDataModule",
    "ParityDataModule",
    "RegressionDataModule",
    "ResumableLoader",
    "ResumableRandomSampler",
    "ScientificFieldsDataModule",
    "Seq2SeqBatch",
    "Seq2SeqDataModule",
    "SequenceBatch",
    "SequenceDataModule",
    "SequenceDataset",
    "SequentialMNISTDataModule",
    "ShakespeareSpeakersDataModule",
    "ShapesPointCloudDataModule",
    "ShapesVolumeDataModule",
    "SineCosineDataModule",
    "TensorSplitsDataModule",
    "TextCSVDataModule",
    "TextClassificationDataModule",
    "TextFolderDataModule",
    "TimeSeriesDataModule",
    "build_augmentation",
    "build_vocab",
    "collate_captions",
    "compose_scenes",
    "decode_caption",
    "encode_caption",
    "gaussian_random_field",
    "get_datamodule_class",
    "heat_snapshot",
    "make_loader",
    "microscopy_blobs",
    "pad_collate",
    "read_off",
    "scene_captions",
    "split_by_image",
    "split_indices",
    "tokenize",
]
