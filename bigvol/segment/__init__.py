"""Segmentation: the multi-Otsu threshold baseline and the SegNet model (train / predict)."""

from ._threshold import histogram, threshold
from ._train import read_labels, train
from ._uncertainty import slice_uncertainty, suggest_slices, uncertainty
from .infer import predict
from .model import Model

__all__: list[str] = ["threshold", "histogram", "Model", "train", "read_labels", "predict",
                      "uncertainty", "slice_uncertainty", "suggest_slices"]
