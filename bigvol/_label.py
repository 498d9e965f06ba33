"""Chunked 3D connected components with exact cross-chunk merging.

``label(mask, connectivity=26)`` labels a volume of any size chunk by chunk and returns the
same partition as ``scipy.ndimage.label`` on the whole volume, whatever the chunking.

How it works (the out-of-core part that no library offers; cc3d and fastremap do the
per-chunk work):

1. **Tables pass** (one task per chunk). ``cc3d.connected_components`` labels the chunk
   (local ids ``1..k``). The task keeps the chunk's boundary planes of local ids, each id
   tagged with the chunk's index (``chunk << 32 | local``), so ids are globally unique
   without any serial dependency between chunks; with ``stats`` it also keeps the voxel
   count and bounding box of each local component (``cc3d.statistics``).
2. **Pairs** (one task per pair of face-adjacent chunks). The high plane of chunk A is
   compared with the low plane of its neighbour B along the same axis, with B's plane
   widened by a one-voxel margin taken from B's in-plane neighbours, so that the
   diagonal contacts across chunk edges and corners are found too. The in-plane offsets
   compared follow the connectivity: ``(0, 0)`` for 6; plus the 4 edge offsets for 18;
   all 9 for 26. In multi-label mode two voxels join only when their values are equal.
3. **Resolve** (small, in memory). One ``dask.compute`` brings back the per-chunk counts
   (and statistics) and the label pairs; the ids are made global from the cumulative
   sum of the counts, the pairs are solved with
   ``scipy.sparse.csgraph.connected_components`` (union-find), and every component gets
   a final consecutive id ``1..n``: the rank of its smallest global id.
4. **Relabel** (lazy, one task per chunk). Each task labels its chunk again with cc3d
   (deterministic, and cheaper than writing and re-reading the local labels) and maps
   local ids to final ids with a lookup table built from that chunk's entries only
   (``fastremap.remap``): no global table is shipped to every task.

The tables pass labels every chunk exactly once; computing the returned labels labels
every chunk once more. Memory per task is a few times the chunk size.
"""

from __future__ import annotations

import numbers
import operator
import re
from functools import partial
from itertools import product

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from .errors import ConfigError, InputError
from .validate import as_volume, check_connectivity, phase_code

__all__ = ["label", "write_labels"]

_LOCAL_BITS = 32  # a chunk holds fewer than 2**32 voxels, so local ids fit in 32 bits
_LOCAL_MASK = np.uint64((1 << _LOCAL_BITS) - 1)
_FASTREMAP_MAX = 1 << 16  # above this many local ids a numpy lookup beats building a dict


# -- per-chunk work ---------------------------------------------------------------------
def _work_array(block: np.ndarray, select):
    """The array cc3d labels, and whether it is multi-label (values must match to join).

    ``select`` is ``None`` (bool: binary; integer: every nonzero value on its own),
    ``"all"`` (every value, 0 included) or an integer phase code (binary ``block == code``).
    """
    if select is None:
        return block, block.dtype != bool
    if isinstance(select, str):  # "all": label the zeros as well, as one more value
        if block.dtype.itemsize == 1:
            wide = np.uint16
        elif block.dtype.itemsize == 2:
            wide = np.uint32
        else:
            wide = np.uint64 if block.dtype.kind in "ub" else np.int64
        work = block.astype(wide)
        work[block == 0] = np.iinfo(wide).max  # not a value of the narrower dtype
        return work, True
    return block == select, False


def _cc(block: np.ndarray, connectivity: int, select):
    """Local connected components of one chunk: (labels uint32, count, multi)."""
    import cc3d

    work, multi = _work_array(block, select)
    # cc3d 4.1 mislabels some strided views (dask hands out views): give it C order
    work = np.ascontiguousarray(work)
    if work.dtype == bool:
        # cc3d 4.1 takes its (buggy on 1-voxel-thick chunks) binary path for bool input
        work = work.view(np.uint8)
    labels, n = cc3d.connected_components(
        work, connectivity=connectivity, return_N=True, out_dtype=np.uint32,
        # binary_image: ~2x faster on a binary mask; cc3d 4.1 fails with it (26-conn) on
        # chunks 1 voxel thick, where the general path is right
        binary_image=not multi and min(work.shape) > 1,
    )
    return labels, int(n), multi


