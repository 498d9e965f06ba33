"""Connectivity metrics of a phase volume: component tables, isolated fraction, percolation.

All three are small reductions over the chunked labelling of :mod:`bigvol._label`: every
chunk is labelled once with cc3d, its per-component voxel counts and bounding boxes are
kept, and the components are merged across chunk faces, edges and corners with the same
union-find as :func:`bigvol.label`. No labelled volume is written or held in memory, so
they run on volumes far larger than RAM (peak memory depends on the chunk size).

A component *touches* a face of the volume when its bounding box reaches it; along an
axis it is *spanning* (percolating) when it touches both faces.
"""

from __future__ import annotations

import numpy as np

from .._label import component_columns
from ..validate import (
    as_volume,
    check_axis,
    check_choice,
    check_connectivity,
    check_phase,
    check_voxel_size,
)
from .fractions import DEFAULT_CODES

__all__ = ["component_table", "isolated_fraction", "percolation"]

FACES = ("both", "either", "low", "high")
_AXES = "zyx"


def _touches(bbox: np.ndarray, shape, axis: int):
    """(touches low face, touches high face) along ``axis`` from half-open bboxes."""
    return bbox[:, 2 * axis] == 0, bbox[:, 2 * axis + 1] == shape[axis]


def _connected(bbox, shape, axis: int, faces: str) -> np.ndarray:
    low, high = _touches(bbox, shape, axis)
    return {"both": low & high, "either": low | high, "low": low, "high": high}[faces]


def component_table(phases, phase, *, connectivity: int = 26, voxel_size=None) -> dict:
    """Table of the connected components of one phase, without writing a labelled volume.

    Per-chunk tables (voxel count, bounding box of each local component) are merged
    across chunks with the union-find of :func:`bigvol.label`; in the spirit of
    ``skimage.measure.regionprops_table``.

    Parameters
    ----------
    phases : dask.array.Array or numpy.ndarray, (z, y, x), integer
        Phase codes.
    phase : int
        The phase whose components are listed. A code absent from the volume gives an
        empty table.
    connectivity : {6, 18, 26}
    voxel_size : sequence of 3 floats, optional
        ``(z, y, x)`` in nm; ``None`` means unit voxels (then ``volume_um3`` is in voxels).

    Returns
    -------
    dict of numpy arrays, one entry per component
        ``id`` (1..n, the ids :func:`bigvol.label` gives ``phases == phase`` with the same
        chunking), ``voxels``, ``volume_um3`` (voxels x voxel volume / 1e9),
        ``bbox_min_z/y/x`` (inclusive) and ``bbox_max_z/y/x`` (exclusive, like slices),
        and ``touches_z0, touches_z1, touches_y0, touches_y1, touches_x0, touches_x1``:
        whether the component reaches the low (0) / high (1) face of the volume.

    Examples
    --------
    >>> import numpy as np, bigvol as bv
    >>> p = np.zeros((1, 3, 5), np.uint8); p[0, :, 0] = 2; p[0, 1, 3] = 2
    >>> t = bv.metrics.component_table(p, 2, voxel_size=(50, 30, 30))
    >>> t["voxels"].tolist(), t["touches_y1"].tolist()
    ([3, 1], [True, False])
    """
    connectivity = check_connectivity(connectivity)
    phase = check_phase(phase)
    vs = check_voxel_size(voxel_size)
    phases = as_volume(phases)
    cols = component_columns(phases, connectivity, phase)
    n, voxels, bbox = cols["n"], cols["voxels"], cols["bbox"]
    voxel_um3 = float(np.prod(vs)) / 1e9 if vs is not None else 1.0
    table = {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "voxels": voxels,
        "volume_um3": voxels * voxel_um3,
    }
    for a, ax in enumerate(_AXES):
        table[f"bbox_min_{ax}"] = bbox[:, 2 * a]
    for a, ax in enumerate(_AXES):
        table[f"bbox_max_{ax}"] = bbox[:, 2 * a + 1]
    for a, ax in enumerate(_AXES):
        low, high = _touches(bbox, phases.shape, a)
        table[f"touches_{ax}0"] = low
        table[f"touches_{ax}1"] = high
    return table


