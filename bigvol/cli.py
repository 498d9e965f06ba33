"""The ``bigvol`` command: a thin layer over :mod:`bigvol.stages` and :mod:`bigvol.pipeline`.

Each subcommand is ``_add_<name>(subparsers)`` (its arguments) and ``_cmd_<name>(args)``,
which calls the stage function that ``bigvol run`` calls too and prints one line. The flags
of a stage's options are made from its option model (:mod:`bigvol.options`): same names,
types, defaults and help as the function's. Errors caused by the user's input
(:class:`BigvolError`) print one line and exit with status 2, without a traceback. Logging
is configured here only, never on import of the library.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings

from ._version import __version__
from .errors import BigvolError, ConfigError
from .options import add_arguments


# -- shared arguments -------------------------------------------------------------------------
def _parser(sub, name: str, help: str, func, *, run: str | None = "run store (run.zarr)",
            scheduler: bool = False, **kw):
    p = sub.add_parser(name, help=help, **kw)
    if run:
        p.add_argument("run", help=run)
    if scheduler:
        p.add_argument("--scheduler", default="threads", help="threads | processes | ADDRESS")
    p.set_defaults(func=func)
    return p


def _xyz(p, flag: str, help: str, type=int) -> None:
    p.add_argument(flag, nargs=3, type=type, metavar=("Z", "Y", "X"), default=None, help=help)


def _options(args, model, **given):
    """The ``model`` of the flags given; the others keep the model's defaults."""
    return model(**{**{k: v for k, v in vars(args).items() if k in model.model_fields}, **given})


def _done(outcome) -> int:
    """Print what the stage did (or that it was up to date)."""
    print(outcome.summary)
    return 0


# -- info / ingest / synth ----------------------------------------------------------------------
def _add_info(sub) -> None:
    p = _parser(sub, "info", "describe a run store: arrays, voxel size, stages", _cmd_info)
    p.add_argument("--json", action="store_true", help="print as JSON")


def _cmd_info(args) -> int:
    from .store import Run

    run = Run.open(args.run)
    print(json.dumps(run.info(), indent=2) if args.json else run.summary())
    return 0


def _add_ingest(sub) -> None:
    p = _parser(sub, "ingest", "copy a folder of TIFF slices, a multi-page TIFF or a Zarr array "
                "into a run store", _cmd_ingest, run=None)
    p.add_argument("source", help="folder of TIFF slices, multi-page TIFF, or Zarr array path")
    p.add_argument("run", help="run store to write (created if missing), e.g. run.zarr")
    _xyz(p, "--voxel-size", "voxel size in nm (z = milling step, y, x = pixel size); overrides "
         "the files' metadata; 'auto' takes that entry from the files", type=str)
    _xyz(p, "--chunks", "chunks of the array (default 32 256 256, clipped to the shape)")
    p.add_argument("--allow-gaps", action="store_true",
                   help="accept gaps in the slice numbering of a folder")
    p.add_argument("--name", default="raw", help="array name in the store (default raw; "
                   "'segmentation' for an existing segmentation to measure with bigvol analyze)")
    p.add_argument("--phases", default=None, metavar="NAMES",
                   help="a segmentation's phase names: 'pore,cbd,nmc' (codes 0,1,2) or "
                   "'0=pore,170=cbd,85=nmc' (the file's codes, renumbered 0,1,2 in this order)")


def _cmd_ingest(args) -> int:
    from . import stages

    return _done(stages.ingest(args.run, args.source, name=args.name, chunks=args.chunks,
                               voxel_size=args.voxel_size, allow_gaps=args.allow_gaps,
                               phases=args.phases))


