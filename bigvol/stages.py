"""The stages of the method, one function each, wired to the run store.

``bigvol run`` (:mod:`bigvol.pipeline`) calls them in order; each ``bigvol STAGE`` command
only parses its arguments and calls the same function. Every stage

1. reads its inputs from the run store,
2. fingerprints itself: a hash of its name, its parameters (typed options with every
   default filled in), the fingerprints of the arrays it reads and the bigvol version,
3. is skipped when the run records that fingerprint and its outputs are complete,
4. otherwise writes its outputs chunk by chunk with per-chunk done flags
   (:meth:`bigvol.store.Run.write`; a killed write resumes where it stopped), and
5. records itself last (parameters, fingerprint, version, time, outputs, results).

So a stage done with the CLI is recognised by ``bigvol run`` and the other way round,
and an interrupted run started again computes only what is missing. The fingerprint of
an array is stored with it, so the chain of stages is kept in the store itself: a stage
reruns when anything it reads changed, whoever wrote it.

===========  =====================================  ===================================
stage        writes                                 computes with
===========  =====================================  ===================================
synth        raw, truth                             :func:`bigvol.synth.phantom`
ingest       raw (or another array)                 :func:`bigvol.ingest`
preprocess   normalized (aligned, destriped)        align -> destripe -> normalize
train        ``X.model`` beside the store           :func:`bigvol.segment.train`
segment      segmentation (+ probabilities)         :func:`bigvol.segment.predict` / threshold
threshold    threshold (the multi-Otsu baseline)    :func:`bigvol.segment.threshold`
evaluate     (record: scores against ``truth``)     :func:`bigvol.evaluate.evaluate`
label        labels/<phase>                         :func:`bigvol.label`
analyze      thickness/<phase>, (record: metrics)   :mod:`bigvol.metrics`
report       ``X.report.html``                      :func:`bigvol.report.write_report`
===========  =====================================  ===================================
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._version import __version__
from .conventions import UNLABELLED
from .errors import ConfigError, InputError
from .meter import Meter, release_freed_memory
from .options import (
    AlignOptions,
    DestripeOptions,
    ForestOptions,
    NormalizeOptions,
    PredictOptions,
    TrainOptions,
)
from .store import LABEL_ARRAYS, TRAIN_LABELS, Run, fingerprint

log = logging.getLogger(__name__)
#: the run log: one line per stage started, skipped, done (``X.log`` beside the store)
runlog = logging.getLogger("bigvol.runlog")
runlog.setLevel(logging.INFO)
runlog.propagate = False


def note(msg, *args) -> None:
    """A line for the run log (INFO), also on the console with ``-v``."""
    runlog.info(msg, *args)
    log.info(msg, *args)


@dataclass
class Outcome:
    """What a stage did: its record in the store, and whether it was up to date."""

    name: str
    fingerprint: str
    skipped: bool
    record: dict = field(default_factory=dict)
    seconds: float = 0.0
    #: one line for the user: what the stage did, or that it was up to date
    summary: str = ""

    @property
    def results(self) -> dict:
        return self.record.get("results", {})


@contextmanager
def progress_bar(label: str, enabled: bool):
    """A dask progress bar on the local schedulers; the dashboard shows distributed work."""
    if not enabled:
        yield
        return
    from dask.diagnostics import ProgressBar

    print(f"[bigvol] {label}", flush=True)
    try:
        from distributed import default_client

        default_client()
        yield
    except (ImportError, ValueError):
        with ProgressBar(minimum=1.0, dt=0.5):
            yield


def stage_fingerprint(name: str, params, upstream: Sequence) -> str:
    """The fingerprint of a stage: its name, parameters, what it reads, the version."""
    return fingerprint(name, params, list(upstream), __version__)


def run_stage(run: Run, name: str, params: dict, *, upstream: Sequence = (),
              outputs: Sequence[str] = (), body: Callable[[str], dict | None],
              up_to_date: Callable[[dict], bool] | None = None,
              summary: Callable[[Outcome], str] | None = None,
              progress: bool = False) -> Outcome:
    """Skip the stage when it is up to date, else run ``body(fingerprint)`` and record it.

    ``body`` writes the outputs (passing the fingerprint to :meth:`Run.write`, so that a
    killed write resumes) and returns the stage's small results (JSON-able). Up to date:
    the recorded fingerprint is this one, every output array is complete and
    ``up_to_date(record)`` (for outputs that are not arrays, e.g. the model file).
    ``summary(outcome)``: the line that tells the user what the stage did.
    """
    fp = stage_fingerprint(name, params, upstream)
    rec = run.stage(name)
    if (rec and rec.get("fingerprint") == fp and all(run.is_complete(o) for o in outputs)
            and (up_to_date is None or up_to_date(rec))):
        note("stage %s: up to date, skipped", name)
        return Outcome(name, fp, True, rec, summary=f"{run.path}: {name} is up to date (same "
                       "inputs and parameters): nothing to do")
    note("stage %s: started (fingerprint %s)", name, fp[:12])
    with Meter() as meter, progress_bar(f"{name} ...", progress):
        results = body(fp) or {}
    release_freed_memory()  # the next stage's peak starts from what this one still holds
    seconds = meter.seconds
    note("stage %s: done in %.1f s (%.1f CPU-s, peak RSS %.2f GiB)", name, seconds,
         meter.cpu_seconds, meter.peak_rss_bytes / 2**30)
    rec = run.record_stage(name, parameters=params, fingerprint=fp, outputs=outputs,
                           extra={"seconds": seconds, **meter.as_record(), "results": results})
    out = Outcome(name, fp, False, rec, seconds)
    out.summary = (summary(out) if summary else name) + f" in {seconds:.1f} s"
    return out


def _rate(shape, seconds) -> str:
    return f"{math.prod(shape) / max(seconds, 1e-9) / 1e6:.1f} MVx/s"


def _chunks_for(data, chunks):
    return tuple(chunks)[-data.ndim:] if chunks is not None and data.ndim <= 3 else None


def image_array(run: Run, name: str | None = None) -> str:
    """The image a stage reads: ``name``, else ``normalized`` when complete, else ``raw``."""
    if name is not None:
        return name
    return "normalized" if run.is_complete("normalized") else "raw"


# -- input --------------------------------------------------------------------------------
def synth(run: Run, *, shape, seed: int = 0, chunks=None, progress: bool = False,
          **params) -> Outcome:
    """``raw`` and ``truth`` from :func:`bigvol.synth.phantom` (one pass: one task per
    chunk computes both). The phantom is the same whatever the chunking, so the chunks
    are not part of the fingerprint."""
    from . import synth as S

    shape = tuple(int(s) for s in shape)
    full = S.parameters(shape=shape, seed=seed, **params)

    def body(fp):
        image, truth = S.phantom(shape, seed=seed, chunks=chunks, **params)
        run.voxel_size = full["voxel_size"]
        run.write_arrays({"raw": image, "truth": truth}, chunks=chunks, fingerprint=fp)
        return {"source": "phantom", "true_shifts_px": S.true_shifts(
            shape, seed=seed, xy_drift_px=full["xy_drift_px"]).tolist()}

    def summary(o):
        return (f"phantom {shape} seed {seed} -> {run.path} (raw, truth), chunks "
                f"{run.zarr_array('raw').chunks} ({_rate(shape, o.seconds)})")

    return run_stage(run, "synth", full, outputs=("raw", "truth"), body=body,
                     summary=summary, progress=progress)


def ingest(run, source, *, name: str = "raw", chunks=None, voxel_size=None,
           allow_gaps: bool = False, phases=None) -> Outcome:
    """A TIFF folder, multi-page TIFF or Zarr array into the run (:func:`bigvol.ingest`;
    it checks, fingerprints, resumes and records itself as stage ``ingest[:name]``)."""
    from ._ingest import ingest as ingest_array
    from ._ingest import stage_name

    st = stage_name(name)
    path = run.path if isinstance(run, Run) else Path(run)
    before = Run.open(path).stage(st) if Run.is_run(path) else None
    t0 = time.perf_counter()
    ingest_array(source, run, chunks=chunks, voxel_size=voxel_size, allow_gaps=allow_gaps,
                 name=name, phases=phases)
    seconds = time.perf_counter() - t0
    r = Run.open(path)
    rec = r.stage(st) or {}
    skipped = before is not None and rec == before
    note("stage %s: %s", st, "up to date, skipped" if skipped else f"done in {seconds:.1f} s")
    if skipped:
        text = (f"{path}/{name} is up to date with {source} (same files and parameters): "
                "nothing to do")
    else:
        arr, vs, origin = r.zarr_array(name), r.voxel_size, rec.get("voxel_size_origin")
        vs_text = "unknown" if vs is None else " x ".join(f"{v:g}" for v in vs) + " nm"
        vs_text += f" ({origin})" if vs is not None and origin else ""
        text = (f"ingested {source} -> {path}/{name}: {tuple(arr.shape)} {arr.dtype}, chunks "
                f"{tuple(arr.chunks)}, voxel size {vs_text} ({_rate(arr.shape, seconds)}) in "
                f"{seconds:.1f} s")
    return Outcome(st, rec.get("fingerprint", ""), skipped, rec, seconds, text)



# -- preprocessing ------------------------------------------------------------------------
#: the preprocessing steps, in the order they run, with their option models
STEPS = {"align": AlignOptions, "destripe": DestripeOptions, "normalize": NormalizeOptions}
_STAGE_OF_OUTPUT = {"normalized": "normalize", "aligned": "align", "destriped": "destripe"}


def preprocess(run: Run, steps: Sequence[tuple[str, object]], *, source: str = "raw",
               output: str = "normalized", chunks=None, progress: bool = False) -> Outcome:
    """Align, destripe and/or normalize ``source`` into ``output``, in one streaming pass.

    ``steps``: ``[("align", AlignOptions(...)), ("normalize", NormalizeOptions(...))]``, in
    order (options may be given as dicts). The stage is named after what it writes
    (``normalize`` for ``normalized``, ``align`` for ``aligned``, ...), so
    ``bigvol normalize run.zarr`` and ``bigvol run`` with alignment and destriping off are
    one and the same stage. Inputs are never modified: ``output`` must differ from
    ``source``.
    """
    if output == source:
        raise InputError(f"output {output!r} would overwrite the input; inputs are never modified")
    typed = []
    for kind, opts in steps:
        if kind not in STEPS:
            raise ConfigError(f"unknown preprocessing step {kind!r} (one of {', '.join(STEPS)})")
        typed.append((kind, opts if isinstance(opts, STEPS[kind]) else STEPS[kind](**dict(opts))))
    name = _STAGE_OF_OUTPUT.get(output, f"preprocess:{output}")
    params = {"input": source,
              "steps": [{"step": kind, **o.model_dump(mode="json")} for kind, o in typed]}

    def body(fp):
        stack = run.read(source)
        results = {}
        for kind, o in typed:
            if kind == "align":
                from . import align

                kw = o.kwargs()
                est = {k: kw.pop(k) for k in ("crop", "downsample", "upsample_factor",
                                               "detrend", "window")}
                shifts = np.asarray(align.estimate_shifts(stack, **est))
                stack = align.apply_shifts(stack, shifts, **kw)
                results["shifts_px"] = shifts.tolist()
            elif kind == "destripe":
                from . import destripe

                stack = destripe.destripe(stack, **o.kwargs())
            else:
                from . import normalize

                kw = o.kwargs()
                if isinstance(kw["reference"], list):
                    kw["reference"] = tuple(kw["reference"])
                # one pass for the LUTs and the before/after statistics, one to apply them
                fit = normalize.fit_lookup_tables(stack, **kw)
                results["statistics_before"] = normalize.statistics_to_lists(fit["before"])
                results["statistics_after"] = normalize.statistics_to_lists(fit["after"])
                stack = normalize.apply_lookup_tables(stack, fit["luts"])
        run.write(output, stack, chunks=chunks or run.zarr_array(source).chunks,
                  fingerprint=fp)
        return results

    def summary(o):
        r, shape = o.results, run.zarr_array(output).shape
        text = (f"{name}: {run.path}/{source} {shape} -> {output} "
                f"({_rate(shape, o.seconds)})")
        if "shifts_px" in r:
            text += f"; largest shift {np.abs(np.asarray(r['shifts_px'])).max():.2f} px"
        if "statistics_before" in r:
            d = [max(r[k]["mean"]) - min(r[k]["mean"])
                 for k in ("statistics_before", "statistics_after")]
            text += f"; range of slice means {d[0]:.1f} -> {d[1]:.1f} gray levels"
        return text

    return run_stage(run, name, params, upstream=[run.fingerprint_of(source)],
                     outputs=(output,), body=body, summary=summary, progress=progress)


# -- segmentation ---------------------------------------------------------------------------
def train(run: Run, labels, slices: Sequence[int] | None = None, *, options=None, classes=None,
          image: str | None = None, out=None, progress: bool = False,
          callback=None, method: str = "segnet") -> Outcome:
    """Train the SegNet (``method="segnet"``, ``options``: :class:`TrainOptions`) or the
    random forest (``"forest"``, :class:`ForestOptions`) on labelled slices of the run's
    image; the model goes to ``out`` (default ``X.model`` beside the store ``X.zarr``).

    ``labels``: ``"truth"`` (the store's ``truth`` array, e.g. a phantom's or ingested hand
    labels), ``"store"`` (the training labels painted in the viewer, ``labels/train``; the
    slices default to its labelled ones) or label images (a path, a list of paths; 255 =
    unlabelled), one per slice. ``callback``: see :func:`bigvol.segment.train`.
    ``classes``: the class names (default the run's phases; a fine-tuned ``init`` model
    keeps its own). Up to date: same fingerprint and the model file still holds the model
    recorded (its digest).
    """
    from .segment import Model, read_labels, train_forest
    from .segment import train as train_model

    if method not in ("segnet", "forest"):
        raise ConfigError(f"train method must be 'segnet' or 'forest', got {method!r}")
    kind = TrainOptions if method == "segnet" else ForestOptions
    opts = options if isinstance(options, kind) else kind(**dict(options or {}))
    image = image_array(run, image)
    nz = run.zarr_array(image).shape[0]
    if slices is None and labels in ("store", ["store"]):
        slices = run.labelled_slices()
    if not slices:
        raise ConfigError("no training slices: give slices, or paint labels first")
    bad = [s for s in slices if not -nz <= int(s) < nz]
    if bad:
        raise ConfigError(f"training slices {bad} lie outside the stack of {nz} slices")
    slices = [int(s) % nz for s in slices]
    out = Path(out) if out is not None else run.paths["model"]
    if classes is None and getattr(opts, "init", None) is None:
        classes = run.phases
    if labels in ("truth", ["truth"], "store", ["store"]):
        labels = labels if isinstance(labels, str) else labels[0]
        array = "truth" if labels == "truth" else TRAIN_LABELS
        if array not in run:
            raise ConfigError(
                f"labels {labels!r}: the run store {run.path} has no {array} array; "
                + ("give label images, or ingest hand labels as 'truth'" if labels == "truth"
                   else "paint labels in the viewer (bigvol view) or give label images"))
        labels_id = run.fingerprint_of(array)
    else:
        files = [labels] if isinstance(labels, (str, os.PathLike)) else list(labels)
        labels = [str(f) for f in files]
        labels_id = files_fingerprint(labels)
    params = {"image": image, "labels": labels, "slices": slices, "classes": classes,
              "model": os.path.abspath(out), **opts.model_dump(mode="json")}
    if method == "forest":
        params["method"] = "forest"  # (a SegNet's fingerprint stays what it was)

    def body(fp):
        if labels in ("truth", "store"):
            arr = run.zarr_array("truth" if labels == "truth" else TRAIN_LABELS)
            lab = np.stack([arr[s] for s in slices])
        else:
            lab = read_labels(labels[0] if len(labels) == 1 else labels, slices)
        if method == "forest":
            # reads only the labelled slices and their neighbours
            model = train_forest(run.zarr_array(image), lab, slices=slices, classes=classes,
                                 **opts.kwargs())
        else:
            # a killed training resumes from its last epoch (bit-identical with a step budget)
            model = train_model(run.read(image), lab, slices=slices, classes=classes,
                                progress=progress, callback=callback,
                                checkpoint=f"{out}.checkpoint", checkpoint_key=fp,
                                **opts.kwargs())
        model.save(out)
        rec = model.record
        return {"model": str(out), "model_digest": model.digest, "slices": slices,
                "classes": list(model.classes), "steps": rec.get("steps"),
                "stopped": rec.get("stopped"), "elapsed_s": rec.get("elapsed_s"),
                "best_val_accuracy": rec.get("best_val_accuracy")}

    def model_unchanged(rec):
        try:
            return Model.load(out).digest == rec.get("results", {}).get("model_digest")
        except Exception:
            return False

    def summary(o):
        r = o.results
        acc = r.get("best_val_accuracy")
        if method == "forest":
            return (f"trained a random forest of {r['steps']} trees, {len(r['classes'])} "
                    f"classes; out-of-bag accuracy {acc:.4f} (pixels of the training slices, "
                    f"an optimistic figure) -> {r['model']}")
        return (f"trained {len(r['classes'])} classes ({r['steps']} steps, {r['stopped']}); "
                f"validation accuracy {'n/a' if acc is None else f'{acc:.4f}'} -> {r['model']}")

    return run_stage(run, "train", params, upstream=[run.fingerprint_of(image), labels_id],
                     body=body, up_to_date=model_unchanged, summary=summary)


def segment(run: Run, *, method: str = "segnet", model=None, options=None,
            probabilities: bool = False, image: str | None = None, chunks=None,
            progress: bool = False) -> Outcome:
    """``segmentation``: the trained ``model`` applied to every slice (``method="segnet"``,
    or ``"forest"`` for a random-forest model) or the multi-Otsu threshold into as many
    classes as the run has phases.

    With ``probabilities`` the float16 class probabilities ``(c, z, y, x)`` are written
    too and the codes are their argmax (the network runs once). The run's phases become
    the model's classes.
    """
    from . import segment as S

    image = image_array(run, image)
    opts = options if isinstance(options, PredictOptions) else PredictOptions(**dict(options or {}))
    if method not in ("segnet", "forest", "threshold"):
        raise ConfigError(
            f"segment method must be 'segnet', 'forest' or 'threshold', got {method!r}")
    params = {"image": image, "method": method}
    upstream = [run.fingerprint_of(image)]
    outputs = ("segmentation",)
    trained = method != "threshold"
    if trained:
        if model is None:
            raise ConfigError(
                f"segment: the {method} method needs a model (bigvol train writes one)")
        model = _load_model(model)
        kind = "forest" if isinstance(model, S.ForestModel) else "segnet"
        if kind != method:
            raise ConfigError(f"segment method is {method!r} but the model "
                              f"{model.path or ''} is a {kind} model")
        params.update(model_digest=model.digest, probabilities=bool(probabilities),
                      classes=list(model.classes))
        params.update(opts.model_dump(mode="json"))  # (predict refuses them for a forest)
        outputs += ("probabilities",) if probabilities else ()
    else:
        params["classes"] = run.phases

    def body(fp):
        stack = run.read(image)
        ch = chunks or run.zarr_array(image).chunks
        if method == "threshold":
            pred = S.threshold(stack, classes=len(run.phases))
        elif probabilities:
            probs = S.predict(stack, model, probabilities=True, **opts.kwargs())
            run.write("probabilities", probs, chunks=(probs.shape[0], *ch), fingerprint=fp)
            pred = run.read("probabilities").map_blocks(
                lambda b: b.argmax(0).astype(np.uint8), drop_axis=0, dtype=np.uint8)
        else:
            pred = S.predict(stack, model, **opts.kwargs())
        run.write("segmentation", pred, chunks=ch, fingerprint=fp)
        if trained:
            run.phases = model.classes  # the codes now mean the model's classes
        return {"model_digest": model.digest} if trained else {}

    def summary(o):
        shape = run.zarr_array("segmentation").shape
        return (f"segmented {run.path}/{image} {shape} -> {', '.join(outputs)} "
                f"({method}, {_rate(shape, o.seconds)})")

    return run_stage(run, "segment", params, upstream=upstream, outputs=outputs, body=body,
                     summary=summary, progress=progress)


def _load_model(model):
    from .segment import Model

    if isinstance(model, Model):
        return model
    if not Path(model).exists():
        raise InputError(f"no model at {model}")
    return Model.load(model)


def threshold(run: Run, *, image: str | None = None, chunks=None,
              progress: bool = False) -> Outcome:
    """``threshold``: the multi-Otsu baseline segmentation, as many classes as phases."""
    from . import segment as S

    image = image_array(run, image)

    def body(fp):
        run.write("threshold", S.threshold(run.read(image), classes=len(run.phases)),
                  chunks=chunks or run.zarr_array(image).chunks, fingerprint=fp)

    return run_stage(run, "threshold", {"image": image, "classes": run.phases},
                     upstream=[run.fingerprint_of(image)], outputs=("threshold",), body=body,
                     progress=progress)


def evaluate(run: Run, *, arrays: Sequence[str] = ("segmentation",),
             scored_slices: Sequence[int] | None = None, progress: bool = False) -> Outcome:
    """Scores of ``arrays`` against the run's ``truth``: accuracy, recall, precision, IoU,
    confusion matrices, accuracy per slice. ``scored_slices``: score only these slices
    (hand labels trained on elsewhere must not be scored); default every labelled slice.
    """
    from .evaluate import evaluate as scores

    if "truth" not in run:
        raise ConfigError(f"evaluate: the run store {run.path} has no truth array")
    arrays = [a for a in arrays if a in run]
    held = None if scored_slices is None else sorted(int(s) for s in scored_slices)
    n = len(run.phases)

    def body(fp):
        import dask.array as da

        truth = run.read("truth")
        if held is not None:
            keep = np.zeros(truth.shape[0], bool)
            keep[held] = True
            keep = da.from_array(keep, chunks=(truth.chunks[0],))
            truth = da.where(keep[:, None, None], truth, UNLABELLED).astype(truth.dtype)
        out = {"scored_slices": held} if held is not None else {}
        method = ((run.stage("segment") or {}).get("parameters") or {}).get("method")
        for a in arrays:
            r = scores(truth, run.read(a), n_classes=n)
            # keyed by the method that made the array: segnet, threshold
            key = (method or a) if a == "segmentation" else a
            out[key] = {k: (v if k == "accuracy" else np.asarray(v).tolist())
                        for k, v in r.items() if k in _SCORES}
        return out

    return run_stage(run, "evaluate", {"arrays": arrays, "scored_slices": held},
                     upstream=[run.fingerprint_of(a) for a in ["truth", *arrays]], body=body,
                     progress=progress)


_SCORES = ("accuracy", "recall", "precision", "iou", "confusion", "confusion_normalized",
           "accuracy_per_slice")


def save_labels(run: Run, slices) -> list[int]:
    """Training labels of whole slices into the run (``labels/train``; ``{z: (y, x) codes,
    UNLABELLED where not painted}``). Returns the labelled slices. Not a fingerprinted
    stage: the labels are the user's input; the train stage hashes their digest."""
    return run.write_label_slices(slices)


