"""The metrics record of a run: one builder for metrics.json, the CSV row, the report's
tables and ``bigvol compare``'s table.

- :func:`structure_metrics` measures the run's segmentation with :mod:`bigvol.metrics`
  (whose functions return numbers and tables of columns, phases as codes) and names the
  phases: the ``analyze`` stage's results.
- :func:`build_metrics` assembles ``metrics.json`` from the run's stage records (analyze,
  evaluate, preprocessing, timings); :func:`write_metrics` writes it and ``metrics.csv``.
- :func:`flatten_metrics` turns that nested record into one flat row of numbers whose
  column names carry their units; the CSV, the report's table and ``bigvol compare`` all
  read this row.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .conventions import AXES
from .errors import InputError

#: Columns of a flattened row that describe the run or its cost, not its structure;
#: ``bigvol compare`` does not correlate them unless asked.
NON_STRUCTURE_PREFIXES = ("shape_", "voxel_size_", "timings_", "evaluation_", "normalization_")


# -- measuring --------------------------------------------------------------------------------
def structure_metrics(run, a, *, write=None) -> dict:
    """All structure metrics of the run's ``segmentation``, phases by name.

    ``a``: the analyze options (:class:`bigvol.config.AnalyzeConfig`). ``write(name,
    array)``: where the local-thickness maps go (``thickness/<phase>``); they are read
    back from there for their histogram.
    """
    import gc

    from . import metrics as M

    phases = run.read("segmentation")
    vs = run.voxel_size
    names = run.phases
    out: dict = {}
    vf = M.volume_fractions(phases)
    out["volume_fractions"] = {names[k]: float(v) for k, v in vf.items() if k < len(names)}
    perc = jsonable(M.percolation(phases, connectivity=a.connectivity))
    out["percolation"] = perc
    if a.faces == "both":
        # the percolation table's isolated fraction is isolated_fraction(faces="both"):
        # no second labelling pass
        out["isolated_fraction"] = {
            names[ph]: float(iso)
            for ph, ax, iso in zip(perc["phase"], perc["axis"], perc["isolated_fraction"])
            if ax == a.axis and ph < len(names)
        }
    else:
        out["isolated_fraction"] = {
            names[p]: float(M.isolated_fraction(phases, p, axis=a.axis, faces=a.faces,
                                                connectivity=a.connectivity))
            for p in range(len(names))
        }
    thickness = {}
    # the distance maps of the thickness passes go beside the run (a folder every worker of
    # a cluster reaches), each removed when its map has been written
    scratch = run.path.parent / f"{run.path.name}.scratch"
    # the configured phase lists are for three phases; a run with fewer measures those it has
    for p in [p for p in a.thickness_phases if p < len(names)]:
        if vf.get(p, 0.0) >= 1.0:  # a phase filling the volume has no finite thickness
            thickness[names[p]] = {"undefined": f"{names[p]} fills the whole volume"}
            continue
        lt = M.local_thickness(phases, p, voxel_size=vs, max_diameter=a.thickness_max_diameter,
                               scratch=scratch)
        if write is not None:
            write(f"thickness/{names[p]}", lt)
            del lt  # the scratch goes with the lazy map (collected now, not at exit)
            gc.collect()
            lt = run.read(f"thickness/{names[p]}")
        thickness[names[p]] = M.thickness_summary(lt, voxel_size=vs, unit="nm" if vs else "vox")
    if scratch.is_dir() and not any(scratch.iterdir()):
        scratch.rmdir()
    out["thickness"] = thickness
    if a.tortuosity.enabled:
        out["tortuosity"] = {
            names[p]: jsonable(M.tortuosity(phases, p, axis=a.axis, voxel_size=vs,
                                            **a.tortuosity.options.kwargs()))
            for p in a.tortuosity.phases if p < len(names)
        }
    if a.interfaces:
        out["interfaces"] = named_interfaces(
            M.interfaces(phases, voxel_size=vs, n_phases=len(names)), names)
    return out


def named_interfaces(r: Mapping, names: Sequence[str]) -> dict:
    """The columns of :func:`bigvol.metrics.interfaces` as named entries of metrics.json:
    ``area_per_volume_pore-active_material_um-1``, ``specific_surface_pore_um-1``, ..."""
    def name(i):
        return names[i].replace(" ", "_") if i < len(names) else str(i)

    u = r["unit"]
    out = {k: v for k, v in r.items() if k not in ("pairs", "surfaces")}
    pairs = r["pairs"]
    for a, b, v in zip(pairs["phase_a"], pairs["phase_b"], pairs[f"area_per_volume_{u}-1"]):
        out[f"area_per_volume_{name(a)}-{name(b)}_{u}-1"] = v
    surf = r["surfaces"]
    for p, v in zip(surf["phase"], surf[f"specific_surface_{u}-1"]):
        out[f"specific_surface_{name(p)}_{u}-1"] = v
    return jsonable(out)


# -- metrics.json ---------------------------------------------------------------------------
def build_metrics(run) -> dict:
    """metrics.json of a run: the analyze results plus evaluation, preprocessing, timings."""
    stages = run.stages
    m = {
        "run": str(run.path),
        "bigvol_version": __version__,
        "shape": list(run.zarr_array("segmentation").shape),
        "voxel_size_nm": run.voxel_size,
        "phases": run.phases,
    }
    m.update(stages.get("analyze", {}).get("results", {}))
    if "evaluate" in stages:
        m["evaluation"] = stages["evaluate"]["results"]
    pre = stages.get("normalize", {})
    res = pre.get("results", {})
    if "statistics_before" in res:
        step = next((s for s in pre.get("parameters", {}).get("steps", ())
                     if s.get("step") == "normalize"), {})
        ref = step.get("reference")
        m["normalization"] = {
            "method": step.get("method"),
            "reference": run.zarr_array("raw").shape[0] // 2 if ref is None else ref,
            "before": res["statistics_before"],
            "after": res["statistics_after"],
        }
    if "shifts_px" in res:
        m["alignment"] = {"shifts_px": res["shifts_px"]}
    m["timings_s"] = {k: v.get("seconds") for k, v in stages.items() if "seconds" in v}
    return m


def write_metrics(run) -> dict:
    """Write ``X.metrics.json`` and ``X.metrics.csv`` beside the run store; return the record."""
    m = build_metrics(run)
    paths = run.paths
    atomic_write(paths["metrics_json"], json.dumps(finite(m), indent=2, default=_json_default))
    write_metrics_csv(m, paths["metrics_csv"])
    return m


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def jsonable(t):
    """Plain JSON types; non-finite numbers (tau = inf: no percolating path) become None."""
    return finite(json.loads(json.dumps(t, default=_json_default)))


def finite(o):
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, list):
        return [finite(v) for v in o]
    return o


# -- the flat row -----------------------------------------------------------------------------
def _slug(name: Any) -> str:
    """``"solid electrolyte"`` -> ``"solid_electrolyte"``; keeps ``-`` (as in ``um-1``)."""
    s = re.sub(r"[^0-9A-Za-z_\-.]+", "_", str(name).strip()).strip("_")
    return s.lower() if s else "_"


def _num(v) -> float | None:
    """A finite-or-nan float from a JSON scalar, or None when it is not a number."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if v is None:
        return math.nan
    return None


