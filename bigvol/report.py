"""The HTML report of a run: one self-contained file, figures embedded as PNG.

:func:`write_report` reads a run store (``RUN.zarr``) and its ``metrics.json`` and writes one
HTML page that needs nothing else: no external files, no network, no JavaScript. It holds

- a header: run path, shape, voxel size, bigvol version, the arrays present (and those
  missing), and the provenance record of every completed stage;
- orthogonal slice views (xy at the middle slice, xz, yz) of ``raw``, ``normalized``,
  ``segmentation`` (and ``threshold`` / ``truth`` when present), the phases in a colour map
  with a legend;
- per-slice mean brightness before and after normalization with the 1-99 % band (the
  paper's Fig. 7) and the gray-level histograms of a few slices before and after;
- per-slice accuracy of each segmentation method (Fig. 6) and the confusion matrices
  normalized by true class side by side, as tables and heatmaps (Table 1);
- a 3D view of each phase (a marching-cubes mesh of a centred, downsampled crop rendered
  offscreen) and the local-thickness map of the solid electrolyte with its histogram and
  a 3D view coloured by thickness (Fig. 8);
- the metrics table, every number with its unit.

Only the planes and the small crop that are drawn are read from Zarr, never a whole
volume: the memory used depends on the slice size, not on the number of slices. Figures
are drawn with :class:`matplotlib.figure.Figure` (no pyplot, no global backend change).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .conventions import run_stem
from .record import flatten_metrics
from .store import read_region
from .errors import InputError

__all__ = ["write_report", "PHASE_COLOURS"]

#: Colours of the phase codes 0, 1, 2 (pore, solid electrolyte, active material); more
#: phases take the following tab10 colours.
PHASE_COLOURS = ("#3a3a3a", "#f28e2b", "#4e79a7")
_EXTRA_COLOURS = ("#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f")
_ORTHO_ARRAYS = ("raw", "normalized", "segmentation", "threshold", "truth")
_LABEL_ARRAYS = ("segmentation", "threshold", "truth")
_AXES = ("z", "y", "x")


# -- small helpers -------------------------------------------------------------------------
def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _png(fig) -> str:
    """A matplotlib Figure as an ``<img>`` source (base64 PNG data URI)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(fid: str, title: str, fig, caption: str = "") -> str:
    src = _png(fig)
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (
        f'<figure id="{_esc(fid)}"><img alt="{_esc(title)}" src="{src}">'
        f"{cap}</figure>"
    )


def _colours(n: int) -> list[str]:
    base = list(PHASE_COLOURS) + list(_EXTRA_COLOURS)
    while len(base) < n:
        base += base
    return base[:n]