def _face(a: np.ndarray, axis: int, side: int) -> np.ndarray:
    index = [slice(None)] * 3
    index[axis] = 0 if side == 0 else -1
    return np.ascontiguousarray(a[tuple(index)])


def _tables_task(block, *, connectivity, select, stats, cid, origin, nblocks, index):
    """One chunk: count, boundary planes (ids tagged with the chunk) and statistics."""
    labels, n, multi = _cc(block, connectivity, select)
    out = {"n": n}
    tag = np.uint64(cid) << np.uint64(_LOCAL_BITS)
    for axis in range(3):
        for side in (0, 1):
            if (side == 0 and index[axis] == 0) or (side == 1 and index[axis] == nblocks[axis] - 1):
                continue  # a face of the volume: no neighbour to merge with
            f = _face(labels, axis, side).astype(np.uint64)
            f[f != 0] |= tag
            out[f"f{axis}{side}"] = (f, _face(block, axis, side) if multi else None)
    if stats:
        summary = {"n": n, "voxels": np.zeros(0, np.int64), "bbox": np.zeros((0, 6), np.int64)}
        if n:
            import cc3d

            st = cc3d.statistics(labels, no_slice_conversion=True)
            summary["voxels"] = np.asarray(st["voxel_counts"][1 : n + 1], dtype=np.int64)
            # cc3d gives (min0, max0, min1, max1, min2, max2), max inclusive
            bb = np.asarray(st["bounding_boxes"][1 : n + 1], dtype=np.int64).reshape(n, 6)
            bb = bb + np.repeat(np.asarray(origin, np.int64), 2)
            bb[:, 1::2] += 1  # half-open like Python slices and skimage's bbox
            summary["bbox"] = bb
            if multi:
                values = np.zeros(n + 1, dtype=block.dtype)
                values[labels] = block  # every voxel writes its value at its label
                summary["values"] = values[1:]
        out["s"] = summary
    else:
        out["s"] = {"n": n}
    return out


