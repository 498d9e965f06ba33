"""Shared helpers of the chunked metrics: argument checks and windows with halos."""

from __future__ import annotations

import math
from collections.abc import Sequence

import dask.array as da
import numpy as np

from ..errors import InputError


def as_phase_array(phases, *, name: str = "phases") -> da.Array:
    """``phases`` as a 3-D integer dask array (numpy input is wrapped, never copied)."""
    if not isinstance(phases, da.Array):
        if not hasattr(phases, "shape") or not hasattr(phases, "dtype"):
            raise InputError(f"{name} must be a dask or numpy array, got {type(phases).__name__}")
        phases = da.from_array(phases, chunks="auto")
    if phases.ndim != 3:
        raise InputError(f"{name} must be a 3-D (z, y, x) array, got shape {phases.shape}")
    if not (np.issubdtype(phases.dtype, np.integer) or phases.dtype == bool):
        raise InputError(f"{name} must hold integer phase codes, got dtype {phases.dtype}")
    if 0 in phases.shape:
        raise InputError(f"{name} is empty (shape {phases.shape})")
    return phases


def check_phase(phase, *, name: str = "phase") -> int:
    if isinstance(phase, (bool, np.bool_)) or not isinstance(phase, (int, np.integer)):
        raise InputError(f"{name} must be an integer phase code, got {phase!r}")
    if phase < 0:
        raise InputError(f"{name} must be a non-negative phase code, got {phase}")
    return int(phase)


def spacing_of(voxel_size) -> tuple[float, float, float]:
    """``voxel_size`` (nm, (z, y, x)) as three positive floats; ``None`` is unit voxels."""
    if voxel_size is None:
        return (1.0, 1.0, 1.0)
    try:
        vs = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise InputError(
            f"voxel_size must be three numbers (z, y, x) in nm, got {voxel_size!r}"
        ) from None
    if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
        raise InputError(
            f"voxel_size must be three positive numbers (z, y, x) in nm, got {voxel_size!r}"
        )
    return vs


def check_axis(axis, ndim: int = 3) -> int:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise InputError(f"axis must be 0, 1 or 2 (z, y, x), got {axis!r}")
    if not -ndim <= axis < ndim:
        raise InputError(f"axis must be 0, 1 or 2 (z, y, x), got {axis}")
    return int(axis) % ndim


def overlapped(x: da.Array, depth: Sequence[int]) -> tuple[da.Array, tuple[int, ...]]:
    """Blocks of ``x`` extended by ``depth`` voxels per axis (no padding at the array edges).

    An axis whose depth reaches across the whole array becomes a single chunk with depth 0
    (its window is the full extent). Chunks smaller than the depth are merged first, so a
    halo never reaches past the neighbouring block. Returns ``(windows, depth)``; the core
    of block ``i`` along an axis starts at ``depth`` (0 for the first block) and ends
    ``depth`` before the window end (0 for the last block).
    """
    depth = [int(d) for d in depth]
    chunks = list(x.chunks)
    for ax, d in enumerate(depth):
        if d >= x.shape[ax] - 1 or len(chunks[ax]) == 1:
            chunks[ax] = (x.shape[ax],)
            depth[ax] = 0
        elif d > 0 and min(chunks[ax]) < d:
            chunks[ax] = da.overlap.ensure_minimum_chunksize(d, chunks[ax])
    if tuple(chunks) != x.chunks:
        x = x.rechunk(tuple(chunks))
    if not any(depth):
        return x, tuple(depth)
    ov = da.overlap.overlap(x, depth={i: d for i, d in enumerate(depth)}, boundary="none")
    return ov, tuple(depth)


def core_bounds(block_info, depth, window_shape):
    """(lo, hi) of the core of this window, from the block's position among all blocks."""
    info = block_info[0]
    loc, num = info["chunk-location"], info["num-chunks"]
    lo = tuple(d if i > 0 else 0 for d, i in zip(depth, loc))
    hi = tuple(
        w - (d if i < n - 1 else 0) for w, d, i, n in zip(window_shape, depth, loc, num)
    )
    return lo, hi
