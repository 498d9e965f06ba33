"""``bigvol bench``: throughput of every stage on this machine, and what a big volume will take.

Runs the whole method (:func:`bigvol.pipeline.run`, the same stage functions as ``bigvol
run``) on a generated phantom of a given shape with the user's config (its chunks, scheduler,
training options, analysis settings), then reads every stage's record from the run store:
wall seconds, CPU seconds and peak RSS (:mod:`bigvol.meter`). From them it prints per stage
MVx/s and CPU-seconds per MVx, and projects the wall time of another volume:

* stages whose work grows with the voxels (everything but training) scale by
  ``V_target / V_bench``;
* training does a fixed number of steps, whatever the volume: its time is kept;
* on ``N`` workers like this machine, the scaling stages are divided by ``N`` (an upper
  bound on the speed-up: docs/scaling.md gives the measured efficiency and where it stops).

The projection is a straight line through one measurement: run the bench at a size where
every stage takes at least a few seconds (the default 64 x 512 x 512 does on 2 cores).
"""

from __future__ import annotations

import copy
import json
import math
import platform
import shutil
import tempfile
from pathlib import Path

from .conventions import DEFAULT_CHUNKS
from .errors import ConfigError
from .meter import format_duration

__all__ = ["bench", "project", "compare", "format_table", "format_compare", "write_json",
           "DEFAULT_SHAPE", "FIXED_COST_STAGES"]

DEFAULT_SHAPE = (64, 512, 512)
#: stages whose cost does not grow with the volume (training runs a fixed number of steps)
FIXED_COST_STAGES = ("train",)


def _bench_config(config, shape, run_path, scheduler, own_input=False):
    """The user's config (or the demo's) on a phantom of ``shape``, run at ``run_path``;
    with ``own_input`` on the config's own input (the user's data) instead."""
    from .config import load_config
    from .pipeline import DEMO_CONFIG

    if config is None:
        if own_input:
            raise ConfigError("bench: --own-input needs a config whose input is your data")
        data = copy.deepcopy(DEMO_CONFIG)
        data["compute"]["chunks"] = list(DEFAULT_CHUNKS)
    else:
        data = load_config(config).model_dump(mode="json", exclude_none=True)
    data["run"] = str(run_path)
    if own_input:
        if scheduler:
            data.setdefault("compute", {})["scheduler"] = scheduler
        return data
    inp = data.get("input") or {}
    phantom = dict(inp.get("phantom") or {})
    phantom["shape"] = [int(s) for s in shape]
    voxel = inp.get("voxel_size")
    data["input"] = {"phantom": phantom}
    if voxel and all(v is not None for v in voxel):
        data["input"]["phantom"]["voxel_size"] = list(voxel)
    seg = data.get("segment") or {}
    if seg.get("method", "segnet") != "threshold":
        train = seg.setdefault("train", {})
        # the phantom brings its own truth: train on it, with the user's training options
        train["labels"] = "truth"
        train.pop("slices", None)
    if scheduler:
        data.setdefault("compute", {})["scheduler"] = scheduler
    return data


def bench(config=None, *, shape=DEFAULT_SHAPE, scheduler: str | None = None, out=None,
          keep: bool = False, progress: bool = False, peers: bool = False,
          overrides: dict | None = None, own_input: bool = False) -> dict:
    """Run the method on a phantom of ``shape`` and return the per-stage figures.

    With ``own_input`` the config's own input (a TIFF stack or Zarr array of the user's, its
    labels or model) is processed instead of a phantom, into a fresh run beside nothing of
    the user's: the whole input is processed, so give a crop for a quick bench.

    Returns a dict: ``shape``, ``voxels``, ``machine`` (cores, memory, processor),
    ``config`` (the config that ran), ``stages``: a list of ``{"stage", "seconds",
    "cpu_seconds", "peak_rss_bytes", "mvx_s", "cpu_s_per_mvx", "scales"}`` in run order,
    and ``total_seconds``; with ``peers``, ``compare``: the rows of :func:`compare`.
    """
    from .pipeline import run
    from .store import Run

    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"bench: shape must be 3 positive integers, got {shape}")
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="bigvol-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    data = _bench_config(config, shape, folder / "bench.zarr", scheduler, own_input)
    try:
        run(data, overrides=overrides, progress=progress)
        r = Run.open(data["run"])
        records = r.stages
        shape = tuple(int(n) for n in r.zarr_array("raw").shape)
        peer_rows = compare(data["run"]) if peers else None
    finally:
        if not keep and not out:
            shutil.rmtree(folder, ignore_errors=True)
    voxels = math.prod(shape)
    rows = []
    for name, rec in records.items():
        s = rec.get("seconds")
        if not s:
            continue
        cpu = rec.get("cpu_seconds")
        rows.append({
            "stage": name, "seconds": float(s), "cpu_seconds": cpu,
            "peak_rss_bytes": rec.get("peak_rss_bytes"),
            "mvx_s": voxels / s / 1e6,
            "cpu_s_per_mvx": None if cpu is None else cpu / (voxels / 1e6),
            "scales": name.split(":")[0] not in FIXED_COST_STAGES,
        })
    return {
        "shape": list(shape), "voxels": voxels, "machine": machine(),
        "input": (data.get("input") or {}).get("source") if own_input else "phantom",
        "scheduler": data.get("compute", {}).get("scheduler", "threads"),
        "chunks": data.get("compute", {}).get("chunks"), "config": data,
        "stages": rows, "total_seconds": sum(r["seconds"] for r in rows),
        **({"compare": peer_rows} if peers else {}),
    }