def _in_plane_offsets(connectivity: int):
    if connectivity == 6:
        return [(0, 0)]
    if connectivity == 18:
        return [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
    return list(product((-1, 0, 1), repeat=2))


def _pairs_task(a_face, b_face, *margins, connectivity, offsets):
    """Pairs of tagged ids that touch across the plane between chunk A and chunk B.

    ``a_face`` is A's high plane, ``b_face`` B's low plane; ``margins`` are the low planes
    of B's in-plane neighbours at ``offsets`` (du, dv), from which the row/column next to
    B is taken, so that diagonal contacts across chunk edges/corners are included.
    """
    a_ids, a_val = a_face
    b_ids, b_val = b_face
    h, w = a_ids.shape
    multi = a_val is not None
    ids = np.zeros((h + 2, w + 2), np.uint64)
    ids[1 : h + 1, 1 : w + 1] = b_ids
    vals = None
    if multi:
        vals = np.zeros((h + 2, w + 2), b_val.dtype)
        vals[1 : h + 1, 1 : w + 1] = b_val
    for (du, dv), (m_ids, m_val) in zip(offsets, margins):
        src_u = slice(-1, None) if du == -1 else slice(0, 1) if du == 1 else slice(None)
        src_v = slice(-1, None) if dv == -1 else slice(0, 1) if dv == 1 else slice(None)
        dst_u = slice(0, 1) if du == -1 else slice(h + 1, h + 2) if du == 1 else slice(1, h + 1)
        dst_v = slice(0, 1) if dv == -1 else slice(w + 1, w + 2) if dv == 1 else slice(1, w + 1)
        ids[dst_u, dst_v] = m_ids[src_u, src_v]
        if multi:
            vals[dst_u, dst_v] = m_val[src_u, src_v]
    a_on = a_ids != 0
    found_a, found_b = [], []
    for du, dv in _in_plane_offsets(connectivity):
        b = ids[1 + du : 1 + du + h, 1 + dv : 1 + dv + w]
        m = a_on & (b != 0)
        if multi:
            m &= vals[1 + du : 1 + du + h, 1 + dv : 1 + dv + w] == a_val
        if m.any():
            pa, pb = _drop_repeats(a_ids[m], b[m])  # runs of one pair along the rows
            found_a.append(pa)
            found_b.append(pb)
    if not found_a:
        return np.zeros((0, 2), np.uint64)
    return _unique_pairs(np.concatenate(found_a), np.concatenate(found_b))


def _drop_repeats(a, b):
    keep = np.empty(len(a), bool)
    keep[:1] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    keep[1:] |= b[1:] != b[:-1]
    return a[keep], b[keep]


def _unique_pairs(a, b) -> np.ndarray:
    """Unique rows of (a, b); lexsort of two uint64 columns (np.unique(axis=0) sorts a
    void view, ~20x slower)."""
    order = np.lexsort((b, a))
    a, b = _drop_repeats(a[order], b[order])
    return np.stack([a, b], axis=1)


def _tables(mask: da.Array, connectivity: int, select, stats: bool):
    """Compute the per-chunk summaries and the cross-chunk pairs in one ``dask.compute``.

    Returns ``(summaries, pairs)``: a list of per-chunk dicts in C order of the chunk grid
    and an ``(m, 2)`` uint64 array of tagged ids that belong to the same component.
    """
    summaries, pairs = tables_graph(mask, connectivity, select, stats).compute()
    return summaries, pairs


def tables_graph(mask: da.Array, connectivity: int, select, stats: bool) -> Delayed:
    """The lazy tables pass of :func:`_tables` (one task per chunk, one per pair of
    neighbouring chunks, one gather): what the scheduler receives, for graph-size checks."""
    nb = mask.numblocks
    if int(np.prod(mask.chunksize, dtype=np.int64)) >= 1 << _LOCAL_BITS:
        raise InputError(
            f"chunks of {mask.chunksize} hold 2**32 voxels or more; use smaller chunks"
        )
    token = tokenize(mask.name, connectivity, select, stats)
    tname = f"bigvol-label-tables-{token}"
    pname = f"bigvol-label-pairs-{token}"
    gname = f"bigvol-label-gather-{token}"
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in mask.chunks]
    layer = {}
    blocks = list(np.ndindex(*nb))
    for cid, idx in enumerate(blocks):
        origin = tuple(int(starts[a][idx[a]]) for a in range(3))
        layer[(tname, *idx)] = (
            partial(
                _tables_task, connectivity=connectivity, select=select, stats=stats,
                cid=cid, origin=origin, nblocks=tuple(nb), index=tuple(idx),
            ),
            (mask.name, *idx),
        )
    # the faces and summaries as their own keys, so that a pair task (or the gather)
    # fetches only what it needs from another worker
    fname = f"bigvol-label-face-{token}"
    sname = f"bigvol-label-summary-{token}"
    for idx in blocks:
        layer[(sname, *idx)] = (operator.getitem, (tname, *idx), "s")
        for axis in range(3):
            if idx[axis] < nb[axis] - 1:
                layer[(fname, axis, 1, *idx)] = (operator.getitem, (tname, *idx), f"f{axis}1")
            if idx[axis] > 0:
                layer[(fname, axis, 0, *idx)] = (operator.getitem, (tname, *idx), f"f{axis}0")
    margin_offsets = [o for o in _in_plane_offsets(connectivity) if o != (0, 0)]
    pair_keys = []
    for idx in blocks:
        for axis in range(3):
            if idx[axis] == nb[axis] - 1:
                continue
            b = list(idx)
            b[axis] += 1
            others = [a for a in range(3) if a != axis]
            offsets, margins = [], []
            for du, dv in margin_offsets:
                m = list(b)
                m[others[0]] += du
                m[others[1]] += dv
                if 0 <= m[others[0]] < nb[others[0]] and 0 <= m[others[1]] < nb[others[1]]:
                    offsets.append((du, dv))
                    margins.append((fname, axis, 0, *m))
            key = (pname, axis, *idx)
            layer[key] = (
                partial(_pairs_task, connectivity=connectivity, offsets=tuple(offsets)),
                (fname, axis, 1, *idx),
                (fname, axis, 0, *b),
                *margins,
            )
            pair_keys.append(key)
    layer[gname] = (
        _gather,
        [(sname, *idx) for idx in blocks],
        pair_keys,
    )
    graph = HighLevelGraph.from_collections(gname, layer, dependencies=[mask])
    return Delayed(gname, graph)