def _add_synth(sub) -> None:
    from .options import PhantomOptions

    p = _parser(sub, "synth", "write a generated FIB-SEM phantom (raw image + exact truth) into "
                "a run store", _cmd_synth, run="run store to write (created if missing)",
                scheduler=True)
    _xyz(p, "--shape", "phantom shape (z, y, x)")
    p.add_argument("--seed", type=int, default=0)
    _xyz(p, "--chunks", "chunks of the arrays (default 32 256 256, clipped to the shape)")
    _xyz(p, "--voxel-size", "voxel size in nm (z = milling step, y, x = pixel size)", float)
    add_arguments(p, PhantomOptions, PhantomOptions.model_fields,
                 dtype={"choices": ("uint8", "uint16")})
    p.add_argument("--workers", type=int, default=None, help="threads or worker processes")


def _cmd_synth(args) -> int:
    from . import stages, synth
    from .cluster import compute_context
    from .errors import ConfigError
    from .options import PhantomOptions
    from .store import Run

    if args.shape is None:
        raise ConfigError("--shape Z Y X is required")
    params = _options(args, PhantomOptions).model_dump(exclude_unset=True)
    if args.voxel_size is not None:
        params["voxel_size"] = tuple(args.voxel_size)
    synth.parameters(shape=tuple(args.shape), seed=args.seed, **params)  # before a store exists
    with compute_context(args.scheduler, workers=args.workers):
        return _done(stages.synth(Run.create(args.run), shape=args.shape, seed=args.seed,
                                  chunks=args.chunks, **params))


# -- run / demo / analyze (the pipeline) ----------------------------------------------------------
def _pipeline_args(p) -> None:
    p.add_argument("--scheduler", default=None,
                   help="threads | processes | slurm | pbs | ADDRESS of a Dask scheduler "
                   "(overrides compute.scheduler; slurm/pbs take the job shape from "
                   "compute.jobqueue)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set segment.method=threshold "
                   "(repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_run(sub) -> None:
    p = _parser(sub, "run", "run the whole method from a YAML config (resumable)", _cmd_run,
                run=None)
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--dry-run", action="store_true",
                   help="with --scheduler slurm/pbs: print the job script each worker job "
                   "would run, submit nothing")
    _pipeline_args(p)


def _add_demo(sub) -> None:
    p = _parser(sub, "demo", "the whole method on a generated phantom, report at the end",
                _cmd_run, run=None)
    p.add_argument("--out", default="bigvol-demo", help="output folder (default ./bigvol-demo)")
    _xyz(p, "--shape", "phantom shape (default from configs/demo.yaml)")
    _pipeline_args(p)


def _cmd_run(args) -> int:
    from pathlib import Path

    from .config import parse_overrides
    from .conventions import output_paths
    from .pipeline import demo_config, run

    over = parse_overrides(args.overrides)
    if args.scheduler:
        over.setdefault("compute", {})["scheduler"] = args.scheduler
    if args.command == "demo" and args.shape:
        over.setdefault("input", {}).setdefault("phantom", {})["shape"] = list(args.shape)
    config = demo_config(Path(args.out)) if args.command == "demo" else args.config
    if getattr(args, "dry_run", False):
        from .cluster import BATCH_SCHEDULERS, job_script
        from .config import load_config

        cfg = load_config(config, over)
        if cfg.compute.scheduler not in BATCH_SCHEDULERS:
            raise ConfigError(f"--dry-run shows the job script of a batch scheduler; "
                              f"compute.scheduler is {cfg.compute.scheduler!r} (use --scheduler "
                              "slurm or pbs)")
        print(job_script(cfg.compute.scheduler, cfg.compute.jobqueue))
        return 0
    path = run(config, overrides=over, progress=not args.quiet)
    print(f"run store: {path}")
    for key, p in output_paths(path).items():
        if key in ("metrics_json", "metrics_csv", "report") and p.exists():
            print(f"{key.replace('_', ' ')}: {p}")
    return 0


