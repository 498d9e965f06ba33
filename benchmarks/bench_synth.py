"""The phantom: write speed and peak memory, threshold calibration, learnability.

Three parts (each prints its figures; run them separately):

``python benchmarks/bench_synth.py write [--shape 1000 2000 2000] [--chunks 64 512 512]``
    Runs ``bigvol synth OUT.zarr --shape ...`` in a child process (the user's path: raw and
    truth streamed chunk by chunk into a run store) and samples the resident memory of the
    child and its threads every 0.2 s; reports MVx/s (wall and per CPU-second) and peak RSS.
    The peer in the same run: PoreSpy's ``porespy.generators.blobs`` (a Gaussian-filtered
    noise volume, thresholded; in memory) on ``--peer-shape`` (default 128 512 512), also
    in a child process. The output is written to a temporary folder (or ``--out``) and
    deleted afterwards unless ``--keep``. Target: (1000, 2000, 2000) uint8 with truth under
    2 GiB peak RSS.

``python benchmarks/bench_synth.py calibrate [--seeds 0 1 2]``
    The threshold baseline on the default phantom (64, 512, 512): ``bigvol.segment.threshold``
    (3-class multi-Otsu) + ``bigvol.evaluate``, with every effect on, and with shine-through,
    edge brightening and brightness drift off; also scikit-image's ``threshold_multiotsu`` on
    the whole histogram + ``np.digitize`` as the direct reference. Targets: accuracy 0.80 -
    0.93 and pore recall < 0.6 with every effect; accuracy > 0.97 without those three.

``python benchmarks/bench_synth.py learnable [--drift 0.0]``
    The ilastik-style check: a scikit-learn RandomForest (100 trees) on
    ``skimage.feature.multiscale_basic_features`` of slices z-1, z, z+1, trained on 4 slices
    of a (64, 512, 512) phantom (100 000 sampled pixels), tested on 4 other slices.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _watch(cmd: list[str], env=None) -> dict:
    """Run ``cmd``; sample the RSS of it and its children; wall and CPU time."""
    import psutil

    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    cpu = 0.0
    out = []

    def reader():
        for line in proc.stdout:
            out.append(line)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    while proc.poll() is None:
        try:
            procs = [proc] + proc.children(recursive=True)
            rss = sum(p.memory_info().rss for p in procs)
            peak = max(peak, rss)
            ct = proc.cpu_times()
            cpu = ct.user + ct.system + ct.children_user + ct.children_system
        except psutil.Error:
            pass
        time.sleep(0.2)
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{''.join(out)}")
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_gib": peak / 2**30, "output": "".join(out)}


_PEER = """
import sys, time, numpy as np, porespy as ps
shape = tuple(int(s) for s in sys.argv[1:4])
t = time.perf_counter()
im = ps.generators.blobs(shape=list(shape), porosity=0.45, blobiness=1.5, seed=0)
print(time.perf_counter() - t)
"""


def cmd_write(a) -> None:
    import math

    shape = tuple(a.shape)
    n = math.prod(shape)
    tmp = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench_synth_")) / "phantom.zarr"
    if tmp.exists():
        raise SystemExit(f"{tmp} exists; give a new --out path")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "bigvol.cli", "synth", str(tmp), "--shape", *map(str, shape),
           "--chunks", *map(str, a.chunks), "--workers", str(a.workers)]
    print("bigvol:", " ".join(cmd[2:]), flush=True)
    try:
        r = _watch(cmd, env)
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    finally:
        if not a.keep:
            shutil.rmtree(tmp.parent if not a.out else tmp, ignore_errors=True)
    print(r["output"].strip())
    bv = {"MVx/s": n / r["wall_s"] / 1e6, "MVx/cpu-s": n / max(r["cpu_s"], 1e-9) / 1e6,
          "peak_rss_gib": r["peak_rss_gib"], "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
          "bytes_on_disk": size}
    pshape = tuple(a.peer_shape)
    pn = math.prod(pshape)
    p = _watch([sys.executable, "-c", _PEER, *map(str, pshape)], env)
    gen_s = float(p["output"].strip().splitlines()[-1])
    peer = {"MVx/s": pn / gen_s / 1e6, "MVx/cpu-s": pn / max(p["cpu_s"], 1e-9) / 1e6,
            "peak_rss_gib": p["peak_rss_gib"], "bytes_per_voxel": p["peak_rss_gib"] * 2**30 / pn}
    print(f"\nbigvol synth {shape} uint8 + truth -> Zarr, chunks {tuple(a.chunks)}, "
          f"{a.workers} threads")
    print(f"  {bv['MVx/s']:.2f} MVx/s wall ({bv['wall_s']:.0f} s), {bv['MVx/cpu-s']:.2f} MVx per "
          f"CPU-second, peak RSS {bv['peak_rss_gib']:.2f} GiB (target < 2 GiB), "
          f"{size / 2**30:.2f} GiB on disk")
    print(f"peer porespy.generators.blobs {pshape} (one phase, in memory, no rendering)")
    print(f"  {peer['MVx/s']:.2f} MVx/s, {peer['MVx/cpu-s']:.2f} MVx per CPU-second, peak RSS "
          f"{peer['peak_rss_gib']:.2f} GiB ({peer['bytes_per_voxel']:.1f} B/voxel: "
          f"{peer['bytes_per_voxel'] * n / 2**30:.0f} GiB at {shape})")
    print(f"ratio bigvol/peer speed {bv['MVx/s'] / peer['MVx/s']:.2f}; memory per voxel "
          f"{(bv['peak_rss_gib'] / n) / (peer['peak_rss_gib'] / pn):.4f}")
    print(json.dumps({"bigvol": bv, "peer": peer}))


def _threshold_figures(shape, seed, **kw):
    import dask
    import numpy as np
    from skimage.filters import threshold_multiotsu

    import bigvol as bv

    image, truth = bv.synth.phantom(shape, seed=seed, **kw)
    img, tr = dask.compute(image, truth)
    pred = bv.segment.threshold(dask.array.from_array(img, chunks=image.chunks), classes=3)
    cm = bv.evaluate.confusion_matrix(tr, pred.compute())
    cm = np.asarray(cm, float)
    acc = np.trace(cm) / cm.sum()
    cmn = cm / cm.sum(axis=1, keepdims=True)
    ref = np.digitize(img, threshold_multiotsu(img, classes=3))
    ref_acc = (ref == tr).mean()
    return acc, cmn, ref_acc, (ref[tr == 0] == 0).mean()


def cmd_calibrate(a) -> None:
    import numpy as np

    shape = (64, 512, 512)
    cases = {
        "every effect (defaults)": {},
        "no shine-through, edge brightening, brightness drift": {
            "shine_through": False, "edge_brightening": False, "brightness_drift": 0.0},
    }
    for name, kw in cases.items():
        for seed in a.seeds:
            t = time.perf_counter()
            acc, cmn, ref_acc, ref_pr = _threshold_figures(shape, seed, **kw)
            print(f"{name}, seed {seed}: accuracy {acc:.3f}, pore recall {cmn[0, 0]:.3f}  "
                  f"(skimage threshold_multiotsu + digitize: {ref_acc:.3f}, {ref_pr:.3f}; "
                  f"{time.perf_counter() - t:.0f} s)")
            print("  confusion matrix normalized by true class (rows pore, SE, AM):")
            for row in np.round(cmn, 3):
                print("   ", "  ".join(f"{v:.3f}" for v in row))


def cmd_learnable(a) -> None:
    import dask
    import numpy as np
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    import bigvol as bv

    image, truth = bv.synth.phantom((64, 512, 512), seed=a.seed, brightness_drift=a.drift)
    img, tr = dask.compute(image, truth)

    def feats(z):
        return np.concatenate(
            [multiscale_basic_features(img[k].astype(np.float32), sigma_min=1, sigma_max=8)
             for k in (z - 1, z, z + 1)], axis=-1)

    t = time.perf_counter()
    train, test = [8, 24, 40, 56], [16, 32, 48, 60]
    rng = np.random.default_rng(0)
    X, y = [], []
    for z in train:
        f = feats(z)
        f = f.reshape(-1, f.shape[-1])
        sel = rng.choice(len(f), a.samples // len(train), replace=False)
        X.append(f[sel])
        y.append(tr[z].ravel()[sel])
    rf = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=0)
    rf.fit(np.concatenate(X), np.concatenate(y))
    cm = np.zeros((3, 3))
    for z in test:
        f = feats(z)
        p = rf.predict(f.reshape(-1, f.shape[-1]))
        np.add.at(cm, (tr[z].ravel(), p), 1)
    cmn = cm / cm.sum(axis=1, keepdims=True)
    print(f"RandomForest (100 trees, multiscale_basic_features of z-1, z, z+1; 4 training "
          f"slices, {a.samples} pixels), brightness_drift={a.drift}, seed {a.seed}: accuracy "
          f"{np.trace(cm) / cm.sum():.3f}, pore recall {cmn[0, 0]:.3f} "
          f"({time.perf_counter() - t:.0f} s)")
    for row in np.round(cmn, 3):
        print("   ", "  ".join(f"{v:.3f}" for v in row))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="part", required=True)
    w = sub.add_parser("write")
    w.add_argument("--shape", nargs=3, type=int, default=[1000, 2000, 2000])
    w.add_argument("--chunks", nargs=3, type=int, default=[64, 512, 512])
    w.add_argument("--workers", type=int, default=2)
    w.add_argument("--peer-shape", nargs=3, type=int, default=[128, 512, 512])
    w.add_argument("--out", default=None)
    w.add_argument("--keep", action="store_true")
    c = sub.add_parser("calibrate")
    c.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r = sub.add_parser("learnable")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--drift", type=float, default=0.0)
    r.add_argument("--samples", type=int, default=100_000)
    a = ap.parse_args(argv)
    {"write": cmd_write, "calibrate": cmd_calibrate, "learnable": cmd_learnable}[a.part](a)


if __name__ == "__main__":
    main()
