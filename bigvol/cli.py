"""The ``bigvol`` command: a thin layer over the Python API.

Each subcommand is a pair ``_add_<name>(subparsers)`` / ``_cmd_<name>(args)``; heavy modules
are imported inside the command. Errors caused by the user's input (:class:`BigvolError`)
print one line and exit with status 2, without a traceback. Logging is configured here
only, never on import of the library.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings

from ._version import __version__
from .errors import BigvolError


def _voxel_size_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--voxel-size", nargs=3, type=float, metavar=("Z", "Y", "X"), default=None,
        help="voxel size in nm (z = milling step, y, x = pixel size)",
    )


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


# -- info ---------------------------------------------------------------------------------
def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a run store: arrays, voxel size, stages")
    p.add_argument("run", help="path of the run store (run.zarr)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args) -> int:
    from .store import Run

    info = Run.open(args.run).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    vs = info["voxel_size_nm"]
    print(f"run store    {info['path']}")
    print(f"voxel size   {'unknown' if vs is None else ' x '.join(f'{v:g}' for v in vs) + ' nm (z, y, x)'}")
    print(f"phases       {', '.join(f'{i}={n}' for i, n in enumerate(info['phases']))}")
    print(f"size on disk {_human_bytes(info['bytes_on_disk'])}")
    print("arrays:")
    for name, a in info["arrays"].items():
        state = "" if a["complete"] else "  INCOMPLETE"
        print(
            f"  {name:<16} {tuple(a['shape'])} {a['dtype']:<8} chunks {tuple(a['chunks'])}"
            f"  {_human_bytes(a['bytes_on_disk'])}{state}"
        )
    print("completed stages:" + ("" if info["stages"] else " none"))
    for name, when in info["stages"].items():
        print(f"  {name:<16} {when}")
    return 0


# -- ingest -------------------------------------------------------------------------------
def _size_or_auto(text: str):
    if text.lower() in ("auto", "-"):
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or 'auto': {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return v


def _add_ingest(sub) -> None:
    p = sub.add_parser(
        "ingest",
        help="copy a folder of TIFF slices, a multi-page TIFF or a Zarr array into a run store",
    )
    p.add_argument("source", help="folder of TIFF slices, multi-page TIFF, or Zarr array path")
    p.add_argument("run", help="run store to write (created if missing), e.g. run.zarr")
    p.add_argument(
        "--voxel-size", nargs=3, type=_size_or_auto, metavar=("Z", "Y", "X"), default=None,
        help="voxel size in nm (z = milling step, y, x = pixel size); overrides the files' "
        "metadata; 'auto' takes that entry from the files",
    )
    p.add_argument("--chunks", nargs=3, type=int, metavar=("Z", "Y", "X"), default=None,
                   help="chunks of the array (default 32 512 512, clipped to the shape)")
    p.add_argument("--allow-gaps", action="store_true",
                   help="accept gaps in the slice numbering of a folder")
    p.add_argument("--name", default="raw",
                   help="array name in the store (default raw; 'segmentation' for an existing "
                   "segmentation to measure with bigvol analyze)")
    p.add_argument("--phases", default=None, metavar="NAMES",
                   help="a segmentation's phase names: 'pore,cbd,nmc' (codes 0,1,2) or "
                   "'0=pore,170=cbd,85=nmc' (the file's codes, renumbered 0,1,2 in this order)")
    p.set_defaults(func=_cmd_ingest)


def _cmd_ingest(args) -> int:
    import math
    import time

    from .ingest import ingest
    from .store import Run, StoreError

    stage = "ingest" if args.name == "raw" else f"ingest:{args.name}"
    try:
        before = Run.open(args.run).stage(stage)
    except StoreError:
        before = None
    t0 = time.perf_counter()
    arr = ingest(args.source, args.run, chunks=args.chunks, voxel_size=args.voxel_size,
                 allow_gaps=args.allow_gaps, name=args.name, phases=args.phases)
    dt = time.perf_counter() - t0
    run = Run.open(args.run)
    vs = run.voxel_size
    rec = run.stage(stage) or {}
    if before is not None and rec == before:
        print(f"{args.run}/{args.name} is up to date with {args.source} "
              f"(same files and parameters): nothing to do")
        return 0
    vs_text = "unknown" if vs is None else " x ".join(f"{v:g}" for v in vs) + " nm"
    if vs is not None and rec.get("voxel_size_origin"):
        vs_text += f" ({rec['voxel_size_origin']})"
    n = math.prod(arr.shape)
    print(
        f"ingested {args.source} -> {args.run}/{args.name}: {tuple(arr.shape)} {arr.dtype}, "
        f"chunks {tuple(arr.chunks)}, voxel size {vs_text}, {dt:.1f} s "
        f"({n / max(dt, 1e-9) / 1e6:.1f} MVx/s)"
    )
    return 0



# -- synth --------------------------------------------------------------------------------
def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="write a generated FIB-SEM phantom (raw image + exact truth) into a run store",
        description="Generate bigvol.synth.phantom chunk by chunk and stream it into a run "
        "store as arrays 'raw' and 'truth' (stage 'synth', with the parameters and the true "
        "slice shifts in its record).",
    )
    p.add_argument("run", help="run store to write (created if missing), e.g. phantom.zarr")
    p.add_argument("--shape", nargs=3, type=int, metavar=("Z", "Y", "X"), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunks", nargs=3, type=int, metavar=("Z", "Y", "X"), default=None,
                   help="chunks of the arrays (default 64 256 256, clipped to the shape)")
    p.add_argument("--dtype", choices=("uint8", "uint16"), default="uint8")
    _voxel_size_arg(p)
    for flag in ("shine-through", "edge-brightening", "noise", "blur", "small-pores",
                 "contact-gaps"):
        p.add_argument(f"--no-{flag}", dest=flag.replace("-", "_"), action="store_false",
                       help=f"turn {flag.replace('-', ' ')} off")
    for name, helptext in (
        ("am-fraction", "active-material volume fraction (0.55)"),
        ("am-d50-um", "median active-material particle diameter, um (4)"),
        ("am-gradient", "change of the AM fraction from first to last slice (0)"),
        ("crack-fraction", "fraction of particles with internal cracks (0.1)"),
        ("se-fraction", "solid-electrolyte volume fraction (0.33)"),
        ("se-size-um", "correlation length of the electrolyte network, um (1)"),
        ("curtaining", "std of the vertical stripes, fraction of gray range (0.03; 0 = off)"),
        ("brightness-drift", "amplitude of the gain/offset drift along z (0.2; 0 = off)"),
        ("xy-drift-px", "std of the slice-to-slice drift step, px (0 = off)"),
    ):
        p.add_argument(f"--{name}", type=float, default=None, help=helptext)
    p.add_argument("--scheduler", default="threads",
                   help="threads (default), synchronous, processes, or a scheduler address")
    p.add_argument("--workers", type=int, default=None, help="threads or worker processes")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args) -> int:
    import math
    import time

    import dask.array as da

    from . import synth
    from .cluster import compute_context
    from .store import Run, fingerprint

    params = {
        k: getattr(args, k)
        for k in ("shine_through", "edge_brightening", "noise", "blur", "small_pores",
                  "contact_gaps", "am_fraction", "am_d50_um", "am_gradient", "crack_fraction",
                  "se_fraction", "se_size_um", "curtaining", "brightness_drift", "xy_drift_px")
        if getattr(args, k) is not None
    }
    if args.voxel_size is not None:
        params["voxel_size"] = tuple(args.voxel_size)
    shape = tuple(args.shape)
    full = synth.parameters(shape=shape, seed=args.seed, dtype=args.dtype, **params)
    image, truth = synth.phantom(shape, seed=args.seed, chunks=args.chunks, dtype=args.dtype,
                                 **params)
    chunks = tuple(c[0] for c in image.chunks)
    fp = fingerprint("synth", full, chunks)
    run = Run.create(args.run, voxel_size=full["voxel_size"])
    if run.stage("synth") and run.stage("synth").get("fingerprint") == fp \
            and run.is_complete("raw") and run.is_complete("truth"):
        print(f"{args.run} already holds this phantom (same parameters): nothing to do")
        return 0
    run.forget_stage("synth")
    arrays = [
        run.create_array(name, shape=shape, dtype=a.dtype, chunks=chunks)
        for name, a in (("raw", image), ("truth", truth))
    ]
    t0 = time.perf_counter()
    # one pass: the image and the truth of a chunk come from the same task
    with compute_context(args.scheduler, workers=args.workers):
        da.store([image, truth], arrays, lock=False)
    dt = time.perf_counter() - t0
    run.mark_complete("raw")
    run.mark_complete("truth")
    shifts = synth.true_shifts(shape, seed=args.seed, xy_drift_px=full["xy_drift_px"])
    run.record_stage("synth", parameters=full, fingerprint=fp, outputs=("raw", "truth"),
                     extra={"true_shifts": shifts.tolist()})
    n = math.prod(shape)
    print(f"phantom {shape} {args.dtype} seed {args.seed} -> {args.run} (raw, truth), "
          f"chunks {chunks}, {dt:.1f} s ({n / max(dt, 1e-9) / 1e6:.1f} MVx/s)")
    return 0


# -- run / demo / analyze (the pipeline) ----------------------------------------------------
def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run the whole method from a YAML config (resumable)")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--scheduler", default=None,
                   help="threads | processes | ADDRESS of a Dask scheduler (overrides compute.scheduler)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set segment.method=threshold (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)


def _run_pipeline(config, overrides, quiet) -> int:
    from .pipeline import output_paths, run

    path = run(config, overrides=overrides, progress=not quiet)
    paths = output_paths(path)
    print(f"run store: {path}")
    for key in ("metrics_json", "metrics_csv", "report"):
        if paths[key].exists():
            print(f"{key.replace('_', ' ')}: {paths[key]}")
    return 0


def _cmd_run(args) -> int:
    from .config import parse_overrides

    over = parse_overrides(args.overrides)
    if args.scheduler:
        over.setdefault("compute", {})["scheduler"] = args.scheduler
    return _run_pipeline(args.config, over, args.quiet)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole method on a generated phantom, report at the end")
    p.add_argument("--out", default="bigvol-demo", help="output folder (default ./bigvol-demo)")
    p.add_argument("--shape", nargs=3, type=int, metavar=("Z", "Y", "X"), default=None,
                   help="phantom shape (default from configs/demo.yaml)")
    p.add_argument("--scheduler", default=None, help="threads | processes | ADDRESS")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from pathlib import Path

    from .config import parse_overrides
    from .pipeline import demo_config

    cfg = demo_config(Path(args.out))
    over = parse_overrides(args.overrides)
    if args.shape:
        over.setdefault("input", {}).setdefault("phantom", {})["shape"] = list(args.shape)
    if args.scheduler:
        over.setdefault("compute", {})["scheduler"] = args.scheduler
    return _run_pipeline(cfg, over, args.quiet)


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="structure metrics of a run's segmentation -> metrics.json/csv")
    p.add_argument("run", help="run store with a 'segmentation' array")
    p.add_argument("--axis", type=int, default=1, help="electrode thickness axis (0 z, 1 y, 2 x; default 1)")
    p.add_argument("--connectivity", type=int, default=26, choices=(6, 18, 26))
    p.add_argument("--faces", default="both", choices=("both", "either", "low", "high"))
    p.add_argument("--no-tortuosity", action="store_true", help="skip the tortuosity solve")
    p.add_argument("--scheduler", default="threads", help="threads | processes | ADDRESS")
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args) -> int:
    from .pipeline import analyze_run

    m, paths = analyze_run(
        args.run, axis=args.axis, connectivity=args.connectivity, faces=args.faces,
        tortuosity=not args.no_tortuosity, scheduler=args.scheduler,
    )
    for name, v in m.get("volume_fractions", {}).items():
        print(f"volume fraction {name:<18} {v:.4f}")
    for name, v in m.get("isolated_fraction", {}).items():
        print(f"isolated fraction {name:<16} {v:.4f}")
    print(f"metrics: {paths['metrics_json']}, {paths['metrics_csv']}")
    return 0


# -- train / segment (SegNet) -----------------------------------------------------------------
def _default_image_array(run) -> str:
    return "normalized" if run.is_complete("normalized") else "raw"


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train the SegNet on labelled slices of a run store")
    p.add_argument("run", help="run store (run.zarr)")
    p.add_argument("--labels", nargs="+", required=True,
                   help="label images (TIFF/PNG, one per slice; 255 = unlabelled), one multi-page "
                   "TIFF, a folder of them, or 'truth' for the store's ground-truth array")
    p.add_argument("--slices", nargs="+", type=int, required=True,
                   help="indices of the labelled slices, in the order of --labels")
    p.add_argument("--array", default=None, help="image array (default normalized, else raw)")
    p.add_argument("--out", default=None,
                   help="model file to write (default <run>.model beside the store)")
    p.add_argument("--k", type=int, default=None,
                   help="adjacent slices as input (odd; default 1, or the --init model's)")
    p.add_argument("--preset", default="slim", choices=("slim", "paper", "tiny"))
    p.add_argument("--classes", default=None, metavar="NAMES",
                   help="class names, comma-separated, index = label code (default the run's "
                   "phases, e.g. background,mitochondrion for two classes)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="fine-tune this model file (after painting corrections, or on a new volume)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from pathlib import Path

    import numpy as np

    from .segment.train import read_labels, train
    from .store import Run, fingerprint

    run = Run.open(args.run, mode="r+")
    name = args.array or _default_image_array(run)
    stack = run.read(name)
    if args.labels == ["truth"]:
        truth = run.zarr_array("truth")
        labels = np.stack([truth[s] for s in args.slices])
    else:
        labels = read_labels(args.labels[0] if len(args.labels) == 1 else args.labels, args.slices)
    out = Path(args.out) if args.out else Path(str(Path(args.run)).rstrip("/").removesuffix(".zarr") + ".model")
    params = {
        "array": name, "labels": args.labels, "slices": args.slices, "k": args.k,
        "preset": args.preset, "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
        "crop": args.crop, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "time_limit": args.time_limit, "init": args.init, "classes": args.classes,
    }
    classes = ([c.strip() for c in args.classes.split(",")] if args.classes
               else (None if args.init else run.phases))
    model = train(
        stack, labels, slices=args.slices, k=args.k, preset=args.preset, epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, crop=args.crop, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, time_limit=args.time_limit, device=args.device,
        progress=not args.quiet, init=args.init, classes=classes,
    )
    model.save(out)
    rec = model.record
    run.record_stage("train", parameters=params, fingerprint=fingerprint(params, model.digest),
                     outputs=[], extra={"model": str(out), "model_digest": model.digest})
    acc = rec.get("best_val_accuracy")
    print(
        f"trained {model!r} in {rec['elapsed_s']:.0f} s ({rec['steps']} steps, {rec['stopped']}); "
        f"validation accuracy {'n/a' if acc is None else f'{acc:.4f}'} -> {out}"
    )
    return 0


def _add_segment(sub) -> None:
    p = sub.add_parser("segment", help="segment every slice of a run store with a trained SegNet")
    p.add_argument("run", help="run store (run.zarr)")
    p.add_argument("--model", required=True, help="model file written by 'bigvol train'")
    p.add_argument("--array", default=None, help="image array (default normalized, else raw)")
    p.add_argument("--tile", type=int, default=None, help="tile side in px (default 256 CPU, 512 GPU)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in px (default tile/4)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--probabilities", action="store_true",
                   help="also write the float16 class probabilities (c, z, y, x)")
    p.add_argument("--tta", type=int, default=1, choices=(1, 2, 4, 8),
                   help="test-time augmentation: views averaged per tile (4: mirrored in y, x, "
                   "both; 8: also quarter turns), at that many times the cost (default 1)")
    p.add_argument("--scheduler", default="threads", help="threads | processes | ADDRESS")
    p.set_defaults(func=_cmd_segment)


def _cmd_segment(args) -> int:
    import math
    import time

    from .cluster import compute_context
    from .segment import Model, predict
    from .store import Run, fingerprint

    run = Run.open(args.run, mode="r+")
    name = args.array or _default_image_array(run)
    stack = run.read(name)
    model = Model.load(args.model)
    params = {"array": name, "model_digest": model.digest, "tile": args.tile,
              "overlap": args.overlap, "probabilities": args.probabilities, "tta": args.tta}
    fp = fingerprint(params, run.zarr_array(name).attrs.get("bigvol", {}).get("fingerprint"))
    t0 = time.perf_counter()
    outputs = ["segmentation"]
    with compute_context(args.scheduler):
        if args.probabilities:
            proba = predict(stack, model, tile=args.tile, overlap=args.overlap,
                            device=args.device, probabilities=True, tta=args.tta)
            run.write("probabilities", proba, chunks=(proba.shape[0],) + tuple(c[0] for c in stack.chunks),
                      fingerprint=fp)
            # Codes from the stored probabilities: the network runs once.
            p = run.read("probabilities")
            seg = p.map_blocks(lambda b: b.argmax(0).astype("uint8"), drop_axis=0, dtype="uint8")
            outputs.append("probabilities")
        else:
            seg = predict(stack, model, tile=args.tile, overlap=args.overlap, device=args.device,
                          tta=args.tta)
        run.write("segmentation", seg, fingerprint=fp)
    run.phases = model.classes  # the codes now mean the model's classes
    dt = time.perf_counter() - t0
    run.record_stage("segment", parameters=params, fingerprint=fp, outputs=outputs,
                     extra={"model": str(args.model)})
    n = math.prod(stack.shape)
    print(f"segmented {args.run}/{name} {tuple(stack.shape)} -> segmentation in {dt:.1f} s "
          f"({n / max(dt, 1e-9) / 1e6:.2f} MPx/s) with {model!r}")
    return 0


# -- preprocessing: normalize / align / destripe --------------------------------------------
def _add_preprocess_common(p, default_output: str) -> None:
    p.add_argument("run", help="run store (run.zarr)")
    p.add_argument("--input", default="raw", help="array to read (default raw)")
    p.add_argument("--output", default=default_output,
                   help=f"array to write (default {default_output})")
    p.add_argument("--scheduler", default="threads", help="threads | processes | ADDRESS")


def _preprocess_open(args):
    from .errors import InputError
    from .store import Run

    run = Run.open(args.run, mode="r+")
    if args.output == args.input:
        raise InputError(f"--output {args.output!r} would overwrite the input; inputs are never modified")
    stack = run.read(args.input)
    upstream = run.zarr_array(args.input).attrs.get("bigvol", {}).get("fingerprint")
    return run, stack, upstream


def _add_normalize(sub) -> None:
    p = sub.add_parser(
        "normalize",
        help="map every slice's brightness/contrast onto a reference slice (histogram or percentile)",
    )
    _add_preprocess_common(p, "normalized")
    p.add_argument("--method", default="histogram", choices=("histogram", "percentile"))
    p.add_argument("--reference", nargs="+", type=int, default=None, metavar="Z",
                   help="reference slice index, or START STOP (a pooled range); default the middle slice")
    p.add_argument("--percentiles", nargs=2, type=float, default=(1.0, 99.0), metavar=("LO", "HI"),
                   help="percentiles of the percentile method (default 1 99)")
    p.add_argument("--smooth", type=int, default=None, metavar="N",
                   help="running median of the per-slice mapping over N (odd) slices")
    p.set_defaults(func=_cmd_normalize)


def _cmd_normalize(args) -> int:
    import math
    import time

    from . import normalize
    from .cluster import compute_context
    from .errors import InputError
    from .store import fingerprint

    run, stack, upstream = _preprocess_open(args)
    ref = args.reference
    if ref is not None:
        if len(ref) > 2:
            raise InputError(f"--reference takes one slice index or START STOP, got {ref}")
        ref = ref[0] if len(ref) == 1 else tuple(ref)
    params = {"input": args.input, "method": args.method, "reference": ref,
              "percentiles": list(args.percentiles), "smooth": args.smooth}
    fp = fingerprint("normalize", params, upstream)
    t0 = time.perf_counter()
    with compute_context(args.scheduler):
        fit = normalize.fit_lookup_tables(
            stack, reference=ref, method=args.method, percentiles=args.percentiles,
            smooth=args.smooth,
        )
        out = normalize.apply_lookup_tables(stack, fit["luts"])
        stats = {"before": normalize.statistics_to_lists(fit["before"]),
                 "after": normalize.statistics_to_lists(fit["after"])}
        run.write(args.output, out, chunks=tuple(c[0] for c in stack.chunks), fingerprint=fp,
                  attrs={"bigvol_normalize": {**params, "slice_statistics": stats}})
    dt = time.perf_counter() - t0
    run.record_stage("normalize" if args.output == "normalized" else f"normalize:{args.output}",
                     parameters=params, fingerprint=fp, outputs=[args.output],
                     extra={"slice_statistics": stats})
    n = math.prod(stack.shape)
    drift = (max(stats["before"]["mean"]) - min(stats["before"]["mean"]),
             max(stats["after"]["mean"]) - min(stats["after"]["mean"]))
    print(f"normalized {args.run}/{args.input} {tuple(stack.shape)} -> {args.output} "
          f"({args.method}) in {dt:.1f} s ({n / max(dt, 1e-9) / 1e6:.1f} MVx/s); range of slice "
          f"means {drift[0]:.1f} -> {drift[1]:.1f} gray levels")
    return 0


def _add_align(sub) -> None:
    p = sub.add_parser("align", help="remove slice-to-slice drift (phase cross-correlation)")
    _add_preprocess_common(p, "aligned")
    p.add_argument("--crop", type=int, default=512,
                   help="side of the central region registered, px (0 = whole slice; default 512)")
    p.add_argument("--downsample", type=int, default=1, help="block-average factor before registration")
    p.add_argument("--upsample", type=int, default=20, help="subpixel factor (default 20: 1/20 px)")
    p.add_argument("--detrend", default="linear", choices=("linear", "mean", "none"),
                   help="drift removal: subtract the linear trend (default) or the mean of the shifts")
    p.add_argument("--order", type=int, default=1, choices=(0, 1), help="interpolation: 0 nearest, 1 linear")
    p.add_argument("--mode", default="nearest", choices=("nearest", "constant", "reflect"),
                   help="fill of pixels shifted in from outside the slice")
    p.set_defaults(func=_cmd_align)


def _cmd_align(args) -> int:
    import math
    import time

    import numpy as np

    from . import align
    from .cluster import compute_context
    from .store import fingerprint

    run, stack, upstream = _preprocess_open(args)
    detrend = None if args.detrend == "none" else args.detrend
    params = {"input": args.input, "crop": args.crop or None, "downsample": args.downsample,
              "upsample_factor": args.upsample, "detrend": detrend, "order": args.order,
              "mode": args.mode}
    fp = fingerprint("align", params, upstream)
    t0 = time.perf_counter()
    with compute_context(args.scheduler):
        shifts = np.asarray(align.estimate_shifts(
            stack, crop=args.crop or None, downsample=args.downsample,
            upsample_factor=args.upsample, detrend=detrend,
        ))
        out = align.apply_shifts(stack, shifts, order=args.order, mode=args.mode)
        shifts_list = shifts.tolist()
        run.write(args.output, out, chunks=tuple(c[0] for c in stack.chunks), fingerprint=fp,
                  attrs={"bigvol_align": {**params, "shifts_px": shifts_list}})
    dt = time.perf_counter() - t0
    run.record_stage("align" if args.output == "aligned" else f"align:{args.output}",
                     parameters=params, fingerprint=fp, outputs=[args.output],
                     extra={"shifts_px": shifts_list})
    n = math.prod(stack.shape)
    print(f"aligned {args.run}/{args.input} {tuple(stack.shape)} -> {args.output} in {dt:.1f} s "
          f"({n / max(dt, 1e-9) / 1e6:.1f} MVx/s); largest shift {np.abs(shifts).max():.2f} px "
          f"(shifts in {args.output}.attrs['bigvol_align']['shifts_px'])")
    return 0


def _add_destripe(sub) -> None:
    p = sub.add_parser("destripe", help="remove curtaining stripes (running along y)")
    _add_preprocess_common(p, "destriped")
    p.add_argument("--method", default="column", choices=("column", "wavelet-fft"))
    p.add_argument("--strength", type=float, default=1.0, help="fraction of the stripes removed (0-1)")
    p.add_argument("--max-width", type=float, default=None,
                   help="column method: only remove stripes narrower than about this many px")
    p.add_argument("--classes", type=int, default=3, help="column method: gray-level classes (phases)")
    p.add_argument("--sigma", type=float, default=2.0, help="wavelet-fft: damping width")
    p.add_argument("--wavelet", default="db10", help="wavelet-fft: PyWavelets wavelet")
    p.set_defaults(func=_cmd_destripe)


def _cmd_destripe(args) -> int:
    import math
    import time

    from . import destripe
    from .cluster import compute_context
    from .store import fingerprint

    run, stack, upstream = _preprocess_open(args)
    params = {"input": args.input, "method": args.method, "strength": args.strength,
              "max_width": args.max_width, "classes": args.classes, "sigma": args.sigma,
              "wavelet": args.wavelet}
    fp = fingerprint("destripe", params, upstream)
    t0 = time.perf_counter()
    with compute_context(args.scheduler):
        out = destripe.destripe(stack, method=args.method, strength=args.strength,
                                max_width=args.max_width, classes=args.classes,
                                sigma=args.sigma, wavelet=args.wavelet)
        run.write(args.output, out, chunks=tuple(c[0] for c in stack.chunks), fingerprint=fp,
                  attrs={"bigvol_destripe": params})
    dt = time.perf_counter() - t0
    run.record_stage("destripe" if args.output == "destriped" else f"destripe:{args.output}",
                     parameters=params, fingerprint=fp, outputs=[args.output])
    n = math.prod(stack.shape)
    print(f"destriped {args.run}/{args.input} {tuple(stack.shape)} -> {args.output} "
          f"({args.method}) in {dt:.1f} s ({n / max(dt, 1e-9) / 1e6:.1f} MVx/s)")
    return 0


# -- label ----------------------------------------------------------------------------------
def _add_label(sub) -> None:
    p = sub.add_parser(
        "label", help="connected components of a run's segmentation -> labels/<phase>"
    )
    p.add_argument("run", help="run store with a 'segmentation' array")
    p.add_argument(
        "--phase", default="all",
        help="phase code or name, or 'all' (every phase, pores included, in one pass; "
        "written to labels/all). Default: all",
    )
    p.add_argument("--connectivity", type=int, default=26, choices=(6, 18, 26))
    p.set_defaults(func=_cmd_label)


def _cmd_label(args) -> int:
    from .label import write_labels
    from .store import Run

    name, n = write_labels(Run.open(args.run, mode="r+"), args.phase, connectivity=args.connectivity)
    print(f"{n} components ({args.connectivity}-connected) -> {args.run}/{name}")
    return 0


# -- report / compare -----------------------------------------------------------------------
def _add_report(sub) -> None:
    p = sub.add_parser("report", help="write the self-contained HTML report of a run")
    p.add_argument("run", help="path of the run store (RUN.zarr)")
    p.add_argument("--metrics", default=None,
                   help="metrics JSON (default: RUN.metrics.json beside the store, if any)")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN.report.html)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    from .report import write_report

    out = write_report(args.run, args.metrics, args.out)
    print(f"report: {out}")
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare", help="join the metrics of several runs with measured cell properties"
    )
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run stores (RUN.zarr, metrics read from RUN.metrics.json) or metrics JSON")
    p.add_argument("--properties", required=True,
                   help="CSV with a 'run' or 'cell' column and numeric cell properties")
    p.add_argument("--out", default=".", help="output folder (default: current folder)")
    p.add_argument("--metric", action="append", default=None, dest="metrics",
                   help="metric column to correlate (repeatable; default: every structure "
                   "metric that varies between runs)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    import warnings

    from .compare import compare

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        table = compare(args.runs, args.properties, out=args.out, metrics=args.metrics)
    for w in caught:
        print(f"bigvol compare: warning: {w.message}", file=sys.stderr)
    print(f"{len(table['run'])} runs joined -> {args.out}/compare.csv, compare_correlations.csv, "
          "compare.png, compare.html")
    return 0


# Subcommands in the order ``bigvol --help`` lists them.
_COMMANDS = [_add_demo, _add_run, _add_synth, _add_ingest, _add_info, _add_analyze, _add_train, _add_segment, _add_label, _add_report, _add_compare, _add_align, _add_destripe, _add_normalize]


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"bigvol: warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bigvol",
        description="FIB-SEM volumes of battery electrodes -> 3-phase segmentation -> structure metrics",
    )
    parser.add_argument("--version", action="version", version=f"bigvol {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # user-facing warnings as one plain line; -v shows the usual source locations
        warnings.showwarning = _show_warning
    try:
        return int(args.func(args) or 0)
    except BigvolError as e:
        print(f"bigvol {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bigvol {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