def _fmt(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if isinstance(v, (int, np.integer)) or (float(v).is_integer() and abs(v) < 1e12):
        return f"{int(v)}"
    return f"{v:.4g}"


_SUP = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _unit(name: str) -> str:
    """The unit of a flattened metrics column, read from its name's last token
    (``_nm``, ``_um-1``, ``_um3``, ``_vox``, ``_s``, ...)."""
    import re

    m = re.search(r"_(nm|um|vox)(-?\d)?$", name)
    if m:
        base = {"nm": "nm", "um": "µm", "vox": "voxel"}[m.group(1)]
        if m.group(2) is None:
            return base + ("s" if base == "voxel" else "")
        return base + m.group(2).translate(_SUP)
    if name.endswith("_s"):
        return "s"
    if name.endswith("_gray"):
        return "gray level"
    if name.startswith("shape_") or name.endswith(("n_components", "n_spanning", "n_voxels",
                                                  "n_subvolumes", "n_percolating")):
        return "count"
    if "fraction" in name or "accuracy" in name or "_recall_" in name or "_iou_" in name \
            or "_precision_" in name:
        return "fraction (0-1)"
    if name.endswith(("_tau", "eff_ratio")):
        return "1"
    return ""


_SECTIONS = (
    ("shape_", "Volume"), ("voxel_size_", "Volume"), ("volume_fraction_", "Volume fractions"),
    ("isolated_fraction_", "Isolated fraction (not connected across the thickness axis)"),
    ("percolation_", "Percolation"), ("thickness_", "Local thickness"),
    ("tortuosity_", "Tortuosity and effective transport"), ("interfaces_", "Interfaces"),
    ("evaluation_", "Segmentation quality"), ("normalization_", "Brightness normalization"),
    ("timings_", "Timings"),
)


def _section_of(name: str) -> str:
    for prefix, title in _SECTIONS:
        if name.startswith(prefix):
            return title
    return "Other"


def _physical(vs):
    """Voxel size (z, y, x) and unit label for axes: µm when known, else voxels."""
    if vs is None:
        return (1.0, 1.0, 1.0), "voxels"
    return tuple(float(v) / 1000.0 for v in vs), "µm"


def _shrink(a: np.ndarray, step: int, labels: bool) -> np.ndarray:
    """Downsample a plane for display: nearest (every ``step``-th) for labels, block mean
    for gray levels."""
    if step <= 1:
        return a
    if labels:
        return a[::step, ::step]
    h, w = (a.shape[0] // step) * step, (a.shape[1] // step) * step
    if h == 0 or w == 0:
        return a[::step, ::step]
    return a[:h, :w].reshape(h // step, step, w // step, step).mean(axis=(1, 3))


class _Store:
    """What the report reads from a run store: complete arrays only, slices only."""

    def __init__(self, run):
        self.run = run
        self.missing: dict[str, str] = {}

    def array(self, name: str):
        if name not in self.run:
            self.missing[name] = "absent"
            return None
        if not self.run.is_complete(name):
            self.missing[name] = "incomplete (its stage did not finish)"
            return None
        node = self.run.zarr_array(name)
        if len(node.shape) != 3:
            self.missing[name] = "not a (z, y, x) array"
            return None
        return node

    def thickness_names(self) -> list[str]:
        return self.run.array_names("thickness")


# -- sections ------------------------------------------------------------------------------
def _ortho_figure(arr, name, phases, vs, max_px):
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    nz, ny, nx = arr.shape
    cz, cy, cx = nz // 2, ny // 2, nx // 2
    labels = name in _LABEL_ARRAYS
    step = max(1, math.ceil(max(ny, nx, nz) / max_px))
    xy = _shrink(read_region(arr, (cz, slice(None), slice(None))), step, labels)
    xz = _shrink(read_region(arr, (slice(None), cy, slice(None))), step, labels)
    yz = _shrink(read_region(arr, (slice(None), slice(None), cx)), step, labels).T  # rows y, columns z
    (dz, dy, dx), unit = _physical(vs)
    Z, Y, X = nz * dz, ny * dy, nx * dx

    fig = Figure(figsize=(6.4, 6.4 * (Y + Z) / (X + Z) + 0.4), dpi=110, layout="constrained")
    gs = fig.add_gridspec(
        2, 2, width_ratios=[X, max(Z, 0.05 * X)], height_ratios=[Y, max(Z, 0.05 * Y)]
    )
    a_xy = fig.add_subplot(gs[0, 0])
    a_yz = fig.add_subplot(gs[0, 1])
    a_xz = fig.add_subplot(gs[1, 0])
    a_leg = fig.add_subplot(gs[1, 1])
    a_leg.set_axis_off()
    if labels:
        n = len(phases)
        cmap = ListedColormap(_colours(n)).with_extremes(over="white")
        kw = dict(cmap=cmap, norm=BoundaryNorm(np.arange(n + 1) - 0.5, n), interpolation="nearest")
        other = any(int(p.max(initial=0)) >= n for p in (xy, xz, yz))
        handles = [Patch(facecolor=c, edgecolor="k", label=f"{i} {ph}")
                   for i, (ph, c) in enumerate(zip(phases, _colours(n)))]
        if other:
            handles.append(Patch(facecolor="white", edgecolor="k", label="other / unlabelled"))
        a_leg.legend(handles=handles, loc="center", fontsize=8, frameon=False)
    else:
        vals = np.concatenate([p.ravel() for p in (xy, xz, yz)]).astype(np.float64)
        lo, hi = np.percentile(vals, [0.5, 99.5]) if vals.size else (0, 1)
        if hi <= lo:
            hi = lo + 1
        kw = dict(cmap="gray", vmin=lo, vmax=hi, interpolation="antialiased")
        a_leg.text(0.5, 0.5, f"gray levels\n{lo:.4g} – {hi:.4g}\n({arr.dtype})",
                   ha="center", va="center", fontsize=8)
    a_xy.imshow(xy, extent=(0, X, Y, 0), **kw)
    a_xz.imshow(xz, extent=(0, X, Z, 0), **kw)
    a_yz.imshow(yz, extent=(0, Z, Y, 0), **kw)
    line = dict(color="#ffd400", lw=0.8, ls="--")
    a_xy.axhline((cy + 0.5) * dy, **line)
    a_xy.axvline((cx + 0.5) * dx, **line)
    a_xz.axhline((cz + 0.5) * dz, **line)
    a_xz.axvline((cx + 0.5) * dx, **line)
    a_yz.axvline((cz + 0.5) * dz, **line)
    a_yz.axhline((cy + 0.5) * dy, **line)
    a_xy.set_title(f"xy (z = {cz})", fontsize=9)
    a_xz.set_title(f"xz (y = {cy})", fontsize=9)
    a_yz.set_title(f"yz (x = {cx})", fontsize=9)
    a_xy.set_ylabel(f"y ({unit})")
    a_xz.set_xlabel(f"x ({unit})")
    a_xz.set_ylabel(f"z ({unit})")
    a_yz.set_xlabel(f"z ({unit})")
    for a in (a_xy, a_xz, a_yz):
        a.tick_params(labelsize=7)
    fig.suptitle(name, fontsize=11)
    caption = (
        f"<b>{_esc(name)}</b> {arr.shape[0]}×{arr.shape[1]}×{arr.shape[2]} {_esc(arr.dtype)}, "
        f"orthogonal planes through the centre (dashed lines: the other planes)"
        + (f", shown at 1/{step} resolution" if step > 1 else "")
    )
    return _figure(f"fig-ortho-{name}", f"orthogonal slices of {name}", fig, caption)


def _norm_curve(norm: Mapping[str, Any], when: str, stat: str):
    """A per-slice curve of the normalization record, in either schema: flat
    (``mean_before``, ``p1_after``) or nested (``before: {mean, p1, p99, ...}``)."""
    v = norm.get(f"{stat}_{when}")
    if v is None and isinstance(norm.get(when), Mapping):
        v = norm[when].get(stat)
    if v is None or isinstance(v, (str, bytes)):
        return None
    try:
        a = np.asarray([np.nan if x is None else x for x in v], dtype=float)
    except (TypeError, ValueError):
        return None
    return a if a.ndim == 1 and a.size else None


def _brightness_figure(norm: Mapping[str, Any]):
    from matplotlib.figure import Figure

    def arr(key):
        stat, when = key.rsplit("_", 1)
        return _norm_curve(norm, when, stat)

    mb, ma = arr("mean_before"), arr("mean_after")
    if mb is None and ma is None:
        return ""
    fig = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for key, a, colour in (("before", mb, "#d62728"), ("after", ma, "#1f77b4")):
        if a is None:
            continue
        z = np.arange(a.size)
        ax.plot(z, a, color=colour, lw=1.2, label=f"mean {key}")
        lo, hi = arr(f"p1_{key}"), arr(f"p99_{key}")
        if lo is not None and hi is not None and lo.size == a.size == hi.size:
            ax.fill_between(z, lo, hi, color=colour, alpha=0.12, lw=0,
                            label=f"1-99 % {key}")
    ref = norm.get("reference")
    n = (mb if mb is not None else ma).size
    if ref is None and str(norm.get("method", "")).startswith("hist"):
        ref = n // 2  # bigvol.normalize's default reference: the middle slice
    if isinstance(ref, (int, float)) and not isinstance(ref, bool):
        ax.axvline(ref, color="k", ls=":", lw=1, label=f"reference slice {int(ref)}")
    ax.set_xlabel("slice (z)")
    ax.set_ylabel("gray level")
    ax.legend(fontsize=8, ncols=3)
    ax.set_title(f"per-slice brightness, normalization: {norm.get('method', '?')}", fontsize=10)
    sd = {k: float(np.nanstd(a)) for k, a in (("before", mb), ("after", ma)) if a is not None}
    cap = "Per-slice mean gray level before and after normalization (paper Fig. 7); " + ", ".join(
        f"spread of the slice means {k}: {v:.3g}" for k, v in sd.items()
    )
    return _figure("fig-brightness", "per-slice brightness before and after normalization",
                   fig, cap)


def _histogram_figure(raw, normed, slices):
    from matplotlib.figure import Figure

    whole = (slice(None), slice(None))
    pairs = [(int(z), read_region(raw, (int(z), *whole)), read_region(normed, (int(z), *whole)))
             for z in slices]
    allv = [a for _, r, n in pairs for a in (r, n)]
    integer8 = all(a.dtype == np.uint8 for a in allv)
    if integer8:
        edges = np.arange(257) - 0.5
    else:
        lo = min(float(a.min()) for a in allv)
        hi = max(float(a.max()) for a in allv)
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 257)
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig = Figure(figsize=(9, 3.2), dpi=100, layout="constrained")
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    colours = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"]
    for k, (z, r, n) in enumerate(pairs):
        for ax, a in zip(axes, (r, n)):
            if integer8:
                h = np.bincount(a.ravel(), minlength=256).astype(float)
            else:
                h, _ = np.histogram(a, bins=edges)
                h = h.astype(float)
            h /= max(h.sum(), 1.0)
            ax.plot(centres, h, color=colours[k % len(colours)], lw=1, label=f"slice {z}")
    for ax, t in zip(axes, ("raw (before)", "normalized (after)")):
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("gray level")
        ax.set_ylabel("fraction of pixels")
        ax.legend(fontsize=8)
        ax.tick_params(labelsize=7)
    return _figure("fig-histograms", "gray-level histograms before and after normalization", fig,
                   f"Gray-level histograms of slices {', '.join(str(z) for z, _, _ in pairs)} "
                   "before and after normalization")


def _evaluation_section(ev: Mapping[str, Any], phases) -> str:
    from matplotlib.figure import Figure

    methods = [m for m, e in ev.items() if isinstance(e, Mapping)]
    if not methods:
        return "<p>No evaluation against ground truth in the metrics.</p>"
    out = []
    # summary table
    n = len(phases)
    head = "<tr><th>method</th><th>pixel accuracy</th>" + "".join(
        f"<th>recall {_esc(p)}</th>" for p in phases) + "".join(
        f"<th>IoU {_esc(p)}</th>" for p in phases) + "</tr>"
    rows = []
    for m in methods:
        e = ev[m]
        rec = list(e.get("recall") or [])
        iou = list(e.get("iou") or [])
        acc = e.get("accuracy")
        cells = [_fmt(float(acc)) if acc is not None else "n/a"]
        cells += [_fmt(float(rec[i])) if i < len(rec) and rec[i] is not None else "n/a"
                  for i in range(n)]
        cells += [_fmt(float(iou[i])) if i < len(iou) and iou[i] is not None else "n/a"
                  for i in range(n)]
        rows.append(f"<tr><th>{_esc(m)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append('<table class="num" id="tab-evaluation">' + head + "".join(rows) + "</table>")

    # per-slice accuracy (Fig. 6)
    curves = {m: ev[m].get("accuracy_per_slice") for m in methods}
    curves = {m: np.asarray([np.nan if x is None else x for x in c], float)
              for m, c in curves.items() if c}
    if curves:
        fig = Figure(figsize=(9, 3.4), dpi=100, layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        for m, c in curves.items():
            ax.plot(np.arange(c.size), c, lw=1.2, marker="." if c.size < 60 else None,
                    label=f"{m} (mean {np.nanmean(c):.3f})")
        ax.set_xlabel("slice (z)")
        ax.set_ylabel("pixel accuracy")
        ax.legend(fontsize=8)
        ax.set_title("per-slice accuracy", fontsize=10)
        out.append(_figure("fig-accuracy-per-slice", "per-slice accuracy", fig,
                           "Pixel accuracy of each slice against the ground truth (paper Fig. 6)"))

    # confusion matrices normalized by true class (Table 1)
    mats = {}
    for m in methods:
        c = ev[m].get("confusion_normalized")
        if c is not None:
            mats[m] = np.asarray([[np.nan if x is None else x for x in r] for r in c], float)
    if mats:
        tables = []
        for m, c in mats.items():
            k = c.shape[0]
            names = list(phases)[:k] + [f"phase {i}" for i in range(len(phases), k)]
            t = (f'<table class="num confusion" data-method="{_esc(m)}"><caption>{_esc(m)}'
                 "</caption><tr><th>true \\ predicted</th>"
                 + "".join(f"<th>{_esc(p)}</th>" for p in names) + "</tr>")
            for i in range(k):
                t += f"<tr><th>{_esc(names[i])}</th>" + "".join(
                    f'<td{" class=diag" if i == j else ""}>{_fmt(float(c[i, j]))}</td>'
                    for j in range(c.shape[1])) + "</tr>"
            tables.append(t + "</table>")
        out.append('<div class="side">' + "".join(tables) + "</div>")
        fig = Figure(figsize=(3.6 * len(mats) + 0.8, 3.4), dpi=100, layout="constrained")
        axes = [fig.add_subplot(1, len(mats), i + 1) for i in range(len(mats))]
        im = None
        for ax, (m, c) in zip(axes, mats.items()):
            k = c.shape[0]
            names = list(phases)[:k] + [f"phase {i}" for i in range(len(phases), k)]
            im = ax.imshow(c, cmap="Blues", vmin=0, vmax=1)
            for i in range(k):
                for j in range(c.shape[1]):
                    v = c[i, j]
                    ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.3f}", ha="center",
                            va="center", fontsize=8, color="white" if v > 0.6 else "black")
            ax.set_xticks(range(c.shape[1]), names[: c.shape[1]], fontsize=7, rotation=20)
            ax.set_yticks(range(k), names, fontsize=7)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(m, fontsize=10)
        fig.colorbar(im, ax=axes, shrink=0.8, label="fraction of the true class")
        out.append(_figure("fig-confusion", "confusion matrices", fig,
                           "Confusion matrices normalized by true class: each row sums to 1 and "
                           "the diagonal is the recall of the class (paper Table 1)"))
    return "\n".join(out)


def _crop(arr, mesh_size: int):
    """A centred crop of at most ``2 * mesh_size`` voxels per axis, then a stride that brings
    it to at most ``mesh_size``; returns (region slices, stride)."""
    region, strides = [], []
    for n in arr.shape:
        c = min(n, 2 * mesh_size)
        s0 = (n - c) // 2
        region.append(slice(s0, s0 + c))
        strides.append(max(1, math.ceil(c / mesh_size)))
    step = max(strides)
    return tuple(slice(r.start, r.stop, step) for r in region), step


def _mesh(mask: np.ndarray, spacing):
    """Marching-cubes triangles of a binary mask (padded so that surfaces close)."""
    from skimage.measure import marching_cubes

    if not mask.any() or mask.all():
        return None
    vol = np.pad(mask, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(vol, 0.5, spacing=spacing)
    if faces.shape[0] > 150_000:  # drawing costs ~10 us a triangle: coarser steps
        try:
            verts, faces, _, _ = marching_cubes(vol, 0.5, spacing=spacing, step_size=2)
        except RuntimeError:  # a coarser grid can miss every surface of small features
            pass
    verts = verts - np.asarray(spacing)  # undo the padding
    return verts, faces


def _draw_mesh(ax, verts, faces, facecolours, box):
    """Add a mesh to a 3D axes, (z, y, x) vertices drawn with z up."""
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    tri = verts[faces][:, :, ::-1]  # -> (x, y, z)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    light = np.array([0.4, -0.5, 0.77])
    light /= np.linalg.norm(light)
    shade = 0.35 + 0.65 * np.abs(n @ light)
    rgb = np.asarray(facecolours, float)
    if rgb.ndim == 1:
        rgb = np.broadcast_to(rgb, (len(faces), 3))
    col = np.c_[rgb * shade[:, None], np.ones(len(faces))]
    ax.add_collection3d(Poly3DCollection(tri, facecolors=col, edgecolors="none", linewidths=0))
    X, Y, Z = box
    ax.set_xlim(0, X)
    ax.set_ylim(0, Y)
    ax.set_zlim(0, Z)
    ax.set_box_aspect((X, Y, Z))
    ax.tick_params(labelsize=6)


def _phases_3d_section(seg, phases, vs, mesh_size):
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure
    import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3d projection)

    region, step = _crop(seg, mesh_size)
    crop = read_region(seg, region)
    (dz, dy, dx), unit = _physical(vs)
    spacing = (dz * step, dy * step, dx * step)
    box = (crop.shape[2] * spacing[2], crop.shape[1] * spacing[1], crop.shape[0] * spacing[0])
    n = len(phases)
    # no constrained layout: it clips the titles of 3D axes
    fig = Figure(figsize=(4.2 * n, 4.6), dpi=100)
    fig.subplots_adjust(left=0.0, right=0.97, bottom=0.03, top=0.9, wspace=0.08)
    for i, (ph, colour) in enumerate(zip(phases, _colours(n))):
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        mask = crop == i
        mesh = _mesh(mask, spacing)
        if mesh is not None:
            _draw_mesh(ax, mesh[0], mesh[1], to_rgb(colour), box)
        else:
            ax.text2D(0.5, 0.5, "empty" if not mask.any() else "fills the crop",
                      transform=ax.transAxes, ha="center")
        ax.set_title(f"{ph} ({100 * mask.mean():.1f} % of the crop)", fontsize=9)
        ax.set_xlabel(f"x ({unit})", fontsize=7)
        ax.set_ylabel(f"y ({unit})", fontsize=7)
        ax.set_zlabel(f"z ({unit})", fontsize=7)
    start = tuple(r.start for r in region)
    cap = (f"3D view of each phase: marching-cubes surface of the centred crop "
           f"{'×'.join(str((r.stop - r.start)) for r in region)} voxels from (z, y, x) = "
           f"{start}, " + ("full resolution " if step == 1 else f"sampled every {step} voxels ") +
           f"({'×'.join(str(s) for s in crop.shape)} drawn), axes in {unit}")
    return _figure("fig-3d-phases", "3D view of each phase", fig, cap)


def _thickness_section(store, name, seg, phases, metrics, vs, mesh_size, max_px):
    from matplotlib.figure import Figure
    import mpl_toolkits.mplot3d  # noqa: F401

    arr = store.array(f"thickness/{name}")
    out = []
    (dz, dy, dx), unit = _physical(vs)
    tunit = "nm" if vs is not None else "voxels"
    if arr is not None:
        nz, ny, nx = arr.shape
        cz = nz // 2
        step = max(1, math.ceil(max(ny, nx) / max_px))
        every = slice(None, None, step)
        plane = read_region(arr, (cz, every, every)).astype(np.float64)
        shown = np.ma.masked_less_equal(plane, 0)
        fig = Figure(figsize=(7.5, 7.5 * (ny * dy) / (nx * dx) + 0.5), dpi=100,
                     layout="constrained")
        ax = fig.add_subplot(1, 1, 1)
        ax.set_facecolor("#202020")
        im = ax.imshow(shown, cmap="viridis", extent=(0, nx * dx, ny * dy, 0),
                       interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.85, label=f"local thickness ({tunit})")
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"y ({unit})")
        ax.set_title(f"local thickness of {name}, slice z = {cz}", fontsize=10)
        out.append(_figure(
            f"fig-thickness-{_slugid(name)}", f"local thickness of {name}", fig,
            f"Local thickness (diameter of the largest inscribed sphere) of the {_esc(name)}, "
            f"slice z = {cz}; dark: other phases (paper Fig. 8)"))
    stats = (metrics.get("thickness") or {}).get(name)
    stats = stats if isinstance(stats, Mapping) else {}
    # both spellings: hist_edges_nm (report contract) and histogram_edges_nm (metrics module)
    ekey = next((k for k in stats if k.startswith(("hist_edges_", "histogram_edges_"))), None)
    fkey = next((k for k in ("hist_volume_fraction", "histogram_volume_fraction")
                 if k in stats), None)
    hunit = ekey.rsplit("_", 1)[-1] if ekey else "nm"
    hunit = "voxels" if hunit == "vox" else hunit
    if ekey and fkey and stats[ekey] and stats[fkey]:
        edges = np.asarray(stats[ekey], float)
        frac = np.asarray(stats[fkey], float)
        if edges.size == frac.size + 1:
            fig = Figure(figsize=(7.5, 3.0), dpi=100, layout="constrained")
            ax = fig.add_subplot(1, 1, 1)
            ax.bar(edges[:-1], frac, width=np.diff(edges), align="edge", color="#f28e2b",
                   edgecolor="k", lw=0.4)
            sfx = ekey.rsplit("_", 1)[-1]
            for key, ls in ((f"mean_{sfx}", "-"), (f"median_{sfx}", "--")):
                if isinstance(stats.get(key), (int, float)):
                    ax.axvline(stats[key], color="k", ls=ls, lw=1,
                               label=f"{key.rsplit('_', 1)[0]} {stats[key]:.4g} {hunit}")
            ax.set_xlabel(f"local thickness ({hunit})")
            ax.set_ylabel("volume fraction of the phase")
            ax.legend(fontsize=8)
            out.append(_figure(f"fig-thickness-hist-{_slugid(name)}",
                               f"thickness distribution of {name}", fig,
                               f"Distribution of the local thickness of the {_esc(name)}, "
                               "by volume"))
    electrolyte = phases[1] if len(phases) > 1 else None
    # the 3D view coloured by thickness: the electrolyte network only (Fig. 8), to keep the
    # report quick to write
    if (arr is not None and seg is not None and name == electrolyte
            and seg.shape == arr.shape):
        from matplotlib import colormaps
        from matplotlib.colors import Normalize
        from scipy.ndimage import maximum_filter

        region, step = _crop(seg, mesh_size)
        mask = read_region(seg, region) == phases.index(name)
        thick = read_region(arr, region).astype(np.float64)
        spacing = (dz * step, dy * step, dx * step)
        mesh = _mesh(mask, spacing)
        if mesh is not None:
            verts, faces = mesh
            # colour each face by the thickness just inside the surface: the largest value in
            # the 3x3x3 neighbourhood of its centroid (the centroid lies on the boundary)
            near = maximum_filter(np.where(mask, thick, 0.0), size=3, mode="nearest")
            cen = verts[faces].mean(axis=1) / np.asarray(spacing)
            idx = np.clip(np.rint(cen).astype(int), 0, np.asarray(mask.shape) - 1)
            t = near[idx[:, 0], idx[:, 1], idx[:, 2]]
            pos = thick[mask]
            vmax = float(np.percentile(pos, 99)) if pos.size else 1.0
            norm = Normalize(0, vmax if vmax > 0 else 1.0)
            rgb = colormaps["viridis"](norm(t))[:, :3]
            box = (mask.shape[2] * spacing[2], mask.shape[1] * spacing[1],
                   mask.shape[0] * spacing[0])
            fig = Figure(figsize=(6.5, 5.4), dpi=100)
            fig.subplots_adjust(left=0.0, right=0.95, bottom=0.03, top=0.92)
            ax = fig.add_subplot(1, 1, 1, projection="3d")
            _draw_mesh(ax, verts, faces, rgb, box)
            from matplotlib.cm import ScalarMappable

            fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=ax, shrink=0.6,
                         pad=0.12, label=f"local thickness ({tunit})")
            ax.set_xlabel(f"x ({unit})", fontsize=7)
            ax.set_ylabel(f"y ({unit})", fontsize=7)
            ax.set_zlabel(f"z ({unit})", fontsize=7)
            ax.set_title(f"{name} coloured by local thickness", fontsize=10)
            out.append(_figure(f"fig-thickness-3d-{_slugid(name)}",
                               f"3D view of {name} coloured by thickness", fig,
                               "Surface of the phase in the same crop as the 3D views above, "
                               "coloured by the local thickness just inside it (shading "
                               "darkens faces turned from the light)"))
    return "\n".join(out)


