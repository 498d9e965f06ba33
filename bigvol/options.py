"""Typed option blocks, made from the signatures of the functions they are passed to.

A config's ``options:`` block (and a stage command's flags) go into one of these models
before they reach a function as ``**kwargs``. The model is built from the function's
keyword-only parameters (names, type hints, defaults), so it cannot drift from the
signature, an unknown or misspelled option is named in one line, and the full set of
values (defaults included) is what a stage's fingerprint hashes: the same options given
on the command line or in a config give the same fingerprint.

>>> AlignOptions(upsample_factor=10).upsample_factor
10
>>> AlignOptions(upsample=10)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
bigvol.errors.ConfigError: align options: unknown option 'upsample' (allowed: crop, ...)
"""

from __future__ import annotations

import argparse
import inspect
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .errors import ConfigError


class Options(BaseModel):
    """Base of the option models: unknown keys refused, values validated on assignment."""

    # defaults are validated too: (1, 99) for a float sequence becomes (1.0, 99.0), so
    # given and default values hash alike in a fingerprint
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True,
                              arbitrary_types_allowed=True)
    #: what the options are for, in error messages ("align options")
    _what: typing.ClassVar[str] = "options"
    #: the first sentence of each option's description in the function's docstring
    _docs: typing.ClassVar[dict[str, str]] = {}

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(describe_errors(e, type(self))) from None

    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of the function."""
        return {k: getattr(self, k) for k in type(self).model_fields}

    @classmethod
    def doc(cls, name: str) -> str:
        """The first sentence of the option's description in the function's docstring."""
        return cls._docs.get(name, "")


def parameter_docs(fn) -> dict[str, str]:
    """``{name: first sentence}`` from the numpydoc ``Parameters`` section of ``fn``."""
    lines = (inspect.getdoc(fn) or "").splitlines()
    out: dict[str, str] = {}
    try:
        i = lines.index("Parameters") + 2
    except ValueError:
        return out
    names: list[str] = []
    desc: list[str] = []

    def flush():
        text = " ".join(desc)
        first = text.split(". ")[0].rstrip(".")
        for n in names:
            out.setdefault(n, first)

    for j in range(i, len(lines)):
        line = lines[j]
        if j + 1 < len(lines) and lines[j + 1].startswith("---"):
            break  # the next section
        if line and not line.startswith(" "):
            flush()
            names = [n.strip() for n in line.split(" : ")[0].split(",")]
            desc = []
        elif line.strip():
            desc.append(line.strip())
    flush()
    return out


def describe_errors(err: ValidationError, model: type[BaseModel]) -> str:
    what = getattr(model, "_what", "options")
    default = getattr(what, "default", what)
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown option {key!r} (allowed: {', '.join(model.model_fields)})")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return f"{default}: " + "; ".join(lines)


def options_model(name: str, what: str, *functions, exclude=(), types=None) -> type[Options]:
    """An :class:`Options` model of the keyword-only parameters of ``functions``."""
    fields: dict[str, tuple] = {}
    for fn in functions:
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # an annotation that does not resolve: validate nothing
            hints = {}
        for p in inspect.signature(fn).parameters.values():
            if p.kind is not p.KEYWORD_ONLY or p.name in exclude or p.name in fields:
                continue
            ann = (types or {}).get(p.name, hints.get(p.name, Any))
            fields[p.name] = (ann, p.default)
    model = create_model(name, __base__=Options, **fields)
    model._what = what
    model._docs = {}
    for fn in functions:
        for k, v in parameter_docs(fn).items():
            model._docs.setdefault(k, v)
    names = ", ".join(f"``{f.__module__}.{f.__qualname__}``" for f in functions)
    model.__doc__ = f"Options of {names} (keyword arguments, same names and defaults)."
    return model


def _align():
    from . import align

    return options_model("AlignOptions", "align options", align.estimate_shifts,
                         align.apply_shifts)


def _destripe():
    from . import destripe

    return options_model("DestripeOptions", "destripe options", destripe.destripe)


def _normalize():
    from . import normalize

    model = options_model("NormalizeOptions", "normalize options", normalize.fit_lookup_tables,
                          exclude=("report_percentiles",))
    for k, v in parameter_docs(normalize.match_histograms).items():
        if not model._docs.get(k):
            model._docs[k] = v
    return model


def _train():
    from .segment import train

    return options_model(
        "TrainOptions", "segment.train options", train,
        exclude=("slices", "progress", "classes", "callback", "checkpoint", "checkpoint_key"),
        types={"init": str | None, "validation": float | list[int] | None,
               "class_weights": str | list[float] | None})


def _forest():
    from .segment import train_forest

    return options_model("ForestOptions", "segment.forest options", train_forest,
                         exclude=("slices", "classes"))


def _predict():
    from .segment import predict

    return options_model("PredictOptions", "segment options", predict,
                         exclude=("probabilities",))


def _phantom():
    from . import synth

    return options_model("PhantomOptions", "phantom parameters", synth.phantom,
                         exclude=("seed", "voxel_size", "chunks"))


def _tortuosity():
    from .metrics import tortuosity

    return options_model("TortuosityOptions", "analyze.tortuosity options",
                         tortuosity, exclude=("axis", "voxel_size"))


AlignOptions = _align()
DestripeOptions = _destripe()
NormalizeOptions = _normalize()
TrainOptions = _train()
ForestOptions = _forest()
PredictOptions = _predict()
TortuosityOptions = _tortuosity()
PhantomOptions = _phantom()

def add_arguments(p, model, names, *, flags=None, **per_option) -> None:
    """Add one ``argparse`` flag per option of ``model`` to the parser ``p``: typed from the
    function's signature, its help the function's docstring, its default the function's
    (so a command and a config cannot disagree). Absent flags are absent from the parsed
    arguments (``argparse.SUPPRESS``), so the model fills them in. ``flags[name]``: another
    spelling of the flag; ``per_option[name]``: argparse keywords replacing the generated
    ones (``choices``, ``help``, ...; ``default_text``: what the help says the default is)."""
    for name in names:
        field = model.model_fields[name]
        default, ann = field.default, field.annotation
        kw: dict = {"type": _scalar_type(ann, default)}
        if isinstance(default, bool) or ann is bool or bool in typing.get_args(ann):
            kw = {"action": argparse.BooleanOptionalAction}
        elif isinstance(default, (tuple, list)):
            kw["nargs"] = len(default)
        for a in (ann, *typing.get_args(ann)):
            if typing.get_origin(a) is typing.Literal:
                kw["choices"] = typing.get_args(a)
        kw.update(per_option.get(name, {}))
        shown = "off" if default is None else (
            " ".join(map(str, default)) if isinstance(default, (tuple, list)) else default)
        shown = kw.pop("default_text", shown)
        text = kw.pop("help", model.doc(name)).replace("``", "").replace("%", "%%")
        p.add_argument((flags or {}).get(name, "--" + name.replace("_", "-")), dest=name,
                       default=argparse.SUPPRESS, help=f"{text} (default {shown})", **kw)


def _scalar_type(annotation, default):
    if isinstance(default, (tuple, list)):
        return type(default[0]) if default else str
    if default is not None:
        return type(default)
    return next((a for a in typing.get_args(annotation) if a in (int, float, str)), str)



__all__ = ["Options", "options_model", "AlignOptions", "DestripeOptions", "NormalizeOptions",
           "TrainOptions", "ForestOptions", "PredictOptions", "TortuosityOptions", "PhantomOptions",
           "parameter_docs", "add_arguments"]
