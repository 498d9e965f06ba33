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


#: the most voxels one window (core + halo) of a halo-heavy pass may have by default; a
#: pass that holds ~12 bytes per window voxel then needs ~0.6 GB per task whatever the size
#: of the volume (the thickness passes set their own budgets)
MAX_WINDOW_VOXELS = 48 * 2**20


def _parallel_slots() -> int:
    """Threads that run tasks at once: the workers' of a distributed client if one is the
    default scheduler, else the cores of this process."""
    from ..conventions import available_cores

    try:
        from distributed import default_client

        return max(1, sum(default_client().nthreads().values()))
    except (ImportError, ValueError):
        return available_cores()


def work_chunks(x: da.Array, depth: Sequence[int], *, max_window: int = MAX_WINDOW_VOXELS,
                core_weight: float = 0.0, window_weight: float = 1.0,
                slots: int | None = None) -> tuple[tuple[int, ...], ...]:
    """Chunks for a pass whose windows carry a halo of ``depth`` voxels per axis.

    A halo ``d`` around a core ``c`` costs ``(c + 2d) / c`` per axis in voxels read and
    computed: on the pipeline's (32, 256, 256) chunks a 40-voxel halo makes every window
    6x its core. The cores chosen here are whole multiples of ``x``'s chunks along each axis
    (so the rechunk only groups chunks), no smaller than the halo, and minimise the windows'
    total voxels per parallel slot, ``prod(n + 2d (blocks - 1)) / min(blocks, slots)``, under
    ``max_window`` voxels per window, where each core voxel also counts ``core_weight``
    window voxels (a pass that holds more per output voxel than per input voxel) and each
    window voxel ``window_weight`` (0 for a pass that streams its window): memory is
    bounded by the window, not by the volume. Where no choice fits, the smallest
    windows are taken.
    """
    slots = _parallel_slots() if slots is None else max(1, int(slots))
    axes = []
    for n, c, d in zip(x.shape, x.chunks, depth):
        c0, d = max(c[0], 1), int(d)
        opts = []  # (core, blocks, total window length, largest window length)
        for m in range(1, -(-n // c0) + 1):
            core = min(m * c0, n)
            nb = -(-n // core)
            if nb > 1 and core < d:
                continue
            if nb == 1:  # the whole axis: no halo
                opts.append((core, 1, n, n))
            else:
                opts.append((core, nb, n + 2 * d * (nb - 1), min(core + 2 * d, n)))
            if nb == 1:
                break
        axes.append(opts)
    best = None
    for oz in axes[0]:
        for oy in axes[1]:
            for ox in axes[2]:
                window = (window_weight * oz[3] * oy[3] * ox[3]
                          + core_weight * oz[0] * oy[0] * ox[0])
                blocks = oz[1] * oy[1] * ox[1]
                cost = oz[2] * oy[2] * ox[2] / min(blocks, slots)
                key = (window > max_window, window if window > max_window else 0, cost, window)
                if best is None or key < best[0]:
                    best = (key, (oz[0], oy[0], ox[0]))
    return tuple(tuple(_split(n, c)) for n, c in zip(x.shape, best[1]))


def _split(n: int, c: int) -> list[int]:
    return [c] * (n // c) + ([n % c] if n % c else [])
