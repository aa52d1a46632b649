"""Task bases: how a model trains (loss, metrics, optimizer), separate from what it computes."""

from zoo.tasks.base import Split, StepOutput, TaskModule
from zoo.tasks.classification import ClassificationTask
from zoo.tasks.denoising import Denoiser
from zoo.tasks.forecasting import Forecaster
from zoo.tasks.image_classification import ImageClassifier
from zoo.tasks.language_model import LanguageModel
from zoo.tasks.regression import Regressor
from zoo.tasks.seq2seq import Seq2SeqTask
from zoo.tasks.sequence import SequenceClassifier, SequenceTagger

__all__ = [
    "ClassificationTask",
    "Denoiser",
    "Forecaster",
    "ImageClassifier",
    "LanguageModel",
    "Regressor",
    "Seq2SeqTask",
    "SequenceClassifier",
    "SequenceTagger",
    "Split",
    "StepOutput",
    "TaskModule",
]
