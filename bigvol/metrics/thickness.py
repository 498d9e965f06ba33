"""Local thickness (Hildebrand & Rüegsegger 1997), chunk by chunk, with anisotropic voxels.

The local thickness of a phase at a voxel ``p`` is the diameter of the largest ball that
lies inside the phase and covers ``p``::

    LT(p) = 2 * max { t(c) : c in phase, |p - c| < t(c) }

where ``|.|`` is the physical (nm) distance, so balls are physical balls whatever the voxel
anisotropy, and ``t(c)`` is the distance from the centre ``c`` to the nearest voxel outside
the phase (the exact Euclidean distance transform), binned down to a multiple of
the smallest voxel size ``s``: ``t(c) = floor(EDT(c) / s) * s``. On isotropic voxels this is
exactly the integer-radius convention of PoreSpy's ``local_thickness`` (which returns the
radius; bigvol returns the diameter). A slab ``n`` voxels thick measures ``n`` voxels when
``n`` is even and ``n + 1`` when odd (ball centres sit on voxel centres and balls reach the
centres of the first outside voxels); the edges of the volume are not phase boundaries (the
phase is taken to continue beyond them, as ``edt`` and PoreSpy do).

Out of core
-----------
Three chunked passes; the first two compute and write to a scratch folder, the third is
returned lazily. None needs a bound on the radius beforehand. (A volume small enough to
hold, :data:`_IN_MEMORY_VOXELS`, runs the same kernels on arrays in memory instead.)

1. **In-slice distances**: the squared distance of every voxel to the nearest outside voxel
   of its own slice (a two-sweep distance along y over whole rows, then the lower envelope
   of parabolas along x: Meijster et al. 2000), a few whole slices per task (read from a
   copy of the phase mask stored in slabs of those slices where gathering them from the
   input's chunks would hold a large row of chunks).
2. **Along z, and centres**: the exact 3D EDT is the minimum along z of parabolas on
   those squared distances (the lower envelope of Felzenszwalb & Huttenlocher 2012),
   whole columns per task, no halo: taken a row of 64 columns at a time, searching
   outwards from each slice until no column can get lower, with the envelope only for
   columns still open 64 slices out.
   It gives ``k = floor(EDT / s)`` per voxel and the largest EDT ``R``. In the same task a
   ball contained in the ball of a voxel up to two steps away (within the column block)
   is dropped (four steps for balls of index 16 or more, which cost the painting most;
   the containment is tested exactly on the lattice,
   :func:`~bigvol.metrics._thickness_kernels.containment_table`); the others are the
   centres, written as a centre map. A ball whose containing neighbour lies in the next
   block is kept, and paints nothing new: the result does not depend on the blocks.
3. **Painting**: the thickness of a core voxel ``p`` only depends on centres ``c`` with
   ``|p - c| < t(c) <= R``, so windows of the centre map with a halo of ``R`` give every
   core the whole-volume answer, independent of the chunking. Each task reads its window
   straight from the scratch store, one stored z-slab at a time, and lists the centres
   whose ball reaches its core. Balls are painted from the largest down, each voxel once,
   skipping rows (and tiles of rows) already painted.

The painting's cores are whole multiples of the chunks, sized so that the halo costs
little and a task stays under a fixed budget of bytes whatever ``R``
(:func:`~bigvol.metrics._chunked.work_chunks`); passes 1-2 hold a few slices or one
column block (``Z x 128 x 128``, narrower on volumes deeper than 1024 slices). Peak
memory follows those sizes, not the volume; the scratch is 4 then 2 bytes per voxel
before compression, each removed when it has been read.
"""

from __future__ import annotations

import math
import threading

import dask
import dask.array as da
import numpy as np

from ..errors import ConfigError, InputError
from ..validate import as_volume, check_phase, voxel_spacing
from ._chunked import core_bounds, overlapped, work_chunks

__all__ = ["local_thickness", "thickness_summary", "max_inscribed_radius", "radius_index_map",
           "paint_from_centres"]


def max_inscribed_radius(phases, phase, *, voxel_size=None, scratch=None) -> float:
    """Largest distance from a voxel of ``phase`` to the nearest voxel outside it.

    The radius of the largest inscribed ball (before binning), in nm (voxels when
    ``voxel_size`` is None); 0.0 when the phase is absent. The exact EDT out of core
    (:func:`radius_index_map`, in a temporary folder under ``scratch``, removed after);
    this computes.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.zeros((5, 9, 9), np.uint8); v[:, 2:7, 2:7] = 1
    >>> max_inscribed_radius(v, 1)
    3.0
    """
    import shutil
    import tempfile

    phases = as_volume(phases)
    phase = check_phase(phase)
    folder = tempfile.mkdtemp(prefix="bigvol-radius-", dir=scratch)
    try:
        _, r = radius_index_map(phases, phase, f"{folder}/map.zarr", voxel_size=voxel_size)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if r == np.inf:
        raise InputError(
            f"phase {phase} fills the whole volume: no voxel lies outside it, so its "
            "local thickness is undefined"
        )
    return max(r, 0.0)