def _gather(summaries, pairs):
    pairs = [p for p in pairs if len(p)]
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.uint64)
    return list(summaries), pairs


# -- global resolution ------------------------------------------------------------------
class _Resolution:
    """Global ids from per-chunk counts and the union-find over the cross-chunk pairs.

    Global id of local id ``l`` of chunk ``c``: ``offset[c] + l`` (``1..T``). Each component
    is represented by its smallest global id (its *root*); ``nonroot`` holds the other
    global ids that were merged (sorted) and ``nonroot_final`` their final ids. The final
    id of a root ``g`` is ``g - #{nonroot < g}``: final ids are consecutive ``1..n``.
    """

    def __init__(self, counts: np.ndarray, pairs: np.ndarray):
        counts = np.asarray(counts, dtype=np.int64)
        self.counts = counts
        self.offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.total = int(counts.sum())
        if len(pairs):
            cid = (pairs >> np.uint64(_LOCAL_BITS)).astype(np.int64)
            local = (pairs & _LOCAL_MASK).astype(np.int64)
            g = self.offsets[cid] + local
            nodes, inverse = np.unique(g.ravel(), return_inverse=True)
            inverse = inverse.reshape(g.shape)
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import connected_components

            graph = coo_matrix(
                (np.ones(len(inverse), np.int8), (inverse[:, 0], inverse[:, 1])),
                shape=(len(nodes), len(nodes)),
            )
            _, comp = connected_components(graph, directed=False)
            # nodes are sorted, so the first node of each component is its smallest id
            _, first = np.unique(comp, return_index=True)
            root = nodes[first][comp]
            is_nonroot = root != nodes
            self.nonroot = nodes[is_nonroot]
            self.nonroot_final = self._root_final(root[is_nonroot])
        else:
            self.nonroot = np.zeros(0, np.int64)
            self.nonroot_final = np.zeros(0, np.int64)
        self.n = self.total - len(self.nonroot)

    def _root_final(self, g):
        return g - np.searchsorted(self.nonroot, g)

    def final_ids(self) -> np.ndarray:
        """Final id of every global id ``1..T`` (index ``g - 1``)."""
        g = np.arange(1, self.total + 1, dtype=np.int64)
        out = self._root_final(g)
        out[self.nonroot - 1] = self.nonroot_final
        return out

    def chunk_info(self, c: int):
        """What chunk ``c`` needs to relabel itself: a few numbers and its merged ids."""
        off, k = int(self.offsets[c]), int(self.counts[c])
        lo = int(np.searchsorted(self.nonroot, off + 1))
        hi = int(np.searchsorted(self.nonroot, off + k, side="right"))
        return off, lo, (self.nonroot[lo:hi] - off), self.nonroot_final[lo:hi]


def _relabel_task(block, *, connectivity, select, info, dtype):
    labels, k, _ = _cc(block, connectivity, select)
    off, before, merged_local, merged_final = info
    local = np.arange(1, k + 1, dtype=np.int64)
    lut = np.zeros(k + 1, dtype=np.int64)
    lut[1:] = off + local - before - np.searchsorted(merged_local, local)
    lut[merged_local] = merged_final
    lut = lut.astype(dtype)
    if dtype != np.uint32:
        labels = labels.astype(dtype)
    if k <= _FASTREMAP_MAX:
        import fastremap

        # fastremap's C++ remap is ~4x faster than numpy fancy indexing for few labels
        return fastremap.remap(labels, dict(zip(range(k + 1), lut.tolist())), in_place=True)
    return lut[labels]