def _add_analyze(sub) -> None:
    p = _parser(sub, "analyze", "structure metrics of a run's segmentation -> metrics.json/csv",
                _cmd_analyze, scheduler=True)
    p.add_argument("--axis", type=int, default=1,
                   help="electrode thickness axis (0 z, 1 y, 2 x; default 1)")
    p.add_argument("--connectivity", type=int, default=26, choices=(6, 18, 26))
    p.add_argument("--faces", default="both", choices=("both", "either", "low", "high"))
    p.add_argument("--no-tortuosity", action="store_true", help="skip the tortuosity solve")
    p.add_argument("--tortuosity-phases", default=None, metavar="PHASE[,PHASE]",
                   help="phases whose tortuosity is solved, by name or code (default 1; "
                   "the pores for a liquid-electrolyte electrode)")


def _tortuosity_line(r: dict) -> str:
    if not r.get("converged"):
        return "not converged within the iteration limit (null in metrics.json)"
    if r.get("tau") is None:
        return "no path between the faces (eff ratio 0)"
    return f"tau {r['tau']:.4f}, eff ratio {r['eff_ratio']:.4f}"


def _cmd_analyze(args) -> int:
    from .pipeline import analyze_run

    phases = None if args.tortuosity_phases is None else args.tortuosity_phases.split(",")
    m, paths = analyze_run(args.run, axis=args.axis, connectivity=args.connectivity,
                           faces=args.faces, tortuosity=not args.no_tortuosity,
                           tortuosity_phases=phases, scheduler=args.scheduler)
    for what in ("volume_fractions", "isolated_fraction"):
        for name, v in m.get(what, {}).items():
            print(f"{what.replace('_', ' ').rstrip('s'):<18}{name:<18} {v:.4f}")
    for name, r in m.get("tortuosity", {}).items():
        print(f"{'tortuosity':<18}{name:<18} {_tortuosity_line(r)}")
    print(f"metrics: {paths['metrics_json']}, {paths['metrics_csv']}")
    return 0


# -- train / segment (SegNet) ---------------------------------------------------------------------
def _add_train(sub) -> None:
    from .options import ForestOptions, TrainOptions

    p = _parser(sub, "train", "train the SegNet (or a random forest) on labelled slices of a "
                "run store", _cmd_train)
    p.add_argument("--method", choices=("segnet", "forest"), default="segnet",
                   help="segnet: the CNN; forest: an ilastik-style random forest on multiscale "
                   "features (minutes on 2 cores; ahead of the SegNet with sparse strokes) "
                   "(default segnet)")
    p.add_argument("--labels", nargs="+", required=True,
                   help="label images (TIFF/PNG, one per slice; 255 = unlabelled), one multi-page "
                   "TIFF, a folder of them, 'truth' for the store's ground-truth array, or "
                   "'store' for the labels painted in the viewer (labels/train)")
    p.add_argument("--slices", nargs="+", type=int, default=None,
                   help="indices of the labelled slices, in the order of --labels (default "
                   "with --labels store: its labelled slices)")
    p.add_argument("--array", default=None, help="image array (default normalized, else raw)")
    p.add_argument("--out", default=None, help="model file (default <run>.model beside the store)")
    p.add_argument("--classes", default=None, metavar="NAMES",
                   help="class names, comma-separated, index = label code (default the run's "
                   "phases, e.g. background,mitochondrion for two classes)")
    add_arguments(p, TrainOptions, ("k", "preset", "epochs", "steps_per_epoch", "crop",
                                   "batch_size", "lr", "patience", "class_weights", "loss", "skips",
                                   "seed", "time_limit", "clock", "device", "init"),
                 preset={"choices": ("slim", "paper", "tiny")},
                 loss={"choices": ("ce", "ce+dice")},
                 device={"choices": ("auto", "cpu", "cuda")}, clock={"choices": ("wall", "cpu")},
                 k={"help": "adjacent slices as input (odd; off: 1, or the --init model's)"},
                 init={"metavar": "MODEL"},
                 epochs={"help": "at most this many epochs of --steps-per-epoch steps (early "
                         "stopping may end sooner)",
                         "default_text": "sized to the device: 12 on the CPU, 40 on a GPU"})
    add_arguments(p, ForestOptions, _FOREST_ONLY, flags={"n_trees": "--trees"},
                  n_trees={"help": "--method forest: trees of the forest"},
                  max_pixels={"help": "--method forest: labelled pixels drawn to train on"},
                  sigma_min={"help": "--method forest: smallest feature scale, px"},
                  sigma_max={"help": "--method forest: largest feature scale, px"})
    p.add_argument("--quiet", action="store_true", help="no progress bar")


