"""Connected-components benchmark: bigvol.label vs dask-image, cc3d and scipy, same run.

Data: a Zarr-backed three-phase volume (default 256 x 1024 x 1024 = 268 MVx, chunks
64 x 256 x 256): the truth of ``bigvol.synth.phantom`` when the synth module exists, else
overlapping spheres (active material ~50 %, solid-electrolyte spheres, pores between).
It is written once; every contender then starts from the Zarr array.

Contenders, each in its own fresh process so that its peak RSS (``ru_maxrss``) is its own:

- ``bigvol``: ``bv.label(mask)`` on the lazy Zarr array, labels streamed into a Zarr array
  with the same chunks (out of core, threads scheduler, 2 workers);
- ``bigvol-nowrite``: the same, labels reduced (``labels.max()``) instead of written:
  the labelling alone, without compressing 4-byte labels;
- ``dask-image``: ``dask_image.ndmeasure.label(mask, structure)``, same chunks, same
  scheduler, labels streamed into Zarr;
- ``cc3d`` / ``scipy``: the mask read into memory, then ``cc3d.connected_components`` /
  ``scipy.ndimage.label``; the time of the labelling alone (``seconds``) and with the read
  (``seconds_with_read``) are both printed;
- ``bigvol-all`` / ``cc3d-all``: every phase (pores included) in one pass, multi-label;
- ``bigvol-isolated`` / ``cc3d-isolated``: the isolated active-material fraction along y,
  no labels written: ``bv.metrics.isolated_fraction`` from Zarr, against cc3d in memory
  plus the components that touch both y faces (their fractions must agree).

The mask is the active material (``phases == 2``), 26-connectivity. Every contender's
component count is printed: they must agree.

Usage::

    python benchmarks/bench_label.py                       # 256 x 1024 x 1024
    python benchmarks/bench_label.py --shape 64 512 512 --skip dask-image
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# the truth does not depend on the BSE rendering; switching it off makes generation ~7x faster
TRUTH_ONLY = {"noise": False, "blur": False, "shine_through": False, "edge_brightening": False,
                  "curtaining": 0.0, "brightness_drift": 0.0}

CONTENDERS = ["bigvol", "bigvol-nowrite", "dask-image", "cc3d", "scipy", "bigvol-all", "cc3d-all",
              "bigvol-isolated", "cc3d-isolated"]


def make_volume(path: Path, shape, chunks, seed: int = 0, volume: str = "phantom") -> str:
    import dask.array as da
    import zarr

    try:
        if volume != "phantom":
            raise ImportError
        from bigvol.synth import phantom

        _, truth = phantom(tuple(shape), seed=seed, chunks=tuple(chunks),
                           **TRUTH_ONLY)
        source = "bigvol.synth.phantom truth"
    except ImportError:
        truth = da.from_array(_spheres(shape, seed), chunks=tuple(chunks))
        source = "random spheres"
    z = zarr.create_array(str(path), shape=tuple(shape), chunks=tuple(chunks), dtype="u1",
                          overwrite=True)
    da.store(truth.astype(np.uint8), z, lock=False)
    z.attrs["source"] = source
    return source


def _spheres(shape, seed):
    """Overlapping spheres: active material (2, radius 6-20) over solid electrolyte (1)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.uint8)
    size = int(np.prod(shape))
    for value, (rmin, rmax), fraction in ((1, (3, 8), 0.35), (2, (6, 20), 0.5)):
        mean_vol = 4 / 3 * np.pi * np.mean(np.arange(rmin, rmax + 1) ** 3)
        for _ in range(int(fraction * size / mean_vol * 0.7)):
            r = int(rng.integers(rmin, rmax + 1))
            c = [int(rng.integers(0, s)) for s in shape]
            lo = [max(ci - r, 0) for ci in c]
            hi = [min(ci + r + 1, s) for ci, s in zip(c, shape)]
            zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
            out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][ball] = value
    return out


