"""Ingest: a stack of FIB-SEM slices becomes the run store's ``raw`` array.

Sources
-------
- a **folder of TIFF slices**, one slice per file (``.tif`` / ``.tiff``, any case), ordered by
  natural sort (``slice_2`` before ``slice_10``) of the slice number in the names;
- **one multi-page TIFF** (plain, ImageJ hyperstack with one channel, OME-TIFF with one
  image plane per page);
- an **existing Zarr array** (v2 or v3; a path, or a :class:`zarr.Array`), ``(z, y, x)`` or
  ``(y, x)``.

Only 8- and 16-bit unsigned grayscale is accepted. RGB(A) slices whose three colour channels
are identical (grayscale saved as colour) are read as grayscale; alpha is ignored.

What is checked before anything is written
------------------------------------------
All slice headers are read first (TIFF tags are cheap: shape, dtype, samples, and the byte
ranges of the pixel data, which must lie inside the file -- that catches truncated files), the
slice numbering is checked for gaps, and only then is anything written. The new array is
streamed into a temporary array beside the target, marked complete, and swapped in last, so a
failed ingest (including a slice found corrupt only when decoded) never leaves an array that
looks complete and never harms a previous complete array of the same name.

Voxel size
----------
Read from the files where present, in nm ``(z, y, x)``:

- FEI / Thermo Fisher (tifffile ``fei_metadata``): ``[Scan] PixelWidth / PixelHeight`` in m
  (``[EScan]``, ``[IScan]`` as fall-backs). These files hold no slice thickness.
- Zeiss (tifffile ``sem_metadata``): ``ap_image_pixel_size`` (or ``ap_pixel_size``) with its
  unit. No slice thickness either.
- ImageJ (tifffile ``imagej_metadata``): ``spacing`` and ``unit`` give z; the XResolution /
  YResolution tags (pixels per ``unit``) give x and y.
- OME-TIFF (OME-XML ``Pixels``): ``PhysicalSizeX/Y/Z`` and their units.
- A Zarr source: ``voxel_size`` attributes (bigvol), or OME-Zarr ``multiscales`` scales.

``voxel_size=`` overrides the files, entry by entry: ``(50, None, None)`` takes the slice
thickness from the argument and the pixel size from the files. When the voxel size is still
not known, a :class:`UserWarning` says so and the store records it as unknown (``None``).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr

from .._version import __version__
from ..conventions import DEFAULT_CHUNKS, DEFAULT_PHASES
from ..errors import ConfigError, InputError
from ..store import Run, fingerprint
from ..validate import check_phase_names, check_voxel_size
from ._metadata import (
    fei_pixel_size,
    imagej_voxel_size,
    ome_voxel_size,
    voxel_size_from_tiff,
    zeiss_pixel_size,
)
from ._sources import _READ_THREADS, _open_source, _Source, list_slices, natural_key

__all__ = [
    "ingest",
    "list_slices",
    "natural_key",
    "voxel_size_from_tiff",
    "fei_pixel_size",
    "zeiss_pixel_size",
    "imagej_voxel_size",
    "ome_voxel_size",
]

log = logging.getLogger(__name__)


def image_compressor():
    """The codec of raw grayscale slices: Blosc-zstd level 1 with byte shuffle.

    Noisy BSE images compress little whatever the codec (~1.2x on 8-bit FIB-SEM-like data);
    level 1 gets that ratio at ~3x the speed of level 3 with bit shuffle (the store's default,
    which suits phase codes), and byte shuffle separates the high and low bytes of 16-bit
    pixels. Measured in ``benchmarks/bench_ingest.py``.
    """
    return zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


# -- arguments ---------------------------------------------------------------------------
def _check_chunks(chunks, shape) -> tuple[int, int, int]:
    if chunks is None:
        chunks = DEFAULT_CHUNKS
    try:
        c = tuple(int(v) for v in chunks)
        ok = len(c) == 3 and all(v > 0 for v in c) and all(float(v) == int(v) for v in chunks)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"chunks must be three positive integers (z, y, x), got {chunks!r}")
    return tuple(min(v, max(s, 1)) for v, s in zip(c, shape))


def _check_voxel_override(voxel_size):
    """The voxel_size argument: three numbers, ``None`` or ``"auto"`` for an entry the
    files give."""
    if voxel_size is None:
        return None
    if not isinstance(voxel_size, str) and hasattr(voxel_size, "__iter__"):
        voxel_size = [None if isinstance(v, str) and v.lower() == "auto" else v
                      for v in voxel_size]
    return check_voxel_size(voxel_size, partial=True)


def _resolve_voxel_size(override, found, where):
    """Merge the override with the files' values; warn when something stays unknown."""
    from_files, origin = found if found else ((None, None, None), None)
    override = override or (None, None, None)
    vs = tuple(o if o is not None else f for o, f in zip(override, from_files))
    used_files = any(o is None and f is not None for o, f in zip(override, from_files))
    used_arg = any(o is not None for o in override)
    origins = [s for s, u in (("voxel_size argument", used_arg), (origin, used_files)) if u]
    if all(v is not None for v in vs):
        return tuple(float(v) for v in vs), " + ".join(origins)
    known = ", ".join(f"{a} = {v:g} nm" for a, v in zip("zyx", vs) if v is not None)
    missing = [a for a, v in zip("zyx", vs) if v is None]
    warnings.warn(
        f"{where}: voxel size unknown (no {', '.join(missing)} size in the files"
        + (f"; known: {known}" if known else "")
        + "); recorded as unknown. Pass voxel_size=(z, y, x) in nm (--voxel-size Z Y X; "
        "'auto' for an entry to take from the files), e.g. the milling step as z.",
        UserWarning,
        stacklevel=4,
    )
    return None, None


