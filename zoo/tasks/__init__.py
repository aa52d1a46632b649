"""Task bases: how a model trains (loss, metrics, optimizer), separate from what it computes."""

from zoo.tasks.base import OptimArgs, TaskModule
from zoo.tasks.image_classification import ClassifierArgs, ImageClassifier, classification_metrics

__all__ = ["ClassifierArgs", "ImageClassifier", "OptimArgs", "TaskModule", "classification_metrics"]