#: a centre is tested against the voxels up to this many steps away along each axis,
#: and balls of index ``_FAR_INDEX`` or more (those that cost the painting most) against
#: the voxels up to ``_CENTRE_REACH_FAR`` steps away
_CENTRE_REACH = 2
_CENTRE_REACH_FAR = 4
_FAR_INDEX = 16

#: z depth of the in-slice scratch chunks (a task writes that many whole slices)
_SLAB = 8

#: voxels of one column block of the z pass (Z x side x side): its side shrinks on deep
#: volumes so that a task holds about the same whatever Z (float32 in, uint16 out)
_COLUMN_VOXELS = 16 * 2**20


def _column_side(depth: int) -> int:
    """y/x side of the z pass's column blocks (and of the scratch chunks): 128 up to 1024
    slices, then halved until ``depth x side^2`` fits :data:`_COLUMN_VOXELS` (at least 32)."""
    side = 128
    while side > 32 and depth * side * side > _COLUMN_VOXELS:
        side //= 2
    return side


def _write_squared_in_slice(block, z0, target, phase, spacing_yx) -> int:
    """Write the squared in-slice distance (float32, in units of the finer in-slice voxel
    side squared: integers on isotropic slices; inf on a slice with no outside voxel) of
    the whole slices ``block`` (phase codes, starting at slice ``z0``) into ``target``;
    returns the count of ``phase`` voxels."""
    from ._thickness_kernels import squared_in_slice

    out = np.empty(block.shape, np.float32)
    n = 0
    for i in range(block.shape[0]):
        n += squared_in_slice(np.ascontiguousarray(block[i]), phase, float(spacing_yx[0]),
                              float(spacing_yx[1]), out[i])
    target[z0:z0 + block.shape[0]] = out
    return n


def _in_slice_gathered(block, *, target, phase, spacing_yx, block_info=None):
    """The in-slice pass of whole slices gathered by ``rechunk``; returns the phase count."""
    z0 = block_info[0]["array-location"][0][0]
    n = _write_squared_in_slice(block, z0, target, phase, spacing_yx)
    return np.full((1, 1, 1), n, np.int64)


def _in_slice_from_mask(*, mask, target, spacing_yx, block_id=None):
    """The in-slice pass of one stored z-slab of the phase mask (:func:`_phase_mask`)."""
    from ..store import read_region

    z0 = block_id[0] * target.chunks[0]
    z1 = min(z0 + target.chunks[0], target.shape[0])
    block = read_region(mask, (slice(z0, z1), slice(None), slice(None)))
    n = _write_squared_in_slice(block, z0, target, 1, spacing_yx)
    return np.full((1, 1, 1), n, np.int64)


#: bytes of one z-row of input chunks (its deepest chunk x a whole slice) up to which the
#: in-slice pass gathers its whole slices with ``rechunk``; above, from a mask copy
#: (:func:`_phase_mask`). At 256^3 the copy costs ~10 % of the thickness's time.
_GATHER_BYTES = 64 * 2**20


