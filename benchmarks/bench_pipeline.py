"""End-to-end: the whole method on a phantom, wall time, per-stage MVx/s and peak RSS.

    python benchmarks/bench_pipeline.py                          # (1000, 1024, 1024), SegNet
    python benchmarks/bench_pipeline.py --shape 128 512 512      # a quick one
    python benchmarks/bench_pipeline.py --set segment.method=threshold

Runs ``bigvol run`` in a child process on a generated config (threads scheduler, the demo's
training settings unless overridden), samples the resident memory of the child and its
children every 0.2 s, and prints per stage the seconds and MVx/s (voxels of the volume over
the stage's wall time) from the run store's stage records, the total, and the peak RSS
(target for (1000, 1024, 1024) on this 2-core, 24 GiB machine: under 6 GiB).
There is no single peer tool for the whole method; the per-stage benchmarks compare
each stage with its peer.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml


def peak_rss(proc: subprocess.Popen, stop: threading.Event, out: list) -> None:
    peak = 0
    p = psutil.Process(proc.pid)
    while not stop.is_set():
        try:
            rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    out.append(peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs=3, type=int, default=[1000, 1024, 1024])
    ap.add_argument("--chunks", nargs=3, type=int, default=[32, 256, 256])
    ap.add_argument("--out", default=None, help="folder for the run (default: a temporary one, deleted)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    from bigvol.pipeline import DEMO_CONFIG

    folder = Path(args.out or tempfile.mkdtemp(prefix="bigvol-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(json.dumps(DEMO_CONFIG))
    cfg["run"] = str(folder / "bench.zarr")
    cfg["input"]["phantom"]["shape"] = args.shape
    cfg["compute"]["chunks"] = args.chunks
    cfg_path = folder / "bench.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))

    cmd = [sys.executable, "-m", "bigvol.cli", "run", str(cfg_path), "--quiet"]
    for o in args.overrides:
        cmd += ["--set", o]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    stop, peak = threading.Event(), []
    th = threading.Thread(target=peak_rss, args=(proc, stop, peak), daemon=True)
    th.start()
    rc = proc.wait()
    total = time.perf_counter() - t0
    stop.set()
    th.join()
    if rc != 0:
        sys.exit(f"bigvol run failed with status {rc}")

    from bigvol.store import Run

    stages = Run.open(cfg["run"]).stages
    nvox = math.prod(args.shape)
    print(f"\nvolume {tuple(args.shape)} = {nvox / 1e6:.0f} MVx, chunks {tuple(args.chunks)}, threads scheduler")
    print(f"{'stage':<12}{'seconds':>10}{'MVx/s':>10}")
    for name, rec in stages.items():
        s = rec.get("seconds")
        if s:
            print(f"{name:<12}{s:>10.1f}{nvox / s / 1e6:>10.1f}")
    print(f"{'total':<12}{total:>10.1f}{nvox / total / 1e6:>10.1f}")
    print(f"peak RSS {peak[0] / 2**30:.2f} GiB (target < 6 GiB for (1000, 1024, 1024))")
    if not args.keep and not args.out:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