# -- ingest ------------------------------------------------------------------------------
def ingest(
    source,
    store,
    *,
    chunks: Sequence[int] | None = None,
    voxel_size: Sequence[float | None] | None = None,
    allow_gaps: bool = False,
    name: str = "raw",
    phases=None,
) -> zarr.Array:
    """Copy a stack of FIB-SEM slices into the run store as a chunked Zarr array.

    Parameters
    ----------
    source : path or zarr.Array
        A folder of TIFF slices (one per file, natural sort of the slice numbers), one
        multi-page TIFF, or a Zarr array (v2/v3, path or object) of shape ``(z, y, x)``.
        8- or 16-bit unsigned grayscale. Opened read-only, never modified.
    store : path or bigvol.store.Run
        The run store; created when the path does not exist.
    chunks : 3 ints, optional
        Chunks ``(z, y, x)`` of the new array, clipped to its shape. Default
        :data:`bigvol.conventions.DEFAULT_CHUNKS`.
    voxel_size : 3 numbers, optional
        Voxel size ``(z, y, x)`` in nm; overrides the files' metadata. An entry ``None`` takes
        that entry from the files (e.g. ``(50, None, None)``: milling step 50 nm, pixel size
        from FEI / Zeiss metadata). Unknown after all: a ``UserWarning`` and ``None`` recorded.
    allow_gaps : bool
        Accept a folder whose slice numbering has gaps (or names that do not follow the
        pattern of the others); the slices are stacked in natural sort order.
    name : str
        Name of the array in the store (``"raw"``). The stage is recorded as ``"ingest"``
        (``"ingest:<name>"`` for another name). ``"segmentation"``: an existing
        segmentation (Avizo, Dragonfly, ilastik, TauFactor ...) whose structure
        ``bigvol analyze`` then measures; it must hold phase codes (at most 16 distinct
        values; a greyscale image is refused).
    phases : list of str, dict of int to str, or str, optional
        Names of the segmentation's phases, stored in the run and used by metrics.json /
        csv and the report. A list names the codes ``0, 1, ...`` in order; a mapping
        ``{code: name}`` (or the text ``"0=pore,170=cbd,85=nmc"``) names the codes the file
        holds, which become ``0, 1, ...`` in the mapping's order (the file is not changed).
        Every code in the volume must be named and every named code must occur. Text
        ``"pore,cbd,nmc"`` is the list form.

    Returns
    -------
    zarr.Array
        The complete array in the store.

    Notes
    -----
    Streaming: slices are read one z-chunk slab at a time (a few threads decode the files of a
    slab in parallel, straight into the slab) and each slab is written as whole chunks, one
    row of chunks at a time, while the next one is read. Peak memory is two slab buffers,
    ``2 * chunks[0] * y * x * itemsize`` (256 MiB for 32 slices of 2000 x 2000 uint8), plus
    Zarr's copies and compressed buffers of one row of chunks (~2 * chunks[0] * chunks[1] * x
    bytes) -- independent of the number of slices (measured: ~470 MiB peak RSS for 200 slices
    of 2000 x 2000, where reading the stack into memory first takes ~1000 MiB;
    ``benchmarks/bench_ingest.py``).

    Everything that can be checked from the TIFF headers (shape, dtype, colour layout, byte
    ranges inside the file, slice numbering) is checked before anything is written. The data
    go to a temporary array that is swapped in only when complete, so a failure keeps a
    previous complete array of the same name intact. If the store already holds a complete
    array recorded with the same input fingerprint and parameters, nothing is rewritten; an
    interrupted ingest (Ctrl-C, killed process) of the same input and parameters resumes
    after its last written slab, with the same result as an uninterrupted one.

    Raises
    ------
    bigvol.errors.InputError
        Missing source, empty folder, a slice whose shape or dtype differs from the first, a
        colour image, a corrupt or truncated TIFF, a gap in the slice numbering; the message
        names the file.
    bigvol.errors.ConfigError
        Bad ``chunks`` or ``voxel_size``.

    Examples
    --------
    >>> import bigvol as bv
    >>> raw = bv.ingest("slices/", "run.zarr", voxel_size=(50, 30, 30))   # doctest: +SKIP
    >>> raw.shape, raw.dtype                                              # doctest: +SKIP
    ((200, 2000, 2000), dtype('uint8'))
    """
    override = _check_voxel_override(voxel_size)
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name:
        raise ConfigError(f"name must be an array name such as 'raw', got {name!r}")
    mapping = parse_phases(phases)
    if mapping is not None and name in ("raw", "normalized"):
        raise ConfigError(
            f"phases name the codes of a segmentation; ingest it with name='segmentation' "
            f"(bigvol ingest SEG.tif run.zarr --name segmentation --phases ...), not {name!r}"
        )
    src = _open_source(source, allow_gaps)
    try:
        return _ingest(src, store, chunks, override, allow_gaps, name, mapping)
    finally:
        src.close()


