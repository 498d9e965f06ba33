"""Segmentation: the multi-Otsu threshold baseline and the SegNet model (train / predict)."""

from .threshold import threshold
from .model import Model
from .train import train
from .infer import predict

__all__: list[str] = ["threshold", "Model", "train", "predict"]