def uncertainty(run: Run, *, method: str = "entropy", progress: bool = False) -> Outcome:
    """``uncertainty`` (z, y, x) float16 in [0, 1] from the run's ``probabilities``
    (:func:`bigvol.segment.uncertainty`), and each slice's mean in the record."""
    from . import segment as S

    if "probabilities" not in run:
        raise ConfigError(f"{run.path} has no class probabilities: segment with "
                          "probabilities first (bigvol segment --probabilities, or "
                          "segment.probabilities: true)")

    def body(fp):
        u = S.uncertainty(run.read("probabilities"), method=method).astype(np.float16)
        run.write("uncertainty", u, chunks=run.zarr_array("probabilities").chunks[1:],
                  fingerprint=fp)
        return {"method": method,
                "slice_mean": S.slice_uncertainty(run.read("uncertainty")).tolist()}

    def summary(o):
        m = np.asarray(o.results["slice_mean"])
        return (f"uncertainty ({method}) -> {run.path}/uncertainty: slice means "
                f"{m.min():.3f}..{m.max():.3f}")

    return run_stage(run, "uncertainty", {"method": method},
                     upstream=[run.fingerprint_of("probabilities")], outputs=("uncertainty",),
                     body=body, summary=summary, progress=progress)


def suggest(run: Run, n: int = 1, *, method: str = "entropy", spacing: int = 0) -> tuple:
    """The ``n`` slices to label next (the most uncertain, not yet labelled, more than
    ``spacing`` apart): ``(slices, their mean uncertainty, outcome of the uncertainty
    stage)``."""
    from .segment import suggest_slices

    out = uncertainty(run, method=method)
    means = np.asarray(out.results["slice_mean"])
    picked = suggest_slices(means, n, exclude=run.labelled_slices(), spacing=spacing)
    return picked, [float(means[z]) for z in picked], out


