"""GPU inference throughput of bigvol's tiled SegNet, with PyTorch and NumPy only.

Meant for a GPU machine that has torch but not dask / zarr (see gpu_check.sh). It imports
bigvol's model and block-inference modules without the package ``__init__`` (which needs
dask and zarr), builds the slim and the paper-size SegNet with random weights (throughput
does not depend on the weights), and segments a synthetic ``(100, 2000, 3000)`` uint8 stack
block by block exactly as a ``bigvol.segment.predict`` task does for a chunking of whole
slices: the global tile grid (tile 512, overlap 128), Gaussian blending, batches of tiles,
bf16 autocast, channels_last, pinned host memory. It prints MPx/s and the projected time
for 1000 slices of 3000 x 2000 (target: under 2 minutes on one H100).

When dask is importable it also times ``bigvol.segment.predict`` itself (the Dask graph) on
the same stack.

Usage::

    python benchmarks/gpu_check.py [--shape 100 2000 3000] [--device cuda] [--presets slim,paper]
        [--tile 512] [--overlap 128] [--batch 16] [--block 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import time
import types

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
# BIGVOL_GPU_CHECK_NO_DASK=1 takes the torch + numpy path even where dask is installed.
HAVE_DASK = (
    not os.environ.get("BIGVOL_GPU_CHECK_NO_DASK")
    and importlib.util.find_spec("dask") is not None
    and importlib.util.find_spec("zarr") is not None
)


def _import_without_package_init():
    """bigvol.segment.{model, infer, segnet} without running bigvol/__init__.py."""
    if HAVE_DASK:
        sys.path.insert(0, str(ROOT))
        import bigvol.segment  # noqa: F401 - the real package is importable here
    else:
        for name, path in (("bigvol", ROOT / "bigvol"), ("bigvol.segment", ROOT / "bigvol" / "segment")):
            mod = types.ModuleType(name)
            mod.__path__ = [str(path)]
            sys.modules[name] = mod
    from bigvol.segment import infer, model, segnet

    return infer, model, segnet


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs=3, type=int, default=(100, 2000, 3000))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--presets", default="slim,paper")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--block", type=int, default=4, help="slices per block (task)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    if not 0 <= args.overlap < args.tile:
        ap.error(f"--overlap must be in [0, --tile), got {args.overlap}")
    import torch

    infer, model_mod, segnet = _import_without_package_init()
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (run with --device cpu for a dry run)")
        return 1
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu"
    Z, Y, X = args.shape
    rng = np.random.default_rng(0)
    # A stack with structure at a few scales (the content does not change the timing).
    base = rng.integers(0, 256, size=(Z, Y // 8 + 1, X // 8 + 1), dtype=np.uint8)
    stack = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)[:, :Y, :X].copy()
    print(f"# gpu_check: device {name}, torch {torch.__version__}, stack {stack.shape} uint8, "
          f"tile {args.tile}, overlap {args.overlap}, batch {args.batch}, {args.block} slices per block")
    results = {"device": name, "shape": [Z, Y, X], "tile": args.tile, "overlap": args.overlap, "runs": {}}
    for preset in args.presets.split(","):
        widths, convs = segnet.PRESETS[preset]
        torch.manual_seed(0)
        net = segnet.SegNet(1, 3, widths, convs).eval()
        config = {"architecture": "segnet", "in_channels": 1, "k": 1, "n_classes": 3,
                  "widths": list(widths), "convs": list(convs),
                  "normalization": {"method": "mean_std", "mean": 128.0, "std": 64.0}}
        m = model_mod.Model(config, {k: v.numpy() for k, v in net.state_dict().items()})

        def run_block(z0, z1):
            return infer._segment_block(
                stack[z0:z1], m, z_pad=0, origin=(0, 0), core=(slice(0, Y), slice(0, X)),
                image_shape=(Y, X), tile=args.tile, overlap=args.overlap, device=dev,
                batch_size=args.batch, threads=None, probabilities=False,
            )

        run_block(0, min(args.block, Z))  # warm-up: cuDNN autotune, allocator
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for z0 in range(0, Z, args.block):
            out = run_block(z0, min(Z, z0 + args.block))
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        mpx = Z * Y * X / dt / 1e6
        proj = 1000 * 3000 * 2000 / (mpx * 1e6)
        peak = torch.cuda.max_memory_allocated() / 2**30 if dev.startswith("cuda") else float("nan")
        print(f"{preset:>6}: {sum(p.numel() for p in net.parameters()) / 1e6:.1f} M params, "
              f"{dt:.1f} s for {Z} slices -> {mpx:.1f} MPx/s; projected 1000 slices of 3000x2000: "
              f"{proj:.0f} s ({proj / 60:.1f} min; target < 2 min); GPU peak {peak:.1f} GiB; "
              f"output {out.dtype} {out.shape}")
        results["runs"][preset] = {"seconds": dt, "mpx_s": mpx, "projected_1000_slices_s": proj, "gpu_peak_gib": peak}

        if HAVE_DASK:
            try:
                import dask
                import dask.array as da

                import bigvol.segment as seg  # the real package (dask present)

                x = da.from_array(stack, chunks=(args.block, Y, X))
                with dask.config.set(scheduler="threads", num_workers=1):
                    t0 = time.perf_counter()
                    seg.predict(x, m, tile=args.tile, overlap=args.overlap, device=dev,
                                batch_size=args.batch).compute()
                    dt2 = time.perf_counter() - t0
                print(f"{preset:>6}: bigvol.segment.predict (dask threads): {Z * Y * X / dt2 / 1e6:.1f} MPx/s")
                results["runs"][preset]["predict_mpx_s"] = Z * Y * X / dt2 / 1e6
            except Exception as e:  # report, do not hide, a failure of the dask path
                print(f"{preset:>6}: bigvol.segment.predict failed: {type(e).__name__}: {e}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