def _label(mask: da.Array, connectivity: int, select):
    summaries, pairs = _tables(mask, connectivity, select, stats=False)
    res = _Resolution([s["n"] for s in summaries], pairs)
    dtype = np.dtype(np.uint32 if res.n < 2**32 else np.uint64)
    name = f"bigvol-label-relabel-{tokenize(mask.name, connectivity, select)}"
    layer = {}
    for cid, idx in enumerate(np.ndindex(*mask.numblocks)):
        layer[(name, *idx)] = (
            partial(
                _relabel_task, connectivity=connectivity, select=select,
                info=res.chunk_info(cid), dtype=dtype,
            ),
            (mask.name, *idx),
        )
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[mask])
    labels = da.Array(graph, name, chunks=mask.chunks, dtype=dtype, meta=np.empty((0, 0, 0), dtype))
    return labels, res.n


def label(mask, *, connectivity: int = 26):
    """Label the connected components of a 3-D volume, chunk by chunk, exactly.

    Every chunk is labelled with ``cc3d``; components that touch across chunk faces,
    edges or corners (as the connectivity allows) are merged with a union-find over a
    small table of label pairs, so the result equals ``scipy.ndimage.label`` of the whole
    volume up to a renumbering of the labels, for any chunking.

    Parameters
    ----------
    mask : dask.array.Array or numpy.ndarray, (z, y, x), bool or integer
        Boolean: the ``True`` voxels are labelled. Integer: every nonzero value is
        labelled separately, in one pass: a component never crosses from one value to
        another (e.g. a segmentation with pore = 0 gives the components of phases 1 and 2;
        label ``phases == 0`` for the pores). Floats are refused.
    connectivity : {6, 18, 26}
        Neighbours that connect: sharing a face (6), a face or an edge (18), or any
        corner (26; the default, scipy's ``generate_binary_structure(3, 3)``).

    Returns
    -------
    labels : dask.array.Array
        Lazy labels with the chunks of ``mask``: 0 for background, consecutive ids
        ``1..n`` (numbered by the first chunk, in C order, where the component appears).
        ``uint32`` when ``n < 2**32``, else ``uint64``.
    n : int
        The number of components.

    Notes
    -----
    Calling ``label`` runs one pass over the volume (one ``dask.compute`` with the current
    scheduler) to count the components and find the merges; only small tables come back.
    Computing ``labels`` streams a second pass, chunk by chunk. Write it to a run store
    with :func:`write_labels` or ``Run.write``.

    Examples
    --------
    >>> import numpy as np, bigvol as bv
    >>> m = np.zeros((1, 4, 6), bool); m[0, 1, :] = True; m[0, 3, 4:] = True
    >>> labels, n = bv.label(m, connectivity=26)
    >>> n
    2
    >>> labels.compute()[0]
    array([[0, 0, 0, 0, 0, 0],
           [1, 1, 1, 1, 1, 1],
           [0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 2, 2]], dtype=uint32)
    """
    connectivity = check_connectivity(connectivity)
    mask = as_volume(mask, "mask", allow_empty=True)
    if mask.size == 0:
        return da.zeros(mask.shape, dtype=np.uint32, chunks=mask.chunks), 0
    return _label(mask, connectivity, None)


# -- component tables -------------------------------------------------------------------
def component_columns(volume: da.Array, connectivity: int, select):
    """Per-component voxels, bbox (and value in multi-label mode), merged over chunks.

    Returns a dict: ``n``, ``voxels`` (n,), ``bbox`` (n, 6) as (min0, max0, min1, max1,
    min2, max2) with max exclusive, and ``values`` (n,) in multi-label mode.
    """
    if volume.size == 0:
        return {"n": 0, "voxels": np.zeros(0, np.int64), "bbox": np.zeros((0, 6), np.int64)}
    summaries, pairs = _tables(volume, connectivity, select, stats=True)
    res = _Resolution([s["n"] for s in summaries], pairs)
    n = res.n
    final = res.final_ids() - 1  # 0-based component index of every global id
    voxels = np.concatenate([s["voxels"] for s in summaries])
    bbox = np.concatenate([s["bbox"] for s in summaries])
    out_vox = np.zeros(n, np.int64)
    np.add.at(out_vox, final, voxels)
    out_bbox = np.empty((n, 6), np.int64)
    out_bbox[:, 0::2] = np.iinfo(np.int64).max
    out_bbox[:, 1::2] = np.iinfo(np.int64).min
    np.minimum.at(out_bbox[:, 0::2], final, bbox[:, 0::2])
    np.maximum.at(out_bbox[:, 1::2], final, bbox[:, 1::2])
    out = {"n": n, "voxels": out_vox, "bbox": out_bbox}
    if any("values" in s for s in summaries):
        values = np.concatenate([s.get("values", np.zeros(0, volume.dtype)) for s in summaries])
        out_val = np.zeros(n, values.dtype)
        out_val[final] = values
        out["values"] = out_val
    return out


