"""Metrics tables and the comparison of several runs with measured cell properties.

The last step of the method links structure to cell performance: the paper's Table 2 sets
the isolated active-material ratio of cells A, B, C (7.4 %, < 0.1 %, 0.2 %) beside their
discharge capacity at 0.05C (130, 190, 160 mAh/g) and at 5C (2, 26, 85 mAh/g).

- :func:`flatten_metrics` turns a run's ``metrics.json`` (nested sections) into one flat
  row of numbers whose column names carry their units (``thickness_solid_electrolyte_mean_nm``,
  ``interfaces_pore_active_material_um-1``, ``timings_segment_s``);
  :func:`write_metrics_csv` writes that row as ``metrics.csv``.
- :func:`compare` joins the rows of several runs with a CSV of measured cell properties,
  computes the Pearson correlation of every metric with every property, and writes the
  joined table, the correlations, and a figure of each metric against each property.

Everything here is small (one row per run); nothing reads a volume.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._html import data_uri, escape, png_bytes
from .conventions import output_paths
from .errors import InputError
from .record import NON_STRUCTURE_PREFIXES, flatten_metrics, format_csv_value, write_metrics_csv

__all__ = [
    "flatten_metrics",
    "write_metrics_csv",
    "read_metrics",
    "run_name",
    "pearson",
    "pearson_p_value",
    "correlations",
    "compare",
]

# -- reading runs --------------------------------------------------------------------------
def _metrics_path(run: Path) -> Path:
    if run.suffix == ".json":
        return run
    # RUN.zarr -> RUN.metrics.json beside it (cellA.v2 -> cellA.v2.metrics.json)
    return output_paths(run)["metrics_json"]


def run_name(path: str | os.PathLike, metrics: Mapping[str, Any] | None = None) -> str:
    """The name a run is matched by: the stem of its path.

    ``cells/A.zarr`` -> ``A``; ``cells/A.metrics.json`` -> ``A``; a file named plainly
    ``metrics.json`` takes the stem of its ``"run"`` entry, or else its folder's name.
    """
    p = Path(path)
    name = p.name
    for suffix in (".metrics.json", ".zarr", ".json"):
        if name.endswith(suffix) and name != suffix.lstrip("."):
            name = name[: -len(suffix)]
            break
    if name in ("metrics", "metrics.json"):
        run = (metrics or {}).get("run")
        if run:
            return run_name(str(run).rstrip("/"))
        return p.resolve().parent.name
    return name


def read_metrics(run: str | os.PathLike) -> dict:
    """The parsed metrics of a run: ``RUN.metrics.json`` beside ``RUN.zarr``, or a JSON path."""
    p = Path(run)
    mp = _metrics_path(p)
    if not mp.exists():
        hint = f" (expected beside {p})" if mp != p else ""
        raise InputError(f"no metrics file {mp}{hint}; run `bigvol analyze` on that run first")
    try:
        data = json.loads(mp.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read metrics file {mp}: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"metrics file {mp} must hold a JSON object, got {type(data).__name__}")
    return data


# -- statistics ----------------------------------------------------------------------------
def pearson(x: Sequence[float], y: Sequence[float]) -> tuple[float, int]:
    """Pearson correlation coefficient of the pairs where both values are finite.

    :math:`r = \\sum (x_i - \\bar x)(y_i - \\bar y) / \\sqrt{\\sum (x_i - \\bar x)^2
    \\sum (y_i - \\bar y)^2}`, equal to ``numpy.corrcoef(x, y)[0, 1]``; ``nan`` when fewer
    than two pairs remain or either variable is constant.

    Returns
    -------
    r : float
    n : int
        The number of pairs used.

    Examples
    --------
    >>> r, n = pearson([7.4, 0.05, 0.2], [2, 26, 85]); round(r, 3), n
    (-0.711, 3)
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 2:
        return math.nan, n
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if den == 0.0:
        return math.nan, n
    return float(np.clip((dx @ dy) / den, -1.0, 1.0)), n