def machine() -> dict:
    """Cores available to this process, memory, processor, Python."""
    import psutil

    from .conventions import available_cores

    mem = round(psutil.virtual_memory().total / 2**30, 1)
    return {"cores": available_cores(), "memory_gib": mem,
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "host": platform.node()}


def project(result: dict, target_shape, workers=(1, 4, 16, 64)) -> dict:
    """Projected wall seconds of ``target_shape`` on this machine and on ``N`` such workers.

    Returns ``{"shape", "voxels", "factor", "stages": {stage: seconds on one machine},
    "workers": {N: seconds}}``.
    """
    target = tuple(int(s) for s in target_shape)
    if len(target) != 3 or min(target) < 1:
        raise ConfigError(f"bench: --project needs 3 positive integers, got {target}")
    factor = math.prod(target) / result["voxels"]
    stages = {r["stage"]: r["seconds"] * (factor if r["scales"] else 1.0) for r in result["stages"]}
    fixed = sum(r["seconds"] for r in result["stages"] if not r["scales"])
    scaling = sum(r["seconds"] for r in result["stages"] if r["scales"]) * factor
    per_workers = {int(n): fixed + scaling / int(n) for n in workers}
    return {"shape": list(target), "voxels": math.prod(target), "factor": factor,
            "stages": stages, "workers": per_workers}


def format_table(result: dict, projection: dict | None = None) -> str:
    """The figures as text for people."""
    m = result["machine"]
    lines = [
        f"bigvol bench: {result.get('input') or 'phantom'} {tuple(result['shape'])} = "
        f"{result['voxels'] / 1e6:.1f} MVx, "
        f"chunks {tuple(result['chunks'] or ())}, scheduler {result['scheduler']}; "
        f"{m['cores']} cores, {m['memory_gib']} GiB, {m['processor']}",
        "",
        f"{'stage':<22}{'seconds':>9}{'MVx/s':>9}{'CPU-s/MVx':>11}{'peak RSS GiB':>14}",
    ]
    for r in result["stages"]:
        cpu = "" if r["cpu_s_per_mvx"] is None else f"{r['cpu_s_per_mvx']:.2f}"
        rss = "" if r["peak_rss_bytes"] is None else f"{r['peak_rss_bytes'] / 2**30:.2f}"
        note = "" if r["scales"] else "  (fixed: does not grow with the volume)"
        lines.append(f"{r['stage']:<22}{r['seconds']:>9.1f}{r['mvx_s']:>9.1f}{cpu:>11}{rss:>14}"
                     f"{note}")
    t = result["total_seconds"]
    lines.append(f"{'total':<22}{t:>9.1f}{result['voxels'] / t / 1e6:>9.1f}")
    if projection:
        p = projection
        lines += ["", f"projected for {tuple(p['shape'])} = {p['voxels'] / 1e9:.2f} GVx "
                  f"({p['factor']:.0f}x the bench volume):"]
        for n, s in p["workers"].items():
            where = "this machine" if n == 1 else f"{n} workers like this machine"
            lines.append(f"  {where:<32}{format_duration(s):>10}")
        lines.append("  (workers: chunk-parallel stages divided by N, training kept: an upper "
                     "bound on the speed-up; see docs/scaling.md)")
    return "\n".join(lines)