# -- run store --------------------------------------------------------------------------
def _phase_key(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", name.strip()) or "phase"


def _resolve_phase(run, phase):
    """``(select, array name)`` of a phase code, a phase name or ``"all"``."""
    names = run.phases
    if isinstance(phase, str) and phase != "all":
        phase = phase_code(phase, names, bounded=False)
    if phase == "all":
        return "all", "labels/all"
    if isinstance(phase, (bool, np.bool_)) or not isinstance(phase, numbers.Integral):
        raise ConfigError(f"phase must be an integer code, a phase name or 'all', got {phase!r}")
    phase = int(phase)
    return phase, f"labels/{_phase_key(names[phase]) if 0 <= phase < len(names) else phase}"


def label_array_name(run, phase="all") -> str:
    """The array :func:`write_labels` writes for ``phase``: ``labels/all``,
    ``labels/active_material``, ..."""
    return _resolve_phase(run, phase)[1]


def write_labels(run, phase="all", *, connectivity: int = 26, source: str = "segmentation",
                 fingerprint=None, compute_kwargs=None):
    """Label the run's segmentation and write ``labels/<phase>`` chunk-aligned.

    Parameters
    ----------
    run : bigvol.store.Run or path
        The run store (opened for writing when a path is given).
    phase : int, str or "all"
        A phase code, a phase name from the run's ``phases`` attribute, or ``"all"``:
        every phase labelled in one pass (pores included; a component never crosses
        phases), written to ``labels/all``. A single phase is written to
        ``labels/<phase name>`` (spaces become ``_``, e.g. ``labels/active_material``).
    connectivity : {6, 18, 26}
    source : str
        The array to label (``segmentation``).
    fingerprint : str, optional
        The calling stage's fingerprint: a killed write with the same fingerprint resumes
        from the chunks already written (see :meth:`bigvol.store.Run.write`).

    Returns
    -------
    (name, n) : the array written and the number of components.
    """
    from .store import Run

    connectivity = check_connectivity(connectivity)
    if not isinstance(run, Run):
        run = Run.open(run, mode="r+")
    phase, name = _resolve_phase(run, phase)
    seg = run.read(source)
    seg = as_volume(seg, source)
    labels, n = _label(seg, connectivity, phase)
    run.write(name, labels, attrs={"n_components": n, "connectivity": connectivity,
                                    "phase": phase}, fingerprint=fingerprint,
              compute_kwargs=compute_kwargs)
    return name, n



def map_chunks_gather(x: da.Array, func, prefix: str) -> list:
    """``func(block)`` for every chunk of ``x``, brought back as a list (C order).

    For small per-chunk results (counts, tables): one task per chunk and one gather
    task, built as a graph layer (a ``dask.delayed`` function fed with dask-array pieces
    makes dask >= 2025.4 re-run the producers).
    """
    token = tokenize(x.name, func)
    name, gname = f"{prefix}-{token}", f"{prefix}-gather-{token}"
    layer = {(name, *idx): (func, (x.name, *idx)) for idx in np.ndindex(*x.numblocks)}
    layer[gname] = (list, list(layer))
    graph = HighLevelGraph.from_collections(gname, layer, dependencies=[x])
    return Delayed(gname, graph).compute()
