"""CPU inference of bigvol.segment.predict: this tree against an earlier bigvol, same run.

The target (issue 16): at least 2x the MPx/s of the slim SegNet before the inference work
(``--baseline-rev``, default ``bcfee8d``) on the same cores, with the same predictions
(>= 99.9 % of pixels identical, accuracy within 0.001). A model is trained once (slim,
k = 5, 200 steps on a 64 x 512 x 512 phantom, seed 0: predictions of random weights say
nothing about agreement), then a held-out phantom stack of user-sized slices (default
4 x 2000 x 3000, seed 7) is written to Zarr and segmented by each contender in its own
process (so that each one's peak RSS is its own), after a warm-up on one slice:

- ``baseline``: ``predict`` of the bigvol at ``--baseline-rev`` (a ``git worktree`` of it),
  with its defaults (float32, 256 px tiles, 64 px overlap, batches of 4);
- ``bigvol``: ``predict`` of this tree with its defaults (float32);
- ``bigvol-grid256``: this tree's ``predict`` on the baseline's tile grid (``tile=256,
  overlap=64``): what the speed-up is with the baseline's predictions;
- ``bigvol-bf16``: the same as ``bigvol`` with ``amp=True`` (bfloat16 autocast; not the default, because
  its predictions differ from float32 on more than 0.1 % of pixels);
- ``peer``: the network on whole slices with plain PyTorch (no tiles, no Dask), what a
  user would write for slices that fit in memory;
- ``baseline-moved``: the baseline again on the stack without its first 16 (then 48) rows
  and columns, so that its own tile grid lies elsewhere on the image: its agreement with
  the unmoved baseline is the criterion's noise floor (how far "the same predictions"
  can be asked of a tiled network whose grid moves with a crop of the stack).

Prints MPx/s, the ratio to the baseline, the fraction of pixels identical to the
baseline's, the accuracy against the phantom's truth, and peak RSS. Usage::

    python benchmarks/bench_infer.py [--shape 4 2000 3000] [--baseline-rev bcfee8d]

The machine is shared: other work may run at the same time; compare within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: rows and columns cut off the stack for ``baseline-moved`` (its tile grid then moves)
MOVES = (16, 48)


def child(which: str, work: str, repeat: int = 1) -> dict:
    tree = os.environ.get("BENCH_BIGVOL_TREE")
    if tree:  # import bigvol from that tree, not from the editable install of this one
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path.insert(0, tree)
    import dask
    import torch

    import bigvol as bv
    from bigvol.store import Run

    cores = len(os.sched_getaffinity(0))
    model = bv.segment.Model.load(os.path.join(work, "model.safetensors"))
    stack = Run.open(os.path.join(work, "test.zarr")).read("raw")
    if which == "peer":
        from bigvol.segment.infer import whole_slices

        torch.set_num_threads(cores)
        img = np.asarray(stack)
        whole_slices(img[:1], model)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            seg = whole_slices(img, model)
            times.append(time.perf_counter() - t0)
    elif which == "baseline-moved":
        with dask.config.set(scheduler="threads", num_workers=cores):
            t0 = time.perf_counter()
            for m in MOVES:
                seg = bv.segment.predict(stack[:, m:, m:], model).compute()
                np.save(os.path.join(work, f"{which}-{m}.npy"), seg)
            times = [time.perf_counter() - t0]
    else:
        kw = {"bigvol-bf16": {"amp": True},
              "bigvol-grid256": {"tile": 256, "overlap": 64}}.get(which, {})
        with dask.config.set(scheduler="threads", num_workers=cores):
            bv.segment.predict(stack[:, :512, :512], model, **kw).compute()  # warm-up
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                seg = bv.segment.predict(stack, model, **kw).compute()
                times.append(time.perf_counter() - t0)
    if which != "baseline-moved":
        np.save(os.path.join(work, f"{which}.npy"), seg)
    return {"seconds": min(times), "times": times,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs=3, type=int, default=(4, 2000, 3000))
    ap.add_argument("--baseline-rev", default="bcfee8d")
    ap.add_argument("--steps", type=int, default=200, help="training steps of the model")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timed runs per contender after the warm-up; the best is reported "
                         "(one run on this 2-core VM spreads by +-25 %%)")
    ap.add_argument("--model", help="a saved model of this recipe to reuse; when the file "
                    "does not exist, the model is trained and saved there")
    ap.add_argument("--skip", default="", help="contenders to skip, comma-separated")
    ap.add_argument("--child", nargs=2, metavar=("WHICH", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, repeat=args.repeat)))
        return 0

    import bigvol as bv
    from bigvol.store import Run

    cores = len(os.sched_getaffinity(0))
    work = tempfile.mkdtemp(prefix="bench_infer_")
    print(f"# bench_infer: {cores} cores, load average {os.getloadavg()[0]:.1f}, "
          f"stack {tuple(args.shape)}, baseline {args.baseline_rev}, work {work}")
    if args.model and os.path.exists(args.model):
        model = bv.segment.Model.load(args.model)
    else:
        img, truth = bv.synth.phantom((64, 512, 512), seed=0)
        norm = np.asarray(bv.normalize.match_histograms(img))
        truth = np.asarray(truth)
        slices = [8, 24, 40, 56]
        # skips=False, loss="ce": the network and loss of the issue-16 baseline, so that the
        # figures stay comparable with it (skips became the default later and cost more per
        # pixel).
        model = bv.segment.train(norm, truth[slices], slices=slices, k=5,
                                 epochs=max(1, args.steps // 50),
                                 steps_per_epoch=min(50, args.steps), progress=False,
                                 skips=False, loss="ce", class_weights="sqrt")
        del img, norm, truth
        if args.model:
            model.save(args.model)
    model.save(os.path.join(work, "model.safetensors"))
    timg, ttruth = bv.synth.phantom(tuple(args.shape), seed=7)
    tnorm = np.asarray(bv.normalize.match_histograms(timg))
    ttruth = np.asarray(ttruth)
    Run.create(os.path.join(work, "test.zarr")).write("raw", tnorm, chunks=(1, 1000, 1000))
    del timg, tnorm

    contenders = [c for c in ("baseline", "bigvol", "bigvol-grid256", "bigvol-bf16", "peer",
                                       "baseline-moved")
                  if c not in args.skip.split(",")]
    env = dict(os.environ)
    results = {}
    for which in contenders:
        cmd_env = env
        if which.startswith("baseline"):
            tree = os.path.join(work, "baseline")
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", tree,
                            args.baseline_rev], check=True)
            cmd_env = dict(env, BENCH_BIGVOL_TREE=tree)
        out = subprocess.run([sys.executable, __file__, "--child", which, work,
                              "--repeat", str(args.repeat)],
                             capture_output=True, text=True, env=cmd_env)
        if which.startswith("baseline"):
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tree],
                           check=False)
        if out.returncode:
            print(f"{which}: failed\n{out.stderr[-2000:]}")
            continue
        results[which] = json.loads(out.stdout.strip().splitlines()[-1])

    npx = ttruth.size
    base = np.load(os.path.join(work, "baseline.npy")) if "baseline" in results else None
    t_base = results.get("baseline", {}).get("seconds")
    print(f"\n{'contender':14s} {'MPx/s':>8s} {'x baseline':>10s} {'identical':>10s} "
          f"{'accuracy':>9s} {'peak RSS GiB':>12s}  runs s")
    for which, r in results.items():
        if which == "baseline-moved":
            continue
        seg = np.load(os.path.join(work, f"{which}.npy"))
        same = "" if base is None else f"{(seg == base).mean():.5f}"
        ratio = "" if t_base is None else f"{t_base / r['seconds']:.2f}"
        print(f"{which:14s} {npx / r['seconds'] / 1e6:8.3f} {ratio:>10s} {same:>10s} "
              f"{(seg == ttruth).mean():9.5f} {r['peak_rss_gib']:12.2f}  "
              f"{', '.join(f'{t:.1f}' for t in r['times'])}")
    if "baseline-moved" in results and base is not None:
        print("\nnoise floor: the baseline against itself with its tile grid moved (the stack "
              "cropped),\ncompared on the pixels both cover")
        for m in MOVES:
            seg = np.load(os.path.join(work, f"baseline-moved-{m}.npy"))
            others = "  ".join(f"{w} {(np.load(os.path.join(work, f'{w}.npy'))[:, m:, m:] == seg).mean():.5f}"
                               for w in ("bigvol", "peer") if w in results)
            print(f"  moved by {m:2d} px: identical to the baseline {(seg == base[:, m:, m:]).mean():.5f}, "
                  f"accuracy {(seg == ttruth[:, m:, m:]).mean():.5f}"
                  f" (same region: baseline {(base[:, m:, m:] == ttruth[:, m:, m:]).mean():.5f});"
                  f" moved baseline vs {others}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
