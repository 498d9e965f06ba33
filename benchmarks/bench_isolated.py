"""Out-of-core isolated active-material fraction of a big phantom segmentation read from Zarr.

Step 1 (once): the truth of ``bigvol.synth.phantom(shape, seed=0)`` (default
1000 x 2000 x 2000 = 4.0 GVx, 4 GB as uint8) is streamed into a Zarr array (chunks
64 x 512 x 512, Blosc-zstd).

Step 2, in a fresh process (its own peak RSS, ``ru_maxrss``): ``bv.metrics.isolated_fraction``
(active material, thickness axis y, faces "both", 26-connectivity) of the lazy Zarr
array with the threads scheduler (2 workers), then ``bv.metrics.volume_fractions``.

No in-memory peer fits here: cc3d needs the volume (4 GB) plus uint32 labels (16 GB). With
``--check`` the same measurement runs on a crop small enough for scipy, and the two
answers are compared (they must be equal).

Usage::

    python benchmarks/bench_isolated.py                          # 1000 x 2000 x 2000
    python benchmarks/bench_isolated.py --shape 200 1000 1000 --check
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


def generate(path: Path, shape, chunks) -> None:
    import dask
    import dask.array as da
    import zarr

    from bigvol.store import default_compressor
    from bigvol.synth import phantom

    _, truth = phantom(tuple(shape), seed=0, chunks=tuple(chunks),
                       **TRUTH_ONLY)
    z = zarr.create_array(str(path) + ".partial", shape=tuple(shape), chunks=tuple(chunks),
                          dtype="u1", compressors=default_compressor(), overwrite=True)
    with dask.config.set(scheduler="threads", num_workers=2):
        da.store(truth, z, lock=False)
    os.replace(str(path) + ".partial", path)


def measure(path: Path, crop=None) -> dict:
    import dask
    import dask.array as da

    import bigvol as bv

    phases = da.from_zarr(str(path))
    if crop:
        phases = phases[tuple(slice(0, c) for c in crop)]
    dask.config.set(scheduler="threads", num_workers=2)
    t0 = time.perf_counter()
    iso = bv.metrics.isolated_fraction(phases, 2, axis=1, faces="both", connectivity=26)
    t1 = time.perf_counter()
    vf = bv.metrics.volume_fractions(phases)
    t2 = time.perf_counter()
    out = {
        "shape": list(phases.shape), "chunks": list(phases.chunksize),
        "isolated_fraction": iso, "seconds": t1 - t0,
        "volume_fractions": vf, "seconds_volume_fractions": t2 - t1,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if crop:
        from scipy import ndimage

        a = phases.compute()
        lab, _ = ndimage.label(a == 2, np.ones((3, 3, 3), bool))
        both = np.intersect1d(np.unique(lab[:, 0]), np.unique(lab[:, -1]))
        both = both[both > 0]
        out["isolated_fraction_scipy"] = 1 - np.isin(lab, both).sum() / (lab > 0).sum()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", nargs=3, type=int, default=[1000, 2000, 2000])
    ap.add_argument("--chunks", nargs=3, type=int, default=[64, 512, 512])
    ap.add_argument("--dir", default="/tmp/bigvol-bench-isolated")
    ap.add_argument("--check", action="store_true", help="also a crop vs scipy in memory")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--crop", nargs=3, type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    path = Path(args.dir) / f"truth-{'x'.join(map(str, args.shape))}.zarr"
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.crop)))
        return 0
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    if not path.exists():
        t = time.perf_counter()
        generate(path, args.shape, args.chunks)
        print(f"phantom truth {tuple(args.shape)} -> {path} in {time.perf_counter() - t:.0f} s",
              flush=True)
    if args.generate_only:
        return 0
    runs = [None] + ([[min(s, c) for s, c in zip(args.shape, (128, 512, 512))]] if args.check else [])
    for crop in runs:
        cmd = [sys.executable, __file__, "--measure", str(path)]
        if crop:
            cmd += ["--crop", *map(str, crop)]
        out = subprocess.run(cmd, capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        if out.returncode:
            print(out.stderr[-3000:])
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        voxels = float(np.prod(r["shape"]))
        print(f"shape {tuple(r['shape'])} chunks {tuple(r['chunks'])}: isolated active-material "
              f"fraction {r['isolated_fraction']:.6f} in {r['seconds']:.1f} s "
              f"({voxels / r['seconds'] / 1e6:.1f} MVx/s); volume fractions "
              f"{ {k: round(v, 4) for k, v in r['volume_fractions'].items()} } in "
              f"{r['seconds_volume_fractions']:.1f} s; peak RSS {r['peak_rss_mb']:.0f} MB "
              f"({r['peak_rss_mb'] / 1024:.2f} GiB)", flush=True)
        if "isolated_fraction_scipy" in r:
            ok = abs(r["isolated_fraction_scipy"] - r["isolated_fraction"]) < 1e-12
            print(f"  scipy in memory: {r['isolated_fraction_scipy']:.6f} "
                  f"({'equal' if ok else 'DIFFERENT'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