def pearson_p_value(r: float, n: int) -> float:
    """Two-sided p-value of a Pearson ``r`` from ``n`` pairs (no correlation as the null).

    :math:`t = r \\sqrt{(n - 2) / (1 - r^2)}` follows Student's t with ``n - 2`` degrees of
    freedom, as in ``scipy.stats.pearsonr``; ``nan`` for fewer than 3 pairs. With the
    paper's three cells, ``|r|`` must exceed 0.997 for ``p < 0.05``.
    """
    if n < 3 or math.isnan(r):
        return math.nan
    if abs(r) >= 1.0:
        return 0.0
    from scipy.stats import t as student_t

    t = abs(r) * math.sqrt((n - 2) / (1.0 - r * r))
    return float(2.0 * student_t.sf(t, n - 2))


def correlations(
    table: Mapping[str, Sequence], metrics: Sequence[str], properties: Sequence[str]
) -> dict[str, list]:
    """Pearson ``r`` of every metric column with every property column.

    Returns columns ``metric``, ``property``, ``pearson_r``, ``p_value``
    (:func:`pearson_p_value`) and ``n_runs``, one row per pair, sorted by decreasing
    ``|r|`` (``nan`` last).
    """
    rows = []
    for m in metrics:
        for p in properties:
            r, n = pearson(table[m], table[p])
            rows.append((m, p, r, pearson_p_value(r, n), n))
    rows.sort(key=lambda t: (math.isnan(t[2]), -abs(t[2]) if not math.isnan(t[2]) else 0))
    return {
        "metric": [r[0] for r in rows],
        "property": [r[1] for r in rows],
        "pearson_r": [r[2] for r in rows],
        "p_value": [r[3] for r in rows],
        "n_runs": [r[4] for r in rows],
    }


# -- properties CSV ------------------------------------------------------------------------
def _read_properties(path: Path) -> tuple[str, list[str], list[str | None], dict[str, list[float]]]:
    """Key column name, run keys, cell labels, and numeric property columns."""
    if not path.exists():
        raise InputError(f"no properties file {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read properties file {path}: {e}") from None
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"properties file {path} is empty")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if not body:
        raise InputError(f"properties file {path} has a header but no rows")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise InputError(f"properties file {path} repeats column(s) {dup}")
    if "run" in header:
        key = "run"
    elif "cell" in header:
        key = "cell"
    else:
        raise InputError(
            f"properties file {path} needs a 'run' or 'cell' column naming the run of each row; "
            f"its columns are {header}"
        )
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise InputError(
                f"properties file {path}, line {i}: {len(r)} fields, the header has {len(header)}"
            )
    cols = {h: [r[j].strip() for r in body] for j, h in enumerate(header)}
    keys = cols[key]
    for i, k in enumerate(keys, start=2):
        if not k:
            raise InputError(f"properties file {path}, line {i}: empty {key!r}")
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise InputError(f"properties file {path}: {key!r} value(s) {dup} appear on several rows")
    cells = cols["cell"] if ("cell" in header and key == "run") else [None] * len(keys)
    props: dict[str, list[float]] = {}
    for h in header:
        if h in ("run", "cell"):
            continue
        vals = []
        for i, v in enumerate(cols[h], start=2):
            if v == "" or v.lower() in ("nan", "na", "n/a"):
                vals.append(math.nan)
                continue
            try:
                vals.append(float(v))
            except ValueError:
                raise InputError(
                    f"properties file {path}: column {h!r} is not numeric "
                    f"(line {i} holds {v!r}); cell properties must be numbers"
                ) from None
        props[h] = vals
    if not props:
        raise InputError(f"properties file {path} has no property column besides {key!r}")
    return key, keys, cells, props