def pyramid(run: Run, name: str, *, min_size: int = 512, progress: bool = False) -> Outcome:
    """Pyramid levels of ``name`` (``pyramids/<name>/1``, ...; :mod:`bigvol.pyramid`):
    2x coarser in y and x per level until y and x are at most ``min_size``; by the mode
    of 2 x 2 blocks for phase codes and labels, by the mean for images. Listed in the
    run's OME-Zarr ``multiscales`` so viewers open big stacks at once."""
    from .pyramid import downsample, n_levels

    base = run.zarr_array(name)
    levels = n_levels(base.shape, min_size)
    labels = name in LABEL_ARRAYS
    outputs = tuple(f"pyramids/{name}/{i}" for i in range(1, levels + 1))

    def body(fp):
        prev = run.read(name)
        for out in outputs:
            run.write(out, downsample(prev, labels=labels), chunks=base.chunks,
                      fingerprint=fp)
            prev = run.read(out)
        return {"levels": levels, "shapes": [list(run.zarr_array(o).shape) for o in outputs]}

    return run_stage(run, f"pyramid:{name}", {"array": name, "levels": levels,
                                              "method": "mode" if labels else "mean"},
                     upstream=[run.fingerprint_of(name)], outputs=outputs, body=body,
                     summary=lambda o: f"pyramid of {name}: {levels} levels",
                     progress=progress)