def _slugid(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in str(name).lower()).strip("-")


def _metrics_tables(metrics: Mapping[str, Any], phases) -> str:
    flat = flatten_metrics(metrics)
    if not flat:
        return "<p>No metrics.</p>"
    out = []
    perc = metrics.get("percolation")
    if isinstance(perc, Mapping) and perc.get("phase") and perc.get("axis"):
        ph_list = list(perc["phase"])
        ax_list = [(_AXES[a] if isinstance(a, int) and 0 <= a < 3 else str(a))
                   for a in perc["axis"]]
        cf = list(perc.get("connected_fraction") or [])
        axes = list(dict.fromkeys(ax_list))
        phs = list(dict.fromkeys(
            phases[p] if isinstance(p, int) and p < len(phases) else str(p) for p in ph_list))
        grid = {}
        for i, (p, a) in enumerate(zip(ph_list, ax_list)):
            p = phases[p] if isinstance(p, int) and p < len(phases) else str(p)
            if i < len(cf) and cf[i] is not None:
                grid[(p, a)] = float(cf[i])
        t = ("<p>Percolation: the fraction of each phase's volume in clusters that connect "
             "both faces of the volume along each axis.</p>"
             '<table class="num" id="tab-percolation">'
             "<tr><th>phase \\ axis</th>" + "".join(f"<th>{_esc(a)}</th>" for a in axes)
             + "</tr>")
        for p in phs:
            t += f"<tr><th>{_esc(p)}</th>" + "".join(
                f"<td>{_fmt(grid[(p, a)]) if (p, a) in grid else 'n/a'}</td>" for a in axes
            ) + "</tr>"
        out.append(t + "</table>")
    rows = []
    current = None
    for k, v in flat.items():
        sec = _section_of(k)
        if sec != current:
            rows.append(f'<tr class="sec"><th colspan="3">{_esc(sec)}</th></tr>')
            current = sec
        rows.append(
            f'<tr data-key="{_esc(k)}" data-value="{_esc(repr(v))}"><th class="key">{_esc(k)}</th>'
            f"<td>{_fmt(v)}</td><td class=unit>{_esc(_unit(k))}</td></tr>"
        )
    out.append('<table class="num" id="tab-metrics"><tr><th>quantity</th><th>value</th>'
               "<th>unit</th></tr>" + "".join(rows) + "</table>")
    return "\n".join(out)