def stage_name(name: str) -> str:
    """The stage an ingest into array ``name`` records: ``ingest`` (raw), ``ingest:<name>``."""
    return "ingest" if name == "raw" else f"ingest:{name}"


def parse_phases(phases) -> dict[int, str] | None:
    """A phase naming as ``{code in the file: name}`` in the order of the new codes 0, 1, ...

    Accepts a list of names (codes 0, 1, ...), a mapping ``{code: name}``, or the text
    forms ``"pore,cbd,nmc"`` and ``"0=pore,170=cbd,85=nmc"``.
    """
    if phases is None:
        return None
    if isinstance(phases, str):
        items = [p.strip() for p in phases.split(",") if p.strip()]
        if items and all("=" in p for p in items):
            pairs = []
            for p in items:
                code, _, nm = p.partition("=")
                try:
                    pairs.append((int(code), nm.strip()))
                except ValueError:
                    raise ConfigError(
                        f"phases: {p!r} is not CODE=NAME with an integer code"
                    ) from None
            phases = dict(pairs)
            if len(phases) != len(pairs):
                raise ConfigError(f"phases: a code is named twice in {items}")
        elif any("=" in p for p in items):
            raise ConfigError(
                "phases: give either names (pore,cbd,nmc) or CODE=NAME pairs, "
                f"not both: {items}"
            )
        else:
            phases = items
    if isinstance(phases, dict):
        try:
            codes = [int(c) for c in phases]
        except (TypeError, ValueError):
            raise ConfigError(f"phases: codes must be integers, got {list(phases)}") from None
        if any(not 0 <= c <= 65535 for c in codes):
            raise ConfigError(f"phases: codes must be in 0..65535, got {codes}")
        names = check_phase_names(list(phases.values()))
        return dict(zip(codes, names))
    names = check_phase_names(phases)
    return dict(enumerate(names))


#: A segmentation holds a few phase codes; more distinct values than this is a greyscale image.
MAX_PHASE_CODES = 16


def _scan_codes(src: _Source, where: str) -> np.ndarray:
    """Voxel count of every value of an integer stack, one slab at a time (a first read)."""
    if src.dtype.kind not in "ub":
        raise InputError(f"{where}: a segmentation must hold unsigned integer phase codes, "
                         f"got dtype {src.dtype}")
    counts = np.zeros(256 if src.dtype.itemsize == 1 else 65536, np.int64)
    cz = max(1, min(32, src.shape[0]))
    buf = np.empty((cz, *src.shape[1:]), src.dtype)
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        for z0 in range(0, src.shape[0], cz):
            z1 = min(z0 + cz, src.shape[0])
            slab = src.read(z0, z1, pool, buf)
            counts += np.bincount(
                slab.ravel().view(np.uint8 if src.dtype.itemsize == 1 else np.uint16),
                minlength=counts.size,
            )
    return counts


