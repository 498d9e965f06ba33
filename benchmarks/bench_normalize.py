"""Normalization throughput and peak memory: bigvol vs a slice-by-slice scikit-image loop.

Both read the same Zarr array and write a Zarr array of the same chunks, measured in the
same run, each in a fresh subprocess (so peak RSS is its own):

- ``skimage``: the loop a user writes: read a slab of slices (one chunk deep, so the Zarr
  chunks are decompressed once), ``skimage.exposure.match_histograms(slice, reference)``
  per slice, round to the dtype, write the slab. One thread.
- ``bigvol``: ``bigvol.normalize.match_histograms(da.from_zarr(...))`` stored with
  ``da.store`` on the threaded scheduler with 2 workers (histogram pass + mapping pass).
- ``bigvol-fit``: ``fit_lookup_tables`` (histogram pass, also gives the statistics) then
  ``apply_lookup_tables`` stored (mapping pass): what the CLI runs.
- ``copy``: ``da.store`` of the input into the same kind of output, nothing computed: the
  I/O floor (Zarr decode + encode + write) that no normalization can beat. Its ratio to the
  skimage loop is the most any normalization can gain over that loop on this machine.

The input is a fast synthetic drift stack (three phases of a smooth random field, moved
from slice to slice, with per-slice gain/offset drift and noise), generated once into
``--workdir``. Outputs of the three are compared on a few slices (they must be equal).

Usage::

    python benchmarks/bench_normalize.py                       # (1000, 2000, 2000) uint8
    python benchmarks/bench_normalize.py --shape 64 1024 1024  # quick

Prints MVx/s and peak RSS for each, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _generate(path: Path, shape, chunks, seed=0) -> None:
    import zarr
    from scipy import ndimage

    if path.exists():
        z = zarr.open_array(str(path), mode="r")
        if tuple(z.shape) == tuple(shape) and z.attrs.get("complete"):
            return
    nz, ny, nx = shape
    rng = np.random.default_rng(seed)
    pad = 128
    field = ndimage.gaussian_filter(rng.normal(size=(ny + pad, nx + pad)).astype(np.float32), 6)
    phases = np.digitize(field, np.quantile(field, [0.15, 0.5])).astype(np.uint8)
    levels = np.array([25.0, 120.0, 180.0], np.float32)
    noise = rng.normal(0, 8, size=(ny + pad, nx + pad)).astype(np.float32)
    t = np.linspace(0, 1, nz)
    gain = 1 + 0.2 * np.sin(2 * np.pi * 0.8 * t + 0.3)
    offset = 10 * np.cos(2 * np.pi * 1.3 * t)
    arr = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype=np.uint8,
                            overwrite=True)
    t0 = time.perf_counter()
    for z0 in range(0, nz, chunks[0]):
        z1 = min(z0 + chunks[0], nz)
        slab = np.empty((z1 - z0, ny, nx), np.uint8)
        for k, z in enumerate(range(z0, z1)):
            dy, dx = (z * 7) % pad, (z * 3) % pad
            img = levels[phases[dy:dy + ny, dx:dx + nx]] * gain[z] + offset[z]
            img += noise[(z * 11) % pad:(z * 11) % pad + ny, (z * 5) % pad:(z * 5) % pad + nx]
            np.clip(img, 0, 255, out=img)
            slab[k] = np.rint(img)
        arr[z0:z1] = slab
    arr.attrs["complete"] = True
    print(f"generated {path} {shape} in {time.perf_counter() - t0:.0f} s", flush=True)


def _worker(kind: str, src: str, dst: str, threads: int) -> dict:
    import dask
    import dask.array as da
    import zarr

    z = zarr.open_array(src, mode="r")
    out = zarr.create_array(dst, shape=z.shape, chunks=z.chunks, dtype=z.dtype, overwrite=True)
    n = math.prod(z.shape)
    t0 = time.perf_counter()
    if kind == "skimage":
        from skimage.exposure import match_histograms

        ref = z[z.shape[0] // 2]
        dz = z.chunks[0]
        for z0 in range(0, z.shape[0], dz):
            slab = z[z0:z0 + dz]
            res = np.empty_like(slab)
            for k in range(slab.shape[0]):
                res[k] = np.rint(match_histograms(slab[k], ref)).astype(slab.dtype)
            out[z0:z0 + dz] = res
    else:
        from bigvol import normalize

        stack = da.from_zarr(z)
        with dask.config.set(scheduler="threads", num_workers=threads):
            if kind == "copy":
                res = stack
            elif kind == "bigvol":
                res = normalize.match_histograms(stack)
            else:  # bigvol-fit
                fit = normalize.fit_lookup_tables(stack)
                res = normalize.apply_lookup_tables(stack, fit["luts"])
            da.store(res, out, lock=False)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"kind": kind, "seconds": dt, "mvx_per_s": n / dt / 1e6, "peak_rss_bytes": rss}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", nargs=3, type=int, default=(1000, 2000, 2000))
    p.add_argument("--chunks", nargs=3, type=int, default=(32, 512, 512))
    p.add_argument("--workdir", default="/tmp/bigvol_bench_normalize")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="+", default=("skimage", "bigvol", "bigvol-fit", "copy"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--src", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dst", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.src, args.dst, args.threads)))
        return 0

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    shape = tuple(args.shape)
    src = work / ("stack_" + "x".join(map(str, shape)) + ".zarr")
    _generate(src, shape, tuple(args.chunks))
    results = {}
    for kind in args.only:
        dst = work / f"out_{kind}.zarr"
        cmd = [sys.executable, __file__, "--worker", kind, "--src", str(src), "--dst", str(dst),
               "--threads", str(args.threads)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return 1
        res = json.loads(r.stdout.strip().splitlines()[-1])
        results[kind] = res
        print(f"{kind:<11} {res['seconds']:8.1f} s  {res['mvx_per_s']:8.1f} MVx/s  "
              f"peak RSS {res['peak_rss_bytes'] / 2**30:6.2f} GiB", flush=True)

    # the outputs must agree (bit for bit) on a few slices
    import zarr

    outs = {k: zarr.open_array(str(work / f"out_{k}.zarr"), mode="r") for k in results
            if k != "copy"}
    for z in sorted({0, shape[0] // 3, shape[0] - 1}):
        sl = [o[z] for o in outs.values()]
        assert all(np.array_equal(sl[0], s) for s in sl[1:]), f"outputs differ on slice {z}"
    print(f"outputs identical on the slices checked; stack {shape} uint8, chunks "
          f"{tuple(args.chunks)}, {args.threads} threads for bigvol, 1 for the skimage loop")
    if "skimage" in results:
        base = results["skimage"]["mvx_per_s"]
        for k in results:
            if k == "copy":
                print(f"ratio copy / skimage loop: {results[k]['mvx_per_s'] / base:.2f}x "
                      "(the I/O ceiling: no normalization can exceed this ratio)")
            elif k != "skimage":
                print(f"ratio {k} / skimage loop: {results[k]['mvx_per_s'] / base:.2f}x "
                      f"(target >= 5x); peak RSS {results[k]['peak_rss_bytes'] / 2**30:.2f} GiB "
                      "(target < 2 GiB)")
    results["in_memory"] = _in_memory(src, args.threads)
    print(json.dumps({"shape": shape, "chunks": args.chunks, "results": results}))
    return 0


def _in_memory(src, threads: int, nz: int = 16) -> dict:
    """Compute alone (no Zarr I/O): ``nz`` slices already in memory, both contenders."""
    import dask
    import dask.array as da
    import zarr
    from skimage.exposure import match_histograms

    from bigvol import normalize

    z = zarr.open_array(str(src), mode="r")
    mid = z.shape[0] // 2
    slab = z[mid - nz // 2: mid - nz // 2 + nz]
    ref = slab[nz // 2]
    n = slab.size
    t0 = time.perf_counter()
    peer = np.stack([np.rint(match_histograms(s, ref)).astype(slab.dtype) for s in slab])
    t_peer = time.perf_counter() - t0
    x = da.from_array(slab, chunks=(8, 512, 512))
    with dask.config.set(scheduler="threads", num_workers=threads):
        normalize.match_histograms(x[:2]).compute()  # load the compiled kernels once
        t0 = time.perf_counter()
        ours = normalize.match_histograms(x, reference=nz // 2).compute()
        t_ours = time.perf_counter() - t0
    assert np.array_equal(ours, peer)
    res = {"skimage_mvx_per_s": n / t_peer / 1e6, "bigvol_mvx_per_s": n / t_ours / 1e6}
    print(f"in memory ({nz} slices, no I/O): skimage loop {res['skimage_mvx_per_s']:.0f} MVx/s, "
          f"bigvol {res['bigvol_mvx_per_s']:.0f} MVx/s, ratio "
          f"{res['bigvol_mvx_per_s'] / res['skimage_mvx_per_s']:.2f}x", flush=True)
    return res


if __name__ == "__main__":
    sys.exit(main())
