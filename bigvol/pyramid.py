"""Multiscale pyramids: 2x downsampled levels in y and x, for viewers.

OME-NGFF ``multiscales`` viewers (napari, neuroglancer, Fiji/BigDataViewer) draw a
1000 x 2000 x 2000 stack at once from its small levels and read the full resolution only
where they zoom in. Level ``l`` is level ``l - 1`` downsampled by 2 in y and x (z keeps
every slice: a FIB-SEM slice is the unit users page through): images by the mean of each
2 x 2 block (rounded back to the dtype), phase codes and labels by the **mode** of the block
(never by averaging, which would invent codes between phases; a tie goes to the smaller
code). An odd last row or column is dropped, as ``skimage.transform.downscale_local_mean``
pads and ``dask.array.coarsen(trim_excess=True)`` trims: the level's voxel ``(i, j)`` covers
voxels ``2i, 2i+1`` and ``2j, 2j+1`` of the level below.

Every level is a lazy function of the one below it, chunk by chunk (no halo).
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from .errors import InputError
from .validate import cast_to

__all__ = ["downsample", "n_levels"]


def n_levels(shape, min_size: int = 512) -> int:
    """How many levels above the full resolution until y and x are at most ``min_size``.

    >>> n_levels((100, 2000, 3000)), n_levels((10, 400, 300))
    (3, 0)
    """
    side = max(shape[-2:])
    return max(0, math.ceil(math.log2(side / min_size))) if side > min_size else 0


def _mean2(block: np.ndarray) -> np.ndarray:
    z, y, x = block.shape
    b = block[:, : y - y % 2, : x - x % 2].reshape(z, y // 2, 2, x // 2, 2)
    return cast_to(b.mean(axis=(2, 4), dtype=np.float64), block.dtype)


def _mode2(block: np.ndarray) -> np.ndarray:
    z, y, x = block.shape
    b = block[:, : y - y % 2, : x - x % 2]
    v = np.stack([b[:, 0::2, 0::2], b[:, 0::2, 1::2], b[:, 1::2, 0::2], b[:, 1::2, 1::2]], -1)
    counts = (v[..., :, None] == v[..., None, :]).sum(-1)  # how often each of the 4 occurs
    # the most frequent value, and of equally frequent ones the smallest
    key = counts.astype(np.int64) * (1 << 40) - v.astype(np.int64)
    return np.take_along_axis(v, key.argmax(-1)[..., None], -1)[..., 0]


def downsample(x, *, labels: bool = False) -> da.Array:
    """One pyramid level: ``x`` (z, y, x) downsampled 2x in y and x, lazily.

    ``labels``: the mode of each 2 x 2 block (phase codes, labels) instead of its mean.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[[0, 2, 4, 4], [2, 2, 4, 1]]], np.uint8)      # (1, 2, 4)
    >>> downsample(a).compute().tolist(), downsample(a, labels=True).compute().tolist()
    ([[[2, 3]]], [[[2, 4]]])
    """
    x = x if isinstance(x, da.Array) else da.from_array(np.asarray(x))
    if x.ndim != 3 or x.shape[1] < 2 or x.shape[2] < 2:
        raise InputError(f"a pyramid level needs a (z, y >= 2, x >= 2) array, got {x.shape}")
    # even chunks in y and x (only the last may be odd), so no 2 x 2 block straddles two
    steps = [max(2, 2 * (x.chunksize[ax] // 2)) for ax in (1, 2)]
    x = x.rechunk((x.chunks[0], *(
        tuple(min(st, n - s) for s in range(0, n, st)) for st, n in zip(steps, x.shape[1:]))))
    fn = _mode2 if labels else _mean2
    out_chunks = (x.chunks[0],) + tuple(tuple(c // 2 for c in cs) for cs in x.chunks[1:])
    out = x.map_blocks(fn, chunks=out_chunks, dtype=x.dtype)
    # the odd last row / column of the array is dropped; a chunk of width 1 gives 0
    return out[:, : x.shape[1] // 2, : x.shape[2] // 2]
