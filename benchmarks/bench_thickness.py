"""Local thickness: bigvol against PoreSpy on the same volume, and the SE-size series.

1. ``speed``: a (256, 256, 256) volume (a phase of the bigvol phantom when bigvol.synth is
   available, else Gaussian blobs, or ``--source FILE --phase N``: a phase of a segmented
   volume of yours, e.g. the TauFactor NMC electrode of ``../shared/realdata/electrode``),
   isotropic voxels. PoreSpy ``local_thickness``
   (methods "bf" and "dt", and with ``--conv`` the FFT method "conv", which returns the
   same map as "bf" at ~15x its time at 128^3; in memory, returns a radius) against
   ``bigvol.metrics.local_thickness`` (chunks (128, 256, 256), returns a diameter), both
   the in-memory path a volume this size takes and the out-of-core passes (scratch store,
   dask graph) of a volume too large to hold. Each
   run in its own subprocess so that
   peak RSS (ru_maxrss) is its own; warm-up (numba compilation) done in the same
   subprocess before timing, then the best of ``--repeat`` runs (this 2-core VM's timings
   of one run spread by +-25 %). Prints
   MVx/s, peak RSS, the ratios, and checks that bigvol == 2 x PoreSpy.
2. ``series``: three phantoms whose solid-electrolyte size ``se_size_um`` increases; the
   electrolyte's mean local thickness and effective conductivity ratio (TauFactor) are
   printed with whether each ranks like the size (the paper's cells B and C).

    python benchmarks/bench_thickness.py speed  [--size 256] [--workers 2] [--repeat 3]
        [--source phantom|blobs|FILE --phase N]
    python benchmarks/bench_thickness.py series [--shape 48 128 128] [--voxel-size 100 60 60]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def make_volume(n, phase_source, phase=1):
    if phase_source not in ("phantom", "blobs"):  # a phase volume of yours (TIFF or .npy)
        if phase_source.endswith(".npy"):
            vol = np.load(phase_source)
        else:
            import tifffile

            vol = tifffile.imread(phase_source)
        vol = vol[:n, :n, :n]
        return (vol == phase).astype(np.uint8), f"{os.path.basename(phase_source)} phase {phase}"
    if phase_source == "phantom":
        try:
            import bigvol.synth as synth

            _, truth = synth.phantom((n, n, n), seed=0, voxel_size=(30, 30, 30))
            return (truth.compute() == 1).astype(np.uint8), "phantom solid electrolyte"
        except Exception as e:  # synth missing or failing: fall back
            print(f"(phantom unavailable: {e}; using blobs)", file=sys.stderr)
    from scipy import ndimage as ndi

    f = ndi.gaussian_filter(np.random.default_rng(0).random((n, n, n)).astype(np.float32), 4)
    return (f > np.quantile(f, 0.67)).astype(np.uint8), "gaussian blobs, 33 %"


def child(which, path, workers, chunks, repeat):
    v = np.load(path)
    times = []
    if which.startswith("porespy"):
        import porespy as ps

        method = which.split("-")[1]
        ps.settings.tqdm["disable"] = True
        ps.filters.local_thickness(v[:32, :32, :32].astype(bool), method=method)  # warm-up
        for _ in range(repeat):
            t = time.perf_counter()
            out = ps.filters.local_thickness(v.astype(bool), method=method) * 2
            times.append(time.perf_counter() - t)
    else:
        import dask
        import dask.array as da

        from bigvol.metrics import local_thickness, thickness

        if which == "bigvol-out-of-core":  # the passes a volume too large to hold runs
            thickness._IN_MEMORY_VOXELS = 0
        local_thickness(v[:32, :32, :32], 1).compute()  # warm-up (numba cache)
        with dask.config.set(scheduler="threads", num_workers=workers):
            for _ in range(repeat):
                t = time.perf_counter()
                out = local_thickness(da.from_array(v, chunks=chunks), 1).compute()
                times.append(time.perf_counter() - t)
    np.save(path + f".{which}.npy", out.astype(np.float32))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": min(times), "times": times, "peak_rss": rss}))


def speed(args):
    v, what = make_volume(args.size, args.source, args.phase)
    path = f"/tmp/bench_lt_{os.getpid()}.npy"
    np.save(path, v)
    res = {}
    runs = ["bigvol", "bigvol-out-of-core", "porespy-bf"]
    runs += ["porespy-dt"] * args.dt + ["porespy-conv"] * args.conv
    for which in runs:
        env = dict(os.environ, NUMBA_NUM_THREADS=str(args.workers), OMP_NUM_THREADS="1")
        p = subprocess.run([sys.executable, __file__, "_child", which, path, str(args.workers),
                            ",".join(str(c) for c in args.chunks),
                            str(args.repeat if which not in ("porespy-dt", "porespy-conv") else 1)],
                           capture_output=True, text=True, env=env)
        if p.returncode:
            print(p.stderr)
            raise SystemExit(f"{which} failed")
        res[which] = json.loads(p.stdout.strip().splitlines()[-1])
    nvox = v.size
    ref = np.load(path + ".porespy-bf.npy")
    print(f"volume ({args.size},)*3 {what}, phase fraction {v.mean():.3f}; bigvol chunks "
          f"{tuple(args.chunks)}; "
          f"{args.workers} threads each; best of {args.repeat} runs per process (PoreSpy "
          f"dt, conv: 1); 1-min load average after the runs "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for k, r in res.items():
        print(f"  {k:<18} {r['seconds']:7.2f} s  {nvox / r['seconds'] / 1e6:7.2f} MVx/s  "
              f"peak RSS {r['peak_rss'] / 2**20:7.0f} MiB  (runs: "
              f"{', '.join(f'{t:.2f}' for t in r['times'])} s)")
    for mine in ("bigvol", "bigvol-out-of-core"):
        b = res[mine]
        for k in [w for w in ("porespy-bf", "porespy-dt", "porespy-conv") if w in res]:
            r = res[k]
            print(f"  {mine} / {k}: speed x{r['seconds'] / b['seconds']:.2f}, "
                  f"peak RSS x{b['peak_rss'] / r['peak_rss']:.2f}")
        got = np.load(path + f".{mine}.npy")
        print(f"  {mine} == 2 x porespy-bf: {np.array_equal(got, ref)} "
              f"(max |diff| {np.abs(got - ref).max():.1f} voxel)")
    for k in [w for w in ("porespy-dt", "porespy-conv") if w in res]:
        print(f"  {k} == porespy-bf: {np.array_equal(np.load(path + f'.{k}.npy'), ref)}")
    for f in (path, *(path + f".{w}.npy" for w in res)):
        os.remove(f)


def series(args):
    import bigvol.synth as synth
    from bigvol.metrics import local_thickness, thickness_summary, tortuosity

    shape, vs = tuple(args.shape), tuple(args.voxel_size)
    rows = []
    for se in args.se_sizes:
        _, truth = synth.phantom(shape, seed=0, voxel_size=vs, se_size_um=se)
        truth = truth.compute()
        t = time.perf_counter()
        s = thickness_summary(local_thickness(truth, 1, voxel_size=vs), voxel_size=vs)
        tau = tortuosity(truth, 1, axis=1, voxel_size=vs, device="cpu")
        rows.append((se, float((truth == 1).mean()), s["mean_nm"], s["median_nm"],
                     tau["tau"], tau["eff_ratio"], time.perf_counter() - t))
    print(f"shape {shape}, voxel {vs} nm, seed 0, transport along y")
    print("  se_size_um  SE fraction  mean LT nm  median LT nm    tau   eff_ratio   s")
    for r in rows:
        print(f"  {r[0]:10.2f}  {r[1]:11.3f}  {r[2]:10.1f}  {r[3]:12.1f}  {r[4]:6.3f}  {r[5]:9.4f}"
              f"  {r[6]:4.0f}")
    lt_rank = [r[2] for r in rows] == sorted(r[2] for r in rows)
    eff_rank = [r[5] for r in rows] == sorted(r[5] for r in rows)
    print(f"  mean local thickness ranks like the SE size: {lt_rank}; "
          f"effective conductivity ranks like the SE size: {eff_rank}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        return child(sys.argv[2], sys.argv[3], int(sys.argv[4]),
                     tuple(int(c) for c in sys.argv[5].split(",")), int(sys.argv[6]))
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--source", default="phantom",
                   help="phantom, blobs, or a phase volume (TIFF or .npy; cropped to --size)")
    s.add_argument("--phase", type=int, default=1,
                   help="the phase of a --source file whose thickness is measured")
    s.add_argument("--chunks", nargs=3, type=int, default=[128, 256, 256],
                   help="bigvol chunks (one window per worker thread by default)")
    s.add_argument("--repeat", type=int, default=3,
                   help="timed runs per process after the warm-up; the best is reported "
                        "(PoreSpy dt runs once: it takes ~15 s)")
    s.add_argument("--no-dt", dest="dt", action="store_false",
                   help="skip PoreSpy's slow dt method")
    s.add_argument("--conv", action="store_true",
                   help="also run PoreSpy's FFT method conv (exact, but slower than bf)")
    s.set_defaults(func=speed)
    s = sub.add_parser("series")
    s.add_argument("--shape", nargs=3, type=int, default=[48, 128, 128])
    s.add_argument("--voxel-size", nargs=3, type=float, default=[100.0, 60.0, 60.0])
    s.add_argument("--se-sizes", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    s.set_defaults(func=series)
    a = ap.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