def isolated_fraction(
    phases, phase: int = 2, *, axis: int = 1, faces: str = "both", connectivity: int = 26
) -> float:
    """Share of a phase's volume in components that do not connect across ``axis``.

    ``isolated = V(phase voxels in components not connected) / V(phase)``, where a
    component counts as connected when it touches

    - ``"both"`` faces of the axis (it spans the volume: the paper's *isolated
      active-material ratio*, "active material not connected, active material to active
      material, across the electrode along its thickness");
    - ``"either"`` face;
    - the ``"low"`` face (index 0) or the ``"high"`` face (index -1) only, e.g. the
      current-collector side when the volume spans the whole electrode thickness.

    ``"both"`` is the default because it is the paper's definition, and because it does
    not depend on which face of the image is the current collector (often unknown, and
    the FIB-SEM volume is usually a part of the electrode thickness); it is also the
    criterion of TauFactor's ``extract_through_feature`` and PoreSpy's
    ``trim_nonpercolating_paths`` (``1 - their fraction``). ``"either"`` is the
    complement of PoreSpy's ``find_disconnected_voxels`` with both faces as inlets.

    Parameters
    ----------
    phases : dask.array.Array or numpy.ndarray, (z, y, x), integer
        Phase codes (2 = active material by default).
    phase : int
        The phase. An absent phase gives 0.0.
    axis : int
        The thickness axis: 0 (z), 1 (y, the default), 2 (x).
    faces : {"both", "either", "low", "high"}
    connectivity : {6, 18, 26}

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> import numpy as np, bigvol as bv
    >>> p = np.zeros((1, 4, 4), np.uint8); p[0, :, 0] = 2; p[0, 1, 2:] = 2
    >>> bv.metrics.isolated_fraction(p, 2, axis=1)     # the 2 voxels at y=1 do not span y
    0.3333333333333333
    """
    connectivity = check_connectivity(connectivity)
    phase = check_phase(phase)
    axis = check_axis(axis)
    faces = check_choice(faces, FACES, "faces")
    phases = as_volume(phases)
    cols = component_columns(phases, connectivity, phase)
    total = int(cols["voxels"].sum())
    if total == 0:
        return 0.0
    connected = int(cols["voxels"][_connected(cols["bbox"], phases.shape, axis, faces)].sum())
    return (total - connected) / total


def percolation(phases, *, connectivity: int = 26) -> dict:
    """Percolation of every phase along every axis, from one pass over the volume.

    Every phase (pores included) is labelled in the same pass (a component never crosses
    phases). For each phase and axis the phase volume splits into components that touch
    both faces of the axis (*connected*, spanning), exactly one face (*dead end*), or
    neither (*enclosed*).

    Parameters
    ----------
    phases : dask.array.Array or numpy.ndarray, (z, y, x), integer
    connectivity : {6, 18, 26}

    Returns
    -------
    dict of lists (columns, one row per phase and axis; ``pandas.DataFrame(table)``)
        ``phase`` (code; 0, 1, 2 always, plus any other code present), ``axis`` (0, 1, 2),
        ``axis_name`` (z, y, x), ``phase_fraction`` (volume fraction of the phase),
        ``connected_fraction``, ``dead_end_fraction``, ``enclosed_fraction`` (of the
        phase volume; they sum to 1, or are all 0 for an absent phase),
        ``isolated_fraction`` (``1 - connected_fraction``, = :func:`isolated_fraction`
        with ``faces="both"``), ``n_components`` (of the phase in the whole volume) and
        ``n_spanning`` (components connecting both faces of the axis).

    Examples
    --------
    >>> import numpy as np, bigvol as bv
    >>> p = np.zeros((2, 2, 2), np.uint8); p[:, 0, :] = 2
    >>> t = bv.metrics.percolation(p)
    >>> [(a, c) for ph, a, c in zip(t["phase"], t["axis"], t["connected_fraction"]) if ph == 2]
    [(0, 1.0), (1, 0.0), (2, 1.0)]
    """
    connectivity = check_connectivity(connectivity)
    phases = as_volume(phases)
    cols = component_columns(phases, connectivity, "all")
    values = cols.get("values", np.zeros(0, np.int64)).astype(np.int64)
    codes = sorted(set(DEFAULT_CODES) | set(np.unique(values).tolist()))
    size = phases.size
    table = {k: [] for k in (
        "phase", "axis", "axis_name", "phase_fraction", "connected_fraction",
        "dead_end_fraction", "enclosed_fraction", "isolated_fraction", "n_components",
        "n_spanning",
    )}
    for code in codes:
        sel = values == code
        voxels, bbox = cols["voxels"][sel], cols["bbox"][sel]
        total = int(voxels.sum())
        for axis in range(3):
            low, high = _touches(bbox, phases.shape, axis)
            both = int(voxels[low & high].sum())
            one = int(voxels[low ^ high].sum())
            none = total - both - one
            frac = (lambda v: v / total) if total else (lambda v: 0.0)
            table["phase"].append(int(code))
            table["axis"].append(axis)
            table["axis_name"].append(_AXES[axis])
            table["phase_fraction"].append(total / size if size else 0.0)
            table["connected_fraction"].append(frac(both))
            table["dead_end_fraction"].append(frac(one))
            table["enclosed_fraction"].append(frac(none))
            table["isolated_fraction"].append(frac(total - both))
            table["n_components"].append(int(sel.sum()))
            table["n_spanning"].append(int((low & high).sum()))
    return table