def _header(run, metrics_src, shape) -> str:
    vs = run.voxel_size
    vs_txt = "unknown (unit voxels)" if vs is None else " × ".join(f"{v:g}" for v in vs) + \
        " nm (z, y, x)"
    created = run.group.attrs.get("bigvol", {})
    rows = [
        ("run store", str(Path(run.path).resolve())),
        ("shape (z, y, x)", " × ".join(str(s) for s in shape) if shape else "unknown"),
        ("voxel size", vs_txt),
        ("phases", ", ".join(f"{i} = {p}" for i, p in enumerate(run.phases))),
        ("metrics", metrics_src),
        ("report by", f"bigvol {__version__}, "
         f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}"),
        ("store written by", f"bigvol {created.get('version', '?')}, created "
         f"{created.get('created_at', '?')}"),
    ]
    t = '<table class="kv" id="tab-header">' + "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>"
    return t


def _arrays_table(run) -> str:
    info = []

    def visit(group, prefix=""):
        for key, node in sorted(group.members()):
            full = f"{prefix}{key}"
            if hasattr(node, "shape"):
                info.append((full, node))
            else:
                visit(node, full + "/")

    visit(run.group)
    rows = "".join(
        f"<tr><td>{_esc(n)}</td><td>{_esc(tuple(a.shape))}</td><td>{_esc(a.dtype)}</td>"
        f"<td>{_esc(tuple(a.chunks))}</td>"
        f"<td>{'yes' if a.attrs.get('bigvol', {}).get('complete') else 'NO'}</td></tr>"
        for n, a in info)
    t = ('<table id="tab-arrays"><tr><th>array</th><th>shape</th><th>dtype</th><th>chunks</th>'
         f"<th>complete</th></tr>{rows}</table>")
    return t


