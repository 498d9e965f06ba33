"""Out-of-core local thickness of the solid electrolyte of a large phantom.

Streams bigvol.synth.phantom truth (never materialized) -> local_thickness (phase 1) ->
a float16 Zarr array on disk, on the threaded scheduler with 2 workers, then the
volume-weighted summary from the stored array. Prints wall time, MVx/s and peak RSS
(psutil, sampled every 0.5 s, process + children).

    python benchmarks/bench_thickness_outofcore.py --shape 1000 2000 2000 --out /tmp/lt.zarr

``--truth PATH`` reuses a phase volume already on disk (a Zarr array, e.g. the
``<out>.truth.zarr`` of an earlier run; ``--shape`` then crops it from the origin) instead
of generating the phantom again.
"""

import argparse
import json
import shutil
import threading
import time

import dask
import dask.array as da
import numpy as np
import psutil
import zarr


class PeakRSS:
    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        p = psutil.Process()
        while not self._stop.is_set():
            rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
            self.peak = max(self.peak, rss)
            time.sleep(0.5)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", nargs=3, type=int, default=[1000, 2000, 2000])
    ap.add_argument("--chunks", nargs=3, type=int, default=[125, 500, 500])
    ap.add_argument("--voxel-size", nargs=3, type=float, default=[50, 30, 30])
    ap.add_argument("--out", default="/tmp/bigvol_lt.zarr")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--truth", help="a phase volume on disk (Zarr) to use instead of the phantom")
    a = ap.parse_args()
    import bigvol.synth as synth
    from bigvol.metrics.thickness import local_thickness, thickness_summary

    shape, vs = tuple(a.shape), tuple(a.voxel_size)
    if not a.truth:
        _, truth = synth.phantom(shape, seed=0, voxel_size=vs, chunks=tuple(a.chunks))
    n = int(np.prod(shape))
    from dask.diagnostics import ProgressBar

    # the bar's dt is also how long each compute() waits for the bar's thread at its end
    # (dask joins it): dt=60 added up to a minute to every pass
    with dask.config.set(scheduler="threads", num_workers=a.workers), PeakRSS() as mon, \
            ProgressBar(dt=1, out=open(a.out + ".progress.log", "w")):
        tz = time.perf_counter()
        # the phantom is written once to Zarr, as the pipeline does; stages then read it
        tpath = a.out + ".truth.zarr"
        if a.truth:
            src = zarr.open_array(a.truth, mode="r")
            if src.chunks != tuple(a.chunks):
                raise SystemExit(f"{a.truth} has chunks {src.chunks}, not --chunks {a.chunks}")
            truth = da.from_zarr(src)[tuple(slice(0, n) for n in shape)]
            if truth.shape != shape:
                raise SystemExit(f"{a.truth} has shape {src.shape}, smaller than {shape}")
        else:
            shutil.rmtree(tpath, ignore_errors=True)
            zt = zarr.create_array(tpath, shape=shape, chunks=tuple(a.chunks), dtype=np.uint8,
                                   fill_value=0)
            da.store(truth, zt, lock=False)
            truth = da.from_zarr(zt)
        t0 = time.perf_counter()
        print(f"phantom truth written in {t0 - tz:.0f} s, peak RSS so far "
              f"{mon.peak / 2**30:.2f} GiB", flush=True)
        mon.peak = 0  # the thickness passes' own peak, not the phantom's
        # the exact distance passes compute now (R comes out of them), the painting on store
        lt = local_thickness(truth, 1, voxel_size=vs, dtype=np.float16,
                             scratch=a.out + ".scratch")
        t1 = time.perf_counter()
        print(f"distance passes (with the centres) in {t1 - t0:.0f} s, peak RSS so far "
              f"{mon.peak / 2**30:.2f} GiB", flush=True)
        shutil.rmtree(a.out, ignore_errors=True)
        z = zarr.create_array(a.out, shape=shape, chunks=tuple(a.chunks), dtype=np.float16,
                              fill_value=0)
        da.store(lt, z, lock=False)
        del lt
        t2 = time.perf_counter()
        print(f"painting written in {t2 - t1:.0f} s, peak RSS so far "
              f"{mon.peak / 2**30:.2f} GiB", flush=True)
        summ = thickness_summary(da.from_zarr(z), voxel_size=vs, bins=20)
        t3 = time.perf_counter()
    total = t3 - t0
    print(json.dumps({k: v for k, v in summ.items() if not k.startswith("histogram")}))
    print(f"shape {shape} voxel {vs} nm chunks {tuple(a.chunks)} workers {a.workers}")
    print(f"phantom {t0 - tz:.0f} s; distance passes {t1 - t0:.0f} s, painting "
          f"{t2 - t1:.0f} s, summary {t3 - t2:.0f} s: local thickness total {total:.0f} s = "
          f"{n / total / 1e6:.2f} MVx/s; peak RSS of the thickness {mon.peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
