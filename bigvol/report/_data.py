"""What the report reads from a run store: the arrays it shows (:class:`_Store` hands out
complete ``(z, y, x)`` arrays only and notes the missing ones), slice planes downsampled for
display (:func:`_shrink`) and the centred, strided crop of the 3D views (:func:`_crop`)."""

from __future__ import annotations

import math

import numpy as np

_ORTHO_ARRAYS = ("raw", "normalized", "segmentation", "threshold", "truth")
_LABEL_ARRAYS = ("segmentation", "threshold", "truth")


def _shrink(a: np.ndarray, step: int, labels: bool) -> np.ndarray:
    """Downsample a plane for display: nearest (every ``step``-th) for labels, block mean
    for gray levels."""
    if step <= 1:
        return a
    if labels:
        return a[::step, ::step]
    h, w = (a.shape[0] // step) * step, (a.shape[1] // step) * step
    if h == 0 or w == 0:
        return a[::step, ::step]
    return a[:h, :w].reshape(h // step, step, w // step, step).mean(axis=(1, 3))


class _Store:
    """What the report reads from a run store: complete arrays only, slices only."""

    def __init__(self, run):
        self.run = run
        self.missing: dict[str, str] = {}

    def array(self, name: str):
        if name not in self.run:
            self.missing[name] = "absent"
            return None
        if not self.run.is_complete(name):
            self.missing[name] = "incomplete (its stage did not finish)"
            return None
        node = self.run.zarr_array(name)
        if len(node.shape) != 3:
            self.missing[name] = "not a (z, y, x) array"
            return None
        return node

    def thickness_names(self) -> list[str]:
        return self.run.array_names("thickness")


def _crop(arr, mesh_size: int):
    """A centred crop of at most ``2 * mesh_size`` voxels per axis, then a stride that brings
    it to at most ``mesh_size``; returns (region slices, stride)."""
    region, strides = [], []
    for n in arr.shape:
        c = min(n, 2 * mesh_size)
        s0 = (n - c) // 2
        region.append(slice(s0, s0 + c))
        strides.append(max(1, math.ceil(c / mesh_size)))
    step = max(strides)
    return tuple(slice(r.start, r.stop, step) for r in region), step
