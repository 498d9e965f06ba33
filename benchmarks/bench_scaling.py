"""Scaling: 1 vs 2 worker processes on the same run, and the task graphs of a 1000 x 3000 x 2000 volume.

``strong``: a phantom run (default (64, 512, 512), chunks (32, 256, 256)) with its
normalized stack and a slim k = 3 SegNet (100 steps) is prepared once; then the segment
stage (SegNet inference) and the analyze stage (labels, isolated fractions, local thickness
capped at 3 um, interfaces; no tortuosity) run on copies of it on a
``distributed.LocalCluster`` of 1 and then 2 worker processes with one thread each (torch
gets one thread per worker: Dask's nanny sets OMP_NUM_THREADS=1). Prints seconds and the
speed-up of 2 workers over 1 per stage, and checks that both give the same arrays.

``graphs``: empty Zarr arrays of the target shape (metadata only, nothing computed) in the
configured chunks; for each stage's lazy computation (normalize, segment, the labelling
tables pass, local thickness, the pyramid level) it builds the graph, materializes and
optimizes it as ``compute`` would before sending it to the scheduler, and prints the number
of tasks, the seconds and the memory this took, each stage in its own process.

    python benchmarks/bench_scaling.py strong [--shape 64 512 512]
    python benchmarks/bench_scaling.py graphs [--shape 1000 3000 2000] [--chunks 32 256 256]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def strong(args) -> None:
    import bigvol as bv
    from bigvol import stages
    from bigvol.cluster import compute_context
    from bigvol.config import AnalyzeConfig
    from bigvol.store import Run

    work = tempfile.mkdtemp(prefix="bench_scaling_")
    base = os.path.join(work, "base.zarr")
    run = Run.create(base)
    shape = tuple(args.shape)
    chunks = tuple(args.chunks)
    stages.synth(run, shape=shape, seed=0, chunks=chunks)
    stages.preprocess(run, [("normalize", {})])
    norm = run.read("normalized")
    truth = run.read("truth")
    sl = [shape[0] // 5, 2 * shape[0] // 5, 3 * shape[0] // 5, 4 * shape[0] // 5]
    model = bv.segment.train(norm, truth[sl].compute(), slices=sl, k=3, epochs=2,
                             steps_per_epoch=50, progress=False)
    model_path = model.save(os.path.join(work, "model.safetensors"))
    analyze = AnalyzeConfig(tortuosity={"enabled": False}, thickness_max_diameter=3000)
    print(f"# bench_scaling strong: {shape} = {np.prod(shape) / 1e6:.0f} MVx, chunks {chunks}, "
          f"{len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}")
    times: dict = {}
    outs = {}
    for n in (1, 2):
        path = os.path.join(work, f"w{n}.zarr")
        shutil.copytree(base, path)
        r = Run.open(path, mode="r+")
        with compute_context("processes", workers=n, threads_per_worker=1):
            times[("segment", n)] = stages.segment(r, model=model_path).seconds
            times[("analyze", n)] = stages.analyze(r, analyze).seconds
        outs[n] = r
    for st in ("segment", "analyze"):
        t1, t2 = times[(st, 1)], times[(st, 2)]
        print(f"{st:<8} 1 worker {t1:7.1f} s   2 workers {t2:7.1f} s   speed-up {t1 / t2:.2f}")
    same = np.array_equal(outs[1].read("segmentation").compute(),
                          outs[2].read("segmentation").compute())
    same_a = outs[1].stage("analyze")["results"] == outs[2].stage("analyze")["results"]
    print(f"same segmentation: {same}; same metrics: {same_a}")
    shutil.rmtree(work, ignore_errors=True)


def graph_child(stage: str, shape, chunks) -> dict:
    import dask
    import dask.array as da
    import psutil
    import zarr

    import bigvol as bv

    work = tempfile.mkdtemp(prefix="bench_graphs_")
    raw = zarr.create_array(os.path.join(work, "raw.zarr"), shape=shape, chunks=chunks,
                            dtype="u1", fill_value=128)
    seg = zarr.create_array(os.path.join(work, "seg.zarr"), shape=shape, chunks=chunks,
                            dtype="u1", fill_value=1)
    x, s = da.from_zarr(raw), da.from_zarr(seg)
    model = None
    if stage == "segment":  # a slim k = 3 SegNet with random weights: the graph is the same
        import torch

        from bigvol.segment.segnet import PRESETS, SegNet

        w, c = PRESETS["slim"]
        net = SegNet(3, 3, w, c)
        cfg = {"architecture": "segnet", "in_channels": 3, "k": 3, "n_classes": 3,
               "widths": list(w), "convs": list(c),
               "normalization": {"method": "mean_std", "mean": 128.0, "std": 64.0}}
        model = bv.segment.Model(cfg, {k: v.numpy() for k, v in net.state_dict().items()})
        del torch
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    if stage == "normalize":
        out = bv.normalize.match_histograms(x)
    elif stage == "segment":
        out = bv.segment.predict(x, model)
    elif stage == "label-tables":
        from bigvol._label import tables_graph

        out = tables_graph(s == 2, 26, None, False)
    elif stage == "thickness":
        # the lazy painting pass (the exact distance map before it computes: two linear
        # passes of whole slices, then of whole columns, a few tasks per chunk)
        from bigvol.metrics.thickness import paint_from_centres

        out = paint_from_centres(s.astype(np.uint16), 1500.0, spacing=(20.0, 10.0, 10.0),
                                 chunks=s.chunks)
    elif stage == "pyramid":
        from bigvol.pyramid import downsample

        out = downsample(s, labels=True)
    else:
        raise SystemExit(f"unknown stage {stage}")
    t_build = time.perf_counter() - t0
    # what compute() does before the scheduler sees the graph: optimize and materialize
    expr = dask.base.collections_to_expr([out], optimize_graph=True)
    n_tasks = len(expr.__dask_graph__())
    t_total = time.perf_counter() - t0
    rss = proc.memory_info().rss
    shutil.rmtree(work, ignore_errors=True)
    return {"stage": stage, "tasks": n_tasks, "build_s": t_build, "total_s": t_total,
            "rss_delta_gib": (rss - rss0) / 2**30, "rss_gib": rss / 2**30}


def graphs(args) -> None:
    shape, chunks = tuple(args.shape), tuple(args.chunks)
    nchunks = int(np.prod([-(-a // c) for a, c in zip(shape, chunks)]))
    print(f"# bench_scaling graphs: {shape} = {np.prod(shape) / 1e9:.1f} GVx, chunks {chunks} "
          f"= {nchunks} chunks; nothing is computed")
    rows = []
    for st in ("normalize", "segment", "label-tables", "thickness", "pyramid"):
        out = subprocess.run([sys.executable, __file__, "graph-child", st,
                              "--shape", *map(str, shape), "--chunks", *map(str, chunks)],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{st}: failed\n{out.stderr[-1500:]}")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    per = scheduler_overhead()
    print(f"distributed scheduler on trivial tasks (2 worker processes): {per * 1e3:.2f} ms/task")
    print(f"{'stage':<14}{'tasks':>9}{'build s':>9}{'total s':>9}{'+RSS GiB':>10}{'RSS GiB':>9}"
          f"{'sched. s':>10}")
    for r in rows:
        print(f"{r['stage']:<14}{r['tasks']:>9}{r['build_s']:>9.2f}{r['total_s']:>9.2f}"
              f"{r['rss_delta_gib']:>10.2f}{r['rss_gib']:>9.2f}{r['tasks'] * per:>10.1f}")
    print("(sched. s: tasks x the per-task overhead: the scheduler's own time for the stage, "
          "a floor that more workers do not lower)")


def scheduler_overhead(n_tasks: int = 20000) -> float:
    """Seconds per task of the distributed scheduler on trivial tasks (2 worker processes)."""
    import dask.array as da
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        x = da.ones((n_tasks,), chunks=1)
        y = x.map_blocks(lambda b: b + 1).sum()
        n = len(y.__dask_graph__())
        client.compute(da.ones((100,), chunks=1).sum()).result()  # warm-up
        t0 = time.perf_counter()
        client.compute(y).result()
        return (time.perf_counter() - t0) / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("strong", "graphs", "graph-child"))
    ap.add_argument("stage", nargs="?")
    ap.add_argument("--shape", nargs=3, type=int, default=None)
    ap.add_argument("--chunks", nargs=3, type=int, default=(32, 256, 256))
    args = ap.parse_args(argv)
    if args.what == "strong":
        args.shape = args.shape or (64, 512, 512)
        strong(args)
    elif args.what == "graphs":
        args.shape = args.shape or (1000, 3000, 2000)
        graphs(args)
    else:
        print(json.dumps(graph_child(args.stage, tuple(args.shape), tuple(args.chunks))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
