"""Segmentation: the multi-Otsu threshold baseline and the SegNet model (train / predict)."""

__all__: list[str] = []
