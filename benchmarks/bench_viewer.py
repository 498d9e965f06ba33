"""Opening a big run in napari: time to the first picture and peak RSS while browsing.

Writes a phantom run of the given shape with its pyramid levels (once; reused when it
exists), then, in a fresh process each, opens it in napari two ways and measures

- bigvol's reader (``bigvol.viewer.open_run``: raw from its pyramid levels, the phantom's
  truth as labels, the labelling widget), and
- the peer: the same Zarr arrays as plain (single-scale) dask layers in napari, as a user
  would add them without the pyramid,

the seconds from ``napari.Viewer()`` to the first rendered picture (``viewer.screenshot``),
then the peak RSS after browsing 20 slices at full view. Needs an X display (run under
``xvfb-run -a -s "-screen 0 1600x1000x24"``). Usage::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_viewer.py \\
        --shape 200 2000 2000 --out /tmp/viewer-bench [--screenshot docs/viewer.png]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def make_run(path: Path, shape):
    from bigvol import stages
    from bigvol.store import Run

    run = Run.create(path)
    t0 = time.perf_counter()
    stages.synth(run, shape=shape, seed=0, chunks=(16, 512, 512), am_d50_um=2.0)
    stages.pyramid(run, "raw")
    # the truth stands in for a segmentation (same codes)
    if not run.is_complete("segmentation"):
        run.write("segmentation", run.read("truth"), fingerprint="truth")
    stages.pyramid(run, "segmentation")
    return time.perf_counter() - t0


def measure(path: str, how: str, screenshot: str | None) -> dict:
    import napari
    import numpy as np

    t0 = time.perf_counter()
    viewer = napari.Viewer()
    if how == "bigvol":
        from bigvol.viewer import open_run

        open_run(path, viewer)
    else:
        import dask.array as da

        viewer.add_image(da.from_zarr(f"{path}/raw"), name="raw", contrast_limits=(0, 255))
        viewer.add_labels(da.from_zarr(f"{path}/segmentation"), name="segmentation")
    viewer.screenshot(canvas_only=True)
    first = time.perf_counter() - t0
    nz = viewer.dims.range[0].stop
    t1 = time.perf_counter()
    for z in np.linspace(0, nz - 1, 20).astype(int):
        step = list(viewer.dims.current_step)
        step[0] = int(z)
        viewer.dims.current_step = tuple(step)
        viewer.screenshot(canvas_only=True)
    browse = (time.perf_counter() - t1) / 20
    if screenshot:
        step = list(viewer.dims.current_step)
        step[0] = nz // 2
        viewer.dims.current_step = tuple(step)
        img = viewer.screenshot(canvas_only=False)
        from skimage.io import imsave

        imsave(screenshot, img)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux: KiB)
    viewer.close()
    return {"how": how, "first_picture_s": round(first, 2), "per_slice_s": round(browse, 3),
            "peak_rss_gib": round(rss, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", nargs=3, type=int, default=[200, 2000, 2000])
    ap.add_argument("--out", default="/tmp/bigvol-viewer-bench")
    ap.add_argument("--screenshot", default=None, help="PNG of the viewer with the widget")
    ap.add_argument("--measure", nargs=2, metavar=("PATH", "HOW"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(a.measure[0], a.measure[1], a.screenshot)))
        return
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"phantom-{'x'.join(map(str, a.shape))}.zarr"
    if not (path / "pyramids").exists():
        print(f"writing {path} ...", flush=True)
        print(f"phantom + pyramids written in {make_run(path, tuple(a.shape)):.0f} s")
    rows = []
    for how in ("bigvol", "plain dask layers"):
        cmd = [sys.executable, __file__, "--measure", str(path), how]
        if how == "bigvol" and a.screenshot:
            cmd += ["--screenshot", a.screenshot]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        line = [x for x in res.stdout.splitlines() if x.startswith("{")]
        rows.append(json.loads(line[-1]) if line else {"how": how, "error": res.stderr[-500:]})
    print(f"\n{'shape':>18} {'how':>18} {'first picture s':>16} {'per slice s':>12} "
          f"{'peak RSS GiB':>13}")
    for r in rows:
        if "error" in r:
            print(f"{str(tuple(a.shape)):>18} {r['how']:>18} error: {r['error']}")
            continue
        print(f"{str(tuple(a.shape)):>18} {r['how']:>18} {r['first_picture_s']:>16} "
              f"{r['per_slice_s']:>12} {r['peak_rss_gib']:>13}")
    if all("error" not in r for r in rows):
        print(f"first picture: bigvol / plain = "
              f"{rows[0]['first_picture_s'] / rows[1]['first_picture_s']:.2f}")


if __name__ == "__main__":
    main()
