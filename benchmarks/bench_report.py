"""Report benchmark: time and peak memory of ``bigvol report`` on small and large runs.

The report reads three planes per array, a few slices for the histograms and a centred crop
of at most 192^3 voxels for the 3D views, so its time and peak memory should not grow with
the number of slices. This script checks that on two run stores of the same slice size and
different depth, and sets beside it the naive way of drawing the same figures: loading the
segmentation into memory first (``zarr_array[:]``, what a short matplotlib script does) —
measured in the same run, each contender in its own fresh process so that its peak RSS
(``ru_maxrss``) is its own.

Data: a synthetic run store (``raw``, ``normalized``, ``segmentation`` uint8 and
``thickness/solid electrolyte`` float32), active-material spheres on a jittered lattice in
an electrolyte matrix with pores, gray levels with noise; chunks (64, 256, 256). It is
generated chunk by chunk (never whole in memory) into ``--workdir``.

Usage::

    python benchmarks/bench_report.py                               # depths 64 and 512, 1024^2
    python benchmarks/bench_report.py --depths 32 128 --size 512
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNKS = (64, 256, 256)
VS = (50.0, 30.0, 30.0)


def _block(block_info=None, *, kind):
    """One chunk of the synthetic volume, a pure function of its global coordinates."""
    loc = block_info[None]["array-location"]
    z, y, x = np.ogrid[tuple(slice(a, b) for a, b in loc)]
    period = 24
    # distance to the nearest lattice node (spheres of active material)
    dz = (z % period) - period / 2
    dy = (y % period) - period / 2
    dx = (x % period) - period / 2
    r2 = (dz * VS[0] / VS[1]) ** 2 + dy ** 2 + dx ** 2
    phase = np.ones(np.broadcast_shapes(z.shape, y.shape, x.shape), np.uint8)
    phase[r2 < 8.5 ** 2] = 2
    pz, py, px = (z + 12) % 32 - 16, (y + 5) % 32 - 16, (x + 9) % 32 - 16
    phase[(pz * VS[0] / VS[1]) ** 2 + py ** 2 + px ** 2 < 3.5 ** 2] = 0
    if kind == "segmentation":
        return phase
    if kind == "thickness":
        t = np.where(phase == 1, 60.0 + 8.0 * np.sqrt(r2), 0.0)
        return t.astype(np.float32)
    h = (z * 73856093 ^ y * 19349663 ^ x * 83492791) & 0xFFFF  # cheap deterministic noise
    noise = (h.astype(np.float32) / 65535.0 - 0.5) * 30
    level = np.array([40.0, 110.0, 190.0], np.float32)[phase] + noise
    if kind == "raw":
        level = level + 20.0 * np.sin(z / 40.0)  # brightness drift along z
    return np.clip(level, 0, 255).astype(np.uint8)


def make_store(path: Path, shape) -> None:
    import dask.array as da

    from bigvol.store import Run

    run = Run.create(path, voxel_size=VS)
    for name, kind, dtype in (("raw", "raw", np.uint8), ("normalized", "normalized", np.uint8),
                              ("segmentation", "segmentation", np.uint8),
                              ("thickness/solid electrolyte", "thickness", np.float32)):
        arr = da.map_blocks(_block, chunks=da.core.normalize_chunks(CHUNKS, shape),
                            dtype=dtype, kind=kind)
        run.write(name, arr, chunks=CHUNKS)
    z = shape[0]
    metrics = {
        "run": str(path), "shape": list(shape), "voxel_size_nm": list(VS),
        "phases": ["pore", "solid electrolyte", "active material"],
        "volume_fractions": {"pore": 0.02, "solid electrolyte": 0.83, "active material": 0.15},
        "normalization": {"method": "histogram", "reference": z // 2,
                          "mean_before": (110 + 20 * np.sin(np.arange(z) / 40)).tolist(),
                          "mean_after": [110.0] * z},
    }
    path.with_suffix(".metrics.json").write_text(json.dumps(metrics))


_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, store, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
t0 = time.perf_counter()
if mode == "bigvol":
    from bigvol.report import write_report
    write_report(store, None, out)
else:  # naive: the whole segmentation in memory, then the same planes
    import zarr, numpy as np
    g = zarr.open_group(str(store), mode="r")
    seg = g["segmentation"][:]
    planes = seg[seg.shape[0] // 2], seg[:, seg.shape[1] // 2], seg[:, :, seg.shape[2] // 2]
    assert sum(int(p.sum()) for p in planes) > 0
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
                  "peak_rss_mib": ru.ru_maxrss / 1024}))
"""


def measure(mode, store, out):
    r = subprocess.run([sys.executable, "-c", _CHILD, mode, str(store), str(out)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--size", type=int, default=1024, help="slice height and width")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_report_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for depth in args.depths:
            shape = (depth, args.size, args.size)
            store = work / f"d{depth}.zarr"
            if not store.exists():
                t0 = time.perf_counter()
                make_store(store, shape)
                print(f"generated {shape} in {time.perf_counter() - t0:.1f} s", flush=True)
            mvx = np.prod(shape) / 1e6
            b = measure("bigvol", store, work / f"d{depth}.report.html")
            n = measure("naive", store, work / "unused.html")
            size_kib = (work / f"d{depth}.report.html").stat().st_size / 1024
            rows.append((shape, mvx, b, n, size_kib))
            print(f"{shape}: bigvol report {b['wall_s']:.1f} s, "
                  f"peak RSS {b['peak_rss_mib']:.0f} MiB"
                  f" (HTML {size_kib:.0f} KiB); naive load of the segmentation "
                  f"{n['wall_s']:.1f} s, peak RSS {n['peak_rss_mib']:.0f} MiB", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| volume (z, y, x) | MVx | bigvol report: wall s | CPU s | peak RSS MiB | "
          "naive whole-volume load: s | peak RSS MiB | RSS ratio naive/bigvol |")
    print("|---|---|---|---|---|---|---|---|")
    for shape, mvx, b, n, _ in rows:
        print(f"| {shape} | {mvx:.0f} | {b['wall_s']:.1f} | {b['cpu_s']:.1f} | "
              f"{b['peak_rss_mib']:.0f} | {n['wall_s']:.1f} | {n['peak_rss_mib']:.0f} | "
              f"{n['peak_rss_mib'] / b['peak_rss_mib']:.2f} |")
    print(f"\nmachine: {resource.getpagesize()}-byte pages, "
          f"{__import__('os').cpu_count()} CPUs (other jobs may share them)")


if __name__ == "__main__":
    main()
