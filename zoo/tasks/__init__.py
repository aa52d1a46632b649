"""Task bases: how a model trains (loss, metrics, optimizer), separate from what it computes."""

from zoo.tasks.base import TaskModule
from zoo.tasks.denoising import Denoiser
from zoo.tasks.image_classification import ImageClassifier, classification_metrics

__all__ = ["Denoiser", "ImageClassifier", "TaskModule", "classification_metrics"]