# -- compare -------------------------------------------------------------------------------
def compare(
    runs: Sequence[str | os.PathLike],
    properties: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    metrics: Sequence[str] | None = None,
    max_panels: int = 24,
) -> dict[str, list]:
    """Join the metrics of several runs with measured cell properties; correlate them.

    Each run (a ``RUN.zarr`` path, whose metrics are read from ``RUN.metrics.json`` beside
    it, or a metrics JSON path) is matched to the row of ``properties`` whose ``run``
    column (or, without one, ``cell`` column) equals the run's name, the stem of its path
    (:func:`run_name`). Every run needs exactly one row and every row one run.

    Parameters
    ----------
    runs : sequence of path
        Run stores or metrics JSON files.
    properties : path
        CSV with a ``run`` or ``cell`` column and numeric property columns, e.g.
        ``capacity_0.05C_mAh_g``, ``capacity_5C_mAh_g``. Empty cells are missing values.
    out : path, optional
        Folder to write ``compare.csv`` (the joined table), ``compare_correlations.csv``,
        ``compare.png`` (each metric against each property, ``r`` in each panel's title)
        and ``compare.html`` (all of it in one self-contained page). Nothing is written
        when None.
    metrics : sequence of str, optional
        Flattened metric columns to correlate (:func:`flatten_metrics` names). Default:
        every structure metric that varies between runs (not shape, voxel size, timings,
        evaluation or normalization columns).
    max_panels : int
        At most this many metric rows in ``compare.png``, the most correlated first.

    Returns
    -------
    dict of str to list
        The joined table as columns: ``run``, ``cell`` (when the CSV has both), every
        flattened metric, then every property; one entry per run, in the order given.
        Correlations are in ``compare_correlations.csv`` and from :func:`correlations`.

    Warns
    -----
    UserWarning
        With fewer than two runs: correlations are undefined (``nan``); the table is still
        written.

    Examples
    --------
    >>> table = compare(["A.zarr", "B.zarr", "C.zarr"], "cells.csv",
    ...                 out="compare")                                    # doctest: +SKIP
    >>> table["capacity_5C_mAh_g"]                                        # doctest: +SKIP
    [2.0, 26.0, 85.0]
    """
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    runs = [Path(r) for r in runs]
    if not runs:
        raise InputError("compare needs at least one run")
    prop_path = Path(properties)
    key, keys, cells, props = _read_properties(prop_path)

    names, rows = [], []
    for r in runs:
        m = read_metrics(r)
        names.append(run_name(r, m))
        rows.append(flatten_metrics(m))
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(f"several runs are named {dup}; runs are matched to rows by name")
    index = {k: i for i, k in enumerate(keys)}
    no_row = [n for n in names if n not in index]
    if no_row:
        raise InputError(
            f"run(s) {no_row} have no row in {prop_path} (its {key!r} column holds {keys})"
        )
    no_run = [k for k in keys if k not in set(names)]
    if no_run:
        raise InputError(
            f"row(s) {no_run} of {prop_path} ({key!r} column) match no run given "
            f"(runs: {names})"
        )
    clash = sorted(set(props) & {c for row in rows for c in row})
    if clash:
        raise InputError(f"properties file {prop_path} has column(s) {clash} named like metrics")

    table: dict[str, list] = {"run": names}
    if any(c is not None for c in cells):
        table["cell"] = [cells[index[n]] for n in names]
    metric_cols: list[str] = []
    for row in rows:
        for c in row:
            if c not in metric_cols:
                metric_cols.append(c)
    for c in metric_cols:
        table[c] = [row.get(c, math.nan) for row in rows]
    for p, vals in props.items():
        table[p] = [vals[index[n]] for n in names]

    if metrics is None:
        chosen = [
            c for c in metric_cols
            if not c.startswith(NON_STRUCTURE_PREFIXES) and _varies(table[c])
        ]
    else:
        missing = [c for c in metrics if c not in table or c in props]
        if missing:
            raise InputError(
                f"metric column(s) {missing} are not in the runs' metrics; "
                f"available: {metric_cols}"
            )
        chosen = list(metrics)
    if len(runs) < 2:
        warnings.warn(
            f"only {len(runs)} run: correlations with cell properties need at least 2 runs "
            "(they are nan); the joined table is still written",
            UserWarning,
            stacklevel=2,
        )
    corr = correlations(table, chosen, list(props))
    if out is not None:
        _write_outputs(Path(out), table, corr, chosen, list(props), max_panels)
    return table


def _varies(vals) -> bool:
    a = np.asarray(vals, float)
    a = a[np.isfinite(a)]
    return a.size >= 2 and bool(np.ptp(a) > 0)