def _provenance_table(run) -> str:
    stages = run.stages
    if not stages:
        return "<p>No completed stage is recorded in the store.</p>"
    rows = []
    for name, rec in stages.items():
        params = json.dumps(rec.get("parameters", {}), sort_keys=True)
        rows.append(
            f"<tr><td>{_esc(name)}</td><td>{_esc(rec.get('completed_at', '?'))}</td>"
            f"<td>{_esc(rec.get('version', '?'))}</td><td><code>{_esc(rec.get('fingerprint', ''))}"
            f"</code></td><td>{_esc(', '.join(rec.get('outputs', [])))}</td>"
            f"<td><code class=params>{_esc(params)}</code></td></tr>")
    return ('<table id="tab-provenance"><tr><th>stage</th><th>completed</th><th>version</th>'
            "<th>fingerprint</th><th>outputs</th><th>parameters</th></tr>"
            + "".join(rows) + "</table>")


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1100px;padding:1em 2em;color:#222;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #4e79a7;padding-bottom:2px;
margin-top:2em}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 8px;vertical-align:top}th{background:#f1f3f6;
text-align:left}table.num td{text-align:right;font-variant-numeric:tabular-nums}
th.key{font-family:monospace;font-weight:normal}td.unit{text-align:left!important}
td.diag{background:#dde8f5;font-weight:600}tr.sec th{background:#dfe6ee;padding-top:6px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:0 1.5em}
caption{font-weight:600;text-align:left;
padding:2px 0}figure{margin:1em 0}figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:.85em;color:#555;margin-top:.3em}code.params{font-size:.8em;
word-break:break-all}.side{display:flex;flex-wrap:wrap;gap:1.5em}.missing{color:#a33}
"""


def write_report(
    run_path,
    metrics: Mapping[str, Any] | str | os.PathLike | None = None,
    out_html: str | os.PathLike | None = None,
    *,
    mesh_size: int = 96,
    hist_slices: int = 3,
    max_image_px: int = 900,
) -> Path:
    """Write the self-contained HTML report of a run.

    Parameters
    ----------
    run_path : path or bigvol.store.Run
        The run store (``RUN.zarr``). Arrays used when present and complete: ``raw``,
        ``normalized``, ``segmentation``, ``threshold``, ``truth`` (phase codes) and
        ``thickness/<phase>`` (local thickness, nm). The report says which are missing.
    metrics : dict or path, optional
        The run's metrics (the ``metrics.json`` schema of the pipeline) or the path of the
        JSON file. Default: ``RUN.metrics.json`` beside the store when it exists.
    out_html : path, optional
        Where to write; default ``RUN.report.html`` beside the store.
    mesh_size : int
        The 3D views mesh a centred crop of the segmentation of at most ``2 * mesh_size``
        voxels per axis, downsampled to at most ``mesh_size`` per axis.
    hist_slices : int
        Gray-level histograms of this many slices (first, middle, last, ...).
    max_image_px : int
        Slice planes larger than this are shown downsampled (block mean for gray levels,
        nearest for phase codes).

    Returns
    -------
    Path
        The HTML file written.

    Notes
    -----
    The page has no external resource and no script: every figure is a base64 PNG. Only
    three planes per array, ``hist_slices`` slices of ``raw`` and ``normalized``, one slice
    and one crop of each thickness map are read from Zarr.

    Examples
    --------
    >>> write_report("cellA.zarr")                       # doctest: +SKIP
    PosixPath('cellA.report.html')
    """
    from .store import Run

    run = run_path if isinstance(run_path, Run) else Run.open(run_path)
    metrics_src = "given by the caller"
    if metrics is None:
        mpath = run.paths["metrics_json"]
        if mpath.exists():
            metrics = mpath
        else:
            metrics, metrics_src = {}, f"none ({mpath} does not exist)"
    if isinstance(metrics, (str, os.PathLike)):
        mpath = Path(metrics)
        try:
            metrics_src = str(mpath)
            metrics = json.loads(mpath.read_text())
        except FileNotFoundError:
            raise InputError(f"no metrics file {mpath}") from None
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read metrics file {mpath}: {e}") from None
    if not isinstance(metrics, Mapping):
        raise InputError(
            f"metrics must be a dict or a JSON file path, got {type(metrics).__name__}")
    out = Path(out_html) if out_html is not None else run.paths["report"]
    for name, v in (("mesh_size", mesh_size), ("hist_slices", hist_slices),
                    ("max_image_px", max_image_px)):
        if not isinstance(v, (int, np.integer)) or v < (0 if name == "hist_slices" else 8):
            raise InputError(f"{name} must be an integer >= "
                             f"{0 if name == 'hist_slices' else 8}, got {v!r}")

    store = _Store(run)
    phases = run.phases
    vs = run.voxel_size
    arrays = {name: store.array(name) for name in _ORTHO_ARRAYS}
    shape = next((tuple(a.shape) for a in arrays.values() if a is not None),
                 tuple(metrics.get("shape") or ()))
    title = metrics.get("run") or run_stem(run.path)
    sections: list[str] = []

    sections.append(f"<h1>bigvol report: {_esc(Path(str(title)).stem)}</h1>")
    sections.append(_header(run, metrics_src, shape))

    # slices
    body = []
    for name in _ORTHO_ARRAYS:
        a = arrays[name]
        if a is not None:
            body.append(_ortho_figure(a, name, phases, vs, max_image_px))
    # brightness
    norm_html = []
    norm = metrics.get("normalization")
    if isinstance(norm, Mapping):
        norm_html.append(_brightness_figure(norm))
    else:
        norm_html.append("<p>No normalization curves in the metrics.</p>")
    raw, normed = arrays["raw"], arrays["normalized"]
    if raw is not None and normed is not None and raw.shape == normed.shape and hist_slices:
        nz = raw.shape[0]
        picks = np.unique(np.linspace(0, nz - 1, max(1, int(hist_slices))).round().astype(int))
        if nz > 1 and len(picks) < 3 and hist_slices >= 3:
            picks = np.unique(np.r_[picks, nz // 2])
        norm_html.append(_histogram_figure(raw, normed, [int(z) for z in picks]))

    ev = metrics.get("evaluation")
    ev_html = (_evaluation_section(ev, phases) if isinstance(ev, Mapping) and ev
               else "<p>No evaluation against ground truth in the metrics (no labelled "
                    "slices or phantom truth).</p>")

    seg = arrays["segmentation"]
    struct = []
    if seg is not None:
        struct.append(_phases_3d_section(seg, phases, vs, mesh_size))
    else:
        struct.append('<p class="missing">No segmentation: no 3D view.</p>')
    tnames = store.thickness_names()
    thick_metric_names = [k for k in (metrics.get("thickness") or {})]
    order = sorted(set(tnames) | set(thick_metric_names),
                   key=lambda n: (n != (phases[1] if len(phases) > 1 else ""), n))
    if not tnames:
        store.missing.setdefault(
            f"thickness/{phases[1] if len(phases) > 1 else '<phase>'}", "absent")
    for name in order:
        struct.append(_thickness_section(store, name, seg, phases, metrics, vs, mesh_size,
                                         max_image_px))

    sections.append("<h2>Arrays</h2>" + _arrays_table(run))
    if store.missing:
        sections.append('<p class="missing" id="missing">Missing from the store: ' + "; ".join(
            f"<b>{_esc(k)}</b> ({_esc(v)})" for k, v in store.missing.items()) + "</p>")
    sections.append("<h2>Provenance</h2>" + _provenance_table(run))
    sections.append("<h2>Slices</h2>" + ('<div class="grid2">' + "\n".join(body) + "</div>"
                                          if body else
                                          '<p class="missing">No image array to show.</p>'))
    sections.append("<h2>Brightness normalization</h2>" + "\n".join(h for h in norm_html if h))
    sections.append("<h2>Segmentation quality</h2>" + ev_html)
    sections.append("<h2>Structure</h2>" + "\n".join(s for s in struct if s))
    sections.append("<h2>Metrics</h2>" + _metrics_tables(metrics, phases))

    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>bigvol report: {_esc(Path(str(title)).stem)}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(doc, encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write the report {out}: {e}") from None
    return out