_FOREST_ONLY = ("n_trees", "max_pixels", "sigma_min", "sigma_max")


def _cmd_train(args) -> int:
    from . import stages
    from .options import ForestOptions, TrainOptions
    from .store import Run

    given = set(vars(args))
    if args.method == "forest":
        wrong = sorted((given & set(TrainOptions.model_fields)) - set(ForestOptions.model_fields))
        kind = ForestOptions
    else:
        wrong = sorted(given & set(_FOREST_ONLY))
        kind = TrainOptions
    if wrong:
        raise ConfigError(f"--method {args.method} does not take "
                          + ", ".join("--trees" if w == "n_trees" else "--" + w.replace("_", "-")
                                      for w in wrong))
    return _done(stages.train(
        Run.open(args.run, mode="r+"),
        args.labels[0] if args.labels in (["truth"], ["store"]) else args.labels,
        args.slices, options=_options(args, kind), image=args.array, out=args.out,
        method=args.method,
        classes=[c.strip() for c in args.classes.split(",")] if args.classes else None,
        progress=not args.quiet))


def _add_segment(sub) -> None:
    from .options import PredictOptions

    p = _parser(sub, "segment", "segment every slice of a run store with a trained SegNet",
                _cmd_segment, scheduler=True)
    p.add_argument("--model", required=True, help="model file written by 'bigvol train'")
    p.add_argument("--array", default=None, help="image array (default normalized, else raw)")
    p.add_argument("--probabilities", action="store_true",
                   help="also write the float16 class probabilities (c, z, y, x)")
    add_arguments(p, PredictOptions, ("tile", "overlap", "batch_size", "device", "amp", "tta"),
                 device={"choices": ("auto", "cpu", "cuda")}, tta={"choices": (1, 2, 4, 8)})


def _cmd_segment(args) -> int:
    from . import stages
    from .cluster import compute_context
    from .options import PredictOptions
    from .segment import ForestModel
    from .stages import _load_model
    from .store import Run

    model = _load_model(args.model)
    with compute_context(args.scheduler):
        return _done(stages.segment(Run.open(args.run, mode="r+"), model=model,
                                    method="forest" if isinstance(model, ForestModel)
                                    else "segnet",
                                    options=_options(args, PredictOptions),
                                    probabilities=args.probabilities, image=args.array))


# -- preprocessing: normalize / align / destripe ---------------------------------------------------
def _add_preprocess(sub, step: str, output: str, help: str, names, **per_option) -> None:
    from .stages import STEPS

    p = _parser(sub, step, help, _cmd_preprocess, scheduler=True)
    p.add_argument("--input", default="raw", help="array to read (default raw)")
    p.add_argument("--output", default=output, help=f"array to write (default {output})")
    add_arguments(p, STEPS[step], names, **per_option)


def _add_normalize(sub) -> None:
    _add_preprocess(sub, "normalize", "normalized", "map every slice's brightness/contrast onto "
                    "a reference slice (histogram or percentile)",
                    ("method", "reference", "percentiles", "smooth"),
                    reference={"nargs": "+", "type": int, "metavar": "Z"})


def _add_align(sub) -> None:
    _add_preprocess(sub, "align", "aligned", "remove slice-to-slice drift (phase "
                    "cross-correlation)", ("crop", "downsample", "upsample_factor", "detrend",
                                           "order", "mode", "max_shift"),
                    flags={"upsample_factor": "--upsample"}, order={"choices": (0, 1)},
                    crop={"help": "side of the central region registered, px (0 = whole slice)"},
                    detrend={"choices": ("linear", "mean", "none"), "help": "drift removal: "
                             "subtract the linear trend or the mean of the shifts"},
                    mode={"choices": ("nearest", "constant", "reflect")})


