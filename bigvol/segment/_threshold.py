"""The conventional baseline: a global multi-Otsu brightness threshold.

This is the "commercial threshold software" of the paper's Table 1: phases are told apart
by brightness alone (pore < solid electrolyte < active material in BSE), which fails on
pore bottoms that show the solid behind them (shine-through) and on bright pore rims.

The threshold is computed from the histogram of the whole stack, gathered as a streaming
reduction (one ``bincount`` per chunk, summed), and applied chunk by chunk. Everything
stays lazy until the caller computes or stores the result.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..errors import InputError

#: Above this many distinct gray levels (uint16 data), integer bins are merged into this
#: many equal-width bins before multi-Otsu: scikit-image's 3-class search builds an
#: O(n_bins^2) table, 34 GB for 65536 bins. The threshold error is at most half a bin.
MAX_OTSU_BINS = 1024


def _check_integer(stack) -> np.dtype:
    dtype = np.dtype(stack.dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise InputError(
            f"threshold needs an 8- or 16-bit unsigned grayscale stack, got dtype {dtype}"
        )
    return dtype


def histogram(stack) -> da.Array:
    """Gray-level histogram of a whole uint8/uint16 stack, as a lazy streaming reduction.

    Returns a 1-D int64 dask array of length 256 (uint8) or 65536 (uint16): the count of
    every gray level (the sum of :func:`bigvol.normalize.slice_histograms`). Memory per
    task is one chunk plus one histogram.
    """
    from ..normalize import slice_histograms

    _check_integer(stack)
    stack = da.asarray(stack)
    if stack.ndim == 2:
        stack = stack[None]
    return slice_histograms(stack).sum(axis=0)


def multiotsu_from_histogram(hist: np.ndarray, classes: int = 3) -> np.ndarray:
    """Multi-Otsu thresholds (gray values) from a histogram of integer gray levels.

    For at most :data:`MAX_OTSU_BINS` levels between the darkest and brightest occupied
    level this equals ``skimage.filters.threshold_multiotsu(image, classes)`` exactly (it
    uses the same integer bins); wider uint16 ranges are merged into equal-width bins.
    """
    from skimage.filters import threshold_multiotsu

    hist = np.asarray(hist, dtype=np.int64)
    occupied = np.flatnonzero(hist)
    if occupied.size < classes:
        raise InputError(
            f"the stack has only {occupied.size} distinct gray levels; "
            f"{classes} classes cannot be separated by thresholds"
        )
    lo, hi = occupied[0], occupied[-1]
    counts = hist[lo : hi + 1]
    centers = np.arange(lo, hi + 1, dtype=np.float64)
    if counts.size > MAX_OTSU_BINS:
        edges = np.linspace(0, counts.size, MAX_OTSU_BINS + 1).round().astype(int)
        csum = np.concatenate([[0], np.cumsum(counts)])
        wsum = np.concatenate([[0], np.cumsum(counts * centers)])
        merged = csum[edges[1:]] - csum[edges[:-1]]
        mean = (wsum[edges[1:]] - wsum[edges[:-1]]) / np.maximum(merged, 1)
        mid = (centers[edges[:-1]] + centers[edges[1:] - 1]) / 2
        centers = np.where(merged > 0, mean, mid)
        counts = merged
    return np.asarray(threshold_multiotsu(hist=(counts, centers), classes=classes))


def _apply_thresholds(block, thresholds):
    # a gray value above threshold k belongs to class k+1 (Otsu: "higher than this value")
    return np.digitize(block, np.asarray(thresholds), right=True).astype(np.uint8)


def threshold(stack, *, classes: int = 3) -> da.Array:
    """Segment a stack into ``classes`` phases by global multi-Otsu thresholds.

    Parameters
    ----------
    stack : dask or numpy array, uint8 or uint16, (z, y, x)
        The (normalized) BSE stack.
    classes : int
        Number of phases; codes ``0 .. classes-1`` in order of brightness
        (0 = pore, 1 = solid electrolyte, 2 = active material for 3 classes).

    Returns
    -------
    dask.array of uint8, same shape and chunks as ``stack``. Lazy: the histogram, the
    thresholds and the labelling are computed together when the result is.

    Notes
    -----
    Multi-Otsu (Liao, Chen & Chung 2001) maximizes the between-class variance of the
    gray-level histogram. The histogram is one streaming reduction over all chunks, so the
    result equals ``np.digitize(volume, threshold_multiotsu(volume, classes), right=True)``
    (a gray value above a threshold goes to the brighter class) on the
    whole volume (for uint16 data spanning more than :data:`MAX_OTSU_BINS` levels, up to
    the documented binning).

    Examples
    --------
    >>> import numpy as np, bigvol as bv
    >>> vol = np.array([[[10, 12, 15, 118, 120, 125, 215, 220, 230]]], np.uint8)
    >>> bv.segment.threshold(vol).compute()[0, 0]
    array([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype=uint8)
    """
    if int(classes) != classes or classes < 2:
        raise InputError(f"classes must be an integer >= 2, got {classes!r}")
    _check_integer(stack)
    stack = da.asarray(stack)
    hist = histogram(stack)
    thresholds = hist.map_blocks(
        multiotsu_from_histogram,
        int(classes),
        chunks=((int(classes) - 1,),),
        dtype=np.float64,
        meta=np.empty((0,), dtype=np.float64),
    )
    idx = "zyx"[-stack.ndim:] if stack.ndim <= 3 else tuple(range(stack.ndim))
    return da.blockwise(
        _apply_thresholds, idx, stack, idx, thresholds, "k",
        dtype=np.uint8, concatenate=True, meta=np.empty((0,) * stack.ndim, dtype=np.uint8),
    )


def thresholds(stack, *, classes: int = 3) -> np.ndarray:
    """The multi-Otsu gray-level thresholds of the whole stack (computed now)."""
    return multiotsu_from_histogram(histogram(stack).compute(), classes)
