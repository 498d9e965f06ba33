"""The report's figures, drawn with :class:`matplotlib.figure.Figure` and embedded as
``<figure>`` elements: orthogonal slices, per-slice brightness and gray-level histograms, the
segmentation quality (accuracy per slice, confusion matrices with their tables), the 3D views
of the phases (marching-cubes meshes) and the local-thickness map, histogram and 3D view."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._html import data_uri, png_bytes
from .._html import escape as _esc
from ..conventions import PHASE_COLOURS as CONVENTION_COLOURS
from ..conventions import phase_colours
from ..store import read_region
from ._data import _LABEL_ARRAYS, _crop, _shrink
from ._page import _fmt, _slugid

#: Colours of the phase codes 0, 1, 2 (pore, solid electrolyte, active material); more
#: phases take the following tab10 colours.
PHASE_COLOURS = CONVENTION_COLOURS[:3]


def _figure(fid: str, title: str, fig, caption: str = "") -> str:
    src = data_uri(png_bytes(fig))
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (
        f'<figure id="{_esc(fid)}"><img alt="{_esc(title)}" src="{src}">'
        f"{cap}</figure>"
    )


def _colours(n: int) -> list[str]:
    return phase_colours(n)


def _physical(vs):
    """Voxel size (z, y, x) and unit label for axes: µm when known, else voxels."""
    if vs is None:
        return (1.0, 1.0, 1.0), "voxels"
    return tuple(float(v) / 1000.0 for v in vs), "µm"


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
    # rows y, columns z
    yz = _shrink(read_region(arr, (slice(None), slice(None), cx)), step, labels).T
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
        kw = {
            "cmap": cmap, "norm": BoundaryNorm(np.arange(n + 1) - 0.5, n),
            "interpolation": "nearest",
        }
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
        kw = {"cmap": "gray", "vmin": lo, "vmax": hi, "interpolation": "antialiased"}
        a_leg.text(0.5, 0.5, f"gray levels\n{lo:.4g} – {hi:.4g}\n({arr.dtype})",
                   ha="center", va="center", fontsize=8)
    a_xy.imshow(xy, extent=(0, X, Y, 0), **kw)
    a_xz.imshow(xz, extent=(0, X, Z, 0), **kw)
    a_yz.imshow(yz, extent=(0, Z, Y, 0), **kw)
    line = {"color": "#ffd400", "lw": 0.8, "ls": "--"}
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
    import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3d projection)
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

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
           f"{'×'.join(str(r.stop - r.start) for r in region)} voxels from (z, y, x) = "
           f"{start}, " + ("full resolution " if step == 1 else f"sampled every {step} voxels ") +
           f"({'×'.join(str(s) for s in crop.shape)} drawn), axes in {unit}")
    return _figure("fig-3d-phases", "3D view of each phase", fig, cap)


def _thickness_section(store, name, seg, phases, metrics, vs, mesh_size, max_px):
    import mpl_toolkits.mplot3d  # noqa: F401
    from matplotlib.figure import Figure

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