def _add_destripe(sub) -> None:
    from .options import DestripeOptions

    _add_preprocess(sub, "destripe", "destriped", "remove curtaining stripes (running along y)",
                    DestripeOptions.model_fields, method={"choices": ("column", "wavelet-fft")})


def _cmd_preprocess(args) -> int:
    from . import stages
    from .cluster import compute_context
    from .errors import InputError
    from .store import Run

    given = {}
    if args.command == "align":  # the command line's spellings of "off"
        given = {k: None for k, off in (("crop", 0), ("detrend", "none"))
                 if getattr(args, k, None) == off}
    ref = getattr(args, "reference", None)
    if ref is not None:
        if len(ref) > 2:
            raise InputError(f"--reference takes one slice index or START STOP, got {ref}")
        given["reference"] = ref[0] if len(ref) == 1 else tuple(ref)
    steps = [(args.command, _options(args, stages.STEPS[args.command], **given))]
    with compute_context(args.scheduler):
        return _done(stages.preprocess(Run.open(args.run, mode="r+"), steps, source=args.input,
                                       output=args.output))


# -- the labelling loop: suggest / pyramid / view ----------------------------------------------
def _add_suggest(sub) -> None:
    p = _parser(sub, "suggest", "the slices to label next: where the model is least sure",
                _cmd_suggest)
    p.add_argument("--n", type=int, default=3, help="how many slices (default 3)")
    p.add_argument("--spacing", type=int, default=2,
                   help="suggested slices lie more than this many slices apart (default 2)")
    p.add_argument("--method", default="entropy", choices=("entropy", "margin"))


def _cmd_suggest(args) -> int:
    from . import stages
    from .store import Run

    run = Run.open(args.run, mode="r+")
    picked, means, out = stages.suggest(run, args.n, method=args.method, spacing=args.spacing)
    print(out.summary)
    print("label next: " + ", ".join(f"slice {z} (mean {args.method} {m:.3f})"
                                     for z, m in zip(picked, means)))
    return 0


def _add_pyramid(sub) -> None:
    p = _parser(sub, "pyramid", "downsampled levels of an array for viewers (OME-Zarr)",
                _cmd_pyramid, scheduler=True)
    p.add_argument("--array", nargs="+", default=["raw", "normalized", "segmentation"],
                   help="arrays (default raw normalized segmentation, those present)")
    p.add_argument("--min-size", type=int, default=512,
                   help="stop when y and x are at most this many pixels (default 512)")


def _cmd_pyramid(args) -> int:
    from . import stages
    from .cluster import compute_context
    from .store import Run

    run = Run.open(args.run, mode="r+")
    with compute_context(args.scheduler):
        for name in [a for a in args.array if run.is_complete(a)]:
            _done(stages.pyramid(run, name, min_size=args.min_size))
    return 0


def _add_view(sub) -> None:
    _parser(sub, "view", "open a run in napari with the labelling widget", _cmd_view)


def _cmd_view(args) -> int:
    from .errors import ConfigError

    try:
        import napari
    except ImportError:
        raise ConfigError("the viewer needs napari and a Qt binding: "
                          'pip install "bigvol[viewer]"') from None
    from .viewer import open_run

    open_run(args.run, napari.Viewer())
    napari.run()
    return 0


# -- label / report / compare ---------------------------------------------------------------------
def _add_label(sub) -> None:
    p = _parser(sub, "label", "connected components of a run's segmentation -> labels/<phase>",
                _cmd_label)
    p.add_argument("--phase", default="all", help="phase code or name, or 'all' (every phase, "
                   "pores included, in one pass; written to labels/all). Default: all")
    p.add_argument("--connectivity", type=int, default=26, choices=(6, 18, 26))


