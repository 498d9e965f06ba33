"""The whole method, wired to the run store: ``bigvol.run(config)`` / ``bigvol run``.

The stages, in order (:mod:`bigvol.stages`, where each one is a function that the
matching ``bigvol STAGE`` command calls too)::

    synth | ingest   raw (+ truth)                  a phantom, or the files of input.source
    normalize        normalized                     align -> destripe -> normalize
    train            <run>.model                    SegNet or random forest on labelled slices
    segment          segmentation (+ threshold)     that model or multi-Otsu (+ the baseline)
    evaluate         (record)                       scores against truth, when there is one
    label            labels/all                     when analyze.write_labels
    analyze          thickness/<phase>, metrics     bigvol.metrics
    report           <run>.report.html              bigvol.report

This module only turns the config into the stages' arguments and calls them in order;
each stage decides from its fingerprint whether it is up to date (see
:mod:`bigvol.stages`), so a run killed at any point and started again computes only what
is missing and ends identical to an uninterrupted run. Where it runs comes from
:mod:`bigvol.cluster`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

from . import stages
from ._version import __version__
from .cluster import compute_context
from .config import Config, load_config
from .conventions import DEFAULT_PHASES, output_paths
from .errors import ConfigError, InputError
from .options import PredictOptions
from .record import write_metrics
from .stages import note, runlog
from .store import Run
from .validate import phase_code

log = logging.getLogger(__name__)

STAGES = ("synth", "ingest", "normalize", "train", "segment", "threshold", "evaluate", "label",
          "analyze", "report")


class _RunLogHandler(logging.FileHandler):
    """The run log file; a line that cannot be written (a full or read-only disk) is
    dropped without a traceback: the error itself reaches the user on the console."""

    def handleError(self, record):
        pass


class Pipeline:
    """One run of the method from a config. Use :func:`run`."""

    def __init__(self, cfg: Config, *, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.paths = output_paths(cfg.run)
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.run = self._open_store()

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

    def _did(self, outcome: stages.Outcome) -> stages.Outcome:
        (self.skipped if outcome.skipped else self.ran).append(outcome.name)
        return outcome

    # -- the stages, from the config ---------------------------------------------------
    def stage_input(self):
        inp, chunks = self.cfg.input, self.cfg.compute.chunks
        if inp.phantom is not None:
            params = dict(inp.phantom.params)
            if inp.voxel_size is not None:
                params["voxel_size"] = tuple(inp.voxel_size)
            try:  # names the bad key of input.phantom.params
                from . import synth

                synth.parameters(shape=tuple(inp.phantom.shape), **params)
            except ConfigError as e:
                raise ConfigError(f"input.phantom.params: {e}") from None
            return self._did(stages.synth(self.run, shape=inp.phantom.shape,
                                          seed=inp.phantom.seed, chunks=chunks,
                                          progress=self.progress, **params))
        if not inp.source:
            raise ConfigError("input: give either input.source (TIFF folder, multi-page TIFF, "
                              "Zarr) or input.phantom")
        if not Path(inp.source).exists():
            raise InputError(f"input source not found: {inp.source}")
        kw = {"chunks": inp.chunks or chunks, "voxel_size": inp.voxel_size,
                  "allow_gaps": inp.allow_gaps}
        out = self._did(stages.ingest(self.run, inp.source, **kw))
        if inp.truth:
            self._did(stages.ingest(self.run, inp.truth, name="truth", **kw))
            raw, truth = self.run.zarr_array("raw"), self.run.zarr_array("truth")
            if truth.shape != raw.shape:
                raise InputError(f"input.truth {inp.truth} has shape {truth.shape} but "
                                 f"input.source {inp.source} has shape {raw.shape}")
        return out

    def stage_normalize(self):
        c = self.cfg
        steps = [(kind, getattr(c, kind).options) for kind in ("align", "destripe")
                 if getattr(c, kind).enabled]
        if c.normalize.enabled:
            steps.append(("normalize", c.normalize.function_options()))
        return self._did(stages.preprocess(self.run, steps, source="raw", output="normalized",
                                           chunks=c.compute.chunks, progress=self.progress))

    def training_slices(self) -> list[int]:
        t = self.cfg.segment.train
        nz = self.run.zarr_array("normalized").shape[0]
        if t.labels == "store" and t.slices is None:
            return self.run.labelled_slices()
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
        if seg.method == "threshold":
            return None
        if seg.model is not None:
            self.model_path = Path(seg.model)
            if not self.model_path.exists():
                raise InputError(f"segment.model: no model at {self.model_path}")
            return None
        self.model_path = self.paths["model"]
        t = seg.train
        if t.labels == "truth" and "truth" not in self.run:
            raise ConfigError(
                "segment.train.labels is 'truth' but the run store has no ground truth; "
                "give label images (segment.train.labels: path) or segment.model")
        if t.labels == "store" and not self.run.labelled_slices():
            raise ConfigError(
                "segment.train.labels is 'store' but the run store holds no painted labels "
                "(labels/train); paint some in the viewer (bigvol view) first")
        return self._did(stages.train(
            self.run, t.labels, self.training_slices(),
            options=t.options if seg.method == "segnet" else seg.forest, method=seg.method,
            classes=self.phases, image="normalized", out=self.model_path,
            progress=self.progress))

    def stage_segment(self):
        seg = self.cfg.segment
        opts = PredictOptions(tile=seg.tile, overlap=seg.overlap, device=seg.device,
                              amp=seg.amp, tta=seg.tta)
        trained = seg.method != "threshold"
        model = getattr(self, "model_path", None) if trained else None
        if model is not None:
            from .segment import Model

            m = Model.load(model)
            if m.n_classes != len(self.phases):
                raise ConfigError(
                    f"the model {model} segments {m.n_classes} classes "
                    f"({', '.join(m.classes)}) but the run names {len(self.phases)} "
                    f"phases ({', '.join(self.phases)}); set phases: to the model's classes")
            model = m
        self.run.phases = self.phases
        out = self._did(stages.segment(
            self.run, method=seg.method, model=model, options=opts,
            probabilities=seg.probabilities and trained, image="normalized",
            chunks=self.cfg.compute.chunks, progress=self.progress))
        if seg.baseline:
            self._did(stages.threshold(self.run, image="normalized",
                                       chunks=self.cfg.compute.chunks, progress=self.progress))
        if "probabilities" in out.record.get("outputs", ()):
            self._did(stages.uncertainty(self.run, progress=self.progress))
        return out

    def stage_pyramids(self, *names):
        p = self.cfg.pyramids
        if p.enabled:
            for name in names:
                self._did(stages.pyramid(self.run, name, min_size=p.min_size,
                                         progress=self.progress))

    def stage_evaluate(self):
        if "truth" not in self.run:
            return None
        held_out = None
        c = self.cfg
        if c.segment.method != "threshold" and c.segment.train.labels in ("truth", "store") \
                and c.segment.model is None and c.input.phantom is None:
            # hand labels, not a phantom's exact truth: score only the slices not trained on
            held_out = sorted(set(range(self.run.zarr_array("truth").shape[0]))
                              - set(self.training_slices()))
        arrays = ["segmentation"] + (["threshold"] if c.segment.baseline else [])
        return self._did(stages.evaluate(self.run, arrays=arrays, scored_slices=held_out,
                                         progress=self.progress))

    def stage_analyze(self):
        a = self.cfg.analyze
        if a.write_labels:
            self._did(stages.label(self.run, "all", connectivity=a.connectivity,
                                   progress=self.progress))
        return self._did(stages.analyze(self.run, a, progress=self.progress))

    def stage_report(self):
        if not self.cfg.report.enabled:
            return None
        return stages.report(self.run, self.metrics, self.paths["report"])

    def run_all(self) -> dict:
        with self._run_log():
            self.stage_input()
            self.stage_normalize()
            self.stage_pyramids("raw", "normalized")
            self.stage_train()
            self.stage_segment()
            self.stage_pyramids("segmentation")
            self.stage_evaluate()
            self.stage_analyze()
            self.metrics = write_metrics(self.run)
            self.stage_report()
        return self.metrics

    @contextmanager
    def _run_log(self):
        """Append this run's log (stages started, skipped, done with seconds, failures, the
        config, the scheduler) to ``X.log`` beside the run store ``X.zarr`` (a file inside
        the Zarr group would be reported by zarr as a foreign object on every listing)."""
        handler = _RunLogHandler(self.paths["log"], encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        # the run's own lines (INFO) go to the file only; bigvol's warnings go there too
        # and still reach the console as usual
        loggers = (runlog, logging.getLogger("bigvol"))
        for lg in loggers:
            lg.addHandler(handler)
        t0 = time.perf_counter()
        try:
            note("bigvol %s: run started, config %s", __version__,
                 json.dumps(self.cfg.model_dump(mode="json"), sort_keys=True))
            try:
                from distributed import default_client

                note("scheduler: dask distributed, dashboard %s", default_client().dashboard_link)
            except (ImportError, ValueError):
                note("scheduler: %s", self.cfg.compute.scheduler)
            yield
            note("run finished in %.1f s (ran: %s; up to date: %s)", time.perf_counter() - t0,
                 ", ".join(self.ran) or "-", ", ".join(self.skipped) or "-")
        except BaseException as e:
            runlog.error("run failed after %.1f s: %s: %s", time.perf_counter() - t0,
                         type(e).__name__, e)
            raise
        finally:
            for lg in loggers:
                lg.removeHandler(handler)
            handler.close()


#: ``bigvol demo``: the whole method on a phantom, sized for a few minutes on 2 CPU cores.
#: configs/demo.yaml holds the same settings (a test keeps them equal).
DEMO_CONFIG = {
    "input": {"phantom": {"shape": [48, 320, 320], "seed": 0}},
    "normalize": {"method": "histogram"},
    "segment": {
        "method": "segnet",
        "train": {"labels": "truth", "n_slices": 4,
                  "options": {"k": 5, "epochs": 12,
                              "steps_per_epoch": 40}},
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
                tortuosity_phases=None, scheduler="threads", progress=False):
    """``bigvol analyze``: the metrics stage alone on an existing run store with a
    segmentation; writes metrics.json / metrics.csv beside it. Returns ``(metrics, paths)``.

    ``tortuosity_phases``: the phases whose tortuosity is solved, by name or code (default
    code 1, the solid electrolyte; the pores carry the ions of a liquid-electrolyte cell)."""
    from .config import AnalyzeConfig

    if not Path(run_path).exists():
        raise InputError(f"no run store at {run_path}")
    with compute_context(scheduler):
        r = Run.open(run_path, mode="r+")
        tort = {"enabled": bool(tortuosity)}
        if tortuosity_phases is not None:
            tort["phases"] = [phase_code(p, r.phases, where="--tortuosity-phases")
                              for p in tortuosity_phases]
        a = AnalyzeConfig(axis=axis, connectivity=connectivity, faces=faces, tortuosity=tort)
        stages.analyze(r, a, progress=progress)
        return write_metrics(r), r.paths


def run(config, *, overrides: dict | None = None, progress: bool = True) -> Path:
    """Run the whole method from a config (YAML path, dict or :class:`~bigvol.config.Config`).

    Returns the path of the run store; ``metrics.json``, ``metrics.csv`` and
    ``report.html`` lie beside it (``<run>.metrics.json`` ...). Stages already done with
    the same inputs and parameters are skipped; an interrupted stage resumes.
    """
    cfg = load_config(config, overrides)
    c = cfg.compute
    with compute_context(c.scheduler, workers=c.workers, threads_per_worker=c.threads_per_worker,
                         memory_limit=c.memory_limit, memory_budget=c.memory_budget,
                         jobqueue=c.jobqueue):
        try:
            Pipeline(cfg, progress=progress).run_all()
        except PermissionError as e:
            raise InputError(
                f"cannot write {e.filename}: permission denied (is the output folder read-only?)"
            ) from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise InputError(f"disk full while writing {e.filename or cfg.run}") from None
            if e.errno == errno.EROFS:
                raise InputError(
                    f"cannot write {e.filename or cfg.run}: the file system is read-only"
                ) from None
            raise
    return Path(cfg.run)


__all__ = ["run", "Pipeline", "analyze_run", "demo_config", "STAGES", "DEMO_CONFIG"]
