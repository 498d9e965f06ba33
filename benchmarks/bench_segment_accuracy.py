"""Segmentation accuracy of the SegNet against the multi-Otsu threshold baseline.

On the default phantom (``bigvol.synth.phantom``, shape (64, 512, 512), seed 0), with the
stack normalized slice by slice onto the middle one (``bigvol.normalize.match_histograms``,
as the method does), every experiment trains a SegNet on the CPU within a wall-clock
budget (default 15 minutes) from 4 labelled slices spread along z, predicts every slice
(tiled, ``bigvol.segment.predict``) and is scored on every slice against the phantom's
truth:

- ``dense-k1``   4 fully labelled slices, 1 slice in (the paper's setting)
- ``dense-k3``   the same, 3 adjacent slices in (2.5D): does pore recall improve?
- ``dense-k5``   5 adjacent slices in: shine-through reaches several slices deep
  (300 nm = 6 slices at 50 nm), so the slices behind a pore tell it from solid
- ``sparse-k1`` / ``sparse-k3`` / ``sparse-k5``  scribbles covering <= 2 % of the pixels of
  the 4 slices (random strokes inside each phase, 2 px clear of its boundaries)
- ``interactive-k5``  the same 2 % painted the way pixel-classification tools (ilastik)
  are used: two thirds as random strokes, train a third of the budget, predict the 4
  slices, paint the last third as corrective strokes on the wrongly predicted pixels (a
  simulated user with the truth as the eye), fine-tune (``init=``) for the rest of the
  budget

with ``--class-weights`` (default "sqrt": the square root of the inverse class frequency;
"balanced" favours pore recall at the cost of overall accuracy and AM recall),
scores every model as predicted (``tta=1``) and with ``--tta`` test-time views,
and prints the row-normalized confusion matrices beside the threshold baseline's (the
form of the paper's Table 1), the per-slice accuracy range and the targets (accuracy >= 0.97,
pore recall >= 0.90, every class recall above the baseline's; sparse: accuracy >= 0.95).

Usage::

    python benchmarks/bench_segment_accuracy.py [--budget 900] [--runs dense-k1,dense-k3,dense-k5,sparse-k5]
        [--class-weights sqrt] [--tta 8]
        [--shape 64 512 512] [--json results.json]

Timings depend on the machine's load: say what else ran.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import scipy.ndimage as ndi

import bigvol as bv
import bigvol.normalize
import bigvol.synth
from bigvol.segment.infer import whole_slices
from bigvol.store import Run

NAMES = ("pore", "SE", "AM")


def _paint(labels, code, start, allowed, share, rng) -> int:
    """Paint 3-px strokes of ``code`` into ``labels`` until ``share`` new pixels are labelled.

    Each stroke is a random walk (up to 40 steps of 1 px, heading jittered by 0.3 rad) from
    a random pixel of ``start``; it ends where its centre leaves ``allowed``. Pixels already
    labelled stay as they are. Returns the number of pixels painted.
    """
    h, w = labels.shape
    ys, xs = np.nonzero(start)
    painted = tries = 0
    while len(ys) and painted < share and tries < 5000:
        tries += 1
        i = int(rng.integers(len(ys)))
        y, x = float(ys[i]), float(xs[i])
        ang = rng.uniform(0, 2 * np.pi)
        for _ in range(40):
            yi, xi = int(round(y)), int(round(x))
            if not (1 <= yi < h - 1 and 1 <= xi < w - 1 and allowed[yi, xi]):
                break
            patch = labels[yi - 1 : yi + 2, xi - 1 : xi + 2]
            painted += int((patch == 255).sum())
            patch[patch == 255] = code
            if painted >= share:
                break
            ang += rng.normal(0, 0.3)
            y += np.sin(ang)
            x += np.cos(ang)
    return painted


def scribbles(truth_slice: np.ndarray, fraction: float, rng: np.random.Generator,
              touch: bool = False) -> np.ndarray:
    """Sparse labels as a person paints them: 3-px-wide strokes inside each phase.

    Strokes are random walks (about 40 px long), an equal share of ``fraction`` of the
    pixels per class; the rest is 255 (unlabelled). The brush never crosses into another
    phase; with ``touch=False`` it also stays clear of the boundary (no labelled pixel has
    a neighbour of another phase), with ``touch=True`` it may run along it.
    """
    out = np.full(truth_slice.shape, 255, np.uint8)
    for c in range(3):
        if touch:
            inner = ndi.binary_erosion(truth_slice == c, structure=np.ones((3, 3), bool))
        else:
            inner = ndi.binary_erosion(truth_slice == c, iterations=2)
        _paint(out, c, inner, inner, fraction * truth_slice.size / 3, rng)
    return out


def corrections(truth_slice, pred_slice, n_pixels, labels, rng):
    """Corrective strokes as a person paints them on a prediction overlay, into ``labels``.

    3-px strokes (random walks of up to 40 px) starting on wrongly predicted pixels and
    staying within 2 px of them, each inside one true phase (the brush never crosses a
    phase boundary, but may touch it), each class's share of ``n_pixels`` in proportion to
    its wrong pixels; pixels already labelled are kept. Returns the number of pixels painted.
    """
    wrong = pred_slice != truth_slice
    near = ndi.binary_dilation(wrong, iterations=2)
    inside = [ndi.binary_erosion(truth_slice == c, structure=np.ones((3, 3), bool)) for c in range(3)]
    n_wrong = np.array([(inside[c] & wrong).sum() for c in range(3)], float)
    if n_wrong.sum() == 0:
        return 0
    return sum(_paint(labels, c, inside[c] & wrong, inside[c] & near, n_pixels * n_wrong[c] / n_wrong.sum(), rng)
               for c in range(3))


def side_by_side(cm_a, cm_b, title_a, title_b) -> str:
    head = f"{'':>10} | {title_a:^26} | {title_b:^26}"
    sub = f"{'true/pred':>10} | " + " ".join(f"{n:>8}" for n in NAMES) + " | " + " ".join(f"{n:>8}" for n in NAMES)
    lines = [head, sub]
    for i, n in enumerate(NAMES):
        lines.append(
            f"{n:>10} | " + " ".join(f"{v:8.3f}" for v in cm_a[i]) + " | " + " ".join(f"{v:8.3f}" for v in cm_b[i])
        )
    return "\n".join(lines)


def score(truth, pred):
    cm = bv.evaluate.confusion_matrix(truth, pred, normalize="true")
    acc_z = bv.evaluate.accuracy_per_slice(truth, pred)
    cnt = bv.evaluate.confusion_matrix(truth, pred)
    acc = float(np.trace(cnt) / cnt.sum())
    return {"accuracy": acc, "recall": np.diag(cm).tolist(), "cm": np.asarray(cm).tolist(),
            "slice_accuracy_min": float(np.min(acc_z)), "slice_accuracy_max": float(np.max(acc_z))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs=3, type=int, default=(64, 512, 512))
    ap.add_argument("--budget", type=float, default=900.0, help="training seconds per experiment")
    ap.add_argument("--runs", default="dense-k1,dense-k3,dense-k5,sparse-k5")
    ap.add_argument("--scribble-fraction", type=float, default=0.018)
    ap.add_argument("--scribbles-touch", action="store_true",
                    help="random strokes may run along phase boundaries (default: they stay clear)")
    ap.add_argument("--preset", default="slim")
    ap.add_argument("--batch-size", type=int, default=4,
                    help="crops per step (4: more updates within a short CPU budget)")
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                    help="budget in wall seconds, or in CPU seconds / threads (a shared machine)")
    ap.add_argument("--class-weights", default="sqrt",
                    help="'balanced', 'sqrt' or 'none' (bigvol.segment.train's class_weights)")
    ap.add_argument("--seed", type=int, default=0, help="training seed (crops, augmentation, init)")
    ap.add_argument("--tta", type=int, default=8, choices=(1, 2, 4, 8),
                    help="also score each model with this many test-time views (1: no second score)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)

    import dask
    import torch

    dask.config.set(scheduler="threads")
    shape = tuple(args.shape)
    nz = shape[0]
    slices = sorted({int((i + 0.5) * nz / 4) for i in range(4)})
    work = args.workdir or tempfile.mkdtemp(prefix="bench_seg_")
    print(f"# bench_segment_accuracy: phantom {shape}, training slices {slices}, budget {args.budget:.0f} s "
          f"per run, torch {torch.__version__}, {len(os.sched_getaffinity(0))} cores, "
          f"load average {os.getloadavg()[0]:.1f} (other work running: timings are noisy)", flush=True)

    t0 = time.perf_counter()
    run = Run.create(os.path.join(work, "bench.zarr"), voxel_size=(50, 30, 30))
    image, truth = bv.synth.phantom(shape, seed=0)
    run.write("raw", image, chunks=(16, 512, 512))
    run.write("truth", truth, chunks=(16, 512, 512))
    run.write("normalized", bv.normalize.match_histograms(run.read("raw")), chunks=(16, 512, 512))
    stack = run.read("normalized")
    truth = run.read("truth").compute()
    print(f"phantom + normalization: {time.perf_counter() - t0:.0f} s; phase fractions "
          + ", ".join(f"{n} {f:.3f}" for n, f in zip(NAMES, np.bincount(truth.ravel(), minlength=3) / truth.size)), flush=True)

    base = score(truth, bv.segment.threshold(stack).compute())
    print(f"threshold baseline (multi-Otsu): accuracy {base['accuracy']:.4f}, recall "
          + ", ".join(f"{n} {r:.3f}" for n, r in zip(NAMES, base["recall"])), flush=True)
    results = {"shape": shape, "slices": slices, "budget_s": args.budget, "threshold": base, "runs": {}}

    rng = np.random.default_rng(0)
    sparse_labels = np.stack([scribbles(truth[s], args.scribble_fraction, rng, touch=args.scribbles_touch)
                              for s in slices])
    dense_labels = truth[slices]

    for name in args.runs.split(","):
        kind, kk = name.split("-")
        k = int(kk[1:])
        labels = dense_labels if kind == "dense" else sparse_labels
        opts = {"slices": slices, "preset": args.preset, "epochs": 100000, "batch_size": args.batch_size,
                    "steps_per_epoch": 20, "patience": None, "seed": args.seed, "progress": False, "clock": args.clock,
                    "class_weights": None if args.class_weights == "none" else args.class_weights}
        t1 = time.perf_counter()
        if kind == "interactive":
            # Round 1: two thirds of the pixels as random strokes, a third of the budget.
            rng1 = np.random.default_rng(0)
            labels = np.stack([scribbles(truth[s], args.scribble_fraction * 2 / 3, rng1) for s in slices])
            first = bv.segment.train(stack, labels, k=k, time_limit=args.budget / 3, validation=None, **opts)
            rest = args.budget - first.record["cpu_s" if args.clock == "cpu" else "elapsed_s"] / (
                first.record["threads"] if args.clock == "cpu" else 1)
            # Round 2: the user looks at the 4 predicted slices and paints the last third on
            # the mistakes; training goes on from the first model.
            d = (k - 1) // 2
            n_more = args.scribble_fraction * truth[0].size - (labels != 255).sum(axis=(1, 2)).mean()
            painted, right = 0, 0
            for i, s in enumerate(slices):
                ctx = stack[max(0, s - d) : s + d + 1].compute()
                pred_s = whole_slices(ctx, first)[min(s, d)]
                right += int((pred_s == truth[s]).sum())
                painted += corrections(truth[s], pred_s, n_more, labels[i], rng1)
            print(f"interactive round 1: {first.record['steps']} steps, accuracy on the 4 slices "
                  f"{right / truth[slices].size:.4f}; painted {painted} corrective pixels "
                  f"({painted / truth[slices].size * 100:.2f} %)", flush=True)
            model = bv.segment.train(stack, labels, init=first, time_limit=rest, validation=None, **opts)
        else:
            model = bv.segment.train(stack, labels, k=k, time_limit=args.budget,
                                     validation=0.15 if kind == "dense" else None, **opts)
        t_train = time.perf_counter() - t1
        model.save(os.path.join(work, f"{name}.safetensors"))
        t2 = time.perf_counter()
        pred = bv.segment.predict(stack, model).compute()
        t_pred = time.perf_counter() - t2
        sc = score(truth, pred)
        if args.tta > 1:
            t3 = time.perf_counter()
            sc["tta"] = score(truth, bv.segment.predict(stack, model, tta=args.tta).compute())
            sc["tta"].update(views=args.tta, predict_s=time.perf_counter() - t3)
        rec = model.record
        if kind == "interactive":  # both rounds
            rec = dict(rec, cpu_s=rec["cpu_s"] + first.record["cpu_s"], steps=rec["steps"] + first.record["steps"])
        sc.update(train_s=t_train, train_cpu_s=rec["cpu_s"], steps=rec["steps"], best_epoch=rec["best_epoch"],
                  best_val_accuracy=rec["best_val_accuracy"], predict_s=t_pred,
                  predict_mpx_s=pred.size / t_pred / 1e6, labelled_fraction=float((labels != 255).mean()),
                  amp=rec["options"]["amp"])
        results["runs"][name] = sc
        print(f"\n== {name}: trained {t_train:.0f} s wall, {rec['cpu_s']:.0f} CPU-s ({rec['steps']} steps of {rec['options']['batch_size']}x"
              f"{rec['options']['crop']}^2, bf16 autocast {rec['options']['amp']}), labelled pixels "
              f"{sc['labelled_fraction'] * 100:.2f} % of the 4 slices; predicted {pred.shape} in {t_pred:.0f} s "
              f"({sc['predict_mpx_s']:.2f} MPx/s)")
        print(side_by_side(np.array(sc["cm"]), np.array(base["cm"]),
                           f"SegNet {name} (acc {sc['accuracy']:.4f})", f"threshold (acc {base['accuracy']:.4f})"))
        print(f"per-slice accuracy {sc['slice_accuracy_min']:.4f} .. {sc['slice_accuracy_max']:.4f} "
              f"(threshold {base['slice_accuracy_min']:.4f} .. {base['slice_accuracy_max']:.4f})")
        if "tta" in sc:
            t = sc["tta"]
            print(f"with test-time augmentation ({t['views']} views, predicted in {t['predict_s']:.0f} s): "
                  f"accuracy {t['accuracy']:.4f}, recall " + "/".join(f"{r:.3f}" for r in t["recall"])
                  + f", per-slice {t['slice_accuracy_min']:.4f} .. {t['slice_accuracy_max']:.4f}")
        for label, s_ in (("", sc), (f" with {args.tta} test-time views", sc.get("tta"))):
            if s_ is None:
                continue
            above = [r > b for r, b in zip(s_["recall"], base["recall"])]
            if kind == "dense":
                ok = s_["accuracy"] >= 0.97 and s_["recall"][0] >= 0.90 and all(above)
                print(f"targets{label}: accuracy >= 0.97 {s_['accuracy'] >= 0.97}, pore recall >= 0.90 "
                      f"{s_['recall'][0] >= 0.90}, every recall above threshold's {all(above)} -> "
                      f"{'MET' if ok else 'NOT MET'}", flush=True)
            else:
                print(f"target{label}: accuracy >= 0.95 with {sc['labelled_fraction'] * 100:.2f} % labelled -> "
                      f"{'MET' if s_['accuracy'] >= 0.95 else 'NOT MET'}", flush=True)
    r = results["runs"]
    for kk in ("dense-k3", "dense-k5"):
        if "dense-k1" in r and kk in r:
            print(f"\nk={kk[-1]} vs k=1 on the same budget: pore recall {r[kk]['recall'][0]:.3f} vs "
                  f"{r['dense-k1']['recall'][0]:.3f}, accuracy {r[kk]['accuracy']:.4f} vs "
                  f"{r['dense-k1']['accuracy']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
