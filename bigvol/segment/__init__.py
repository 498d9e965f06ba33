"""Segmentation: the multi-Otsu threshold baseline, the SegNet model and an ilastik-style
random forest (train / predict)."""

from ._threshold import histogram, threshold
from ._train import read_labels, train
from ._uncertainty import slice_uncertainty, suggest_slices, uncertainty
from .forest import ForestModel, train_forest
from .infer import predict
from .model import Model

__all__: list[str] = ["threshold", "histogram", "Model", "train", "read_labels", "predict",
                      "uncertainty", "slice_uncertainty", "suggest_slices", "ForestModel",
                      "train_forest"]
