"""CPU inference throughput of bigvol.segment.predict, beside plain whole-slice PyTorch.

For the slim (default) and the paper-size SegNet (random weights: the throughput does not
depend on them), it times in the same run:

- **peer**: the network applied to whole slices with plain PyTorch (no tiles, no Dask),
  what a user would write for one slice in memory;
- **bigvol**: ``bigvol.segment.predict`` on the same stack read from a Zarr store (tiles of
  256 px, Dask threads), float32 and with bfloat16 autocast (``amp=True``);
- the **tile-overlap overhead**: predict time with overlap 32 / 64 (default) / 128 over
  the time without overlap, and the ratio of tiled pixels to image pixels;
- **whole-slice tasks**: the same stack stored in 256 x 256 xy chunks, predicted per chunk
  with a halo (``blocks="chunks"``, tiles on chunk edges run twice) and per group of whole
  slices (``blocks="auto"``, the default).

It prints MPx/s, ratios and the peak RSS. Usage::

    python benchmarks/bench_infer.py [--slim-shape 2 1024 1024] [--paper-shape 1 512 512]

The machine is shared: other work may run at the same time; compare within one run only.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def tiled_pixels(Y, X, tile, overlap) -> float:
    from bigvol.segment.infer import _starts

    ty, tx = min(tile, Y), min(tile, X)
    step = max(1, tile - overlap)
    return len(_starts(Y, ty, step)) * len(_starts(X, tx, step)) * ty * tx / (Y * X)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slim-shape", nargs=3, type=int, default=(2, 1024, 1024))
    ap.add_argument("--paper-shape", nargs=3, type=int, default=(1, 512, 512))
    ap.add_argument("--tile", type=int, default=256)
    args = ap.parse_args(argv)

    import dask
    import torch

    import bigvol.segment as seg
    from bigvol.segment.infer import whole_slices
    from bigvol.segment.segnet import PRESETS, SegNet
    from bigvol.store import Run

    cores = len(os.sched_getaffinity(0))
    print(f"# bench_infer: torch {torch.__version__}, {cores} cores, load average "
          f"{os.getloadavg()[0]:.1f} (other work running: timings are noisy), tile {args.tile}")
    work = tempfile.mkdtemp(prefix="bench_infer_")
    rng = np.random.default_rng(0)
    for preset, shape in (("slim", tuple(args.slim_shape)), ("paper", tuple(args.paper_shape))):
        widths, convs = PRESETS[preset]
        torch.manual_seed(0)
        net = SegNet(1, 3, widths, convs).eval()
        cfg = {"architecture": "segnet", "in_channels": 1, "k": 1, "n_classes": 3,
               "widths": list(widths), "convs": list(convs),
               "normalization": {"method": "mean_std", "mean": 128.0, "std": 64.0}}
        model = seg.Model(cfg, {k: v.numpy() for k, v in net.state_dict().items()})
        img = rng.integers(0, 256, size=shape, dtype=np.uint8)
        run = Run.create(os.path.join(work, f"{preset}.zarr"))
        run.write("raw", img, chunks=(1,) + shape[1:])
        stack = run.read("raw")
        npx = img.size
        params = sum(p.numel() for p in net.parameters()) / 1e6

        # The peer with all cores in one torch call, and with one thread (what each of the
        # Dask tasks gets); the faster counts (on a loaded machine one thread can win).
        t_peer = float("inf")
        for nthreads in (cores, 1):
            torch.set_num_threads(nthreads)
            whole_slices(img[:1], model)  # warm-up
            t0 = time.perf_counter()
            whole_slices(img, model)
            t_peer = min(t_peer, time.perf_counter() - t0)

        def timed(x=stack, **kw):
            with dask.config.set(scheduler="threads", num_workers=cores):
                seg.predict(x[:1, :256, :256], model, tile=args.tile, **kw).compute()  # warm-up
                t0 = time.perf_counter()
                seg.predict(x, model, tile=args.tile, **kw).compute()
                return time.perf_counter() - t0

        t_fp32 = timed()
        t_bf16 = timed(amp=True)
        print(f"\n{preset} SegNet ({params:.1f} M params), stack {shape}:")
        print(f"  peer  whole-slice PyTorch fp32            {npx / t_peer / 1e6:7.3f} MPx/s")
        print(f"  bigvol predict fp32 (tile {args.tile}, overlap {args.tile // 4}) {npx / t_fp32 / 1e6:7.3f} MPx/s"
              f"  ratio to peer {t_peer / t_fp32:.2f}")
        print(f"  bigvol predict bf16 autocast               {npx / t_bf16 / 1e6:7.3f} MPx/s"
              f"  ratio to peer {t_peer / t_bf16:.2f}")
        if preset == "slim":
            t0v = timed(overlap=0)
            Y, X = shape[1:]
            print("  tile-overlap overhead (time / time without overlap; tiled px / image px; "
                  "3000x2000 slice tiled px / image px):")
            print(f"    overlap   0: 1.00 ({t0v:.1f} s); {tiled_pixels(Y, X, args.tile, 0):.2f}; "
                  f"{tiled_pixels(2000, 3000, args.tile, 0):.2f}")
            for ov in sorted({32, args.tile // 4, args.tile // 2}):
                t = t_fp32 if ov == args.tile // 4 else timed(overlap=ov)
                print(f"    overlap {ov:3d}: {t / t0v:.2f} ({t:.1f} s); {tiled_pixels(Y, X, args.tile, ov):.2f}; "
                      f"{tiled_pixels(2000, 3000, args.tile, ov):.2f}")
            run.write("raw_xy256", img, chunks=(1, 256, 256))
            small = run.read("raw_xy256")
            t_chunks = timed(small, blocks="chunks")
            t_slices = timed(small)
            print(f"  stored in (1, 256, 256) chunks: per chunk + halo {npx / t_chunks / 1e6:7.3f} MPx/s, "
                  f"whole-slice tasks (default) {npx / t_slices / 1e6:7.3f} MPx/s, ratio {t_chunks / t_slices:.2f}")
    print(f"\npeak RSS {peak_rss_gib():.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