def run(name: str, path: Path, workdir: Path) -> dict:
    import dask
    import dask.array as da
    import zarr

    src = zarr.open_array(str(path), mode="r")
    res: dict = {"voxels": int(np.prod(src.shape))}
    structure = np.ones((3, 3, 3), bool)
    dask.config.set(scheduler="threads", num_workers=2)

    def out_array(dtype):
        return zarr.create_array(str(workdir / f"labels-{name}.zarr"), shape=src.shape,
                                 chunks=src.chunks, dtype=dtype, overwrite=True)

    # imports first: the timings are of the work, not of the imports
    import cc3d
    from dask_image.ndmeasure import label as di_label
    from scipy import ndimage

    import bigvol as bv
    from bigvol._label import _label  # the multi-phase labelling of write_labels(run, "all")
    from bigvol.validate import as_volume

    t0 = time.perf_counter()
    if name == "bigvol-isolated":
        res["isolated"] = bv.metrics.isolated_fraction(da.from_zarr(src), phase=2, axis=1)
        n = -1
    elif name == "cc3d-isolated":
        phases = src[...]
        t1 = time.perf_counter()
        res["seconds_read"] = t1 - t0
        labels, n = cc3d.connected_components(phases == 2, connectivity=26, return_N=True)
        # components touching both y faces connect across; the rest are isolated
        through = np.intersect1d(np.unique(labels[:, 0, :]), np.unique(labels[:, -1, :]))
        through = through[through != 0]
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        res["isolated"] = float(1 - sizes[through].sum() / sizes[1:].sum())
        t0 = t1
    elif name.startswith("bigvol"):
        phases = da.from_zarr(src)
        if name == "bigvol-all":
            labels, n = _label(as_volume(phases), 26, "all")
        else:
            labels, n = bv.label(phases == 2, connectivity=26)
        res["seconds_tables"] = time.perf_counter() - t0
        if name == "bigvol-nowrite":
            res["max_label"] = int(labels.max().compute())
        else:
            da.store(labels, out_array(labels.dtype), lock=False)
    elif name == "dask-image":
        labels, n = di_label(da.from_zarr(src) == 2, structure)
        n = int(n.compute()) if hasattr(n, "compute") else int(n)
        res["seconds_tables"] = time.perf_counter() - t0
        da.store(labels, out_array(labels.dtype), lock=False)
    else:
        phases = src[...]
        t1 = time.perf_counter()
        res["seconds_read"] = t1 - t0
        if name == "cc3d":
            labels, n = cc3d.connected_components(phases == 2, connectivity=26, return_N=True)
        elif name == "cc3d-all":
            labels, n = cc3d.connected_components(phases.astype(np.uint16) + 1, connectivity=26,
                                                  return_N=True)
        else:
            labels, n = ndimage.label(phases == 2, structure)
        t0 = t1
    res["seconds"] = time.perf_counter() - t0
    if "seconds_read" in res:
        res["seconds_with_read"] = res["seconds"] + res["seconds_read"]
    res["n"] = int(n)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", nargs=3, type=int, default=[256, 1024, 1024])
    ap.add_argument("--chunks", nargs=3, type=int, default=[64, 256, 256])
    ap.add_argument("--dir", default="/tmp/bigvol-bench-label")
    ap.add_argument("--volume", choices=("phantom", "spheres"), default="phantom",
                    help="the phantom's truth, or overlapping random spheres (PITFALLS.md)")
    ap.add_argument("--skip", nargs="*", default=[], choices=CONTENDERS)
    ap.add_argument("--timeout", type=float, default=1800,
                    help="seconds before a contender is stopped (reported as an upper bound)")
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)  # child process mode
    args = ap.parse_args(argv)
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{args.volume}-{'x'.join(map(str, args.shape))}.zarr"

    if args.run:
        print(json.dumps(run(args.run, path, workdir)))
        return 0

    if not path.exists():
        t = time.perf_counter()
        source = make_volume(path, args.shape, args.chunks, volume=args.volume)
        print(f"wrote {path} ({source}) in {time.perf_counter() - t:.1f} s", flush=True)
    results = {}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in CONTENDERS:
        if name in args.skip:
            continue
        cmd = [sys.executable, __file__, "--run", name, "--dir", str(workdir),
               "--volume", args.volume,
               "--shape", *map(str, args.shape), "--chunks", *map(str, args.chunks)]
        t_start = time.perf_counter()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                 timeout=args.timeout)
        except subprocess.TimeoutExpired:
            waited = time.perf_counter() - t_start
            voxels = int(np.prod(args.shape))
            results[name] = {"timeout": waited, "mvx_s": voxels / waited / 1e6}
            print(f"{name:<15} did not finish in {waited:.0f} s: < {voxels / waited / 1e6:.2f} "
                  f"MVx/s", flush=True)
            continue
        if out.returncode:
            print(f"{name}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        results[name] = r = json.loads(out.stdout.strip().splitlines()[-1])
        r["mvx_s"] = r["voxels"] / r["seconds"] / 1e6
        extra = f", {r['voxels'] / r['seconds_with_read'] / 1e6:.1f} MVx/s with the read" \
            if "seconds_with_read" in r else ""
        print(f"{name:<15} n={r['n']:<8} {r['seconds']:8.2f} s  {r['mvx_s']:7.1f} MVx/s"
              f"{extra}  peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)

    print(f"\nshape {tuple(args.shape)}, chunks {tuple(args.chunks)}, 26-connectivity, "
          f"threads scheduler with 2 workers")
    b = results.get("bigvol")
    for peer in ("dask-image", "cc3d", "scipy"):
        if b and peer in results:
            p = results[peer]
            if "timeout" in p:
                print(f"bigvol vs {peer:<11} throughput > x{b['mvx_s'] / p['mvx_s']:.1f} "
                      f"({peer} stopped after {p['timeout']:.0f} s)")
                continue
            print(f"bigvol vs {peer:<11} throughput x{b['mvx_s'] / p['mvx_s']:.2f}, "
                  f"peak RSS x{b['peak_rss_mb'] / p['peak_rss_mb']:.2f}")
    nw = results.get("bigvol-nowrite")
    if nw and "cc3d" in results:
        print(f"bigvol (no write) vs cc3d   throughput x{nw['mvx_s'] / results['cc3d']['mvx_s']:.2f}")
    if "bigvol-all" in results and "cc3d-all" in results:
        print(f"bigvol-all vs cc3d-all      throughput "
              f"x{results['bigvol-all']['mvx_s'] / results['cc3d-all']['mvx_s']:.2f}")
    iso = [results.get(k) for k in ("bigvol-isolated", "cc3d-isolated")]
    if all(iso):
        same = abs(iso[0]["isolated"] - iso[1]["isolated"]) < 1e-12
        print(f"bigvol-isolated vs cc3d-isolated throughput x{iso[0]['mvx_s'] / iso[1]['mvx_s']:.2f}"
              f" (fraction {iso[0]['isolated']:.6f} vs {iso[1]['isolated']:.6f}: "
              f"{'equal' if same else 'DIFFERENT'})")
    ns = {r["n"] for k, r in results.items()
          if not k.endswith(("-all", "-isolated")) and "n" in r}
    print("component counts agree" if len(ns) <= 1 else f"COMPONENT COUNTS DIFFER: {ns}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
