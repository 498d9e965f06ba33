"""Ingest benchmark: a folder of TIFF slices -> Zarr, bigvol vs the naive way, same run.

Data: ``--slices`` uncompressed uint8 TIFF slices of ``--size`` x ``--size`` pixels (default
200 x 2000 x 2000 = 800 MVx, 800 MB), written once into a temporary folder: a smooth random
field (particles-like texture) plus noise, so the compression ratio is FIB-SEM-like.

Contenders, each in its own fresh process (so peak RSS is its own), same data, same output
chunks (32, 512, 512):

- **naive**: ``tifffile.imread(list_of_files)`` -> one (z, y, x) array in memory ->
  ``zarr.create_array(...)[...] = stack`` with zarr's default codec (zstd);
- **bigvol**: ``bigvol.ingest(folder, run.zarr)`` (header checks, streamed slabs, its image
  codec Blosc-zstd level 1, stage record).

The output sizes are printed too, so a faster codec that compressed worse would show.

Reported: wall time, MVx/s, CPU seconds (user + system), peak RSS (``ru_maxrss`` of the
process), and the ratios. The files are read once before timing so both read them from the
page cache.

Usage::

    python benchmarks/bench_ingest.py                 # 200 x 2000 x 2000
    python benchmarks/bench_ingest.py --slices 40 --size 1000 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNKS = (32, 512, 512)


def make_slices(folder: Path, n: int, size: int, seed: int = 0) -> None:
    import tifffile
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    coarse = rng.normal(size=(size // 8 + 8, size // 8 + 8)).astype(np.float32)
    field = ndimage.zoom(ndimage.gaussian_filter(coarse, 2), 8, order=1)
    field = (field - field.mean()) / field.std()
    for i in range(n):
        dy, dx = (i * 3) % 64, (i * 5) % 64
        base = field[dy: dy + size, dx: dx + size]
        sl = 128 + 40 * np.sign(base) + 15 * base + rng.normal(0, 8, size=(size, size))
        tifffile.imwrite(folder / f"slice_{i + 1:04d}.tif",
                         np.clip(sl, 0, 255).astype(np.uint8))


def run_naive(folder: Path, out: Path) -> dict:
    import tifffile
    import zarr

    t0 = time.perf_counter()
    files = sorted(folder.glob("*.tif"))
    stack = tifffile.imread(files)
    # zarr's default codecs (zstd), what a user writing this by hand gets
    z = zarr.create_array(str(out), shape=stack.shape, dtype=stack.dtype,
                          chunks=tuple(min(c, s) for c, s in zip(CHUNKS, stack.shape)),
                          overwrite=True)
    z[...] = stack
    return {"seconds": time.perf_counter() - t0, "voxels": int(stack.size)}


def run_bigvol(folder: Path, out: Path) -> dict:
    import bigvol

    t0 = time.perf_counter()
    arr = bigvol.ingest(folder, out, chunks=CHUNKS, voxel_size=(50, 30, 30))
    return {"seconds": time.perf_counter() - t0, "voxels": int(np.prod(arr.shape))}


def child(which: str, folder: str, out: str) -> None:
    import tifffile  # noqa: F401  (imports outside the timed and CPU-counted part)
    import zarr  # noqa: F401

    import bigvol  # noqa: F401

    fn = {"naive": run_naive, "bigvol": run_bigvol}[which]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    res = fn(Path(folder), Path(out))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res["peak_rss_bytes"] = ru.ru_maxrss * 1024
    res["cpu_seconds"] = (ru.ru_utime + ru.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    res["bytes_out"] = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    print(json.dumps(res))


def measure(which: str, folder: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", which, str(folder), str(out)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--size", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="where to write the slices (a temp dir)")
    ap.add_argument("--child", nargs=3, metavar=("WHICH", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ingest_"))
    folder = work / "slices"
    try:
        t0 = time.perf_counter()
        make_slices(folder, args.slices, args.size)
        print(f"data: {args.slices} x {args.size} x {args.size} uint8 TIFF slices "
              f"({args.slices * args.size ** 2 / 1e6:.0f} MB) written in "
              f"{time.perf_counter() - t0:.1f} s; cpus={os.cpu_count()}")
        for f in folder.iterdir():  # warm the page cache for both contenders
            f.read_bytes()
        results = {"naive": [], "bigvol": []}
        for _ in range(args.repeat):
            for which in ("naive", "bigvol"):
                r = measure(which, folder, work / f"{which}.zarr")
                results[which].append(r)
                print(f"  {which:<7} {r['seconds']:7.2f} s  "
                      f"{r['voxels'] / r['seconds'] / 1e6:7.1f} MVx/s  "
                      f"cpu {r['cpu_seconds']:6.2f} s  "
                      f"peak RSS {r['peak_rss_bytes'] / 2**20:7.0f} MiB  "
                      f"out {r['bytes_out'] / 2**20:.0f} MiB")
        best = {k: min(v, key=lambda r: r["seconds"]) for k, v in results.items()}
        nv = best["naive"]["voxels"]
        speed = {k: nv / r["seconds"] / 1e6 for k, r in best.items()}
        rss = {k: r["peak_rss_bytes"] / 2**20 for k, r in best.items()}
        print(f"best of {args.repeat}:")
        print(f"  naive  (tifffile.imread(list) -> zarr): {speed['naive']:.1f} MVx/s, "
              f"peak RSS {rss['naive']:.0f} MiB")
        print(f"  bigvol.ingest                          : {speed['bigvol']:.1f} MVx/s, "
              f"peak RSS {rss['bigvol']:.0f} MiB")
        cpu = {k: min(r["cpu_seconds"] for r in v) for k, v in results.items()}
        print(f"  ratio bigvol/naive: speed {speed['bigvol'] / speed['naive']:.2f}x, "
              f"peak RSS {rss['bigvol'] / rss['naive']:.2f}x, "
              f"CPU time {cpu['bigvol'] / cpu['naive']:.2f}x")
        print(f"  (CPU time: user + system seconds of the timed part, all threads; on a loaded "
              f"machine it is steadier than wall time; load average now "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