def _cmd_label(args) -> int:
    from . import stages
    from .store import Run

    return _done(stages.label(Run.open(args.run, mode="r+"), args.phase,
                              connectivity=args.connectivity))


def _add_report(sub) -> None:
    p = _parser(sub, "report", "write the self-contained HTML report of a run", _cmd_report)
    p.add_argument("--metrics", default=None,
                   help="metrics JSON (default: RUN.metrics.json beside the store, if any)")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN.report.html)")


def _cmd_report(args) -> int:
    from .report import write_report

    print(f"report: {write_report(args.run, args.metrics, args.out)}")
    return 0


def _add_compare(sub) -> None:
    p = _parser(sub, "compare", "join the metrics of several runs with measured cell properties",
                _cmd_compare, run=None)
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run stores (RUN.zarr, metrics read from RUN.metrics.json) or metrics JSON")
    p.add_argument("--properties", required=True,
                   help="CSV with a 'run' or 'cell' column and numeric cell properties")
    p.add_argument("--out", default=".", help="output folder (default: current folder)")
    p.add_argument("--metric", action="append", default=None, dest="metrics",
                   help="metric column to correlate (repeatable; default: every structure "
                   "metric that varies between runs)")


def _cmd_compare(args) -> int:
    from .compare import compare

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        table = compare(args.runs, args.properties, out=args.out, metrics=args.metrics)
    for w in caught:
        print(f"bigvol compare: warning: {w.message}", file=sys.stderr)
    print(f"{len(table['run'])} runs joined -> {args.out}/compare.csv, compare_correlations.csv, "
          "compare.png, compare.html")
    return 0


def _add_bench(sub) -> None:
    p = _parser(sub, "bench", "per-stage throughput on this machine, and the time a big volume "
                "will take", _cmd_bench, run=None)
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config whose settings to measure (default: the demo's, chunks "
                   "32 x 256 x 256); its input is replaced by a phantom of --shape")
    _xyz(p, "--shape", "phantom shape to measure on (default 64 512 512)")
    _xyz(p, "--project", "volume to project the wall time of, e.g. 1000 3000 2000")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16, 64], metavar="N",
                   help="worker counts of the projection (default 1 4 16 64)")
    p.add_argument("--compare", action="store_true",
                   help="also run the peer of each stage on the same arrays (skimage, cc3d, "
                   "PoreSpy) and print both times")
    p.add_argument("--own-input", action="store_true",
                   help="measure on the config's own input (your stack, labels or model) "
                   "instead of a phantom; all of it is processed, so give a crop")
    p.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON")
    p.add_argument("--out", default=None, help="keep the bench run in this folder")
    _pipeline_args(p)


def _cmd_bench(args) -> int:
    from .bench import DEFAULT_SHAPE, bench, format_compare, format_table, project, write_json
    from .config import parse_overrides

    result = bench(args.config, shape=args.shape or DEFAULT_SHAPE, scheduler=args.scheduler,
                   out=args.out, progress=not args.quiet, peers=args.compare,
                   overrides=parse_overrides(args.overrides), own_input=args.own_input)
    proj = project(result, args.project, args.workers) if args.project else None
    print(format_table(result, proj))
    if args.compare:
        print(format_compare(result["compare"]))
    if args.json:
        print(f"figures: {write_json(result, proj, args.json)}")
    return 0


# Subcommands in the order ``bigvol --help`` lists them.
_COMMANDS = [_add_demo, _add_run, _add_synth, _add_ingest, _add_info, _add_analyze, _add_train,
             _add_segment, _add_suggest, _add_view, _add_pyramid, _add_label, _add_report,
             _add_compare, _add_bench, _add_align, _add_destripe, _add_normalize]


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"bigvol: warning: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bigvol", description="FIB-SEM volumes of battery "
                                     "electrodes -> 3-phase segmentation -> structure metrics")
    parser.add_argument("--version", action="version", version=f"bigvol {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(levelname)s %(name)s: %(message)s")
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
