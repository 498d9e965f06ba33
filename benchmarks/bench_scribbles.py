"""Scribbles, then corrections where the model is unsure: SegNet vs an ilastik-style forest.

A simulated user draws random strokes (3 px wide, each stroke within one class of the
ground truth) on 4 slices until 2 % of their pixels are labelled. The SegNet trains on
them; the user then paints one round of corrective strokes (at most 0.5 % more pixels),
centred on the pixels of those slices where the model's entropy is highest, and the model
is fine-tuned on all strokes (``init=``, the viewer's Fine-tune). In the same run an
ilastik-style random forest (``skimage.feature.multiscale_basic_features`` of slices z-1, z,
z+1, 100 trees) trains on exactly the same strokes. Both are scored on the slices no stroke
touched. Datasets: a phantom (normalized like the pipeline) and the EPFL FIB-SEM
mitochondria slices from ``../shared/realdata/fibsem``.

``--learner forest``: the same loop with bigvol's random forest (``bv.segment.train_forest``,
``segment.method: forest``): strokes, its own uncertainty picks the corrections, trained
again on all strokes; the peer forest trains on the same strokes. Usage::

    python benchmarks/bench_scribbles.py [--datasets phantom,epfl-mito] [--steps 300]
        [--learner segnet|forest]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_realdata import _features, load, score

import bigvol as bv

UNLABELLED = 255


def dataset(name):
    if name == "phantom":
        image, truth = bv.synth.phantom((40, 320, 320), seed=13)
        raw = bv.normalize.match_histograms(image).compute()
        return raw, truth.compute(), [6, 16, 24, 34], 5, ["pore", "SE", "AM"]
    ds = load(name)
    (raw, lab), = ds["groups"]
    return raw, lab, ds["train"][0], ds["k"], ds["classes"]


def strokes(truth2d, fraction, rng, centres=None, labels=None):
    """Random 3-px strokes within one class each, until ``fraction`` of the pixels; with
    ``centres``, strokes start there (corrections) instead of at random places."""
    out = np.full(truth2d.shape, UNLABELLED, np.uint8) if labels is None else labels.copy()
    budget = int(fraction * truth2d.size) + int((out != UNLABELLED).sum())
    h, w = truth2d.shape
    i = 0
    while (out != UNLABELLED).sum() < budget:
        if centres is not None:
            if i >= len(centres):
                break
            y, x = centres[i]
        else:
            y, x = rng.integers(0, h), rng.integers(0, w)
        i += 1
        c = truth2d[y, x]
        angle = rng.uniform(0, np.pi)
        for t in range(int(rng.integers(10, 40))):
            yy, xx = int(y + t * np.sin(angle)), int(x + t * np.cos(angle))
            if not (1 <= yy < h - 1 and 1 <= xx < w - 1) or truth2d[yy, xx] != c:
                break
            out[yy - 1:yy + 2, xx - 1:xx + 2] = np.where(
                truth2d[yy - 1:yy + 2, xx - 1:xx + 2] == c, c, out[yy - 1:yy + 2, xx - 1:xx + 2])
            if (out != UNLABELLED).sum() >= budget:
                break
    return out


def forest(raw, labs, slices, k, test, seed):
    from sklearn.ensemble import RandomForestClassifier

    X, y = [], []
    for z, lab in zip(slices, labs):
        f = _features(raw, z, k)
        m = lab != UNLABELLED
        X.append(f[m])
        y.append(lab[m])
    clf = RandomForestClassifier(n_estimators=100, n_jobs=len(os.sched_getaffinity(0)),
                                 random_state=seed).fit(np.concatenate(X), np.concatenate(y))
    pred = np.zeros((len(test),) + raw.shape[1:], np.uint8)
    for i, z in enumerate(test):
        f = _features(raw, z, k)
        pred[i] = clf.predict(f.reshape(-1, f.shape[-1])).reshape(raw.shape[1:])
    return pred


def run(name, steps, seed, learner="segnet"):
    raw, truth, slices, k, classes = dataset(name)
    n = len(classes)
    rng = np.random.default_rng(seed)
    test = [z for z in range(raw.shape[0]) if all(abs(z - s) > k // 2 for s in slices)]
    labs = [strokes(truth[z], 0.02, rng) for z in slices]
    stack = da.from_array(raw, chunks=(4,) + raw.shape[1:])
    rows = []

    def report(method, round_, pred, labs_, t0):
        s = score(truth[test], pred, n)
        frac = float(np.mean([(lab_ != UNLABELLED).mean() for lab_ in labs_]))
        rows.append({"dataset": name, "method": method, "round": round_, "labelled": frac,
                     "accuracy": s["accuracy"], "mean_iou": s["mean_iou"],
                     "cpu_s": time.process_time() - t0})
        print(json.dumps(rows[-1]), flush=True)

    if learner == "segnet":
        mine = "segnet"
        opts = {"k": k, "classes": classes, "epochs": max(1, steps // 25),
                "steps_per_epoch": 25, "patience": None, "seed": seed, "progress": False,
                "validation": None}

        def first(labs_):
            return bv.segment.train(raw, np.stack(labs_), slices=slices, **opts)

        def again(labs_, model):  # fine-tuned from the first model (the viewer's Fine-tune)
            return bv.segment.train(raw, np.stack(labs_), slices=slices, init=model,
                                    **{k_: v for k_, v in opts.items()
                                       if k_ not in ("k", "classes")})
    else:
        mine = "bvforest"

        def first(labs_):
            return bv.segment.train_forest(raw, np.stack(labs_), slices=slices, k=k,
                                           classes=classes, seed=seed)

        def again(labs_, model):  # a forest is trained again on all strokes
            return first(labs_)

    t0 = time.process_time()
    model = first(labs)
    report(mine, "strokes", bv.segment.predict(stack, model).compute()[test], labs, t0)
    t0 = time.process_time()
    report("forest", "strokes", forest(raw, labs, slices, k, test, seed), labs, t0)
    # corrections: strokes centred on the most uncertain pixels of the labelled slices
    u = bv.segment.uncertainty(bv.segment.predict(stack, model, probabilities=True)).compute()
    fixed = []
    for z, lab in zip(slices, labs):
        order = np.argsort(-u[z], axis=None)[:2000]
        centres = [tuple(np.unravel_index(i, u[z].shape)) for i in order[::20]]
        fixed.append(strokes(truth[z], 0.005, rng, centres=centres, labels=lab))
    t0 = time.process_time()
    tuned = again(fixed, model)
    report(mine, "strokes + corrections", bv.segment.predict(stack, tuned).compute()[test],
           fixed, t0)
    t0 = time.process_time()
    report("forest", "strokes + corrections", forest(raw, fixed, slices, k, test, seed), fixed,
           t0)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="phantom,epfl-mito")
    ap.add_argument("--steps", type=int, default=300, help="SegNet steps per round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--learner", default="segnet", choices=("segnet", "forest"))
    a = ap.parse_args()
    rows = [r for name in a.datasets.split(",") for r in run(name, a.steps, a.seed, a.learner)]
    print(f"\n{'dataset':>10} {'method':>8} {'labels':>22} {'labelled %':>10} {'accuracy':>9} "
          f"{'mIoU':>6}")
    for r in rows:
        print(f"{r['dataset']:>10} {r['method']:>8} {r['round']:>22} {100 * r['labelled']:>10.2f} "
              f"{r['accuracy']:>9.4f} {r['mean_iou']:>6.3f}")


if __name__ == "__main__":
    main()
