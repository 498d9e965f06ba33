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

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._html import escape as _esc
from ..conventions import run_stem
from ..errors import InputError
from ._data import _ORTHO_ARRAYS, _Store
from ._figures import (
    PHASE_COLOURS,
    _brightness_figure,
    _evaluation_section,
    _histogram_figure,
    _ortho_figure,
    _phases_3d_section,
    _thickness_section,
)
from ._page import _CSS, _arrays_table, _header, _metrics_tables, _provenance_table

__all__ = ["write_report", "PHASE_COLOURS"]


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
    from ..store import Run

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
    thick_metric_names = list(metrics.get("thickness") or {})
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
