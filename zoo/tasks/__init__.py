"""Task bases: how a model trains (loss, metrics, optimizer), separate from what it computes."""

from zoo.tasks.base import TaskModule
from zoo.tasks.classification import ClassificationTask, classification_metrics
from zoo.tasks.denoising import Denoiser
from zoo.tasks.forecasting import Forecaster
from zoo.tasks.image_classification import ImageClassifier
from zoo.tasks.language_model import LanguageModel
from zoo.tasks.seq2seq import Seq2SeqTask
from zoo.tasks.sequence import SequenceClassifier, SequenceTagger

__all__ = [
    "ClassificationTask",
    "Denoiser",
    "Forecaster",
    "ImageClassifier",
    "LanguageModel",
    "Seq2SeqTask",
    "SequenceClassifier",
    "SequenceTagger",
    "TaskModule",
    "classification_metrics",
]
