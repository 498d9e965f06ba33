"""Run configuration: YAML files under ``configs/`` validated into typed sections.

Every section maps onto the arguments of one stage function, so a config key means what
the function's keyword means. Unknown keys and bad values are refused with a message that
names the key (``segment.tile``) and the allowed values.

Command-line overrides use dotted keys: ``--set segment.method=threshold``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .conventions import DEFAULT_CHUNKS
from .errors import ConfigError
from .options import (
    AlignOptions,
    DestripeOptions,
    ForestOptions,
    NormalizeOptions,
    TortuosityOptions,
    TrainOptions,
    options_model,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PhantomConfig(_Section):
    """Generate the input instead of reading it: ``bigvol.synth.phantom(shape, seed, **params)``."""

    shape: tuple[int, int, int] = (64, 512, 512)
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict)


class InputConfig(_Section):
    """``bigvol.ingest(source, ...)``, or a phantom when ``phantom`` is given."""

    source: str | None = None
    phantom: PhantomConfig | None = None
    #: nm (z, y, x); an entry left null is read from the files (e.g. [50, null, null]
    #: takes the milling step from here and the pixel size from FEI/Zeiss metadata)
    voxel_size: tuple[float | None, float | None, float | None] | None = None
    chunks: tuple[int, int, int] | None = None
    allow_gaps: bool = False
    #: hand labels of the same stack (a TIFF / Zarr of the same shape; class codes, 255 =
    #: unlabelled), stored as ``truth``: train on some of its slices
    #: (``segment.train.labels: truth``) and score on the others (the evaluate stage)
    truth: str | None = None


class AlignConfig(_Section):
    """``bigvol.align.estimate_shifts`` + ``apply_shifts``; ``options`` are their keywords."""

    enabled: bool = False
    options: AlignOptions = Field(default_factory=AlignOptions)


class DestripeConfig(_Section):
    """``bigvol.destripe.destripe``; ``options`` are its keywords."""

    enabled: bool = False
    options: DestripeOptions = Field(default_factory=DestripeOptions)


#: the keywords of ``fit_lookup_tables`` other than method and reference
NormalizeMoreOptions = options_model("NormalizeMoreOptions", "normalize options",
                                     NormalizeOptions, exclude=("method", "reference"))


class NormalizeConfig(_Section):
    """``bigvol.normalize.match_histograms(stack, reference=..., method=..., **options)``."""

    enabled: bool = True
    method: Literal["histogram", "percentile"] = "histogram"
    reference: int | tuple[int, int] | None = None
    options: NormalizeMoreOptions = Field(default_factory=NormalizeMoreOptions)

    def function_options(self) -> NormalizeOptions:
        """All the keywords, as the ``normalize`` stage takes them."""
        return NormalizeOptions(method=self.method, reference=self.reference,
                                **self.options.kwargs())


class TrainConfig(_Section):
    """``bigvol.segment.train`` on labelled slices of the run.

    ``labels``: ``"truth"`` (the phantom's ground truth array in the run store),
    ``"store"`` (the labels painted in the viewer, ``labels/train``; ``slices`` default to
    the labelled ones) or a path of label images (TIFF/PNG, 255 = unlabelled), one per
    entry of ``slices``.
    """

    labels: str = "truth"
    slices: list[int] | None = None
    n_slices: int = Field(4, ge=1)
    #: keywords of ``bigvol.segment.train`` (k, epochs, steps_per_epoch, crop, ...)
    options: TrainOptions = Field(default_factory=TrainOptions)


class SegmentConfig(_Section):
    """``bigvol.segment.predict(stack, model, tile=..., overlap=..., device=...)``."""

    #: ``segnet`` (the CNN), ``forest`` (an ilastik-style random forest on multiscale
    #: features, bigvol.segment.train_forest: ahead of the SegNet with sparse strokes and on
    #: some simpler stacks, trains in minutes) or ``threshold`` (multi-Otsu, no training)
    method: Literal["segnet", "forest", "threshold"] = "segnet"
    model: str | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    #: keywords of ``bigvol.segment.train_forest`` (k, n_trees, max_pixels, sigma_max, ...)
    #: for ``method: forest``; ``train.labels`` / ``slices`` / ``n_slices`` say what it learns
    forest: ForestOptions = Field(default_factory=ForestOptions)
    tile: int | None = None
    overlap: int | None = None
    device: str = "auto"
    #: bfloat16/float16 autocast; None = on for CUDA, off on the CPU (see predict's ``amp``)
    amp: bool | None = None
    probabilities: bool = False
    #: test-time augmentation: views averaged per tile (1, 2, 4 or 8; see predict's ``tta``)
    tta: Literal[1, 2, 4, 8] = 1
    baseline: bool = True


class TortuosityConfig(_Section):
    enabled: bool = True
    phases: list[int] = Field(default_factory=lambda: [1])
    #: keywords of ``bigvol.metrics.tortuosity`` (max_voxels, n_subvolumes, iter_limit, ...)
    options: TortuosityOptions = Field(default_factory=TortuosityOptions)


class AnalyzeConfig(_Section):
    """The structure metrics (``bigvol.metrics``)."""

    axis: int = Field(1, ge=0, le=2)
    connectivity: Literal[6, 18, 26] = 26
    faces: Literal["both", "either", "low", "high"] = "both"
    thickness_phases: list[int] = Field(default_factory=lambda: [1, 0, 2])
    #: cap of the local thickness, in nm (voxels without a voxel size): balls larger than
    #: this are not painted, which bounds the halo for coarse phases (active-material
    #: particles of several um need a halo of 2R ~ 200 voxels otherwise); None = exact
    thickness_max_diameter: float | None = Field(None, gt=0)
    tortuosity: TortuosityConfig = Field(default_factory=TortuosityConfig)
    interfaces: bool = True
    write_labels: bool = False


class ReportConfig(_Section):
    enabled: bool = True


class PyramidConfig(_Section):
    """Downsampled levels of raw, normalized and segmentation for viewers
    (:mod:`bigvol.pyramid`): 2x per level in y and x until both are at most ``min_size``."""

    enabled: bool = True
    min_size: int = Field(512, ge=16)


class JobQueueConfig(_Section):
    """The batch job that carries Dask workers on Slurm or PBS (``compute.scheduler: slurm``
    or ``pbs``), launched with dask-jobqueue (``pip install bigvol[hpc]``).

    One job = one node allocation of ``cores`` and ``memory`` running ``processes`` worker
    processes. ``jobs`` jobs are submitted, or with ``adaptive: [min, max]`` dask-jobqueue
    submits and cancels jobs with the load. Workers retire a few minutes before
    ``walltime`` (``--lifetime``), so the batch scheduler never kills a worker in the middle
    of a chunk; their tasks move to the other workers (and adaptive mode submits new jobs).
    """

    cores: int = Field(8, ge=1)
    memory: str = "32GB"
    #: worker processes per job (their threads share the job's cores)
    processes: int = Field(1, ge=1)
    walltime: str = "02:00:00"
    #: Slurm partition / PBS queue
    queue: str | None = None
    account: str | None = None
    #: GPUs per job: ``--gres=gpu:N`` (Slurm) / ``ngpus=N`` (PBS), and the workers declare
    #: the Dask resource ``GPU`` so that inference tasks land on them
    gpus: int = Field(0, ge=0)
    jobs: int = Field(1, ge=1)
    adaptive: tuple[int, int] | None = None
    #: more ``#SBATCH`` / ``#PBS`` lines, e.g. ["--constraint=avx512", "--qos=long"]
    job_extra_directives: list[str] = Field(default_factory=list)
    #: shell lines run before the worker starts, e.g.
    #: ["module load cuda", "source venv/bin/activate"]
    job_script_prologue: list[str] = Field(default_factory=list)
    #: the Python on the compute nodes (default: the one running bigvol)
    python: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    #: network interface of the workers and the scheduler (e.g. ib0)
    interface: str | None = None
    #: seconds to wait for the first worker to start before giving up
    startup_timeout: float = Field(600.0, gt=0)

    @field_validator("adaptive")
    @classmethod
    def _adaptive(cls, v):
        if v is not None and not 0 <= v[0] <= v[1]:
            raise ValueError(
                "adaptive must be [minimum, maximum] jobs with 0 <= minimum <= maximum")
        return v


class ComputeConfig(_Section):
    """Where it runs (``bigvol.cluster.compute_context``)."""

    scheduler: str = "threads"
    workers: int | None = Field(None, ge=1)
    threads_per_worker: int | None = Field(None, ge=1)
    memory_limit: str | int | None = None
    memory_budget: str | int | None = None
    chunks: tuple[int, int, int] = DEFAULT_CHUNKS
    #: the job shape when ``scheduler`` is ``slurm`` or ``pbs``
    jobqueue: JobQueueConfig = Field(default_factory=JobQueueConfig)

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v):
        from .cluster import validate_scheduler

        try:
            return validate_scheduler(v)
        except ConfigError as e:
            raise ValueError(str(e).split(": ", 1)[-1]) from None


class Config(_Section):
    """The whole pipeline (``bigvol.run``)."""

    run: str
    #: phase (class) names, index = code; default pore, solid electrolyte, active material.
    #: The number of names is the number of classes the SegNet and the threshold segment.
    phases: list[str] | None = None
    input: InputConfig = Field(default_factory=InputConfig)
    align: AlignConfig = Field(default_factory=AlignConfig)
    destripe: DestripeConfig = Field(default_factory=DestripeConfig)
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    analyze: AnalyzeConfig = Field(default_factory=AnalyzeConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    pyramids: PyramidConfig = Field(default_factory=PyramidConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _model_at(Config, e["loc"][:-1])
            allowed = ", ".join(parent.model_fields) if parent else "?"
            lines.append(f"unknown key {key!r} (allowed here: {allowed})")
        elif e["type"] == "literal_error":
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
        elif e["type"] == "value_error" and isinstance(e.get("ctx", {}).get("error"), ConfigError):
            # an option block's own message (an unknown option and the allowed ones)
            lines.append(f"{key}: {str(e['ctx']['error']).split(': ', 1)[-1]}")
        elif e["type"] == "missing":
            lines.append(f"missing required key {key!r}")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid config {source}: " + "; ".join(lines)


def _model_at(model, loc):
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        ann = field.annotation
        sub = next(
            (
                a for a in getattr(ann, "__args__", (ann,))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
        if sub is None:
            return None
        model = sub
    return model


def _set_dotted(d: dict, key: str, value) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override {key}: {p!r} is not a section")
    d[parts[-1]] = value


def parse_overrides(items) -> dict:
    """``["segment.method=threshold", "compute.workers=2"]`` -> nested dict (YAML values)."""
    out: dict = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        _set_dotted(out, key.strip(), yaml.safe_load(value))
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(source, overrides: dict | None = None) -> Config:
    """Validate a config from a YAML path, a dict or a Config, applying overrides.

    A relative ``run`` or ``input.source`` path in a YAML file is taken relative to the
    current directory (where the command runs), as on the command line.
    """
    if isinstance(source, Config):
        data, name = source.model_dump(), "(object)"
    elif isinstance(source, dict):
        data, name = dict(source), "(dict)"
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config {path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"config {path} must be a mapping of sections, got {type(data).__name__}"
            )
    data = _merge(data, overrides or {})
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, name)) from None


def config_path(name: str) -> Path:
    """A config shipped in ``configs/`` (``demo``, ``workstation``, ``cluster``) or a path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    here = Path(__file__).resolve().parent / "configs" / f"{name}.yaml"
    return here if here.exists() else p


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


__all__ = ["Config", "load_config", "parse_overrides", "dump_config"]
