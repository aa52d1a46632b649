"""Task bases: how a model trains (loss, metrics, optimizer), separate from what it computes."""

from zoo.tasks.base import Split, StepOutput, TaskModule
from zoo.tasks.captioning import CaptioningTask
from zoo.tasks.classification import ClassificationTask
from zoo.tasks.denoising import Denoiser
from zoo.tasks.forecasting import Forecaster
from zoo.tasks.image_classification import ImageClassifier
from zoo.tasks.language_model import LanguageModel
from zoo.tasks.reconstruction import Reconstruction, VariationalReconstruction
from zoo.tasks.regression import Regressor, SequenceRegressor
from zoo.tasks.seq2seq import Seq2SeqTask
from zoo.tasks.sequence import SequenceClassifier, SequenceTagger

__all__ = [
    "CaptioningTask",
    "ClassificationTask",
    "Denoiser",
    "Forecaster",
    "ImageClassifier",
    "LanguageModel",
    "Reconstruction",
    "Regressor",
    "Seq2SeqTask",
    "SequenceClassifier",
    "SequenceRegressor",
    "SequenceTagger",
    "Split",
    "StepOutput",
    "TaskModule",
    "VariationalReconstruction",
]
