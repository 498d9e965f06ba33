"""Does labelling the most uncertain slice pay? A simulated user, three ways to pick slices.

A simulated user paints whole slices from the ground truth. Each round adds one labelled
slice and trains a new SegNet with the same budget (a fixed number of steps, seeded), then
scores it on held-out slices that no strategy may pick (every other slice). Strategies:

- ``uncertainty``: start from the middle candidate slice; each round, predict the
  candidate slices with probabilities and add the one with the highest mean entropy
  (``bv.segment.uncertainty`` + ``bv.segment.suggest_slices``, neighbours excluded);
- ``even``: k slices spread evenly over the candidates (what users do today);
- ``random``: k random candidates (seeded).

``--learner forest`` runs the same loop with bigvol's random forest
(``bv.segment.train_forest``, 100 trees, features of the slice and its two neighbours)
instead of the SegNet: a round then takes seconds instead of minutes.

Target (issue 15): ``uncertainty`` with <= 3 slices reaches the accuracy of ``even`` with 4.
Datasets: the default phantom (normalized like the pipeline) and the ISBI 2012 TEM stack
from ``../shared/realdata/em``. Usage::

    python benchmarks/bench_active_labelling.py [--datasets phantom,isbi] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_realdata import load, score

import bigvol as bv


def dataset(name):
    if name == "phantom":
        image, truth = bv.synth.phantom((40, 320, 320), seed=7)
        raw = bv.normalize.match_histograms(image).compute()
        return raw, truth.compute(), 5, ["pore", "SE", "AM"]
    ds = load(name)
    (raw, lab), = ds["groups"]
    return raw, lab, ds["k"], ds["classes"]


def train(raw, lab, slices, k, classes, steps, seed, learner="segnet"):
    if learner == "forest":
        return bv.segment.train_forest(raw, lab[slices], slices=slices, k=min(k, 3),
                                       classes=classes, seed=seed)
    epochs = max(1, steps // 25)
    return bv.segment.train(raw, lab[slices], slices=slices, k=k, classes=classes,
                            epochs=epochs, steps_per_epoch=25, patience=None,
                            seed=seed, progress=False)


def evaluate(model, raw, lab, test, n):
    pred = bv.segment.predict(da.from_array(raw, chunks=(4,) + raw.shape[1:]), model)
    pred = pred.compute()
    return score(lab[test], pred[test], n)


def pick_uncertain(model, raw, candidates, labelled, spacing):
    probs = bv.segment.predict(da.from_array(raw, chunks=(4,) + raw.shape[1:]), model,
                               probabilities=True)
    means = bv.segment.slice_uncertainty(bv.segment.uncertainty(probs))
    masked = np.full(means.shape, -np.inf)
    masked[candidates] = means[candidates]
    # no slice within ``spacing`` of a labelled one: neighbours teach little more
    near = [z for z0 in labelled for z in range(z0 - spacing, z0 + spacing + 1)]
    return bv.segment.suggest_slices(masked, 1, exclude=near)[0]


def run(name, rounds, steps, seed, spacing=1, learner="segnet"):
    raw, lab, k, classes = dataset(name)
    n = len(classes)
    nz = raw.shape[0]
    margin = k // 2
    cand = [z for z in range(margin, nz - margin) if z % 2 == 0]
    test = [z for z in range(nz) if z % 2 == 1]
    rng = np.random.default_rng(seed)
    order = [int(z) for z in rng.permutation(cand)]
    rows = []
    cache = {}  # the same slices train the same model (seeded): train once
    labelled = [cand[len(cand) // 2]]
    for r in range(1, rounds + 1):
        evenly = [cand[int((i + 0.5) * len(cand) / r)] for i in range(r)]
        for strategy, slices in (("uncertainty", sorted(labelled)), ("even", evenly),
                                 ("random", sorted(order[:r]))):
            t0 = time.process_time()
            if tuple(slices) not in cache:
                model = train(raw, lab, slices, k, classes, steps, seed, learner)
                cache[tuple(slices)] = model, evaluate(model, raw, lab, test, n)
            model, s = cache[tuple(slices)]
            rows.append({"dataset": name, "learner": learner, "round": r, "strategy": strategy, "slices": slices,
                         "accuracy": s["accuracy"], "mean_iou": s["mean_iou"],
                         "cpu_s": time.process_time() - t0})
            print(json.dumps(rows[-1]), flush=True)
            if strategy == "uncertainty" and r < rounds:
                labelled.append(pick_uncertain(model, raw, cand, labelled, spacing))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="phantom,isbi")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200, help="training steps per round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spacing", type=int, default=1,
                    help="picks lie more than this many slices from a labelled one")
    ap.add_argument("--learner", default="segnet", choices=("segnet", "forest"))
    a = ap.parse_args()
    rows = [row for name in a.datasets.split(",")
            for row in run(name, a.rounds, a.steps, a.seed, a.spacing, a.learner)]
    print(f"\n{'dataset':>8} {'round':>5} {'strategy':>12} {'accuracy':>9} {'mIoU':>6}  slices")
    for r in rows:
        print(f"{r['dataset']:>8} {r['round']:>5} {r['strategy']:>12} {r['accuracy']:>9.4f} "
              f"{r['mean_iou']:>6.3f}  {r['slices']}")
    for name in a.datasets.split(","):
        acc = {(r["strategy"], r["round"]): r["accuracy"] for r in rows if r["dataset"] == name}
        even4 = acc.get(("even", a.rounds))
        reach = [r for r in range(1, a.rounds + 1) if acc[("uncertainty", r)] >= even4]
        print(f"{name}: even with {a.rounds} slices {even4:.4f}; uncertainty reaches it with "
              f"{reach[0] if reach else 'more than ' + str(a.rounds)} slices")


if __name__ == "__main__":
    main()
