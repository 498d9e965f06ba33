"""Where the model is unsure, and which slice to label next (the active-labelling loop).

:func:`uncertainty` turns the class probabilities ``(c, z, y, x)`` of
:func:`bigvol.segment.predict` (``probabilities=True``) into one number per voxel, chunk by
chunk; :func:`suggest_slices` ranks the slices by their mean uncertainty, as ilastik's
uncertainty layer tells its users where to paint next (uncertainty sampling, Lewis & Gale
1994; Settles, *Active Learning Literature Survey*, 2009).
"""

from __future__ import annotations

from collections.abc import Iterable

import dask.array as da
import numpy as np

from ..errors import ConfigError, InputError

__all__ = ["uncertainty", "slice_uncertainty", "suggest_slices"]

METHODS = ("entropy", "margin")


def _entropy_block(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = 0.0 - np.where(p > 0, p * np.log(p), 0.0).sum(axis=0)  # 0.0, not -0.0
    return (h / np.float32(np.log(p.shape[0]))).astype(np.float32)


def _margin_block(p: np.ndarray) -> np.ndarray:
    top2 = np.sort(p.astype(np.float32), axis=0)[-2:]
    return (1.0 - (top2[1] - top2[0])).astype(np.float32)


def uncertainty(probabilities, *, method: str = "entropy") -> da.Array:
    """Per-voxel uncertainty of class probabilities, in ``[0, 1]`` (lazy, chunk by chunk).

    Parameters
    ----------
    probabilities : dask or numpy array, shape (c, z, y, x)
        Class probabilities (summing to 1 over ``c``), e.g. the run's ``probabilities``.
    method : {"entropy", "margin"}
        ``"entropy"``: :math:`-\\sum_c p_c \\log p_c / \\log C` (0 = certain, 1 = uniform);
        ``"margin"``: :math:`1 - (p_{(1)} - p_{(2)})`, one minus the gap between the two
        most likely classes (1 = a tie between them).

    Returns
    -------
    dask.array.Array, shape (z, y, x), float32

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[1.0, 0.5], [0.0, 0.5]]).reshape(2, 1, 1, 2)   # certain, then a tie
    >>> uncertainty(p).compute().ravel().tolist()
    [0.0, 1.0]
    >>> uncertainty(p, method="margin").compute().ravel().tolist()
    [0.0, 1.0]
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(map(repr, METHODS))}, "
                          f"got {method!r}")
    p = probabilities
    if not isinstance(p, da.Array):
        p = np.asarray(p)
        if p.ndim == 4:
            p = da.from_array(p, chunks=(-1, 1, -1, -1))
    if p.ndim != 4 or p.shape[0] < 2:
        raise InputError(f"probabilities must be (classes >= 2, z, y, x), got shape {p.shape}")
    if p.dtype.kind != "f":
        raise InputError(f"probabilities must be floats, got dtype {p.dtype}")
    p = p.rechunk({0: -1})
    fn = _entropy_block if method == "entropy" else _margin_block
    return p.map_blocks(fn, drop_axis=0, dtype=np.float32)


def slice_uncertainty(uncertainty) -> np.ndarray:
    """The mean uncertainty of every slice (one streaming reduction)."""
    u = uncertainty if isinstance(uncertainty, da.Array) else da.asarray(uncertainty)
    if u.ndim != 3:
        raise InputError(f"uncertainty must be a (z, y, x) array, got shape {u.shape}")
    return np.asarray(u.astype(np.float64).mean(axis=(1, 2)).compute())


def suggest_slices(uncertainty, n: int = 1, *, exclude: Iterable[int] = (),
                   spacing: int = 0) -> list[int]:
    """The ``n`` slices to label next: the highest mean uncertainty first.

    Parameters
    ----------
    uncertainty : (z, y, x) array, or the (z,) per-slice means of :func:`slice_uncertainty`
    n : int
        How many slices.
    exclude : slice indices
        Slices already labelled (never suggested).
    spacing : int
        Suggested slices are more than ``spacing`` slices apart (neighbouring slices of a
        FIB-SEM stack look alike: labelling two of them teaches little more than one).

    Returns
    -------
    list of int, most uncertain first (ties: the lower index first).

    Examples
    --------
    >>> suggest_slices([0.1, 0.5, 0.4, 0.9], 2)
    [3, 1]
    >>> suggest_slices([0.1, 0.5, 0.4, 0.9], 2, exclude=[3], spacing=1)
    [1]
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    u = np.asarray(uncertainty) if not isinstance(uncertainty, da.Array) else uncertainty
    means = slice_uncertainty(u) if u.ndim == 3 else np.asarray(u, np.float64)
    if means.ndim != 1:
        raise InputError(f"uncertainty must be (z, y, x) or per-slice (z,), got {means.shape}")
    blocked = np.zeros(means.size, bool)
    for z in exclude:
        blocked[int(z) % means.size] = True
    out: list[int] = []
    for z in np.argsort(-means, kind="stable"):
        if len(out) == n:
            break
        if blocked[z] or not np.isfinite(means[z]):
            continue
        out.append(int(z))
        blocked[max(0, z - spacing):z + spacing + 1] = True
    return out
