"""Typed option blocks, made from the signatures of the functions they are passed to.

A config's ``options:`` block (and a stage command's flags) go into one of these models
before they reach a function as ``**kwargs``. The model is built from the function's
keyword-only parameters (names, type hints, defaults), so it cannot drift from the
signature, an unknown or misspelled option is named in one line, and the full set of
values (defaults included) is what a stage's fingerprint hashes: the same options given
on the command line or in a config give the same fingerprint.

>>> AlignOptions(upsample_factor=10).upsample_factor
10
>>> AlignOptions(upsample=10)
Traceback (most recent call last):
...
bigvol.errors.ConfigError: align options: unknown option 'upsample' (allowed: crop, downsample, upsample_factor, detrend, window, order, mode, cval, max_shift)
"""

from __future__ import annotations

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

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(describe_errors(e, type(self))) from None

    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of the function."""
        return {k: getattr(self, k) for k in type(self).model_fields}


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
    model.__doc__ = (f"Options of {', '.join(f'``{f.__module__}.{f.__qualname__}``' for f in functions)} "
                     "(keyword arguments, same names and defaults).")
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

    return options_model("NormalizeOptions", "normalize options", normalize.fit_lookup_tables,
                         exclude=("report_percentiles",))


def _train():
    from .segment import _train as train

    return options_model(
        "TrainOptions", "segment.train options", train.train,
        exclude=("slices", "progress", "classes"),
        types={"init": str | None, "validation": float | list[int] | None,
               "class_weights": str | list[float] | None})


def _predict():
    from .segment import infer

    return options_model("PredictOptions", "segment options", infer.predict,
                         exclude=("probabilities",))


def _tortuosity():
    from .metrics import transport

    return options_model("TortuosityOptions", "analyze.tortuosity options",
                         transport.tortuosity, exclude=("axis", "voxel_size"))


AlignOptions = _align()
DestripeOptions = _destripe()
NormalizeOptions = _normalize()
TrainOptions = _train()
PredictOptions = _predict()
TortuosityOptions = _tortuosity()

__all__ = ["Options", "options_model", "AlignOptions", "DestripeOptions", "NormalizeOptions",
           "TrainOptions", "PredictOptions", "TortuosityOptions"]
