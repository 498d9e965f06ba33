"""Volume fractions of the phases, as a chunked (out-of-core) reduction."""

from __future__ import annotations

import numpy as np

from .._label import map_chunks_gather
from ..validate import as_volume

__all__ = ["volume_fractions"]

DEFAULT_CODES = (0, 1, 2)


def _chunk_counts(block: np.ndarray):
    """(values, counts) of one chunk; a bincount for 8-bit codes, else np.unique."""
    if block.dtype.itemsize == 1 and block.dtype.kind in "ub":
        counts = np.bincount(block.view(np.uint8).ravel(), minlength=256)
        values = np.flatnonzero(counts)
        return values.astype(np.int64), counts[values].astype(np.int64)
    values, counts = np.unique(block, return_counts=True)
    return values.astype(np.int64), counts.astype(np.int64)


def phase_counts(phases) -> dict[int, int]:
    """Voxel count of every value present in ``phases`` (one streaming pass)."""
    phases = as_volume(phases)
    total: dict[int, int] = {}
    for values, counts in map_chunks_gather(phases, _chunk_counts, "bigvol-phase-counts"):
        for v, c in zip(values.tolist(), counts.tolist()):
            total[v] = total.get(v, 0) + c
    return total


def volume_fractions(phases) -> dict[int, float]:
    """Volume fraction of every phase code: voxels of the phase / all voxels.

    Parameters
    ----------
    phases : dask.array.Array or numpy.ndarray, (z, y, x), integer (or bool)
        Phase codes (0 = pore, 1 = solid electrolyte, 2 = active material).

    Returns
    -------
    dict[int, float]
        ``{code: fraction}`` for the codes 0, 1, 2 (0.0 when absent) and every other
        code present; the fractions sum to 1. Counted chunk by chunk (one pass).

    Examples
    --------
    >>> import numpy as np, bigvol as bv
    >>> bv.metrics.volume_fractions(np.array([[[0, 2, 2, 2]]], np.uint8))
    {0: 0.25, 1: 0.0, 2: 0.75}
    """
    phases = as_volume(phases)
    counts = phase_counts(phases) if phases.size else {}
    size = phases.size
    codes = sorted(set(DEFAULT_CODES) | set(counts))
    return {int(c): (counts.get(c, 0) / size if size else 0.0) for c in codes}
