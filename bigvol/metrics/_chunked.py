"""Shared helper of the chunked metrics: windows with halos."""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da


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
    ov = da.overlap.overlap(x, depth=dict(enumerate(depth)), boundary="none")
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
