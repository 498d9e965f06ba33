"""The whole method, wired to the run store: ``bigvol.run(config)`` / ``bigvol run``.

Stages, in order, each reading from and writing to the run store (DESIGN.md)::

    input      raw (+ truth for a phantom)       bigvol.synth.phantom / bigvol.ingest
    normalize  normalized                        align -> destripe -> match_histograms
    train      <run>.model/                      bigvol.segment.train on labelled slices
    segment    segmentation, threshold           bigvol.segment.predict / .threshold
    evaluate   (record)                          bigvol.evaluate, when truth labels exist
    analyze    thickness/<phase>, metrics.json   bigvol.metrics
    report     report.html                       bigvol.report

Every stage has a fingerprint: a hash of its parameters, the fingerprints of the stages it
reads and the bigvol version. A stage whose recorded fingerprint matches is skipped. A
volume-sized output is written chunk by chunk with per-chunk done flags
(:meth:`bigvol.store.Run.write`), so a run killed at any point and started again computes
only the missing chunks and ends with arrays and metrics identical to an uninterrupted run.

The stages themselves are the lazy functions of the stage modules; this module is the only
one that decides what to compute and when (with the scheduler chosen by
:mod:`bigvol.cluster`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import __version__
from .cluster import compute_context
from .config import Config, load_config
from .errors import ConfigError, InputError
from .store import DEFAULT_PHASES, UNLABELLED, Run, fingerprint

log = logging.getLogger(__name__)
runlog = logging.getLogger("bigvol.runlog")
runlog.setLevel(logging.INFO)
runlog.propagate = False


def _note(msg, *args):
    """A line for the run log (INFO), also on the console with ``-v``."""
    runlog.info(msg, *args)
    log.info(msg, *args)

STAGES = ("input", "normalize", "train", "segment", "evaluate", "analyze", "report")


def output_paths(run_path) -> dict[str, Path]:
    """Files written beside the run store ``X.zarr``: ``X.metrics.json`` etc."""
    p = Path(run_path)
    stem = p.with_suffix("") if p.suffix == ".zarr" else p
    return {
        "metrics_json": Path(f"{stem}.metrics.json"),
        "metrics_csv": Path(f"{stem}.metrics.csv"),
        "report": Path(f"{stem}.report.html"),
        "model": Path(f"{stem}.model"),
        "log": Path(f"{stem}.log"),
    }


def _source_fingerprint(source: str) -> str:
    """Names, sizes and modification times of the input files (cheap, no reading)."""
    p = Path(source)
    if not p.exists():
        raise InputError(f"input source not found: {p}")
    entries = []
    for root, _dirs, files in os.walk(p) if p.is_dir() else [(str(p.parent), [], [p.name])]:
        for f in sorted(files):
            st = os.stat(os.path.join(root, f))
            entries.append((os.path.relpath(os.path.join(root, f), p), st.st_size, st.st_mtime_ns))
    return fingerprint(sorted(entries))


class Pipeline:
    """One run of the method. Use :func:`run`; this class holds the stage bodies."""

    def __init__(self, cfg: Config, *, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.paths = output_paths(cfg.run)
        self.fps: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.run = self._open_store()

    # -- plumbing ------------------------------------------------------------------------
    def _open_store(self) -> Run:
        path = Path(self.cfg.run)
        if path.exists():
            return Run.open(path, mode="r+")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create the run folder {path.parent}: {e}") from None
        if not os.access(path.parent, os.W_OK):
            raise InputError(f"the output folder {path.parent} is not writable")
        vs = self.cfg.input.voxel_size
        return Run.create(path, voxel_size=vs if vs is not None and None not in vs else None,
                          phases=self.cfg.phases or DEFAULT_PHASES)

    @property
    def phases(self) -> list[str]:
        """The run's phase names: the config's, else those the store holds."""
        return list(self.cfg.phases) if self.cfg.phases else self.run.phases

    @contextmanager
    def _progress(self, label: str):
        if not self.progress:
            yield
            return
        from dask.diagnostics import ProgressBar

        print(f"[bigvol] {label}", flush=True)
        try:
            from distributed import default_client

            default_client()
            distributed = True
        except ValueError:
            distributed = False
        if distributed:
            yield  # the dashboard shows progress
        else:
            with ProgressBar(minimum=1.0, dt=0.5):
                yield

    def _stage(self, name: str, params: dict, upstream: tuple[str, ...], outputs: tuple[str, ...], body):
        fp = fingerprint(name, params, [self.fps.get(u) for u in upstream], __version__)
        self.fps[name] = fp
        rec = self.run.stage(name)
        if rec and rec.get("fingerprint") == fp and all(self.run.is_complete(o) for o in outputs):
            _note("stage %s: up to date, skipped", name)
            self.skipped.append(name)
            return rec
        t0 = time.perf_counter()
        _note("stage %s: started (fingerprint %s)", name, fp[:12])
        with self._progress(f"{name} ..."):
            extra = body(fp) or {}
        seconds = time.perf_counter() - t0
        _note("stage %s: done in %.1f s", name, seconds)
        self.timings[name] = seconds
        self.ran.append(name)
        return self.run.record_stage(
            name, parameters=params, fingerprint=fp, outputs=outputs,
            extra={"seconds": seconds, "results": extra},
        )

    def _write(self, name, data, fp, **kw):
        chunks = self.cfg.compute.chunks
        return self.run.write(name, data, chunks=chunks[-data.ndim:] if data.ndim <= 3 else None,
                              fingerprint=fp, **kw)

    # -- stages --------------------------------------------------------------------------
    def stage_input(self):
        inp = self.cfg.input
        if inp.phantom is not None:
            from . import synth

            params = {"phantom": inp.phantom.model_dump(), "voxel_size": inp.voxel_size}
            kwargs = dict(inp.phantom.params)
            if inp.voxel_size is not None:
                kwargs["voxel_size"] = tuple(inp.voxel_size)

            try:  # names the bad key of input.phantom.params
                synth.parameters(shape=tuple(inp.phantom.shape), **kwargs)
            except ConfigError as e:
                raise ConfigError(f"input.phantom.params: {e}") from None

            def body(fp):
                image, truth = synth.phantom(
                    tuple(inp.phantom.shape), seed=inp.phantom.seed,
                    chunks=self.cfg.compute.chunks, **kwargs,
                )
                self.run.voxel_size = kwargs.get("voxel_size", _phantom_default_voxel_size())
                # image and truth come from one task per chunk: write them in one pass
                self.run.write_arrays({"raw": image, "truth": truth},
                                      chunks=self.cfg.compute.chunks, fingerprint=fp)
                return {"source": "phantom", "true_shifts_px": synth.true_shifts(
                    tuple(inp.phantom.shape), seed=inp.phantom.seed,
                    xy_drift_px=kwargs.get("xy_drift_px", 0.0)).tolist()}

            return self._stage("input", params, (), ("raw", "truth"), body)

        if not inp.source:
            raise ConfigError("input: give either input.source (TIFF folder, multi-page TIFF, Zarr) or input.phantom")
        params = {**inp.model_dump(exclude={"phantom"}), "files": _source_fingerprint(inp.source)}

        def body(fp):
            from .ingest import ingest

            ingest(inp.source, self.run, chunks=inp.chunks or self.cfg.compute.chunks,
                   voxel_size=inp.voxel_size, allow_gaps=inp.allow_gaps)
            if inp.truth:
                ingest(inp.truth, self.run, chunks=inp.chunks or self.cfg.compute.chunks,
                       voxel_size=inp.voxel_size, allow_gaps=inp.allow_gaps, name="truth")
                raw, truth = self.run.zarr_array("raw"), self.run.zarr_array("truth")
                if truth.shape != raw.shape:
                    raise InputError(f"input.truth {inp.truth} has shape {truth.shape} but "
                                     f"input.source {inp.source} has shape {raw.shape}")
            return {"source": str(inp.source)}

        if inp.truth:
            params["truth_files"] = _source_fingerprint(inp.truth)
        outputs = ("raw", "truth") if inp.truth else ("raw",)
        return self._stage("input", params, (), outputs, body)

    def stage_normalize(self):
        c = self.cfg
        params = {"align": c.align.model_dump(), "destripe": c.destripe.model_dump(),
                  "normalize": c.normalize.model_dump()}

        def body(fp):
            stack = self.run.read("raw")
            results = {}
            if c.align.enabled:
                from . import align

                shifts = np.asarray(align.estimate_shifts(stack, **c.align.options))
                stack = align.apply_shifts(stack, shifts)
                results["shifts_px"] = shifts.tolist()
            if c.destripe.enabled:
                from . import destripe

                stack = destripe.destripe(stack, **c.destripe.options)
            if c.normalize.enabled:
                from . import normalize

                ref = c.normalize.reference
                # one pass for the LUTs and the before/after statistics, one to apply them
                fit = normalize.fit_lookup_tables(
                    stack, reference=tuple(ref) if isinstance(ref, (list, tuple)) else ref,
                    method=c.normalize.method, **c.normalize.options,
                )
                results["statistics_before"] = normalize.statistics_to_lists(fit["before"])
                results["statistics_after"] = normalize.statistics_to_lists(fit["after"])
                stack = normalize.apply_lookup_tables(stack, fit["luts"])
            self._write("normalized", stack, fp)
            return results

        return self._stage("normalize", params, ("input",), ("normalized",), body)

    def _training_slices(self) -> list[int]:
        t = self.cfg.segment.train
        nz = self.run.zarr_array("normalized").shape[0]
        if t.slices is not None:
            bad = [s for s in t.slices if not -nz <= s < nz]
            if bad:
                raise ConfigError(f"segment.train.slices: {bad} outside the stack of {nz} slices")
            return [s % nz for s in t.slices]
        n = min(t.n_slices, nz)
        # spread along z, away from the ends: (i + 0.5) / n of the stack
        return sorted({int((i + 0.5) * nz / n) for i in range(n)})

    def stage_train(self):
        seg = self.cfg.segment
        if seg.method != "segnet":
            return None
        if seg.model is not None:
            self.model_path = Path(seg.model)
            if not self.model_path.exists():
                raise InputError(f"segment.model: no model at {self.model_path}")
            self.fps["train"] = fingerprint("model", _source_fingerprint(str(self.model_path)))
            return None
        slices = self._training_slices()
        params = {"train": seg.train.model_dump(), "slices": slices, "phases": self.phases}
        self.model_path = self.paths["model"]

        def body(fp):
            from . import segment

            stack = self.run.read("normalized")
            labels = self._training_labels(slices)
            opts = dict(seg.train.options)
            opts.setdefault("classes", self.phases)
            model = segment.train(stack, labels, slices=slices, progress=self.progress, **opts)
            model.save(self.model_path)
            return {"model": str(self.model_path), "slices": slices}

        return self._stage("train", params, ("normalize",), (), body)

    def _training_labels(self, slices):
        t = self.cfg.segment.train
        if t.labels == "truth":
            if "truth" not in self.run:
                raise ConfigError(
                    "segment.train.labels is 'truth' but the run store has no ground truth; "
                    "give label images (segment.train.labels: path) or segment.model"
                )
            truth = self.run.zarr_array("truth")
            return np.stack([truth[s] for s in slices])
        from .segment.train import read_labels

        return read_labels(t.labels, slices)

    def stage_segment(self):
        seg = self.cfg.segment
        params = {**seg.model_dump(exclude={"train"}), "phases": self.phases}
        upstream = ("normalize", "train") if seg.method == "segnet" else ("normalize",)
        outputs = ("segmentation",) + (("threshold",) if seg.baseline else ())
        if seg.probabilities and seg.method == "segnet":
            outputs += ("probabilities",)

        def body(fp):
            from . import segment

            stack = self.run.read("normalized")
            if seg.method == "segnet":
                model = segment.Model.load(self.model_path)
                if model.n_classes != len(self.phases):
                    raise ConfigError(
                        f"the model {self.model_path} segments {model.n_classes} classes "
                        f"({', '.join(model.classes)}) but the run names {len(self.phases)} "
                        f"phases ({', '.join(self.phases)}); set phases: to the model's classes")
                kw = dict(tile=seg.tile, overlap=seg.overlap, device=seg.device, amp=seg.amp,
                          tta=seg.tta)
                if seg.probabilities:
                    probs = segment.predict(stack, model, probabilities=True, **kw)
                    cz = self.cfg.compute.chunks
                    probs = probs.rechunk((probs.shape[0],) + tuple(cz))
                    self.run.write("probabilities", probs, fingerprint=fp)
                    pred = self.run.read("probabilities").argmax(axis=0).astype(np.uint8)
                else:
                    pred = segment.predict(stack, model, **kw)
            else:
                pred = segment.threshold(stack, classes=len(self.phases))
            self._write("segmentation", pred, fp)
            if seg.baseline:
                self._write("threshold", segment.threshold(stack, classes=len(self.phases)), fp)
            self.run.phases = self.phases
            return {}

        return self._stage("segment", params, upstream, outputs, body)

    def stage_evaluate(self):
        if "truth" not in self.run:
            return None
        methods = ["segmentation"] + (["threshold"] if "threshold" in self.run else [])

        held_out = None
        if self.cfg.segment.method == "segnet" and self.cfg.segment.train.labels == "truth" \
                and self.cfg.segment.model is None and self.cfg.input.phantom is None:
            # hand labels, not a phantom's exact truth: score only the slices not trained on
            held_out = sorted(set(range(self.run.zarr_array("truth").shape[0]))
                              - set(self._training_slices()))

        def body(fp):
            import dask.array as da

            from .evaluate import evaluate

            truth = self.run.read("truth")
            if held_out is not None:
                keep = np.zeros(truth.shape[0], bool)
                keep[held_out] = True
                keep = da.from_array(keep, chunks=(truth.chunks[0],))
                truth = da.where(keep[:, None, None], truth, UNLABELLED).astype(truth.dtype)
            out = {"scored_slices": held_out} if held_out is not None else {}
            for m in methods:
                r = evaluate(truth, self.run.read(m), n_classes=len(self.phases))
                key = ("segnet" if self.cfg.segment.method == "segnet" else "threshold") if m == "segmentation" else "threshold"
                out[key] = {
                    "accuracy": r["accuracy"],
                    "recall": r["recall"].tolist(),
                    "precision": r["precision"].tolist(),
                    "iou": r["iou"].tolist(),
                    "confusion": r["confusion"].tolist(),
                    "confusion_normalized": r["confusion_normalized"].tolist(),
                    "accuracy_per_slice": r["accuracy_per_slice"].tolist(),
                }
            return out

        return self._stage("evaluate", {"methods": methods, "held_out": held_out}, ("segment",), (), body)

    def stage_analyze(self):
        a = self.cfg.analyze
        params = a.model_dump()

        def body(fp):
            out = {}
            if a.write_labels:
                from .label import write_labels

                name, n = write_labels(self.run, "all", connectivity=a.connectivity, fingerprint=fp)
                out["labels"] = {"array": name, "n_components": int(n)}
            out.update(analyze_store(self.run, a, write=lambda n, d: self._write(n, d, fp)))
            return out

        outputs = ("labels/all",) if a.write_labels else ()
        return self._stage("analyze", params, ("segment",), outputs, body)

    def metrics(self) -> dict:
        """metrics.json: the analyze results plus evaluation, normalization and timings."""
        stages = self.run.stages
        m = {
            "run": str(self.cfg.run),
            "bigvol_version": __version__,
            "shape": list(self.run.zarr_array("segmentation").shape),
            "voxel_size_nm": self.run.voxel_size,
            "phases": self.run.phases,
        }
        m.update(stages.get("analyze", {}).get("results", {}))
        if "evaluate" in stages:
            m["evaluation"] = stages["evaluate"]["results"]
        norm = stages.get("normalize", {}).get("results", {})
        if "statistics_before" in norm:
            ref = self.cfg.normalize.reference
            m["normalization"] = {
                "method": self.cfg.normalize.method,
                "reference": self.run.zarr_array("raw").shape[0] // 2 if ref is None else ref,
                "before": norm["statistics_before"],
                "after": norm["statistics_after"],
            }
        if "shifts_px" in norm:
            m["alignment"] = {"shifts_px": norm["shifts_px"]}
        m["timings_s"] = {k: v.get("seconds") for k, v in stages.items() if "seconds" in v}
        return m

    def write_metrics(self) -> dict:
        m = self.metrics()
        _atomic_write(self.paths["metrics_json"], json.dumps(_finite(m), indent=2, default=_json_default))
        from .compare import write_metrics_csv

        write_metrics_csv(m, self.paths["metrics_csv"])
        return m

    def stage_report(self, metrics):
        if not self.cfg.report.enabled:
            return None
        from .report import write_report

        write_report(self.cfg.run, metrics, self.paths["report"])
        return self.paths["report"]

    def run_all(self):
        with self._run_log():
            self.stage_input()
            self.stage_normalize()
            self.stage_train()
            self.stage_segment()
            self.stage_evaluate()
            self.stage_analyze()
            metrics = self.write_metrics()
            self.stage_report(metrics)
        return metrics

    @contextmanager
    def _run_log(self):
        """Append this run's log (stages started, skipped, done with seconds, failures, the
        config, the scheduler) to ``X.log`` beside the run store ``X.zarr`` (a file inside
        the Zarr group would be reported by zarr as a foreign object on every listing)."""
        handler = logging.FileHandler(self.paths["log"], encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        # the run's own lines (INFO) go to the file only; bigvol's warnings go there too
        # and still reach the console as usual
        loggers = (runlog, logging.getLogger("bigvol"))
        for lg in loggers:
            lg.addHandler(handler)
        t0 = time.perf_counter()
        try:
            _note("bigvol %s: run started, config %s", __version__,
                  json.dumps(self.cfg.model_dump(mode="json"), sort_keys=True))
            try:
                from distributed import default_client

                _note("scheduler: dask distributed, dashboard %s", default_client().dashboard_link)
            except (ImportError, ValueError):
                _note("scheduler: %s", self.cfg.compute.scheduler)
            yield
            _note("run finished in %.1f s (ran: %s; up to date: %s)", time.perf_counter() - t0,
                  ", ".join(self.ran) or "-", ", ".join(self.skipped) or "-")
        except BaseException as e:
            runlog.error("run failed after %.1f s: %s: %s", time.perf_counter() - t0, type(e).__name__, e)
            raise
        finally:
            for lg in loggers:
                lg.removeHandler(handler)
            handler.close()


def _phantom_default_voxel_size():
    import inspect

    from . import synth

    return inspect.signature(synth.phantom).parameters["voxel_size"].default


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def analyze_store(run: Run, a, *, write=None) -> dict:
    """All structure metrics of the run's ``segmentation``; thickness maps written via ``write``."""
    from . import metrics as M

    phases = run.read("segmentation")
    vs = run.voxel_size
    names = run.phases
    out: dict = {}
    vf = M.volume_fractions(phases)
    out["volume_fractions"] = {names[k]: float(v) for k, v in vf.items() if k < len(names)}
    perc = _jsonable_table(M.percolation(phases, connectivity=a.connectivity))
    out["percolation"] = perc
    if a.faces == "both":
        # the percolation table's isolated fraction is isolated_fraction(faces="both"):
        # no second labelling pass
        out["isolated_fraction"] = {
            names[ph]: float(iso)
            for ph, ax, iso in zip(perc["phase"], perc["axis"], perc["isolated_fraction"])
            if ax == a.axis and ph < len(names)
        }
    else:
        out["isolated_fraction"] = {
            names[p]: float(M.isolated_fraction(phases, p, axis=a.axis, faces=a.faces,
                                                connectivity=a.connectivity))
            for p in range(len(names))
        }
    thickness = {}
    # the configured phase lists are for three phases; a run with fewer measures those it has
    for p in [p for p in a.thickness_phases if p < len(names)]:
        if vf.get(p, 0.0) >= 1.0:  # a phase filling the volume has no finite thickness
            thickness[names[p]] = {"undefined": f"{names[p]} fills the whole volume"}
            continue
        lt = M.local_thickness(phases, p, voxel_size=vs, max_diameter=a.thickness_max_diameter)
        if write is not None:
            write(f"thickness/{names[p]}", lt)
            lt = run.read(f"thickness/{names[p]}")
        thickness[names[p]] = M.thickness_summary(lt, voxel_size=vs, unit="nm" if vs else "vox")
    out["thickness"] = thickness
    if a.tortuosity.enabled:
        out["tortuosity"] = {
            names[p]: _jsonable_table(M.tortuosity(phases, p, axis=a.axis, voxel_size=vs, **a.tortuosity.options))
            for p in a.tortuosity.phases if p < len(names)
        }
    if a.interfaces:
        out["interfaces"] = _named_phase_keys(
            _jsonable_table(M.interfaces(phases, voxel_size=vs, n_phases=len(names))), names)
    return out


