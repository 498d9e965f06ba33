"""The HTML of the report page besides its figures: numbers with their units, the metrics
tables (grouped in sections, percolation as a phase-by-axis grid), the header, arrays and
provenance tables, and the page's CSS."""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._html import escape as _esc
from .._version import __version__
from ..record import flatten_metrics

_AXES = ("z", "y", "x")


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
    # MVx/s of the raw volume (a segmentation-only run has none: seconds only)
    voxels = int(np.prod(run.zarr_array("raw").shape)) if "raw" in run else None
    for name, rec in stages.items():
        params = json.dumps(rec.get("parameters", {}), sort_keys=True)
        s, cpu, rss = rec.get("seconds"), rec.get("cpu_seconds"), rec.get("peak_rss_bytes")
        cost = "" if s is None else f"{s:.1f} s"
        if s and voxels:
            cost += f", {voxels / s / 1e6:.1f} MVx/s"
        if cpu is not None:
            cost += f", {cpu:.1f} CPU-s"
        if rss:
            cost += f", {rss / 2**30:.2f} GiB peak RSS"
        rows.append(
            f"<tr><td>{_esc(name)}</td><td>{_esc(rec.get('completed_at', '?'))}</td>"
            f"<td>{_esc(cost)}</td>"
            f"<td>{_esc(rec.get('version', '?'))}</td><td><code>{_esc(rec.get('fingerprint', ''))}"
            f"</code></td><td>{_esc(', '.join(rec.get('outputs', [])))}</td>"
            f"<td><code class=params>{_esc(params)}</code></td></tr>")
    return ('<table id="tab-provenance"><tr><th>stage</th><th>completed</th>'
            "<th>cost (wall, throughput, CPU, memory)</th><th>version</th>"
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
