"""bigvol's SegNet against the tools users would pick instead, on real labelled greyscale.

The data are the third-party volumes of ``../shared/realdata`` (sources and licences in its
README). For each dataset the same few labelled slices train every method, and every method
is scored on the labelled slices it did not see:

- ``epfl-mito``  EPFL CA1 hippocampus FIB-SEM (Lucchi et al.), 27 slices of 768 x 1024,
  background / mitochondrion; trained on positions 0, 9, 18, 26 (k = 1: the slices are not
  all adjacent), scored on the other 23.
- ``epfl-4``     the same slices with four classes: background / membrane / mitochondrion /
  vesicle.
- ``isbi``       ISBI 2012 serial-section TEM, 20 contiguous slices of 512 x 512, membrane /
  interior; trained on slices 2, 7, 12, 17 with their neighbours (k = 3), scored on the other 16.
- ``nanoct``     battery-electrode nano-CT (SegmentPy), three hand-labelled phases in three
  groups of slices of different shapes; trained on the first slice of each group, scored on
  the other 12.
- ``phantom-a``, ``phantom-b``  ``bv.synth.phantom`` renders with seeds and parameters the
  recipe was not tuned on (smaller / larger particles, more noise, drift, blur, deeper
  shine-through), (48, 384, 384), 4 slices spread along z, k = 5, exact truth.

Methods, in the same run:

- ``segnet``    ``bv.segment.train`` (defaults of this bigvol: preset, skips, class weights,
  early stopping) within ``--budget`` CPU-seconds per thread (``clock="cpu"``), then
  ``bv.segment.predict`` over tiles.
- ``forest``    the ilastik pixel-classification recipe: ``skimage.feature.multiscale_basic_
  features`` (intensity, edges, texture at sigma 1..16) of the slice and, for k = 3, of its
  two neighbours; a scikit-learn random forest of 100 trees on 200 000 labelled pixels
  sampled from the same slices.
- ``bvforest``  bigvol's own forest, ``bv.segment.train_forest`` + ``bv.segment.predict``
  (``segment.method: forest``): the same recipe with the gray values standardized, its
  features computed out of core in strips, its trees walked by a Numba kernel; it should
  score like ``forest`` and predict faster.
- ``otsu``      the multi-Otsu threshold with as many classes, threshold classes assigned one
  to one to label classes so that most training pixels are right.

Reported: pixel accuracy, IoU per class and their mean, training and inference seconds.

Usage::

    python benchmarks/bench_realdata.py [--datasets epfl-mito,isbi,nanoct] [--budget 600]
        [--epochs N] [--methods segnet,forest,otsu] [--skips 0|1] [--tta 4]
        [--train-options JSON] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

import bigvol as bv

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


# -- datasets ------------------------------------------------------------------------------
def load(name: str, root: Path = REALDATA) -> dict:
    """A dataset as groups of (raw stack, label stack), training positions per group, k."""
    if name in ("epfl-mito", "epfl-4"):
        d = root / "fibsem"
        raw = tifffile.imread(d / "epfl_train27_raw.tif")
        mito = tifffile.imread(d / "epfl_train27_label_mito.tif").astype(bool)
        if name == "epfl-mito":
            lab, classes = mito.astype(np.uint8), ["background", "mitochondrion"]
        else:
            lab = np.zeros(raw.shape, np.uint8)
            lab[tifffile.imread(d / "epfl_train27_label_membranes.tif") > 0] = 1
            lab[mito] = 2
            lab[tifffile.imread(d / "epfl_train27_label_vesicles.tif") > 0] = 3
            classes = ["background", "membrane", "mitochondrion", "vesicle"]
        return {"groups": [(raw, lab)], "train": [[0, 9, 18, 26]], "k": 1, "classes": classes}
    if name == "isbi":
        d = root / "em"
        raw = tifffile.imread(d / "isbi2012_raw_00-19.tif")
        lab = tifffile.imread(d / "isbi2012_label_00-19.tif")
        return {"groups": [(raw, lab)], "train": [[2, 7, 12, 17]], "k": 3,
                "classes": ["membrane", "interior"]}
    if name == "nanoct":
        d = root / "nanoct"
        groups = [(tifffile.imread(d / f"segmentpy_{s}_raw.tif"), tifffile.imread(d / f"segmentpy_{s}_label.tif"))
                  for s in ("499x601", "500x500", "400x400")]
        return {"groups": groups, "train": [[0]] * 3, "k": 1,
                "classes": ["particle", "dark phase A", "dark phase B"]}
    if name in PHANTOMS:
        # Renders nobody tuned on: other seeds, particle sizes, noise, drift. Normalized to
        # the middle slice as the pipeline does; 4 slices spread along z, k = 5.
        seed, params = PHANTOMS[name]
        image, truth = bv.synth.phantom((48, 384, 384), seed=seed, **params)
        raw = bv.normalize.match_histograms(image).compute()
        return {"groups": [(raw, truth.compute())], "train": [[6, 18, 30, 42]], "k": 5,
                "classes": ["pore", "SE", "AM"]}
    raise SystemExit(f"unknown dataset {name!r}")


#: Phantom renders for the "does the recipe hold on a simpler stack" check: (seed, params).
PHANTOMS = {
    "phantom-a": (11, {"am_d50_um": 2.5, "noise_level": 1.6, "xy_drift_px": 1.5}),
    "phantom-b": (23, {"am_d50_um": 6.0, "se_fraction": 0.25, "psf_sigma_px": 1.6, "shine_depth_nm": 450.0}),
}


def score(truth: np.ndarray, pred: np.ndarray, n: int) -> dict:
    cm = np.bincount(truth.ravel().astype(np.int64) * n + pred.ravel(), minlength=n * n).reshape(n, n)
    inter = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return {"accuracy": float(inter.sum() / cm.sum()), "iou": iou.tolist(), "mean_iou": float(np.nanmean(iou))}


def _held_out(ds):
    """Per group, the indices of the scored (not trained-on) slices."""
    return [[z for z in range(raw.shape[0]) if z not in tr] for (raw, _), tr in zip(ds["groups"], ds["train"])]


# -- methods ---------------------------------------------------------------------------
def run_segnet(ds, budget: float, seed: int, skips: bool | None, tta: int,
               patience: str | None = None, epochs: int | None = None,
               train_options: dict | None = None) -> tuple[list, dict]:
    import dask.array as da

    k = ds["k"]
    opts = {"k": k, "classes": ds["classes"], "time_limit": budget, "clock": "cpu", "seed": seed,
            "progress": False, "epochs": epochs, **(train_options or {})}
    if skips is not None:
        opts["skips"] = skips
    if patience is not None:
        opts["patience"] = None if patience == "none" else int(patience)
    t0 = time.perf_counter()
    if len(ds["groups"]) == 1:
        raw, lab = ds["groups"][0]
        tr = ds["train"][0]
        model = bv.segment.train(raw, lab[tr], slices=tr, **opts)
    else:  # slices of different shapes: a list of 2D slices (k = 1)
        imgs = [raw[z] for (raw, _), tr in zip(ds["groups"], ds["train"]) for z in tr]
        labs = [lab[z] for (_, lab), tr in zip(ds["groups"], ds["train"]) for z in tr]
        model = bv.segment.train(imgs, labs, **opts)
    t_train = time.perf_counter() - t0
    rec = model.record
    info = {"train_s": t_train, "train_cpu_s": rec["cpu_s"], "steps": rec["steps"],
            "stopped": rec["stopped"], "best_epoch": rec["best_epoch"],
            "skips": bool(model.config.get("skips"))}
    out = {}
    for views in sorted({1, tta}):
        t1 = time.perf_counter()
        preds = [bv.segment.predict(da.from_array(raw, chunks=(4,) + raw.shape[1:]), model, tta=views).compute()
                 for raw, _ in ds["groups"]]
        out["segnet" if views == 1 else f"segnet-tta{views}"] = (
            preds, dict(info, predict_s=time.perf_counter() - t1, tta=views))
    return out


def _features(raw: np.ndarray, z: int, k: int) -> np.ndarray:
    from skimage.feature import multiscale_basic_features

    d = (k - 1) // 2
    idx = np.clip(np.arange(z - d, z + d + 1), 0, raw.shape[0] - 1)
    return np.concatenate([multiscale_basic_features(raw[i].astype(np.float32) / 255.0, sigma_min=1, sigma_max=16)
                           for i in idx], axis=-1)


def run_forest(ds, seed: int, n_samples: int = 200_000) -> tuple[list, dict]:
    from sklearn.ensemble import RandomForestClassifier

    k = ds["k"]
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    X, y = [], []
    for (raw, lab), tr in zip(ds["groups"], ds["train"]):
        for z in tr:
            f = _features(raw, z, k)
            X.append(f.reshape(-1, f.shape[-1]))
            y.append(lab[z].ravel())
    X, y = np.concatenate(X), np.concatenate(y)
    pick = rng.choice(len(y), size=min(n_samples, len(y)), replace=False)
    clf = RandomForestClassifier(n_estimators=100, n_jobs=len(os.sched_getaffinity(0)), random_state=seed)
    clf.fit(X[pick], y[pick])
    del X, y
    t_train = time.perf_counter() - t0
    t1 = time.perf_counter()
    preds = []
    for (raw, _lab), held in zip(ds["groups"], _held_out(ds)):
        p = np.zeros(raw.shape, np.uint8)
        for z in held:
            f = _features(raw, z, k)
            p[z] = clf.predict(f.reshape(-1, f.shape[-1])).reshape(raw.shape[1:])
        preds.append(p)
    return preds, {"train_s": t_train, "predict_s": time.perf_counter() - t1, "n_samples": int(len(pick))}


def run_bvforest(ds, seed: int) -> tuple[list, dict]:
    import dask.array as da

    k = ds["k"]
    t0 = time.perf_counter()
    if len(ds["groups"]) == 1:
        raw, lab = ds["groups"][0]
        tr = ds["train"][0]
        model = bv.segment.train_forest(raw, lab[tr], slices=tr, k=k, classes=ds["classes"],
                                        seed=seed)
    else:
        imgs = [raw[z] for (raw, _), tr in zip(ds["groups"], ds["train"]) for z in tr]
        labs = [lab[z] for (_, lab), tr in zip(ds["groups"], ds["train"]) for z in tr]
        model = bv.segment.train_forest(imgs, labs, classes=ds["classes"], seed=seed)
    t_train = time.perf_counter() - t0
    t1 = time.perf_counter()
    preds = [bv.segment.predict(da.from_array(raw, chunks=(4,) + raw.shape[1:]), model).compute()
             for raw, _ in ds["groups"]]
    return preds, {"train_s": t_train, "predict_s": time.perf_counter() - t1,
                   "oob": model.record["oob_accuracy"]}


def run_otsu(ds, n: int) -> tuple[list, dict]:
    from skimage.filters import threshold_multiotsu

    t0 = time.perf_counter()
    tr_vals = np.concatenate([raw[tr].ravel() for (raw, _), tr in zip(ds["groups"], ds["train"])])
    tr_labs = np.concatenate([lab[tr].ravel() for (_, lab), tr in zip(ds["groups"], ds["train"])])
    thr = threshold_multiotsu(tr_vals, classes=n)
    cls = np.digitize(tr_vals, thr)
    # one threshold class per label class: the assignment that gets most training pixels right
    from scipy.optimize import linear_sum_assignment

    ok = tr_labs < n
    cm = np.bincount(cls[ok].astype(np.int64) * n + tr_labs[ok], minlength=n * n).reshape(n, n)
    rows, cols = linear_sum_assignment(-cm)
    mapping = np.zeros(n, np.uint8)
    mapping[rows] = cols
    preds = [mapping[np.digitize(raw, thr)] for raw, _ in ds["groups"]]
    return preds, {"train_s": time.perf_counter() - t0, "predict_s": 0.0, "thresholds": thr.tolist(),
                   "mapping": mapping.tolist()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="epfl-mito,isbi,nanoct")
    ap.add_argument("--methods", default="segnet,forest,otsu")
    ap.add_argument("--budget", type=float, default=600.0, help="SegNet training CPU-seconds per thread")
    ap.add_argument("--epochs", type=int, default=None,
                    help="SegNet epochs of 50 steps (default: train's, sized to the device); with "
                    "more than fit, --budget ends training (the schedule anneals by time)")
    ap.add_argument("--train-options", default=None, metavar="JSON",
                    help='other bv.segment.train options, e.g. \'{"loss": "ce"}\'')
    ap.add_argument("--skips", type=int, default=None, choices=(0, 1), help="override the SegNet's skips")
    ap.add_argument("--tta", type=int, default=1, choices=(1, 2, 4, 8))
    ap.add_argument("--patience", default=None, help="override train's patience (an int or 'none')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default=str(REALDATA))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import dask
    import torch

    dask.config.set(scheduler="threads")
    root = Path(args.root)
    if not root.is_dir():
        raise SystemExit(f"{root} not found: the real volumes live in ../shared/realdata")
    print(f"# bench_realdata: {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}, "
          f"bigvol {bv.__version__}, SegNet budget {args.budget:.0f} CPU-s/thread, load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    for name in args.datasets.split(","):
        ds = load(name, root)
        n = len(ds["classes"])
        held = _held_out(ds)
        truth = np.concatenate([lab[h].ravel() for (_, lab), h in zip(ds["groups"], held)])
        results[name] = {"classes": ds["classes"], "train": ds["train"], "k": ds["k"]}
        print(f"\n== {name}: classes {ds['classes']}, k={ds['k']}, train {ds['train']}, "
              f"scored on {sum(map(len, held))} slices ({truth.size / 1e6:.1f} MPx)", flush=True)
        for method in args.methods.split(","):
            if method == "segnet":
                runs = run_segnet(ds, args.budget, args.seed,
                                  None if args.skips is None else bool(args.skips), args.tta,
                                  args.patience, args.epochs,
                                  json.loads(args.train_options) if args.train_options else None)
            elif method == "forest":
                runs = {"forest": run_forest(ds, args.seed)}
            elif method == "bvforest":
                runs = {"bvforest": run_bvforest(ds, args.seed)}
            elif method == "otsu":
                runs = {"otsu": run_otsu(ds, n)}
            else:
                raise SystemExit(f"unknown method {method!r}")
            for label, (preds, info) in runs.items():
                pred = np.concatenate([p[h].ravel() for p, h in zip(preds, held)])
                sc = score(truth, pred, n)
                sc.update(info)
                results[name][label] = sc
                print(f"{label:12s} accuracy {sc['accuracy']:.4f}  mean IoU {sc['mean_iou']:.4f}  IoU "
                      + " / ".join(f"{c} {v:.3f}" for c, v in zip(ds["classes"], sc["iou"]))
                      + f"  train {info['train_s']:.0f} s, predict {info['predict_s']:.0f} s"
                      + (f", {info['steps']} steps ({info['stopped']}, best epoch {info['best_epoch']})"
                         if "steps" in info else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