def _named_phase_keys(d: dict, names) -> dict:
    """``area_per_volume_0-2_um-1`` -> ``area_per_volume_pore-active_material_um-1``."""
    import re

    def name(i):
        i = int(i)
        return names[i].replace(" ", "_") if i < len(names) else str(i)

    out = {}
    for k, v in d.items():
        k = re.sub(r"_(\d+)-(\d+)_", lambda m: f"_{name(m[1])}-{name(m[2])}_", k)
        k = re.sub(r"^specific_surface_(\d+)_", lambda m: f"specific_surface_{name(m[1])}_", k)
        out[k] = v
    return out


def _jsonable_table(t):
    """Plain JSON types; non-finite numbers (tau = inf: no percolating path) become None."""
    return _finite(json.loads(json.dumps(t, default=_json_default)))


def _finite(o):
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_finite(v) for v in o]
    return o


#: ``bigvol demo``: the whole method on a phantom, sized for a few minutes on 2 CPU cores.
#: configs/demo.yaml holds the same settings (a test keeps them equal).
DEMO_CONFIG = {
    "input": {"phantom": {"shape": [48, 320, 320], "seed": 0}},
    "normalize": {"method": "histogram"},
    "segment": {
        "method": "segnet",
        "train": {"labels": "truth", "n_slices": 4,
                  "options": {"k": 5, "class_weights": "sqrt", "epochs": 12,
                              "steps_per_epoch": 40, "time_limit": 240}},
    },
    # the TauFactor solve takes minutes per sub-volume on 2 cores: off in the demo
    "analyze": {"axis": 1, "connectivity": 26, "tortuosity": {"enabled": False}},
    "compute": {"scheduler": "threads", "chunks": [16, 160, 160]},
}


