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


# -- ingest / synth ---------------------------------------------------------------------
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


# -- stage commands: parse the arguments, call the stage (bigvol.stages), print a line ------
def _opt(p, model, field: str, *flags, help: str = "", **kw) -> None:
    """A flag for an option of ``model``; its default is the model's (the function's)."""
    default = model.model_fields[field].default
    shown = "off" if default is None else default
    p.add_argument(*flags, dest=field, default=argparse.SUPPRESS,
                   help=f"{help} (default {shown})".strip(), **kw)


def _options(args, model, **given):
    """The ``model`` of the flags given; the others keep the model's defaults."""
    opts = {k: v for k, v in vars(args).items() if k in model.model_fields}
    return model(**{**opts, **given})


def _done(outcome, what: str, args, seconds_of=None) -> int:
    if outcome.skipped:
        print(f"{args.run}: {outcome.name} is up to date (same inputs and parameters): "
              "nothing to do")
    else:
        print(f"{what} in {outcome.seconds:.1f} s")
    return 0


def _rate(shape, seconds) -> str:
    import math

    return f"{math.prod(shape) / max(seconds, 1e-9) / 1e6:.1f} MVx/s"


def _cmd_ingest(args) -> int:
    from . import stages
    from .store import Run

    out = stages.ingest(args.run, args.source, name=args.name, chunks=args.chunks,
                        voxel_size=args.voxel_size, allow_gaps=args.allow_gaps,
                        phases=args.phases)
    if out.skipped:
        print(f"{args.run}/{args.name} is up to date with {args.source} "
              f"(same files and parameters): nothing to do")
        return 0
    run = Run.open(args.run)
    arr, vs, rec = run.zarr_array(args.name), run.voxel_size, out.record
    vs_text = "unknown" if vs is None else " x ".join(f"{v:g}" for v in vs) + " nm"
    if vs is not None and rec.get("voxel_size_origin"):
        vs_text += f" ({rec['voxel_size_origin']})"
    print(f"ingested {args.source} -> {args.run}/{args.name}: {tuple(arr.shape)} {arr.dtype}, "
          f"chunks {tuple(arr.chunks)}, voxel size {vs_text}, {out.seconds:.1f} s "
          f"({_rate(arr.shape, out.seconds)})")
    return 0


def _cmd_synth(args) -> int:
    from . import stages
    from .cluster import compute_context
    from .store import Run

    params = {
        k: getattr(args, k)
        for k in ("shine_through", "edge_brightening", "noise", "blur", "small_pores",
                  "contact_gaps", "am_fraction", "am_d50_um", "am_gradient", "crack_fraction",
                  "se_fraction", "se_size_um", "curtaining", "brightness_drift", "xy_drift_px")
        if getattr(args, k) is not None
    }
    if args.voxel_size is not None:
        params["voxel_size"] = tuple(args.voxel_size)
    from . import synth

    synth.parameters(shape=tuple(args.shape), seed=args.seed, dtype=args.dtype, **params)
    run = Run.create(args.run)
    with compute_context(args.scheduler, workers=args.workers):
        out = stages.synth(run, shape=args.shape, seed=args.seed, chunks=args.chunks,
                           dtype=args.dtype, **params)
    if out.skipped:
        print(f"{args.run} already holds this phantom (same parameters): nothing to do")
        return 0
    chunks = run.zarr_array("raw").chunks
    print(f"phantom {tuple(args.shape)} {args.dtype} seed {args.seed} -> {args.run} (raw, "
          f"truth), chunks {tuple(chunks)}, {out.seconds:.1f} s "
          f"({_rate(args.shape, out.seconds)})")
    return 0