def _write_columns_csv(path: Path, cols: Mapping[str, Sequence]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(cols))
    n = len(next(iter(cols.values()))) if cols else 0
    for i in range(n):
        w.writerow([format_csv_value(cols[c][i]) if cols[c][i] is not None else "" for c in cols])
    path.write_text(buf.getvalue())


def _write_outputs(out: Path, table, corr, chosen, props, max_panels) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {out}: {e}") from None
    _write_columns_csv(out / "compare.csv", table)
    _write_columns_csv(out / "compare_correlations.csv", corr)
    png = _figure_png(table, corr, chosen, props, max_panels)
    (out / "compare.png").write_bytes(png)
    (out / "compare.html").write_text(_html(table, corr, props, png))


def _figure_png(table, corr, chosen, props, max_panels) -> bytes:
    """Scatter of each metric (rows, most correlated first) against each property (columns)."""
    from matplotlib.figure import Figure

    # rows: metrics ordered by their strongest |r| over the properties
    best: dict[str, float] = {}
    for m, r in zip(corr["metric"], corr["pearson_r"]):
        a = -1.0 if math.isnan(r) else abs(r)
        best[m] = max(best.get(m, -1.0), a)
    rows = sorted(chosen, key=lambda m: -best.get(m, -1.0))[: max(1, int(max_panels))]
    rlook = {(m, p): r for m, p, r in zip(corr["metric"], corr["property"], corr["pearson_r"])}
    nr, nc = max(1, len(rows)), max(1, len(props))
    fig = Figure(figsize=(3.4 * nc, 2.6 * nr), dpi=90, layout="constrained")
    labels = table.get("cell") or table["run"]
    if not rows:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no metric varies between the runs", ha="center", va="center")
        ax.set_axis_off()
    for i, m in enumerate(rows):
        for j, p in enumerate(props):
            ax = fig.add_subplot(nr, nc, i * nc + j + 1)
            x = np.asarray(table[p], float)
            y = np.asarray(table[m], float)
            ax.plot(x, y, "o", color="#1f77b4")
            for xi, yi, lab in zip(x, y, labels):
                if np.isfinite(xi) and np.isfinite(yi):
                    ax.annotate(str(lab), (xi, yi), textcoords="offset points", xytext=(4, 3),
                                fontsize=8)
            r = rlook.get((m, p), math.nan)
            ax.set_title(f"r = {r:+.3f}" if not math.isnan(r) else "r undefined", fontsize=9)
            ax.set_xlabel(p, fontsize=8)
            ax.set_ylabel(m, fontsize=7)
            ax.tick_params(labelsize=7)
            ax.margins(0.15)
    return png_bytes(fig)


def _html(table, corr, props, png: bytes) -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.6g}"
        return escape(v)

    runs = table["run"]
    head = "".join(f"<th>{escape(r)}</th>" for r in (table.get("cell") or runs))
    body = "".join(
        f"<tr><th>{escape(c)}</th>" + "".join(f"<td>{cell(v)}</td>" for v in vals) + "</tr>"
        for c, vals in table.items() if c not in ("run", "cell")
    )
    crow = "".join(
        f"<tr><td>{escape(m)}</td><td>{escape(p)}</td><td>{cell(r)}</td>"
        f"<td>{cell(pv)}</td><td>{n}</td></tr>"
        for m, p, r, pv, n in zip(corr["metric"], corr["property"], corr["pearson_r"],
                                  corr["p_value"], corr["n_runs"])
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bigvol compare</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}th{{background:#f3f3f3}}
img{{max-width:100%}}</style></head><body>
<h1>Structure metrics against cell properties</h1>
<p>Runs: {escape(", ".join(map(str, runs)))}. Properties: {escape(", ".join(props))}.</p>
<h2>Pearson correlation</h2>
<p>Two-sided p-values test r = 0 (Student's t, n - 2 degrees of freedom); with three runs
|r| must exceed 0.997 for p &lt; 0.05, so read the correlations as trends.</p>
<table><tr><th>metric</th><th>property</th><th>r</th><th>p</th><th>runs</th></tr>{crow}</table>
<h2>Each metric against each property</h2>
<img alt="metrics against cell properties" src="{data_uri(png)}">
<h2>Joined table</h2>
<table><tr><th>column</th>{head}</tr>{body}</table>
</body></html>
"""