def _check_segmentation(counts: np.ndarray, mapping: dict[int, str] | None, where: str,
                        run_phases: Sequence[str] = ()):
    """The LUT from file codes to phase codes (None: keep them), after the checks."""
    present = np.flatnonzero(counts).tolist()
    if len(present) > MAX_PHASE_CODES:
        raise InputError(
            f"{where} holds {len(present)} distinct values ({present[0]}..{present[-1]}): a "
            f"greyscale image, not a segmentation of at most {MAX_PHASE_CODES} phase codes. "
            "Ingest greyscale as raw (the default name) and segment it, "
            "or pass the segmented volume"
        )
    if mapping is None:
        beyond = [c for c in present if c >= len(run_phases)]
        if beyond:
            raise InputError(
                f"{where} holds code(s) {beyond} but the run names only {len(run_phases)} phases "
                f"({', '.join(f'{i}={n}' for i, n in enumerate(run_phases))}); name them, e.g. "
                f"--phases {','.join(f'{c}=phase{c}' for c in present)}"
            )
        return None
    absent = [c for c in mapping if c >= counts.size or counts[c] == 0]
    if absent:
        raise InputError(
            f"{where}: the phase mapping names code(s) {absent} "
            f"({', '.join(mapping[c] for c in absent)}) but no voxel holds them; the volume "
            f"holds the codes {present}"
        )
    unnamed = [c for c in present if c not in mapping]
    if unnamed:
        raise InputError(
            f"{where} holds code(s) {unnamed} that the phase mapping does not name "
            f"({', '.join(f'{c}={n}' for c, n in mapping.items())}); name every code"
        )
    if list(mapping) == list(range(len(mapping))):
        return None
    lut = np.zeros(counts.size, np.uint8)
    for new, code in enumerate(mapping):
        lut[code] = new
    return lut


def _ingest(src: _Source, store, chunks, override, allow_gaps, name, mapping=None) -> zarr.Array:
    where = str(src.path) if src.path else "source"
    shape = src.shape
    cz, cy, cx = chunks = _check_chunks(chunks, shape)
    vs, vs_origin = _resolve_voxel_size(override, src.voxel, where)
    params = {
        "source": os.path.abspath(src.path) if src.path else None,
        "source_kind": src.kind,
        "chunks": list(chunks),
        "voxel_size": override,
        "allow_gaps": bool(allow_gaps),
        "name": name,
    }
    if mapping is not None:
        params["phases"] = {str(c): n for c, n in mapping.items()}
    input_fp = src.fingerprint()
    stage = stage_name(name)
    stage_fp = fingerprint(stage, params, [input_fp], __version__)

    # A store that does not exist yet is created only once the input has passed its checks.
    store_path = store.path if isinstance(store, Run) else Path(store)
    exists = store_path.exists() and (not store_path.is_dir() or any(store_path.iterdir()))
    run = store if isinstance(store, Run) else (Run.create(store) if exists else None)
    dest = (store_path / name).resolve()
    if src.path is not None and Path(src.path).resolve() == dest:
        raise InputError(f"{src.path}: the source is the destination array itself")
    rec = run.stage(stage) if run is not None else None
    if rec and rec.get("fingerprint") == stage_fp and run.is_complete(name):
        log.info("%s is up to date (same input fingerprint and parameters)", name)
        return run.zarr_array(name)

    lut = None
    out_dtype = src.dtype
    if name == "segmentation" or mapping is not None:
        # One read to check the codes before anything is written (segmentations compress
        # well and read fast; a wrong file must not replace a good array).
        lut = _check_segmentation(_scan_codes(src, where), mapping, where,
                                  run.phases if run is not None else DEFAULT_PHASES)
        if lut is not None:
            out_dtype = np.dtype(np.uint8)
    if run is None:
        run = Run.create(store)
    t0 = time.perf_counter()

    def read(z0, z1, buffer):
        slab = src.read(z0, z1, pool, buffer)
        return lut[slab] if lut is not None else slab

    try:
        with ThreadPoolExecutor(_READ_THREADS) as pool:
            z_start = run.write_slabs(
                name, read, shape=shape, dtype=out_dtype, source_dtype=src.dtype,
                chunks=chunks, fingerprint=stage_fp, compressor=image_compressor(),
                attrs={"voxel_size": list(vs) if vs else None})
    except InputError:
        # bad input found while decoding: the partial array is of no use
        run.discard_partial(name)
        raise
    seconds = time.perf_counter() - t0

    # The old record goes (it describes the old array), the new array takes the name
    # (marked complete, which also writes the OME-Zarr metadata); the record is written last.
    run.forget_stage(stage)
    run.voxel_size = vs
    if mapping is not None:
        run.phases = list(mapping.values())
    run.swap_in(name, source=params["source"], voxel_size_origin=vs_origin,
                fingerprint=stage_fp)
    run.record_stage(
        stage,
        parameters=params,
        fingerprint=stage_fp,
        outputs=[name],
        extra={
            "input_fingerprint": input_fp,
            "source": params["source"],
            "voxel_size": list(vs) if vs else None,
            "voxel_size_origin": vs_origin,
            "shape": list(shape),
            "dtype": str(src.dtype),
            "seconds": round(seconds, 3),
            "resumed_at_slice": z_start,
        },
    )
    return run.zarr_array(name)