def _phase_mask(phases, phase, root, slab):
    """``phases == phase`` written to the scratch group ``root`` in chunks ``slab`` slices
    deep (the input's y/x chunks), for the in-slice pass to read whole slices from.

    Why a copy: a task of that pass needs whole slices, and a chunk of the input as deep
    as (125, 500, 500) holds slices for 16 tasks; gathering them with ``rechunk`` keeps a
    whole row of such chunks in memory (0.5 GB on 2000 x 2000 slices, twice that where a
    task straddles two rows) until the last of those tasks has run (the peak RSS of the
    thickness at (1000, 2000, 2000) was 1.89 GiB with it, 1.27 GiB with the copy).
    Written in blocks whose depth is a multiple of ``slab`` (so no two tasks share a stored
    chunk), the mask costs one input chunk or two per task, and reads back one slab at a
    time."""
    cy, cx = (max(c) for c in phases.chunks[1:])
    bz = -(-max(phases.chunks[0]) // slab) * slab
    mask = root.create_array(
        "mask", shape=phases.shape, dtype=np.uint8, chunks=(slab, cy, cx),
        compressors=_scratch_codec(), fill_value=0)
    src = (phases == phase).astype(np.uint8).rechunk((bz, cy, cx))
    da.store(src, mask, lock=False, compute=True)
    return mask


_TABLES: dict = {}
_TABLES_LOCK = threading.Lock()


def _containment(spacing: tuple, step: float, kmax: int):
    """(offsets, :func:`~bigvol.metrics._thickness_kernels.containment_table`) covering
    radius indices up to ``kmax``: one table per process, voxel size and step, grown (to a
    multiple of 16) when a column block needs larger balls. Its rows do not depend on the
    table's size, and its cost grows as ``kmax^3`` times the 728 offsets (1.6 s at 128 on
    the phantom's voxels, 12 s at 256), so it is not rounded up further."""
    from ._thickness_kernels import containment_table, neighbour_offsets

    key = (tuple(spacing), float(step))
    with _TABLES_LOCK:
        hit = _TABLES.get(key)
        if hit is None or hit[1].shape[0] <= kmax:
            offs = neighbour_offsets(spacing, _CENTRE_REACH_FAR, near=_CENTRE_REACH)
            top = -(-(int(kmax) + 1) // 16) * 16
            hit = offs, containment_table(top, np.array(spacing, np.float64), float(step),
                                          offs)
            _TABLES[key] = hit
        return hit


def _radius_index_block(*, source, target, scale, sz, step, cap, spacing, block_id=None):
    """The z pass of one column block, read from ``source`` (in-task, so the scheduler
    holds no column ahead of its task): radius indices, turned into the block's centre map
    when ``spacing`` is given; returns the largest EDT."""
    from ._thickness_kernels import mark_centres, radius_index_z

    # whole columns, ``source``'s chunks across; read in one call (zarr decodes ~10 of its
    # 0.5 MB chunks at a time, straight into the column)
    region = (slice(None),) + tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in
                                    zip(block_id[1:], source.chunks[1:], source.shape[1:]))
    f = source[region]
    k = np.empty(f.shape, np.uint16)
    dmax = radius_index_z(f, float(scale), float(sz), float(step), float(cap), k)
    del f
    if spacing is not None and dmax > 0:
        offs, need = _containment(spacing, step, int(k.max()))
        k = mark_centres(k, np.zeros(3, np.int64), np.array(k.shape, np.int64), offs, need,
                         (2 * _CENTRE_REACH + 1) ** 3 - 1, _FAR_INDEX)
    target[region] = k
    return np.full((1, 1, 1), dmax, np.float64)


def radius_index_map(phases, phase, folder, *, voxel_size=None, cap=np.inf):
    """Write ``floor(min(EDT, cap) / s)`` of one phase to a Zarr array in ``folder``; returns
    ``(array, largest EDT)``, ``(None, -1.0)`` when the phase is absent. Computes.

    The exact Euclidean distance transform out of core, with no halo and no bound on the
    distance known beforehand: the in-slice squared distance of whole slices
    (:func:`~bigvol.metrics._thickness_kernels.squared_in_slice`, a few slices per task),
    written to ``folder``, then the exact 1D minimum of parabolas along z of whole
    columns (:func:`~bigvol.metrics._thickness_kernels.radius_index_z`). Memory
    per task is a few slices or a ``Z x side x side`` column block (``side`` 128, less on
    volumes deeper than 1024 slices), never the volume. The largest EDT is inf when the
    phase fills the volume.
    """
    return _distance_passes(phases, phase, folder, voxel_spacing(voxel_size), cap,
                            centres=False)


def _scratch_codec():
    import zarr

    return zarr.codecs.BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")


def _distance_passes(phases, phase, folder, spacing, cap, *, centres):
    """The two linear passes of :func:`radius_index_map`; with ``centres`` the z pass also
    marks the ball centres of each column block
    (:func:`~bigvol.metrics._thickness_kernels.mark_centres`, neighbours within the block:
    a ball whose containing neighbour lies in the next block stays a centre, which paints
    nothing new, so the thickness does not depend on the blocks) and writes that map
    instead of the radius indices: no third pass over the volume."""
    import zarr

    step = min(spacing)
    sz, sy, sx = spacing
    m = min(sy, sx)
    Z, Y, X = phases.shape
    side = _column_side(Z)
    root = zarr.open_group(str(folder), mode="w")
    # scratch written once and read once: blosc-lz4 with byte shuffle encodes these floats
    # ~3x and decodes ~3.5x faster than zstd with bit shuffle, for ~20 % more bytes
    sq = root.create_array("sq_in_slice", shape=phases.shape, dtype=np.float32,
                           chunks=(min(_SLAB, Z), min(side, Y), min(side, X)),
                           compressors=_scratch_codec(), fill_value=0)
    # one task per stored z-slab of whole slices (aligned writes); each returns its count
    # of phase voxels
    per_task = ((1,) * -(-Z // sq.chunks[0]), (1,), (1,))
    if max(phases.chunks[0]) * Y * X * phases.dtype.itemsize <= _GATHER_BYTES:
        slabs = phases.rechunk((sq.chunks[0], Y, X))
        n = da.map_blocks(_in_slice_gathered, slabs, target=sq, phase=phase,
                          spacing_yx=(sy / m, sx / m), chunks=per_task, dtype=np.int64,
                          meta=np.empty((0, 0, 0), np.int64))
    else:
        mask = _phase_mask(phases, phase, root, sq.chunks[0])
        n = da.map_blocks(_in_slice_from_mask, mask=mask, target=sq, spacing_yx=(sy / m, sx / m),
                          chunks=per_task, dtype=np.int64, meta=np.empty((0, 0, 0), np.int64))
    (n,) = dask.compute(n.sum())
    if "mask" in root:
        del root["mask"]
    if n == 0:
        del root["sq_in_slice"]
        return None, -1.0
    name = "centres" if centres else "radius_index"
    # whole columns are written: the z depth of these chunks is free, and deeper chunks
    # are fewer files for the painting to open
    # lz4: the painting reads each voxel of this map several times (its windows overlap)
    # and lz4 decodes ~6x faster than zstd with bit shuffling, for ~2x the bytes
    kz = root.create_array(name, shape=phases.shape, dtype=np.uint16,
                           chunks=(min(64, Z),) + sq.chunks[1:],
                           compressors=_scratch_codec(), fill_value=0)
    # one task per column block (whole columns, a scratch chunk across); each returns its
    # largest EDT
    cols = (1,) + tuple(-(-size // c) for size, c in zip((Y, X), sq.chunks[1:]))
    res = da.map_blocks(_radius_index_block, source=sq, target=kz, scale=m * m, sz=sz,
                        step=step, cap=cap,
                        spacing=tuple(float(v) for v in spacing) if centres else None,
                        chunks=tuple((1,) * c for c in cols), dtype=np.float64,
                        meta=np.empty((0, 0, 0), np.float64))
    (dmax,) = dask.compute(res.max())
    del root["sq_in_slice"]
    return kz, float(dmax)


def _thickness_block(window, *, depth, reg, spacing, step, out_dtype, block_info=None):
    lo, hi = core_bounds(block_info, depth, window.shape)
    return _paint_core(window, lo, hi, reg, spacing, step, out_dtype)


def _paint_core(window, lo, hi, reg, spacing, step, out_dtype):
    """Paint the core ``[lo, hi)`` of a window of the centre map: the diameter ``2 k s``."""
    from ._thickness_kernels import paint_balls

    if not window.any():
        return np.zeros(tuple(b - a for a, b in zip(lo, hi)), out_dtype)
    reg_lo = np.array([max(a - r, 0) for a, r in zip(lo, reg)], np.int64)
    reg_hi = np.array([min(b + r, w) for b, r, w in zip(hi, reg, window.shape)], np.int64)
    k = paint_balls(
        np.ascontiguousarray(window), np.array(lo, np.int64), np.array(hi, np.int64), reg_lo,
        reg_hi, np.array(spacing, np.float64), float(step),
    )
    return _diameters(k, step, out_dtype)


def _diameters(k, step, out_dtype):
    """Radius indices -> diameters ``2 k s``, exact in float32 (k < 2^16): no float64 copy."""
    work = np.float64 if out_dtype == np.float64 else np.float32
    out = k.astype(work)
    out *= work(2.0 * step)
    return out if out.dtype == out_dtype else out.astype(out_dtype)


def local_thickness(phases, phase, *, voxel_size=None, max_diameter=None, dtype=np.float32,
                    scratch=None):
    """Local thickness of one phase: the diameter of the largest inscribed ball covering each voxel.

    Hildebrand & Rüegsegger (1997), *J. Microsc.* 185:67-75, with physical balls on
    anisotropic voxels::

        LT(p) = 2 * max { t(c) : |p - c| < t(c) },   t(c) = floor(EDT(c) / s) * s

    ``EDT(c)`` is the distance (nm) from ``c`` to the nearest voxel centre outside the phase
    and ``s`` the smallest voxel size, so values are multiples of ``2 s`` (PoreSpy's
    integer-radius convention on isotropic voxels). The result does not depend on the
    chunking (see the module docstring for the argument).

    The exact EDT (:func:`radius_index_map`) and the map of ball centres are computed now
    and written to ``scratch``; the painting is returned lazily
    (:func:`paint_from_centres`): windows of the centre map with a halo of the largest
    radius ``R`` around cores that are whole multiples of its chunks, sized so that the
    halo costs little and a task stays under ~384 MB (10 bytes per core voxel; the window
    is read one z-slab at a time). A volume of at most 32 Mi voxels (256^3 is 16) is
    measured now, in memory, with the same kernels and the same result: no scratch is
    written and the returned array holds the map.

    Parameters
    ----------
    phases : dask.array.Array or numpy.ndarray
        (z, y, x) phase codes.
    phase : int
        The phase to measure (e.g. 1, the solid electrolyte).
    voxel_size : sequence of 3 floats, optional
        (z, y, x) voxel size in nm; None means unit voxels (result in voxels).
    max_diameter : float, optional
        Caps the balls at this diameter (nm, or voxels): parts thicker than the cap read
        about the cap (thinner parts are exact), which bounds the painting's halo
        (``max_diameter / 2``) for coarse phases such as the active material.
    dtype : float32 or float16
        Output type; float16 halves the size (relative precision 5e-4, max 65504).
    scratch : path, optional
        Folder for the distance passes (4 then 2 bytes per voxel before compression; on a
        cluster, a folder every worker can reach: the analyze stage uses one beside the
        run). Default: a temporary folder. A new subfolder is made per call; it holds the
        centre map until the returned array is garbage collected.

    Returns
    -------
    dask.array.Array
        Same shape and chunks as ``phases``; local thickness (diameter) in nm, 0 outside
        the phase.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.zeros((4, 10, 3), np.uint8); v[:, 3:7, :] = 1     # a slab 4 voxels thick
    >>> lt = local_thickness(v, 1, voxel_size=(50, 30, 30)).compute()
    >>> float(lt[0, 4, 0]), float(lt[0, 0, 0])
    (120.0, 0.0)
    """
    import shutil
    import tempfile
    import weakref
    from pathlib import Path

    phases = as_volume(phases)
    phase = check_phase(phase)
    spacing = voxel_spacing(voxel_size)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64)):
        raise ConfigError(f"dtype must be float32, float16 or float64, got {dtype}")
    step = min(spacing)
    cap = np.inf
    if max_diameter is not None:
        try:
            cap = float(max_diameter) / 2.0
        except (TypeError, ValueError):
            raise ConfigError(f"max_diameter must be a number, got {max_diameter!r}") from None
        if not (math.isfinite(cap) and cap >= 0):
            raise ConfigError(f"max_diameter must be a non-negative number, got {max_diameter!r}")
    if phases.size <= _IN_MEMORY_VOXELS:
        lt = _thickness_in_memory(phases, phase, spacing, cap, dtype)
        if lt is None:
            return da.zeros(phases.shape, dtype=dtype, chunks=phases.chunks)
        return _blocks_of(lt, phases.chunks)
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bigvol-thickness-", dir=scratch))
    try:
        cz, dmax = _distance_passes(phases, phase, folder / "map.zarr", spacing, cap,
                                    centres=True)
        radius = _painting_radius(dmax, cap, step, dtype, phase)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if radius < step:  # absent (dmax -1), or capped below one voxel: nothing to paint
        shutil.rmtree(folder, ignore_errors=True)
        return da.zeros(phases.shape, dtype=dtype, chunks=phases.chunks)
    weakref.finalize(cz, shutil.rmtree, str(folder), ignore_errors=True)
    return paint_from_centres(cz, radius, spacing=spacing, dtype=dtype, chunks=phases.chunks)


#: volumes up to this many voxels are measured in memory (:func:`_thickness_in_memory`):
#: ~12 bytes per voxel at the peak (mask, squared distances then radius indices, centre
#: map, output), so ~0.4 GB, the budget of one painting task. Below it, the scratch
#: store's encode/decode and the dask graph are much of the time (256^3 on 2 cores, best
#: of 5: 1.8-2.0 s out of core, 1.0-1.2 s in memory, the same map).
_IN_MEMORY_VOXELS = 32 * 2**20


def _worker_threads() -> int:
    """Threads for the in-memory path: the threaded scheduler's ``num_workers`` when set
    (1 under the synchronous scheduler), else the cores this process may use."""
    from ..conventions import available_cores

    if dask.config.get("scheduler", None) in ("sync", "synchronous", "single-threaded"):
        return 1
    return max(1, int(dask.config.get("num_workers", None) or available_cores()))


def _thickness_in_memory(phases, phase, spacing, cap, dtype):
    """The local thickness (diameters, ``dtype``) of a volume small enough to hold
    (:data:`_IN_MEMORY_VOXELS`), or None when there is nothing to paint: the same kernels
    and centre test as the out-of-core passes (the same result, bit for bit), on arrays in
    memory and a pool of threads (the kernels release the GIL) instead of a scratch store
    and a dask graph."""
    from concurrent.futures import ThreadPoolExecutor

    from ._thickness_kernels import mark_centres, paint_balls, radius_index_z, squared_in_slice

    v = np.asarray(phases.compute() if isinstance(phases, da.Array) else phases)
    step = min(spacing)
    sz, sy, sx = spacing
    m = min(sy, sx)
    Z, Y, X = v.shape
    threads = _worker_threads()
    with ThreadPoolExecutor(threads) as pool:
        # 1. in-slice squared distances, slice by slice
        sq = np.empty(v.shape, np.float32)
        n = sum(pool.map(lambda i: squared_in_slice(np.ascontiguousarray(v[i]), phase, sy / m,
                                                    sx / m, sq[i]), range(Z)))
        v = None  # freed (the closures hold their names)
        if n == 0:
            return None

        # 2. along z, by column blocks: radius indices and the largest EDT
        k = np.empty(sq.shape, np.uint16)

        def along_z(region):
            out = np.empty(k[region].shape, np.uint16)
            d = radius_index_z(np.ascontiguousarray(sq[region]), float(m * m), float(sz),
                               float(step), float(cap), out)
            k[region] = out
            return d

        side = 64
        dmax = max(pool.map(along_z, [(slice(None), slice(y, y + side), slice(x, x + side))
                                      for y in range(0, Y, side) for x in range(0, X, side)]))
        radius = _painting_radius(dmax, cap, step, dtype, phase)
        if radius < step:
            return None

        # 3. centres (neighbours across the whole volume), then painting; z-slabs, a few
        # per thread so that thick and thin parts even out. The arrays of the passes that
        # are done take the results (fresh memory costs this VM ~0.1 s of system time per
        # 100 MB at 4 KiB pages): the painting's indices go to the radius indices' memory,
        # the float32 diameters to the squared distances'.
        offs, need = _containment(spacing, step, int(k.max()))
        slabs = _split(Z, _SLABS_PER_THREAD * threads)
        centres = np.empty(k.shape, np.uint16)

        def mark(zz):
            mark_centres(k, np.array([zz[0], 0, 0], np.int64), np.array([zz[1], Y, X], np.int64),
                         offs, need, (2 * _CENTRE_REACH + 1) ** 3 - 1, _FAR_INDEX,
                         centres[zz[0]:zz[1]])

        list(pool.map(mark, slabs))
        reach = math.ceil(radius / spacing[0])
        sp = np.array(spacing, np.float64)
        out = sq if dtype == np.float32 else np.empty(centres.shape, dtype)
        sq = None

        def paint(zz):
            ks = paint_balls(centres, np.array([zz[0], 0, 0], np.int64),
                             np.array([zz[1], Y, X], np.int64),
                             np.array([max(zz[0] - reach, 0), 0, 0], np.int64),
                             np.array([min(zz[1] + reach, Z), Y, X], np.int64), sp, float(step),
                             k[zz[0]:zz[1]])
            if dtype == np.float32:  # 2 k s, exact in float32 (k < 2^16), as _diameters
                np.multiply(ks, np.float32(2.0 * step), out=out[zz[0]:zz[1]])
            else:
                out[zz[0]:zz[1]] = _diameters(ks, step, dtype)

        list(pool.map(paint, slabs))
        return out


def _blocks_of(x: np.ndarray, chunks) -> da.Array:
    """``x`` as a dask array of views of its blocks (``da.from_array`` copies ``x`` whole
    first, 0.2 s for the 64 MB of a 256^3 float32 map)."""
    import itertools
    import uuid

    name = f"local-thickness-{uuid.uuid4().hex}"
    cuts = [[slice(a, a + n) for a, n in zip(np.cumsum((0, *c[:-1])).tolist(), c)]
            for c in chunks]
    graph = {(name, *key): x[sl] for key, sl in
             zip(itertools.product(*(range(len(c)) for c in chunks)), itertools.product(*cuts))}
    return da.Array(graph, name, chunks, dtype=x.dtype, meta=np.empty((0, 0, 0), x.dtype))


#: z-slabs per thread of the in-memory centre and painting steps (1 to 8 measured the
#: same at 256^3, within this machine's noise)
_SLABS_PER_THREAD = 4


def _split(n: int, parts: int) -> list:
    """``[(a, b), ...]``: ``range(n)`` cut into at most ``parts`` near-equal pieces."""
    edges = np.linspace(0, n, min(parts, n) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _painting_radius(dmax, cap, step, dtype, phase) -> float:
    """The radius the painting must reach (the largest EDT, capped), or a clear error."""
    if dmax == np.inf and not math.isfinite(cap):
        raise InputError(
            f"phase {phase} fills the whole volume: no voxel lies outside it, so its "
            "local thickness is undefined"
        )
    radius = min(dmax, cap)
    if radius / step > 65000:
        raise InputError(
            f"largest inscribed radius {radius:g} is over 65000 voxels; local thickness "
            "is not supported at that scale"
        )
    if dtype == np.float16 and 2 * radius > 65504:
        raise ConfigError(
            f"dtype float16 cannot hold diameters up to {2 * radius:g}; use float32")
    return radius


def paint_from_centres(centres, radius: float, *, spacing, dtype=np.float32,
                       chunks=None) -> da.Array:
    """The painting pass of :func:`local_thickness`, lazy: a centre map (uint16,
    :func:`~bigvol.metrics._thickness_kernels.mark_centres`; a Zarr array or a dask array)
    whose largest ball radius is ``radius`` -> the local thickness (diameter) in ``chunks``
    (default: the centre map's).

    Windows have a halo of ``radius`` (only centres within ``R`` of a core reach it); their
    cores are whole multiples of ``chunks`` (the output is then only split, never waited
    for), sized by :func:`~bigvol.metrics._chunked.work_chunks`. From a Zarr array each
    task reads its own window straight from the store, one stored chunk at a time: a task
    holds its window and nothing of its neighbours' (a dask overlap would keep the
    neighbouring blocks alive until every window that shares them is done)."""
    step = min(spacing)
    reg = [math.ceil(radius / s) for s in spacing]
    if chunks is None:
        chunks = centres.chunks
    grid = da.empty(centres.shape, dtype=np.uint16, chunks=chunks)
    # a task holds ~10 bytes per core voxel, plus its whole window (2 bytes per voxel) on
    # the dask path, or one z-slab of it when it reads from the store
    streamed = not isinstance(centres, da.Array)
    work = work_chunks(grid, reg, max_window=_PAINT_TASK_BYTES // 2, core_weight=5,
                       window_weight=0.0 if streamed else 1.0)
    if not streamed:
        win, depth = overlapped(centres.rechunk(work), reg)
        out = da.map_blocks(
            _thickness_block, win, depth=depth, reg=reg, spacing=spacing, step=step,
            out_dtype=dtype, dtype=dtype, chunks=_core_chunks(win, depth),
            meta=np.empty((0, 0, 0), dtype),
        )
    else:
        out = da.map_blocks(
            _thickness_from_store, centres=centres, reg=reg, spacing=spacing, step=step,
            out_dtype=dtype, dtype=dtype, chunks=work, meta=np.empty((0, 0, 0), dtype),
        )
    return out if out.chunks == chunks else out.rechunk(chunks)


def _thickness_from_store(*, centres, reg, spacing, step, out_dtype, block_info=None):
    """One painting task: the centres of the core's window (core + ``reg``, clipped to the
    volume) whose ball reaches the core, listed from the stored centre map one stored
    z-slab of the window at a time (the window is never held whole: at R = 128 px it is
    ~10x the core; the core's part of each slab is kept), then the core painted."""
    from ..store import read_region
    from ._thickness_kernels import collect_centres, paint_listed

    loc = block_info[None]["array-location"]
    lo = [max(a - r, 0) for (a, _), r in zip(loc, reg)]
    hi = [min(b + r, n) for (_, b), r, n in zip(loc, reg, centres.shape)]
    core = np.empty(tuple(b - a for a, b in loc), np.uint16)
    shape = np.array(core.shape, np.int64)
    sp = np.array(spacing, np.float64)
    (cz0, cz1), (cy0, cy1), (cx0, cx1) = loc
    cand, n, kmax = np.empty((1 << 16, 4), np.int32), 0, 0
    dz = centres.chunks[0]
    z1 = lo[0]
    while z1 < hi[0]:  # the stored z-slabs the window crosses
        z0, z1 = z1, min((z1 // dz + 1) * dz, hi[0])
        block = read_region(centres, (slice(z0, z1), slice(lo[1], hi[1]), slice(lo[2], hi[2])))
        a, b = max(z0, cz0), min(z1, cz1)
        if a < b:
            core[a - cz0:b - cz0] = block[a - z0:b - z0, cy0 - lo[1]:cy1 - lo[1],
                                          cx0 - lo[2]:cx1 - lo[2]]
        origin = np.array([z0 - cz0, lo[1] - cy0, lo[2] - cx0], np.int64)
        cand, n, kmax = collect_centres(block, origin, shape, sp, float(step), cand, n, kmax)
    k = paint_listed(core, cand[:n], kmax, sp, float(step))
    return _diameters(k, step, out_dtype)


#: bytes of one painting task: ~10 per core voxel (its part of the centre map, the radius
#: index, the output and its float copy; the words of unfilled voxels are 1/4 byte), plus
#: one z-slab of its window when it reads from the store. Within that, cores are as large
#: as the halo makes worth it: reading and scanning the window is the halo's cost (on a
#: 1-GVx predicted segmentation the active material's painting took 138 s with 32
#: Mi-voxel cores in 188 Mi-voxel windows, 165 s with 6 in 81)
_PAINT_TASK_BYTES = 384 * 2**20


def _core_chunks(win: da.Array, depth) -> tuple:
    """Chunks of the cores of the overlapped blocks (the array before overlap)."""
    out = []
    for c, d in zip(win.chunks, depth):
        if not d or len(c) == 1:
            out.append(tuple(c))
            continue
        n = len(c)
        out.append(tuple(w - (d if i > 0 else 0) - (d if i < n - 1 else 0)
                         for i, w in enumerate(c)))
    return tuple(out)


def _value_counts(block, two_s):
    """(distinct non-zero values, counts) of one chunk of a thickness map. The maps of
    :func:`local_thickness` hold ``k * 2s`` (computed in the map's float type): those are
    counted by level ``k`` in one pass; any other value falls back to a sort."""
    from ._thickness_kernels import count_levels

    b = np.ascontiguousarray(block).ravel()
    if b.dtype in (np.float32, np.float64) and b.size:
        top = float(b.max())
        if 0 <= top / two_s < 2**24:
            counts = np.zeros(int(round(top / two_s)) + 1, np.int64)
            if count_levels(b, b.dtype.type(two_s), counts):
                k = np.flatnonzero(counts[1:]) + 1
                return (k.astype(b.dtype) * b.dtype.type(two_s)).astype(np.float64), counts[k]
    values, counts = np.unique(b[b != 0], return_counts=True)
    return values.astype(np.float64), counts.astype(np.int64)


def thickness_summary(thickness, *, voxel_size=None, unit="nm", bins="auto", max_bins=50) -> dict:
    """Volume-weighted distribution of a local-thickness array (its non-zero voxels).

    Every voxel of the phase counts once (volume weighting). Percentiles use the inverted
    CDF (the smallest value whose cumulative volume fraction reaches q), so they are actual
    thickness values. Computes (a chunked reduction of distinct values and counts).

    Parameters
    ----------
    thickness : dask.array.Array or numpy.ndarray
        Output of :func:`local_thickness`.
    voxel_size : sequence of 3 floats, optional
        nm; adds the phase volume in um^3.
    unit : str
        Unit of the thickness values, used in the key names ("nm", or "vox" for voxels).
    bins : "auto" or int
        "auto" (default): bins scaled to the voxel size. :func:`local_thickness` takes the
        values ``2 j s`` (``s`` the smallest voxel size in nm, 1 without ``voxel_size``),
        so each bin holds ``m`` of these levels (the fewest that give at most
        ``max_bins`` bins), centred on them: edges ``s, (m + 1/2) 2s, (2m + 1/2) 2s, ...``.
        No bin is empty for want of a level, and no level is split (a 390 nm voxel gives
        780 nm steps, not 50 bins of 31 nm of which two are filled). An int: that many
        equal-width bins from 0 to the largest thickness.
    max_bins : int
        The most bins ``"auto"`` makes.

    Returns
    -------
    dict
        ``n_voxels``, ``volume_um3`` (when ``voxel_size``), ``mean_<unit>``,
        ``std_<unit>``, ``min_<unit>``, ``p05/p10/p25/median/p75/p90/p95_<unit>``,
        ``max_<unit>``, ``histogram_edges_<unit>`` (bins + 1 edges) and
        ``histogram_volume_fraction`` (bins fractions summing to 1); numbers are 0.0 (and
        the histogram empty) when the phase is absent.

    Examples
    --------
    >>> import numpy as np
    >>> s = thickness_summary(np.array([[[0, 2, 2, 4]]], np.float32), unit="vox")
    >>> s["mean_vox"], s["median_vox"], s["histogram_volume_fraction"]
    (2.6666666666666665, 2.0, [0.6666666666666666, 0.3333333333333333])
    >>> s["histogram_edges_vox"]
    [1.0, 3.0, 5.0]
    """
    if not isinstance(thickness, da.Array):
        thickness = da.from_array(np.asarray(thickness), chunks="auto")
    if not (bins == "auto" or (isinstance(bins, (int, np.integer)) and bins >= 1)):
        raise ConfigError(f"bins must be 'auto' or a positive integer, got {bins!r}")
    if not isinstance(max_bins, (int, np.integer)) or max_bins < 1:
        raise ConfigError(f"max_bins must be a positive integer, got {max_bins!r}")
    if thickness.dtype == np.float16:
        # O(n) exact count of every float16 value: a bincount of the 16-bit patterns
        per_chunk = thickness.map_blocks(
            lambda b: np.bincount(np.ascontiguousarray(b).view(np.uint16).ravel(),
                                  minlength=65536)[None, None, None, :],
            chunks=tuple((1,) * n for n in thickness.numblocks) + ((65536,),), new_axis=3,
            dtype=np.int64, meta=np.empty((0, 0, 0, 0), np.int64))
        (hist16,) = dask.compute(per_chunk.sum(axis=(0, 1, 2)))
        nz = np.flatnonzero(hist16)
        values = nz.astype(np.uint16).view(np.float16)
        counts = hist16[nz]
        order = np.argsort(values)
        values, counts = values[order], counts[order]
    else:
        # per chunk, the non-zero values and their counts (small: the map's levels), then
        # merged; no sort of the volume's values
        two_s = 2.0 * (min(voxel_spacing(voxel_size)) if voxel_size is not None else 1.0)
        parts = [dask.delayed(_value_counts)(b, two_s)
                 for b in thickness.to_delayed().ravel()]
        parts = dask.compute(*parts)
        values, inverse = np.unique(np.concatenate([p[0] for p in parts]),
                                    return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate([p[1] for p in parts]),
                             minlength=len(values)).astype(np.int64)
    keep = values > 0
    values = values[keep].astype(np.float64)
    counts = counts[keep].astype(np.int64)
    u = unit
    n = int(counts.sum())
    out: dict = {"n_voxels": n}
    if voxel_size is not None:
        vs = voxel_spacing(voxel_size)
        out["volume_um3"] = n * vs[0] * vs[1] * vs[2] * 1e-9
    if n == 0:
        for k in ("mean", "std", "min", "p05", "p10", "p25", "median", "p75", "p90", "p95", "max"):
            out[f"{k}_{u}"] = 0.0
        out[f"histogram_edges_{u}"] = []
        out["histogram_volume_fraction"] = []
        return out
    w = counts / n
    mean = float(np.sum(values * w))
    out[f"mean_{u}"] = mean
    out[f"std_{u}"] = float(np.sqrt(np.sum(w * (values - mean) ** 2)))
    out[f"min_{u}"] = float(values[0])
    cdf = np.cumsum(counts)
    for name, q in (("p05", 5), ("p10", 10), ("p25", 25), ("median", 50), ("p75", 75),
                    ("p90", 90), ("p95", 95)):
        i = int(np.searchsorted(cdf, q / 100.0 * n, side="left"))
        out[f"{name}_{u}"] = float(values[min(i, len(values) - 1)])
    out[f"max_{u}"] = float(values[-1])
    if bins == "auto":
        step = 2.0 * (min(voxel_spacing(voxel_size)) if voxel_size is not None else 1.0)
        levels = max(1, math.ceil(values[-1] / step - 1e-9))
        m = math.ceil(levels / int(max_bins))
        nb = levels // m + 1 if levels % m else levels // m
        first = min(0.5 * step, float(values[0]))  # a bin centred on the first level 2s
        edges = np.concatenate([[first], (np.arange(1, nb + 1) * m + 0.5) * step])
    else:
        edges = np.linspace(0.0, float(values[-1]), int(bins) + 1)
    hist, _ = np.histogram(values, bins=edges, weights=counts)
    out[f"histogram_edges_{u}"] = [float(e) for e in edges]
    out["histogram_volume_fraction"] = [float(h) / n for h in hist]
    return out
