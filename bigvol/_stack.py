"""Input checks shared by the slice-stack stages (align, destripe, normalize)."""

from __future__ import annotations

import dask.array as da
import numpy as np

from .errors import InputError


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


def cast_to(x: np.ndarray, dtype) -> np.ndarray:
    """Float results back to the stack's dtype: rounded and clipped to the integer range."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)