def demo_config(out) -> dict:
    """The demo config with its run store in the folder ``out``."""
    import copy

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["run"] = str(Path(out) / "demo.zarr")
    return cfg


def analyze_run(run_path, *, axis=1, connectivity=26, faces="both", tortuosity=True,
                scheduler="threads", progress=False):
    """``bigvol analyze``: the metrics stage alone on an existing run store with a segmentation."""
    cfg = load_config({
        "run": str(run_path),
        "analyze": {"axis": axis, "connectivity": connectivity, "faces": faces,
                    "tortuosity": {"enabled": bool(tortuosity)}},
        "compute": {"scheduler": scheduler},
    })
    if not Path(run_path).exists():
        raise InputError(f"no run store at {run_path}")
    with compute_context(scheduler):
        p = Pipeline(cfg, progress=progress)
        seg = p.run.zarr_array("segmentation")
        p.fps["segment"] = (p.run.stage("segment") or {}).get("fingerprint") or fingerprint(
            dict(seg.attrs.get("bigvol", {})))
        p.stage_analyze()
        return p.write_metrics(), p.paths


def run(config, *, overrides: dict | None = None, progress: bool = True) -> Path:
    """Run the whole method from a config (YAML path, dict or :class:`~bigvol.config.Config`).

    Returns the path of the run store; ``metrics.json``, ``metrics.csv`` and
    ``report.html`` lie beside it (``<run>.metrics.json`` ...). Stages already done with
    the same inputs and parameters are skipped; an interrupted stage resumes.
    """
    cfg = load_config(config, overrides)
    c = cfg.compute
    with compute_context(c.scheduler, workers=c.workers, threads_per_worker=c.threads_per_worker,
                         memory_limit=c.memory_limit, memory_budget=c.memory_budget):
        try:
            Pipeline(cfg, progress=progress).run_all()
        except PermissionError as e:
            raise InputError(f"cannot write {e.filename}: permission denied (is the output folder read-only?)") from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise InputError(f"disk full while writing {e.filename or cfg.run}") from None
            if e.errno == errno.EROFS:
                raise InputError(f"cannot write {e.filename or cfg.run}: the file system is read-only") from None
            raise
    return Path(cfg.run)


__all__ = ["run", "Pipeline", "analyze_store", "analyze_run", "demo_config", "output_paths", "STAGES", "DEMO_CONFIG"]