def write_json(result: dict, projection: dict | None, path) -> Path:
    path = Path(path)
    doc = dict(result)
    if projection:
        doc["projection"] = {**projection, "workers": {str(k): v for k, v in
                                                        projection["workers"].items()}}
    path.write_text(json.dumps(doc, indent=2, default=str))
    return path


def compare(run_path, *, max_voxels: int = 2**28) -> list[dict]:
    """The peers of bigvol's stages on the bench run's own arrays, each beside bigvol's call.

    For arrays that fit in memory (at most ``max_voxels``): histogram matching (the
    scikit-image slice loop vs :func:`bigvol.normalize.match_histograms`), the isolated
    active-material fraction (cc3d in memory plus the components touching both faces vs
    :func:`bigvol.metrics.isolated_fraction`) and local thickness of the solid electrolyte
    (PoreSpy's ``local_thickness``, method "bf", vs :func:`bigvol.metrics.local_thickness`;
    skipped when PoreSpy is not installed). Returns rows ``{"what", "peer", "peer_seconds",
    "bigvol_seconds", "speedup", "equal"}``.
    """
    import time

    import dask
    import numpy as np

    import bigvol as bv

    from .store import Run

    r = Run.open(run_path)
    rows = []

    def row(what, peer, tp, tb, equal):
        rows.append({"what": what, "peer": peer, "peer_seconds": tp, "bigvol_seconds": tb,
                     "speedup": tp / tb if tb else None, "equal": bool(equal)})

    raw = r.read("raw")
    if raw.size > max_voxels:
        return rows
    img = np.asarray(raw)
    ref = img[img.shape[0] // 2]
    from skimage.exposure import match_histograms as sk_match

    t = time.perf_counter()
    peer = np.stack([np.rint(sk_match(s, ref)) for s in img]).astype(img.dtype)
    tp = time.perf_counter() - t
    t = time.perf_counter()
    mine = bv.normalize.match_histograms(raw).compute()
    tb = time.perf_counter() - t
    row("normalize (histogram matching)", "skimage.exposure.match_histograms, slice loop",
        tp, tb, np.array_equal(peer, mine))
    if "segmentation" not in r:
        return rows
    seg = r.read("segmentation")
    phases = np.asarray(seg)
    import cc3d

    t = time.perf_counter()
    labels, n = cc3d.connected_components(phases == 2, connectivity=26, return_N=True)
    through = np.intersect1d(np.unique(labels[:, 0, :]), np.unique(labels[:, -1, :]))
    through = through[through != 0]
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    vol = sizes[1:].sum()
    peer_iso = float(1 - sizes[through].sum() / vol) if vol else 0.0
    tp = time.perf_counter() - t
    t = time.perf_counter()
    iso = bv.metrics.isolated_fraction(seg, phase=2, axis=1)
    tb = time.perf_counter() - t
    row("isolated active-material fraction", "cc3d (in memory) + faces", tp, tb,
        abs(iso - peer_iso) < 1e-12)
    try:
        import porespy
    except ImportError:
        return rows
    crop = phases[:8, :32, :32] == 1  # warm-up: numba compiles on the first call of both
    porespy.filters.local_thickness(crop, method="bf")
    bv.metrics.local_thickness(crop.astype(np.uint8), 1).compute()
    t = time.perf_counter()
    ps = porespy.filters.local_thickness(phases == 1, method="bf")
    tp = time.perf_counter() - t
    t = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        lt = bv.metrics.local_thickness(seg, 1).compute()
    tb = time.perf_counter() - t
    row("local thickness (solid electrolyte)", "porespy.filters.local_thickness(method='bf')",
        tp, tb, np.array_equal(lt, 2 * ps))
    return rows


def format_compare(rows) -> str:
    lines = ["", f"{'peer in the same run':<40}{'peer s':>9}{'bigvol s':>10}{'speed-up':>10}"
             "  same result"]
    for c in rows:
        lines.append(f"{c['what']:<40}{c['peer_seconds']:>9.2f}{c['bigvol_seconds']:>10.2f}"
                     f"{c['speedup']:>10.2f}  {'yes' if c['equal'] else 'NO'}   ({c['peer']})")
    return "\n".join(lines)
