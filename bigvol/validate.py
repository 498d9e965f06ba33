"""Validation of what users pass in, in one place: stacks, phase volumes and parameters.

Every check raises one of the classes of :mod:`bigvol.errors` with a message that names
the argument: :class:`~bigvol.errors.InputError` for data that is not what the function
needs (dtype, shape, emptiness), :class:`~bigvol.errors.ConfigError` for a parameter value
that is not allowed (axis, connectivity, voxel size, phase code or names, a choice).

>>> check_axis(-1)
2
>>> check_voxel_size([50, 30, 30])
(50.0, 30.0, 30.0)
>>> check_connectivity(8)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
bigvol.errors.ConfigError: connectivity must be 6, 18 or 26 (neighbours sharing a face, ...), got 8
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import dask.array as da
import numpy as np

from .conventions import CONNECTIVITIES
from .errors import ConfigError, InputError


# -- data -------------------------------------------------------------------------------
def as_stack(stack, name: str = "stack") -> da.Array:
    """A (z, y, x) dask array of numbers; a NumPy stack becomes one chunk per slice."""
    if not isinstance(stack, da.Array):
        arr = np.asarray(stack)
        stack = da.from_array(arr, chunks=(1,) + arr.shape[1:]) if arr.ndim == 3 else arr
    if stack.ndim != 3:
        raise InputError(f"{name} must be a 3-D (z, y, x) image stack, got shape {stack.shape}")
    if stack.dtype.kind not in "uif":
        raise InputError(f"{name} must hold numbers (integer or float), got dtype {stack.dtype}")
    if 0 in stack.shape:
        raise InputError(f"{name} is empty (shape {stack.shape})")
    return stack


def as_volume(x, name: str = "phases", *, allow_empty: bool = False) -> da.Array:
    """``x`` as a 3-D dask array of phase codes (bool or integer) without empty chunks.

    NumPy (or any array-like) input is wrapped, never copied.
    """
    if not isinstance(x, da.Array):
        if not hasattr(x, "dtype") or not hasattr(x, "shape"):
            x = np.asarray(x)
        x = da.from_array(x, chunks="auto")
    if x.ndim != 3:
        raise InputError(f"{name} must be a 3-D (z, y, x) array, got shape {x.shape}")
    if not (x.dtype == bool or np.issubdtype(x.dtype, np.integer)):
        raise InputError(
            f"{name} must be boolean or integer phase codes, got dtype {x.dtype}; "
            f"threshold or round it first (e.g. {name} > 0.5)"
        )
    if x.size == 0:
        if not allow_empty:
            raise InputError(f"{name} is empty (shape {x.shape})")
        return x
    if any(0 in c for c in x.chunks):
        x = x.rechunk(tuple(tuple(s for s in c if s) for c in x.chunks))
    return x


def cast_to(x: np.ndarray, dtype) -> np.ndarray:
    """Float results back to a stack's dtype: rounded and clipped to the integer range."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)


# -- parameters -------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def check_phase(phase, name: str = "phase") -> int:
    """A phase code: a non-negative integer."""
    if not _is_int(phase):
        raise ConfigError(f"{name} must be an integer phase code (e.g. 2), got {phase!r}")
    if phase < 0:
        raise ConfigError(f"{name} must be a non-negative phase code, got {phase}")
    return int(phase)


def check_axis(axis) -> int:
    """An axis of a (z, y, x) volume, negative values counted from the end."""
    if not _is_int(axis):
        raise ConfigError(f"axis must be 0 (z), 1 (y) or 2 (x), got {axis!r}")
    if not -3 <= int(axis) < 3:
        raise ConfigError(f"axis {axis} is out of range for a 3-D (z, y, x) volume; use 0, 1 or 2")
    return int(axis) % 3


def check_connectivity(connectivity) -> int:
    if not _is_int(connectivity) or int(connectivity) not in CONNECTIVITIES:
        raise ConfigError(
            f"connectivity must be 6, 18 or 26 (neighbours sharing a face, a face or an "
            f"edge, or any corner), got {connectivity!r}"
        )
    return int(connectivity)


def check_choice(value, allowed: Iterable, name: str):
    """``value`` if it is one of ``allowed``, else a ConfigError listing them."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_voxel_size(voxel_size, *, partial: bool = False) -> tuple | None:
    """Three positive numbers (z, y, x) in nm, or ``None`` (unit voxels / unknown).

    ``partial``: entries may be ``None`` (to be read from the files' metadata).
    """
    if voxel_size is None:
        return None
    what = "positive numbers or null" if partial else "positive numbers"
    try:
        vs = tuple(None if (v is None and partial) else float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise ConfigError(
            f"voxel_size must be three numbers (z, y, x) in nm, got {voxel_size!r}") from None
    if len(vs) != 3 or not all(v is None or (math.isfinite(v) and v > 0) for v in vs):
        raise ConfigError(f"voxel_size must be three {what} (z, y, x) in nm, got {voxel_size!r}")
    return vs


def voxel_spacing(voxel_size) -> tuple[float, float, float]:
    """The voxel size as three floats; ``None`` is unit voxels ``(1, 1, 1)``."""
    vs = check_voxel_size(voxel_size)
    return (1.0, 1.0, 1.0) if vs is None else vs


def check_phase_names(names, *, where: str = "phases") -> list[str]:
    """Phase names as a list of distinct non-empty strings (index = phase code)."""
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise ConfigError(f"{where}: give a list of phase names, got {names!r}")
    out = [str(n).strip() for n in names]
    if len(out) < 2 or len(out) > 255:
        raise ConfigError(f"{where}: between 2 and 255 phases, got {len(out)}: {out}")
    if any(not n for n in out) or len(set(out)) != len(out):
        raise ConfigError(f"{where}: phase names must be distinct and non-empty, got {out}")
    return out


def phase_code(phase, names, *, where: str = "phase", bounded: bool = True) -> int:
    """The code of ``phase``: an integer code, its digits, or one of the run's ``names``
    (index = code; exact match first, then any case). ``bounded``: the code must name one of
    ``names``. Anything else is a :class:`ConfigError` that lists the run's phases."""
    key = phase.strip() if isinstance(phase, str) else phase
    if isinstance(key, str):
        lower = [n.lower() for n in names]
        if key in names:
            return list(names).index(key)
        if key.lower() in lower:
            return lower.index(key.lower())
        if key.lstrip("-").isdigit():
            key = int(key)
    if _is_int(key) and (not bounded or 0 <= key < len(names)):
        return int(key)
    known = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    raise ConfigError(f"{where} must be a phase code or one of the run's phases ({known}), "
                      f"got {phase!r}")


__all__ = ["as_stack", "as_volume", "cast_to", "check_phase", "check_axis",
           "check_connectivity", "check_choice", "check_voxel_size", "voxel_spacing",
           "check_phase_names", "phase_code"]
