"""Segmentation: the multi-Otsu threshold baseline and the SegNet model (train / predict)."""

from .threshold import threshold

__all__: list[str] = ["threshold"]