# -- train / segment (SegNet) -----------------------------------------------------------
def _add_train(sub) -> None:
    from .options import TrainOptions as T

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
    p.add_argument("--classes", default=None, metavar="NAMES",
                   help="class names, comma-separated, index = label code (default the run's "
                   "phases, e.g. background,mitochondrion for two classes)")
    _opt(p, T, "k", "--k", type=int,
         help="adjacent slices as input (odd; off = 1, or the --init model's)")
    _opt(p, T, "preset", "--preset", choices=("slim", "paper", "tiny"))
    _opt(p, T, "epochs", "--epochs", type=int)
    _opt(p, T, "steps_per_epoch", "--steps-per-epoch", type=int)
    _opt(p, T, "crop", "--crop", type=int, help="side of the training patches, px")
    _opt(p, T, "batch_size", "--batch-size", type=int)
    _opt(p, T, "lr", "--lr", type=float, help="peak learning rate")
    _opt(p, T, "seed", "--seed", type=int)
    _opt(p, T, "time_limit", "--time-limit", type=float, help="stop after this many seconds")
    _opt(p, T, "device", "--device", choices=("auto", "cpu", "cuda"))
    _opt(p, T, "init", "--init", metavar="MODEL",
         help="fine-tune this model file (after painting corrections, or on a new volume)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from . import stages
    from .options import TrainOptions
    from .store import Run

    run = Run.open(args.run, mode="r+")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    labels = "truth" if args.labels == ["truth"] else args.labels
    out = stages.train(run, labels, args.slices, options=_options(args, TrainOptions),
                       classes=classes, image=args.array, out=args.out,
                       progress=not args.quiet)
    r = out.results
    if out.skipped:
        print(f"{args.run}: the model {r['model']} is up to date (same images, labels and "
              "options): nothing to do")
        return 0
    acc = r.get("best_val_accuracy")
    print(f"trained {len(r['classes'])} classes in {r['elapsed_s']:.0f} s ({r['steps']} steps, "
          f"{r['stopped']}); validation accuracy {'n/a' if acc is None else f'{acc:.4f}'} "
          f"-> {r['model']}")
    return 0


def _add_segment(sub) -> None:
    from .options import PredictOptions as P

    p = sub.add_parser("segment", help="segment every slice of a run store with a trained SegNet")
    p.add_argument("run", help="run store (run.zarr)")
    p.add_argument("--model", required=True, help="model file written by 'bigvol train'")
    p.add_argument("--array", default=None, help="image array (default normalized, else raw)")
    _opt(p, P, "tile", "--tile", type=int, help="tile side in px (off: 256 CPU, 512 GPU)")
    _opt(p, P, "overlap", "--overlap", type=int, help="tile overlap in px (off: tile/4)")
    _opt(p, P, "device", "--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--probabilities", action="store_true",
                   help="also write the float16 class probabilities (c, z, y, x)")
    _opt(p, P, "tta", "--tta", type=int, choices=(1, 2, 4, 8),
         help="test-time augmentation: views averaged per tile (4: mirrored in y, x, both; "
         "8: also quarter turns), at that many times the cost")
    p.add_argument("--scheduler", default="threads", help="threads | processes | ADDRESS")
    p.set_defaults(func=_cmd_segment)


def _cmd_segment(args) -> int:
    from . import stages
    from .cluster import compute_context
    from .options import PredictOptions
    from .store import Run

    run = Run.open(args.run, mode="r+")
    with compute_context(args.scheduler):
        out = stages.segment(run, model=args.model, options=_options(args, PredictOptions),
                             probabilities=args.probabilities, image=args.array)
    shape = run.zarr_array("segmentation").shape
    return _done(out, f"segmented {args.run}/{out.record['parameters']['image']} {shape} -> "
                      f"segmentation ({_rate(shape, out.seconds)})", args)


# -- preprocessing: normalize / align / destripe ----------------------------------------
def _add_preprocess_common(p, default_output: str) -> None:
    p.add_argument("run", help="run store (run.zarr)")
    p.add_argument("--input", default="raw", help="array to read (default raw)")
    p.add_argument("--output", default=default_output,
                   help=f"array to write (default {default_output})")
    p.add_argument("--scheduler", default="threads", help="threads | processes | ADDRESS")


def _preprocess(args, step: str, options) -> tuple:
    from . import stages
    from .cluster import compute_context
    from .store import Run

    run = Run.open(args.run, mode="r+")
    with compute_context(args.scheduler):
        out = stages.preprocess(run, [(step, options)], source=args.input, output=args.output)
    return run, out


def _add_normalize(sub) -> None:
    from .options import NormalizeOptions as N

    p = sub.add_parser(
        "normalize",
        help="map every slice's brightness/contrast onto a reference slice (histogram or percentile)",
    )
    _add_preprocess_common(p, "normalized")
    _opt(p, N, "method", "--method", choices=("histogram", "percentile"))
    _opt(p, N, "reference", "--reference", nargs="+", type=int, metavar="Z",
         help="reference slice index, or START STOP (a pooled range); off = the middle slice")
    _opt(p, N, "percentiles", "--percentiles", nargs=2, type=float, metavar=("LO", "HI"),
         help="percentiles of the percentile method")
    _opt(p, N, "smooth", "--smooth", type=int, metavar="N",
         help="running median of the per-slice mapping over N (odd) slices")
    p.set_defaults(func=_cmd_normalize)


def _cmd_normalize(args) -> int:
    from .errors import InputError
    from .options import NormalizeOptions

    ref = getattr(args, "reference", None)
    if ref is not None:
        if len(ref) > 2:
            raise InputError(f"--reference takes one slice index or START STOP, got {ref}")
        ref = ref[0] if len(ref) == 1 else tuple(ref)
    run, out = _preprocess(args, "normalize", _options(args, NormalizeOptions, reference=ref))
    st = out.results
    drift = [max(st[k]["mean"]) - min(st[k]["mean"])
             for k in ("statistics_before", "statistics_after")]
    shape = run.zarr_array(args.output).shape
    return _done(out, f"normalized {args.run}/{args.input} {shape} -> {args.output} "
                      f"({_rate(shape, out.seconds)}); range of slice means {drift[0]:.1f} -> "
                      f"{drift[1]:.1f} gray levels", args)


def _add_align(sub) -> None:
    from .options import AlignOptions as A

    p = sub.add_parser("align", help="remove slice-to-slice drift (phase cross-correlation)")
    _add_preprocess_common(p, "aligned")
    _opt(p, A, "crop", "--crop", type=int,
         help="side of the central region registered, px (0 = whole slice)")
    _opt(p, A, "downsample", "--downsample", type=int, help="block-average factor before registration")
    _opt(p, A, "upsample_factor", "--upsample", type=int, help="subpixel factor (20: 1/20 px)")
    _opt(p, A, "detrend", "--detrend", choices=("linear", "mean", "none"),
         help="drift removal: subtract the linear trend or the mean of the shifts")
    _opt(p, A, "order", "--order", type=int, choices=(0, 1), help="interpolation: 0 nearest, 1 linear")
    _opt(p, A, "mode", "--mode", choices=("nearest", "constant", "reflect"),
         help="fill of pixels shifted in from outside the slice")
    p.set_defaults(func=_cmd_align)


def _cmd_align(args) -> int:
    import numpy as np

    from .options import AlignOptions

    given = {}
    if getattr(args, "crop", None) == 0:
        given["crop"] = None
    if getattr(args, "detrend", None) == "none":
        given["detrend"] = None
    run, out = _preprocess(args, "align", _options(args, AlignOptions, **given))
    shape = run.zarr_array(args.output).shape
    largest = float(np.abs(np.asarray(out.results["shifts_px"])).max())
    return _done(out, f"aligned {args.run}/{args.input} {shape} -> {args.output} "
                      f"({_rate(shape, out.seconds)}); largest shift {largest:.2f} px (in the "
                      f"stage record: bigvol info --json)", args)


def _add_destripe(sub) -> None:
    from .options import DestripeOptions as D

    p = sub.add_parser("destripe", help="remove curtaining stripes (running along y)")
    _add_preprocess_common(p, "destriped")
    _opt(p, D, "method", "--method", choices=("column", "wavelet-fft"))
    _opt(p, D, "strength", "--strength", type=float, help="fraction of the stripes removed (0-1)")
    _opt(p, D, "max_width", "--max-width", type=float,
         help="column method: only remove stripes narrower than about this many px")
    _opt(p, D, "classes", "--classes", type=int, help="column method: gray-level classes (phases)")
    _opt(p, D, "sigma", "--sigma", type=float, help="wavelet-fft: damping width")
    _opt(p, D, "wavelet", "--wavelet", help="wavelet-fft: PyWavelets wavelet")
    p.set_defaults(func=_cmd_destripe)


def _cmd_destripe(args) -> int:
    from .options import DestripeOptions

    opts = _options(args, DestripeOptions)
    run, out = _preprocess(args, "destripe", opts)
    shape = run.zarr_array(args.output).shape
    return _done(out, f"destriped {args.run}/{args.input} {shape} -> {args.output} "
                      f"({opts.method}, {_rate(shape, out.seconds)})", args)


def _cmd_label(args) -> int:
    from . import stages
    from .store import Run

    out = stages.label(Run.open(args.run, mode="r+"), args.phase, connectivity=args.connectivity)
    r = out.results
    print(f"{r['n_components']} components ({args.connectivity}-connected) -> "
          f"{args.run}/{r['array']}" + (" (up to date)" if out.skipped else ""))
    return 0


# -- label ------------------------------------------------------------------------------
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
_COMMANDS = [_add_demo, _add_run, _add_synth, _add_ingest, _add_info, _add_analyze, _add_train,
             _add_segment, _add_label, _add_report, _add_compare, _add_align, _add_destripe,
             _add_normalize]


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