def _nan_array(values) -> np.ndarray:
    return np.asarray([math.nan if x is None else x for x in values], float)


def _generic(prefix: str, value, out: dict[str, float]) -> None:
    """Scalars under nested dicts become ``prefix_key_subkey``; lists are left out."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _generic(f"{prefix}_{_slug(k)}", v, out)
        return
    x = _num(value)
    if x is not None:
        out[prefix] = x


def _is_list(v) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str)


def _per_axis(prefix: str, unit: str = ""):
    def flat(value, phase_name, out):
        if _is_list(value):
            for ax, v in zip(AXES[-len(value):], value):
                out[f"{prefix}_{ax}{unit}"] = float(v)
    return flat


def _per_phase(prefix: str):
    def flat(value, phase_name, out):
        if isinstance(value, Mapping):
            for ph, v in value.items():
                name = phase_name(int(ph)) if str(ph).isdigit() else _slug(ph)
                _generic(f"{prefix}_{name}", v, out)
        else:
            _generic(prefix, value, out)
    return flat


def _percolation(value, phase_name, out):
    if not isinstance(value, Mapping):
        return
    cols = {k: list(v) for k, v in value.items() if _is_list(v)}
    for i in range(len(cols.get("phase", ()))):
        ph = cols["phase"][i]
        ph = phase_name(int(ph)) if isinstance(ph, (int, np.integer)) else _slug(ph)
        a = cols["axis"][i] if "axis" in cols else i
        ax = AXES[int(a)] if isinstance(a, (int, np.integer)) and 0 <= int(a) < 3 else _slug(a)
        for col, vals in cols.items():
            if col not in ("phase", "axis") and i < len(vals):
                x = _num(vals[i])
                if x is not None:
                    out[f"percolation_{ph}_{ax}_{_slug(col)}"] = x


def _evaluation(value, phase_name, out):
    if not isinstance(value, Mapping):
        return
    for method, ev in value.items():
        if not isinstance(ev, Mapping):
            continue
        pre = f"evaluation_{_slug(method)}"
        for k, v in ev.items():
            if k in ("recall", "iou", "precision") and _is_list(v):
                for i, x in enumerate(v):
                    out[f"{pre}_{k}_{phase_name(i)}"] = float(math.nan if x is None else x)
            elif k == "accuracy_per_slice" and _is_list(v) and len(v):
                out[f"{pre}_accuracy_per_slice_min"] = float(np.nanmin(_nan_array(v)))
            elif k != "confusion_normalized":
                _generic(f"{pre}_{_slug(k)}", v, out)


def _normalization(value, phase_name, out):
    if not isinstance(value, Mapping):
        return
    for when in ("before", "after"):
        # flat (mean_before) or nested (before: {mean: [...]}) records
        m = value.get(f"mean_{when}")
        if m is None and isinstance(value.get(when), Mapping):
            m = value[when].get("mean")
        if _is_list(m) and len(m):
            out[f"normalization_slice_mean_sd_{when}_gray"] = float(np.nanstd(_nan_array(m)))


def _timings(value, phase_name, out):
    if isinstance(value, Mapping):
        for stage, v in value.items():
            x = _num(v)
            if x is not None:
                out[f"timings_{_slug(stage)}_s"] = x


def _skip(value, phase_name, out):
    pass


#: how each section of metrics.json becomes columns; any other section contributes its
#: scalar leaves as ``<section>_<key>...``
_SECTIONS: dict[str, Callable] = {
    "run": _skip,
    "phases": _skip,
    "shape": _per_axis("shape"),
    "voxel_size_nm": _per_axis("voxel_size", "_nm"),
    "volume_fractions": _per_phase("volume_fraction"),
    "isolated_fraction": _per_phase("isolated_fraction"),
    "percolation": _percolation,
    "evaluation": _evaluation,
    "normalization": _normalization,
    "timings_s": _timings,
}


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """One flat row of numbers from a nested ``metrics.json`` dict, units in the names.

    Known sections become these columns (phase names slugged: ``"active material"`` ->
    ``active_material``; axes ``0, 1, 2`` -> ``z, y, x``):

    ================== ============================================================
    section            columns
    ================== ============================================================
    shape              ``shape_z``, ``shape_y``, ``shape_x`` (voxels)
    voxel_size_nm      ``voxel_size_z_nm`` ...
    volume_fractions   ``volume_fraction_<phase>`` (0..1)
    isolated_fraction  ``isolated_fraction_<phase>`` (0..1)
    percolation        ``percolation_<phase>_<axis>_connected_fraction``,
                       ``..._isolated_fraction``, ``..._n_components``
    thickness          ``thickness_<phase>_<stat>`` for scalar stats, e.g. ``mean_nm``
    tortuosity         ``tortuosity_<phase>_<key>``, e.g. ``tau``, ``eff_ratio``
    interfaces         ``interfaces_<name>`` (the name carries ``um-1``)
    evaluation         ``evaluation_<method>_accuracy``, ``..._recall_<phase>``,
                       ``..._iou_<phase>``, ``..._accuracy_per_slice_min``
    normalization      ``normalization_slice_mean_sd_before_gray`` / ``_after_gray``:
                       the spread (standard deviation) of the per-slice mean brightness
    timings_s          ``timings_<stage>_s``
    ================== ============================================================

    Any other section contributes its scalar leaves as ``<section>_<key>...``; lists
    (histograms, per-slice curves) are left out. Missing values are ``nan``.

    Examples
    --------
    >>> flatten_metrics({"isolated_fraction": {"active material": 0.074},
    ...                  "thickness": {"solid electrolyte": {"mean_nm": 212.0}}})
    {'isolated_fraction_active_material': 0.074, 'thickness_solid_electrolyte_mean_nm': 212.0}
    """
    if not isinstance(metrics, Mapping):
        raise InputError(
            f"metrics must be a dict (parsed metrics.json), got {type(metrics).__name__}")
    phases = [str(p) for p in (metrics.get("phases") or ())]

    def phase_name(i: int) -> str:
        return _slug(phases[i]) if i < len(phases) else f"phase{i}"

    out: dict[str, float] = {}
    for key, value in metrics.items():
        flat = _SECTIONS.get(key)
        if flat is None:
            _generic(_slug(key), value, out)
        else:
            flat(value, phase_name, out)
    return out


def write_metrics_csv(metrics: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write one run's metrics as a one-row CSV: ``run`` then :func:`flatten_metrics`.

    Examples
    --------
    >>> write_metrics_csv({"run": "A", "volume_fractions": {"pore": 0.3}},
    ...                   "A.metrics.csv")                                # doctest: +SKIP
    """
    path = Path(path)
    row = flatten_metrics(metrics)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", *row])
    w.writerow([str(metrics.get("run", "")), *(format_csv_value(v) for v in row.values())])
    path.write_text(buf.getvalue())
    return path


def format_csv_value(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


__all__ = ["structure_metrics", "named_interfaces", "build_metrics", "write_metrics",
           "flatten_metrics", "write_metrics_csv", "jsonable", "NON_STRUCTURE_PREFIXES"]