# -- structure ------------------------------------------------------------------------------
def label(run: Run, phase="all", *, connectivity: int = 26, progress: bool = False) -> Outcome:
    """``labels/<phase>``: connected components of the segmentation (``"all"``: every
    phase in one pass, a component never crossing phases)."""
    from ._label import label_array_name, write_labels

    name = label_array_name(run, phase)
    def body(fp):
        arr, n = write_labels(run, phase, connectivity=connectivity, fingerprint=fp)
        return {"array": arr, "n_components": int(n)}

    def summary(o):
        return (f"{o.results['n_components']} components ({connectivity}-connected) -> "
                f"{run.path}/{name}")

    return run_stage(run, f"label:{name.split('/', 1)[1]}",
                     {"phase": phase, "connectivity": connectivity},
                     upstream=[run.fingerprint_of("segmentation")], outputs=(name,), body=body,
                     summary=summary, progress=progress)


def analyze(run: Run, options=None, *, progress: bool = False) -> Outcome:
    """The structure metrics of the segmentation (:func:`bigvol.record.structure_metrics`);
    the local-thickness maps are written as ``thickness/<phase>``."""
    from .config import AnalyzeConfig
    from .record import structure_metrics

    a = options if isinstance(options, AnalyzeConfig) else AnalyzeConfig(**dict(options or {}))
    names = run.phases

    def body(fp):
        return structure_metrics(
            run, a, write=lambda n, d: run.write(n, d, chunks=_chunks_for(
                d, run.zarr_array("segmentation").chunks), fingerprint=fp))

    def maps_complete(rec):
        # a phase filling the volume has no thickness map (its entry says why)
        th = rec.get("results", {}).get("thickness", {})
        return all(run.is_complete(f"thickness/{n}") for n, v in th.items()
                   if "undefined" not in v)

    return run_stage(run, "analyze", {**a.model_dump(mode="json"), "phases": names},
                     upstream=[run.fingerprint_of("segmentation")], body=body,
                     up_to_date=maps_complete, progress=progress)


def report(run: Run, metrics=None, out=None) -> Path:
    """The self-contained HTML report (always rewritten: it is cheap and reads the record)."""
    from .report import write_report

    return write_report(run.path, metrics, out)


# -- helpers ----------------------------------------------------------------------------------
def files_fingerprint(paths) -> str:
    """Names, sizes and modification times of files or folders (cheap, no reading)."""
    entries = []
    for source in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        p = Path(source)
        if not p.exists():
            raise InputError(f"not found: {p}")
        walk = os.walk(p) if p.is_dir() else [(str(p.parent), [], [p.name])]
        for root, _dirs, files in walk:
            for f in sorted(files):
                st = os.stat(os.path.join(root, f))
                entries.append((os.path.relpath(os.path.join(root, f), p), st.st_size,
                                st.st_mtime_ns))
    return fingerprint(sorted(entries))


__all__ = ["Outcome", "run_stage", "stage_fingerprint", "synth", "ingest", "preprocess",
           "train", "segment", "threshold", "evaluate", "save_labels", "uncertainty",
           "suggest", "pyramid", "label", "analyze", "report", "STEPS"]
