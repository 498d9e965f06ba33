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

import json
import logging
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
import zarr

from ._version import __version__
from .conventions import DEFAULT_CHUNKS, DEFAULT_PHASES
from .errors import ConfigError, InputError
from .store import Run, fingerprint
from .validate import check_phase_names, check_voxel_size

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


_TIFF_SUFFIXES = (".tif", ".tiff")
_READ_THREADS = max(1, min(4, os.cpu_count() or 1))
_GRAY_DTYPES = (np.dtype("uint8"), np.dtype("uint16"))

# Length units as written by FEI, Zeiss, ImageJ and OME-Zarr, in nanometres.
_UNIT_NM = {
    "m": 1e9, "meter": 1e9, "metre": 1e9,
    "cm": 1e7, "centimeter": 1e7,
    "mm": 1e6, "millimeter": 1e6,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "\\u00b5m": 1e3, "micron": 1e3, "microns": 1e3,
    "micrometer": 1e3, "micrometre": 1e3, "micrometers": 1e3,
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "nanometers": 1.0,
    "pm": 1e-3, "picometer": 1e-3,
    "a": 0.1, "å": 0.1, "angstrom": 0.1,
}


def image_compressor():
    """The codec of raw grayscale slices: Blosc-zstd level 1 with byte shuffle.

    Noisy BSE images compress little whatever the codec (~1.2x on 8-bit FIB-SEM-like data);
    level 1 gets that ratio at ~3x the speed of level 3 with bit shuffle (the store's default,
    which suits phase codes), and byte shuffle separates the high and low bytes of 16-bit
    pixels. Measured in ``benchmarks/bench_ingest.py``.
    """
    return zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


# -- file names ---------------------------------------------------------------------------
def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: ``slice_2`` before ``slice_10``.

    Examples
    --------
    >>> sorted(["s10.tif", "s2.tif", "s1.tif"], key=natural_key)
    ['s1.tif', 's2.tif', 's10.tif']
    """
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _template(name: str) -> str:
    stem = re.sub(r"\.tiff?$", ".tif", name.lower())
    return re.sub(r"\d+", "#", stem)


def _is_tiff_name(name: str) -> bool:
    return name.lower().endswith(_TIFF_SUFFIXES) and not name.startswith(".")


def list_slices(folder: str | os.PathLike, *, allow_gaps: bool = False) -> list[Path]:
    """The TIFF slices of a folder in slice order, with their numbering checked.

    Files are ``*.tif`` / ``*.tiff`` (any case; hidden files skipped). The slice number is the
    digit run of the names that is different in every file and spans the smallest range
    (``stack7_slice_0012.tif`` -> 12); files are sorted by it (natural sort). The numbers must
    be consecutive: a missing number is an error unless ``allow_gaps``. A file whose name does
    not follow the pattern of the others (an overview image left in the folder) is an error
    unless ``allow_gaps`` (then all files are taken in natural sort order).

    Raises
    ------
    InputError
        Missing folder, no TIFF in it, duplicate slice numbers, a gap in the numbering, a file
        that does not follow the naming of the others. The message names the files.

    Examples
    --------
    >>> list_slices("slices/")                                     # doctest: +SKIP
    [PosixPath('slices/s_1.tif'), PosixPath('slices/s_2.tif'), PosixPath('slices/s_10.tif')]
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    names = sorted((e.name for e in os.scandir(folder) if e.is_file() and _is_tiff_name(e.name)),
                   key=natural_key)
    if not names:
        raise InputError(f"{folder}: the folder holds no TIFF slices (*.tif, *.tiff)")
    if len(names) == 1:
        return [folder / names[0]]

    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(_template(n), []).append(n)
    if len(groups) > 1:
        if allow_gaps:
            return [folder / n for n in names]
        main = max(groups.values(), key=len)
        odd = [n for n in names if n not in set(main)]
        pattern = _template(main[0]).replace("#", "<n>")
        raise InputError(
            f"{folder}: {_few(odd)} {'does' if len(odd) == 1 else 'do'} not follow the naming of "
            f"the other {len(main)} slices ({pattern}); move {'it' if len(odd) == 1 else 'them'} "
            "out of the folder, or pass allow_gaps=True (--allow-gaps) to take every file in "
            "natural sort order"
        )
    # Python ints: digit runs such as timestamps may not fit 64 bits
    rows = [[int(d) for d in re.findall(r"\d+", n)] for n in names]
    if not rows[0]:  # no digits at all: nothing to check
        return [folder / n for n in names]
    cols = list(zip(*rows))
    candidates = [j for j, c in enumerate(cols) if len(set(c)) == len(names)]
    if not candidates:
        col = max(cols, key=lambda c: len(set(c)))
        seen: dict[int, str] = {}
        for n, v in zip(names, col):
            if v in seen:
                raise InputError(
                    f"{folder}: cannot tell the slice order: {seen[v]} and {n} carry the same "
                    f"slice number {v}"
                )
            seen[v] = n
    j = min(candidates, key=lambda c: (max(cols[c]) - min(cols[c]), c))
    order = sorted(range(len(names)), key=lambda i: cols[j][i])
    names = [names[i] for i in order]
    idx = [cols[j][i] for i in order]
    if not allow_gaps:
        bad = [k for k in range(len(idx) - 1) if idx[k + 1] - idx[k] != 1]
        if bad:
            k = bad[0]
            lo, hi = idx[k] + 1, idx[k + 1] - 1
            what = f"number {lo} missing" if lo == hi else f"numbers {lo}-{hi} missing"
            n_gaps = len(bad)
            raise InputError(
                f"{folder}: the slice numbering has a gap: {names[k]} is followed by "
                f"{names[k + 1]} ({what}{'' if n_gaps == 1 else f'; {n_gaps} gaps in all'}); "
                "pass allow_gaps=True (--allow-gaps) to ingest the slices anyway"
            )
    return [folder / n for n in names]


def _few(names: Sequence[str], k: int = 3) -> str:
    shown = ", ".join(names[:k])
    return shown + (f" and {len(names) - k} more" if len(names) > k else "")


# -- voxel size from metadata ------------------------------------------------------------
def _to_nm(value, unit) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if unit is None:
        return None
    f = _UNIT_NM.get(str(unit).strip().lower())
    if f is None or not math.isfinite(v) or v <= 0:
        return None
    return v * f


def fei_pixel_size(meta: dict | None) -> tuple[float, float] | None:
    """Pixel size ``(y, x)`` in nm from FEI / Thermo Fisher metadata (tifffile ``fei_metadata``).

    FEI writes ``PixelWidth`` / ``PixelHeight`` in metres in the ``[Scan]`` section (electron
    image; ``[EScan]`` / ``[IScan]`` as fall-backs). No slice thickness is stored.

    Examples
    --------
    >>> fei_pixel_size({"Scan": {"PixelWidth": 4.86e-09, "PixelHeight": 4.86e-09}})
    (4.86, 4.86)
    """
    if not meta:
        return None
    for section in ("Scan", "EScan", "IScan"):
        s = meta.get(section) or {}
        w = _to_nm(s.get("PixelWidth"), "m")
        h = _to_nm(s.get("PixelHeight", s.get("PixelWidth")), "m")
        if w and h:
            return (round(h, 6), round(w, 6))
    return None


def zeiss_pixel_size(meta: dict | None) -> tuple[float, float] | None:
    """Pixel size ``(y, x)`` in nm from Zeiss SEM metadata (tifffile ``sem_metadata``).

    The CZ_SEM tag parses to ``{"ap_image_pixel_size": ("Image Pixel Size", 2.233, "nm"), ...}``
    (``ap_pixel_size`` as a fall-back); pixels are square. No slice thickness is stored.

    Examples
    --------
    >>> zeiss_pixel_size({"ap_image_pixel_size": ("Image Pixel Size", 2.5, "nm")})
    (2.5, 2.5)
    """
    if not meta:
        return None
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        entry = meta.get(key)
        if isinstance(entry, tuple) and len(entry) >= 3:
            v = _to_nm(entry[1], entry[2])
            if v:
                return (round(v, 6), round(v, 6))
    return None


def imagej_voxel_size(meta: dict | None, xresolution=None, yresolution=None):
    """Voxel size ``(z, y, x)`` in nm from ImageJ metadata; unknown entries are ``None``.

    ``meta`` is tifffile's ``imagej_metadata`` (``spacing`` = z step and ``unit``);
    ``x/yresolution`` are the TIFF XResolution / YResolution tag values, pixels per ``unit``
    as ``(numerator, denominator)`` or a number. Returns ``None`` without a length unit.

    Examples
    --------
    >>> imagej_voxel_size({"spacing": 0.05, "unit": "micron"}, (100, 3), (100, 3))
    (50.0, 30.0, 30.0)
    """
    if not meta:
        return None
    unit = meta.get("unit")
    if unit is None or str(unit).strip().lower() not in _UNIT_NM:
        return None

    def per_pixel(res):
        if res is None:
            return None
        num, den = (res if isinstance(res, tuple) else (res, 1))
        if not num or not den:
            return None
        return _to_nm(den / num, unit)

    z = _to_nm(meta.get("spacing"), unit)
    y, x = per_pixel(yresolution), per_pixel(xresolution)
    if z is None and y is None and x is None:
        return None
    return tuple(None if v is None else round(v, 6) for v in (z, y, x))


def ome_voxel_size(pixels: dict | None):
    """Voxel size ``(z, y, x)`` in nm from the OME-XML ``Pixels`` element of an OME-TIFF.

    ``PhysicalSizeX/Y/Z`` with ``PhysicalSize*Unit`` (default micrometre, per the OME schema);
    unknown entries are ``None``; ``None`` when none is given.

    Examples
    --------
    >>> ome_voxel_size({"PhysicalSizeX": 0.03, "PhysicalSizeY": 0.03,
    ...                 "PhysicalSizeZ": 50, "PhysicalSizeZUnit": "nm"})
    (50.0, 30.0, 30.0)
    """
    if not pixels:
        return None
    out = tuple(
        _to_nm(pixels.get(f"PhysicalSize{a}"), pixels.get(f"PhysicalSize{a}Unit", "µm"))
        for a in "ZYX"
    )
    if all(v is None for v in out):
        return None
    return tuple(None if v is None else round(v, 6) for v in out)


def voxel_size_from_tiff(tif) -> tuple[tuple, str] | None:
    """``((z, y, x), origin)`` from a TIFF's metadata, nm, unknown entries ``None``; or None.

    ``tif`` is a :class:`tifffile.TiffFile` or a path. ``origin`` says where it came from
    (``"FEI metadata"``, ``"Zeiss SEM metadata"``, ``"ImageJ metadata"``).
    """
    import tifffile

    if not isinstance(tif, tifffile.TiffFile):
        with tifffile.TiffFile(tif) as t:
            return voxel_size_from_tiff(t)
    page = tif.pages.first
    if tif.is_ome:
        try:
            image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
        except Exception:  # malformed OME-XML: try the other sources
            pixels = None
        vs = ome_voxel_size(pixels)
        if vs is not None:
            return vs, "OME-TIFF metadata"
    if tif.is_imagej:
        tags = page.tags
        xr = tags.valueof("XResolution")
        yr = tags.valueof("YResolution")
        vs = imagej_voxel_size(tif.imagej_metadata, xr, yr)
        if vs is not None:
            return vs, "ImageJ metadata"
    if tif.is_fei:
        yx = fei_pixel_size(tif.fei_metadata)
        if yx is not None:
            return (None, *yx), "FEI metadata"
    if tif.is_sem:
        yx = zeiss_pixel_size(tif.sem_metadata)
        if yx is not None:
            return (None, *yx), "Zeiss SEM metadata"
    return None


def _zarr_voxel_size(arr: zarr.Array, source_path: Path | None):
    """Voxel size (nm) of a Zarr source from bigvol or OME-Zarr attributes, or None."""

    def from_attrs(attrs):
        vs = attrs.get("voxel_size")
        if isinstance(vs, (list, tuple)) and len(vs) == 3:
            try:
                return tuple(float(v) for v in vs)
            except (TypeError, ValueError):
                return None
        return None

    vs = from_attrs(arr.attrs)
    if vs:
        return vs, "Zarr attributes"
    parent = None
    name = None
    try:
        if arr.path and "/" in arr.path.strip("/"):
            ppath, name = arr.path.strip("/").rsplit("/", 1)
            parent = zarr.open_group(store=arr.store, path=ppath, mode="r")
        elif arr.path:
            name = arr.path.strip("/")
            parent = zarr.open_group(store=arr.store, mode="r")
        elif source_path is not None:
            name = source_path.name
            parent = zarr.open_group(str(source_path.parent), mode="r")
    except Exception:  # no parent group: nothing more to read
        parent = None
    if parent is None:
        return None
    attrs = dict(parent.attrs)
    if "bigvol" in attrs:
        vs = from_attrs(attrs)
        if vs:
            return vs, "bigvol run store"
    ms = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales") or []
    for m in ms:
        axes = m.get("axes") or []
        for ds in m.get("datasets", []):
            if ds.get("path") != name:
                continue
            for t in ds.get("coordinateTransformations", []):
                if t.get("type") == "scale" and len(t.get("scale", [])) >= 3:
                    scale = t["scale"][-3:]
                    units = [
                        (a.get("unit") if isinstance(a, dict) else None) for a in axes[-3:]
                    ] or [None] * 3
                    out = tuple(_to_nm(s, u) for s, u in zip(scale, units))
                    if all(out):
                        return tuple(round(v, 6) for v in out), "OME-Zarr multiscales"
    return None


# -- sources -----------------------------------------------------------------------------
class _Source:
    """A validated stack of slices: shape, dtype, and ``read(z0, z1)`` of a slab."""

    kind: str
    path: Path | None
    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel: tuple[tuple, str] | None = None

    def read(self, z0: int, z1: int, pool: ThreadPoolExecutor, out: np.ndarray) -> np.ndarray:
        """Slices ``z0:z1`` into ``out[:z1 - z0]`` (a reused buffer); returns that view."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _file_id(p: Path) -> list:
    st = p.stat()
    return [p.name, st.st_size, st.st_mtime_ns]


def _page_layout(series, where: str):
    """(number of frames, page shape, index of the sample axis in the page or None)."""
    axes, shape = series.axes, tuple(series.shape)
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{where}: not an image (axes {axes}, shape {shape})")
    frame_axes = [(a, s) for a, s in zip(axes, shape) if a not in "YXS"]
    big = [(a, s) for a, s in frame_axes if s > 1]
    if len(big) > 1:
        desc = " x ".join(f"{s} {_AXIS_NAMES.get(a, a)}" for a, s in big)
        raise InputError(
            f"{where}: holds a hyperstack of {desc}; only one grayscale channel of a z stack "
            "can be ingested (save the channel you want as its own stack)"
        )
    if big and big[0][0] == "C":
        raise InputError(
            f"{where}: holds {big[0][1]} channels; only grayscale stacks can be ingested"
        )
    nframes = int(np.prod([s for _, s in frame_axes])) if frame_axes else 1
    keyframe = series.keyframe
    page_axes = keyframe.axes
    page_shape = tuple(keyframe.shape)
    sample = page_axes.index("S") if "S" in page_axes else None
    return nframes, page_shape, sample, keyframe


_AXIS_NAMES = {"C": "channels", "Z": "slices", "T": "time points", "I": "images",
               "Q": "images", "R": "tiles"}


def _check_page(keyframe, sample, where: str) -> tuple[int, int]:
    """Check dtype and colour model of a page; return its (y, x) shape."""
    from tifffile import PHOTOMETRIC

    dtype = np.dtype(keyframe.dtype) if keyframe.dtype is not None else None
    if dtype not in _GRAY_DTYPES:
        raise InputError(
            f"{where}: pixel type {dtype} ({keyframe.bitspersample}-bit); only 8- or 16-bit "
            "unsigned grayscale (uint8, uint16) can be ingested"
        )
    if keyframe.photometric == PHOTOMETRIC.PALETTE:
        raise InputError(f"{where}: an indexed-colour (palette) image; save it as grayscale")
    if sample is not None:
        ns = keyframe.shape[sample]
        if keyframe.photometric == PHOTOMETRIC.RGB and ns not in (3, 4):
            raise InputError(f"{where}: RGB with {ns} samples per pixel")
    elif keyframe.photometric not in (PHOTOMETRIC.MINISBLACK, PHOTOMETRIC.MINISWHITE):
        raise InputError(
            f"{where}: colour model {keyframe.photometric.name}; only grayscale can be ingested"
        )
    shape = tuple(s for i, s in enumerate(keyframe.shape) if i != sample)
    return shape


def _check_extents(tif, series, where: str) -> None:
    """Every pixel byte range of the series must lie inside the file (catches truncation)."""
    size = tif.filehandle.size
    if series.dataoffset is not None:
        end = series.dataoffset + series.nbytes
        if end > size:
            raise InputError(
                f"{where}: truncated: the pixel data end at byte {end} but the file has "
                f"{size} bytes"
            )
        return
    for i, page in enumerate(series.pages):
        if page is None:
            continue
        offs, counts = page.dataoffsets, page.databytecounts
        if not offs:
            raise InputError(f"{where}: page {i} has no pixel data (corrupt TIFF)")
        end = max(o + c for o, c in zip(offs, counts))
        if end > size:
            raise InputError(
                f"{where}: truncated: page {i} needs bytes up to {end} but the file has {size} "
                "bytes"
            )


class _Decoder:
    """Per-page post-processing shared by folder and multi-page sources."""

    def __init__(self, keyframe, sample):
        self.sample = sample
        self.photometric = keyframe.photometric
        self.rgb = sample is not None and keyframe.shape[sample] >= 3
        self.bits = keyframe.bitspersample
        self.dtype = np.dtype(keyframe.dtype)
        from tifffile import PHOTOMETRIC

        self.trivial = sample is None and keyframe.photometric != PHOTOMETRIC.MINISWHITE

    def __call__(self, a: np.ndarray, pages_first: bool, where) -> np.ndarray:
        """``a``: (n, *page_shape) if ``pages_first`` else page_shape -> (n, y, x) or (y, x)."""
        from tifffile import PHOTOMETRIC

        if self.sample is not None:
            ax = self.sample + (1 if pages_first else 0)
            a = np.moveaxis(a, ax, -1)
            if self.rgb:
                r, g, b = a[..., 0], a[..., 1], a[..., 2]
                diff = (r != g) | (r != b)
                if diff.any():
                    k = np.argwhere(diff)[0]
                    loc = where(int(k[0])) if pages_first else where(0)
                    pix = tuple(int(v) for v in (k[1:] if pages_first else k))
                    raise InputError(
                        f"{loc}: a colour image (its red, green and blue channels differ, e.g. "
                        f"at pixel (y, x) = {pix}); only grayscale can be ingested"
                    )
            a = a[..., 0]
        if self.photometric == PHOTOMETRIC.MINISWHITE:
            top = min((1 << self.bits) - 1, np.iinfo(self.dtype).max)
            a = (top - a.astype(self.dtype)).astype(self.dtype)
        return np.ascontiguousarray(a, dtype=self.dtype)


class _FolderSource(_Source):
    kind = "folder of TIFF slices"

    def __init__(self, folder: Path, allow_gaps: bool):
        import tifffile

        self.path = folder
        self.files = list_slices(folder, allow_gaps=allow_gaps)
        first = None
        for f in self.files:
            where = str(f)
            try:
                with tifffile.TiffFile(f) as tif:
                    if not tif.series:
                        raise InputError(f"{where}: holds no image")
                    s = tif.series[0]
                    nframes, page_shape, sample, kf = _page_layout(s, where)
                    if nframes != 1:
                        raise InputError(
                            f"{where}: holds {nframes} images; a folder must hold one slice per "
                            "file (give a multi-page TIFF as a file, not in a folder)"
                        )
                    yx = _check_page(kf, sample, where)
                    _check_extents(tif, s, where)
                    desc = (yx, np.dtype(kf.dtype), sample, kf.shape[sample] if sample is not None
                            else 1, kf.photometric)
                    if first is None:
                        first = desc
                        self.voxel = voxel_size_from_tiff(tif)
                        self._decoder = _Decoder(kf, sample)
                        self.shape = (len(self.files), *yx)
                        self.dtype = np.dtype(kf.dtype)
                    else:
                        _compare(desc, first, where, self.files[0])
            except InputError:
                raise
            except Exception as e:  # tifffile raises TiffFileError, struct.error, OSError ...
                raise InputError(f"{where}: not a readable TIFF ({e})") from None
        self._descs = first

    def fingerprint(self) -> str:
        return fingerprint([_file_id(f) for f in self.files])

    def _read_one(self, f: Path, out: np.ndarray) -> None:
        import tifffile

        where = str(f)
        try:
            with tifffile.TiffFile(f) as tif:
                s = tif.series[0]
                _, page_shape, sample, kf = _page_layout(s, where)
                desc = (_check_page(kf, sample, where), np.dtype(kf.dtype), sample,
                        kf.shape[sample] if sample is not None else 1, kf.photometric)
                _compare(desc, self._descs, where, self.files[0])  # the file changed meanwhile
                if self._decoder.trivial:  # plain grayscale: decode straight into the slab
                    s.asarray(maxworkers=1, out=out.reshape(page_shape))
                    return
                a = s.asarray(maxworkers=1).reshape(page_shape)
        except InputError:
            raise
        except Exception as e:
            raise InputError(
                f"{where}: corrupt TIFF, its pixel data cannot be read ({e})") from None
        out[...] = self._decoder(a, False, lambda _k: where)

    def read(self, z0, z1, pool, out):
        slab = out[: z1 - z0]
        list(pool.map(lambda k: self._read_one(self.files[z0 + k], slab[k]), range(z1 - z0)))
        return slab


def _compare(desc, first, where, first_file) -> None:
    (yx, dt, sample, ns, phot) = desc
    (yx0, dt0, sample0, ns0, phot0) = first
    if yx != yx0:
        raise InputError(
            f"{where}: slice shape (y, x) = {yx} differs from {yx0} of the first slice "
            f"{Path(first_file).name}"
        )
    if dt != dt0:
        raise InputError(
            f"{where}: pixel type {dt} differs from {dt0} of the first slice "
            f"{Path(first_file).name}"
        )
    if (sample, ns, phot) != (sample0, ns0, phot0):
        raise InputError(
            f"{where}: colour layout ({phot.name}, {ns} samples) differs from the first slice "
            f"{Path(first_file).name} ({phot0.name}, {ns0} samples)"
        )


class _MultipageSource(_Source):
    kind = "multi-page TIFF"

    def __init__(self, path: Path):
        import tifffile

        self.path = path
        where = str(path)
        try:
            self.tif = tifffile.TiffFile(path)
        except Exception as e:
            raise InputError(f"{where}: not a readable TIFF ({e})") from None
        try:
            self._validate(where)
        except InputError:
            self.tif.close()
            raise
        except Exception as e:
            self.tif.close()
            raise InputError(f"{where}: corrupt TIFF ({e})") from None

    def _validate(self, where):
        tif = self.tif
        series = [s for s in tif.series if s is not None]
        if not series:
            raise InputError(f"{where}: holds no image")
        if len(series) == 1:
            s = series[0]
            nframes, page_shape, sample, kf = _page_layout(s, where)
            yx = _check_page(kf, sample, where)
            if s.kind != "imagej" and len(s.pages) < nframes:  # ImageJ may omit IFDs
                raise InputError(
                    f"{where}: corrupt or truncated: its metadata announce {nframes} pages but "
                    f"the chain of page headers ends after {len(s.pages)}"
                )
            _check_extents(tif, s, where)
            self._series, self._keys = 0, None
        else:
            # Pages of different shapes end up in different series: go page by page, so the
            # message can name the page that differs.
            tif.pages.useframes = False
            pages = [p for p in tif.pages if not getattr(p, "is_reduced", False)]
            kf = pages[0]
            sample = kf.axes.index("S") if "S" in kf.axes else None
            yx = _check_page(kf, sample, f"{where}, page 0")
            size = tif.filehandle.size
            for i, p in enumerate(pages):
                loc = f"{where}, page {i}"
                pyx = tuple(s for k, s in enumerate(p.shape) if k != sample) if (
                    p.axes == kf.axes) else None
                if pyx != yx or p.dtype != kf.dtype:
                    raise InputError(
                        f"{loc}: page shape {tuple(p.shape)} {p.dtype} differs from "
                        f"{tuple(kf.shape)} {kf.dtype} of page 0"
                    )
                if p.dataoffsets and max(o + c for o, c in zip(p.dataoffsets,
                                                                 p.databytecounts)) > size:
                    raise InputError(f"{loc}: truncated: the pixel data run past the end of file")
            nframes = len(pages)
            self._series, self._keys = None, [p.index for p in pages]
        self.shape = (nframes, *yx)
        self.dtype = np.dtype(kf.dtype)
        self._decoder = _Decoder(kf, sample)
        self._page_ndim = len(kf.shape)
        self.voxel = voxel_size_from_tiff(tif)

    def fingerprint(self) -> str:
        return fingerprint(_file_id(self.path))

    def read(self, z0, z1, pool, out):
        where = str(self.path)
        keys = list(range(z0, z1)) if self._keys is None else self._keys[z0:z1]
        slab = out[: z1 - z0]
        trivial = self._decoder.trivial  # plain grayscale: decode straight into the slab
        try:
            a = self.tif.asarray(key=keys, series=self._series, maxworkers=_READ_THREADS,
                                 out=slab.view() if trivial else None)  # tifffile reshapes it
        except Exception as e:
            raise InputError(
                f"{where}: corrupt TIFF, pages {z0}-{z1 - 1} cannot be read ({e})") from None
        if not trivial:
            a = a.reshape((len(keys), *a.shape[a.ndim - self._page_ndim:]))
            slab[...] = self._decoder(a, True, lambda k: f"{where}, page {z0 + k}")
        return slab

    def close(self):
        self.tif.close()


class _ZarrSource(_Source):
    kind = "Zarr array"

    def __init__(self, source):
        if isinstance(source, zarr.Array):
            self.arr = source
            self.path = _zarr_local_path(source)
            where = str(self.path) if self.path else f"Zarr array {source.path or '/'}"
            src_path = None
        else:
            self.path = Path(source)
            where = str(self.path)
            src_path = self.path
            try:
                node = zarr.open(str(self.path), mode="r")
            except Exception as e:
                raise InputError(f"{where}: not a readable Zarr array ({e})") from None
            if not isinstance(node, zarr.Array):
                arrays = sorted(k for k, v in node.members() if isinstance(v, zarr.Array))
                hint = f" (it holds {', '.join(arrays)})" if arrays else ""
                raise InputError(
                    f"{where}: a Zarr group, not an array; give the path of the array, "
                    f"e.g. {where}/{arrays[0] if arrays else 'raw'}{hint}"
                )
            self.arr = node
        self.where = where
        arr = self.arr
        meta = arr.attrs.get("bigvol")
        if isinstance(meta, dict) and meta.get("complete") is False:
            raise InputError(
                f"{where}: an incomplete bigvol array (its stage was interrupted or failed)"
            )
        dt = np.dtype(arr.dtype)
        if dt.kind != "u" or dt.itemsize not in (1, 2):  # any byte order: read as native
            raise InputError(
                f"{where}: pixel type {arr.dtype}; only 8- or 16-bit unsigned grayscale "
                "(uint8, uint16) can be ingested"
            )
        if arr.ndim not in (2, 3):
            raise InputError(
                f"{where}: {arr.ndim} dimensions {arr.shape}; expected (z, y, x) or (y, x)"
            )
        self.shape = tuple(arr.shape) if arr.ndim == 3 else (1, *arr.shape)
        self.dtype = np.dtype(f"uint{8 * dt.itemsize}")
        self.voxel = _zarr_voxel_size(arr, src_path)

    def fingerprint(self) -> str:
        meta = json.loads(json.dumps(self.arr.metadata.to_dict(), default=str))
        return fingerprint(str(self.path) if self.path else None, meta)

    def read(self, z0, z1, pool, out):
        slab = out[: z1 - z0]
        try:
            slab[...] = self.arr[...] if self.arr.ndim == 2 else self.arr[z0:z1]
        except Exception as e:
            raise InputError(f"{self.where}: slices {z0}-{z1 - 1} cannot be read ({e})") from None
        return slab


def _zarr_local_path(arr: zarr.Array) -> Path | None:
    root = getattr(arr.store, "root", None)
    if root is None:
        return None
    return Path(root) / arr.path if arr.path else Path(root)


def _open_source(source, allow_gaps: bool) -> _Source:
    if isinstance(source, zarr.Array):
        return _ZarrSource(source)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(
            f"source must be a folder of TIFF slices, a TIFF file or a Zarr array, got "
            f"{type(source).__name__}"
        )
    p = Path(source)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        if (p / "zarr.json").exists() or (p / ".zarray").exists() or (p / ".zgroup").exists():
            return _ZarrSource(p)
        tiffs = [e.name for e in os.scandir(p) if e.is_file() and _is_tiff_name(e.name)]
        if len(tiffs) == 1:  # a folder holding one (multi-page) TIFF
            return _MultipageSource(p / tiffs[0])
        return _FolderSource(p, allow_gaps)
    return _MultipageSource(p)


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
                    raise ConfigError(f"phases: {p!r} is not CODE=NAME with an integer code") from None
            phases = dict(pairs)
            if len(phases) != len(pairs):
                raise ConfigError(f"phases: a code is named twice in {items}")
        elif any("=" in p for p in items):
            raise ConfigError(f"phases: give either names (pore,cbd,nmc) or CODE=NAME pairs, not both: {items}")
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
            counts += np.bincount(slab.ravel().view(np.uint8 if src.dtype.itemsize == 1 else np.uint16),
                                  minlength=counts.size)
    return counts


def _check_segmentation(counts: np.ndarray, mapping: dict[int, str] | None, where: str,
                        run_phases: Sequence[str] = ()):
    """The LUT from file codes to phase codes (None: keep them), after the checks."""
    present = np.flatnonzero(counts).tolist()
    if len(present) > MAX_PHASE_CODES:
        raise InputError(
            f"{where} holds {len(present)} distinct values ({present[0]}..{present[-1]}): a "
            f"greyscale image, not a segmentation of at most {MAX_PHASE_CODES} phase codes. "
            "Ingest greyscale as raw (the default name) and segment it, or pass the segmented volume"
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
    tmp_name = f"{name}_ingest_partial"
    t0 = time.perf_counter()
    arr, z_start = _partial_array(run, tmp_name, shape, out_dtype, chunks, stage_fp, vs)
    if z_start:
        log.info("resuming an interrupted ingest of %s at slice %d", name, z_start)
    try:
        # Read slab k+1 (threads decode the slices) while slab k is written, into two slab
        # buffers used in turn: two slabs in memory, allocated once.
        buffers = [np.empty((min(cz, shape[0]), *shape[1:]), src.dtype) for _ in range(2)]
        with ThreadPoolExecutor(_READ_THREADS) as pool, ThreadPoolExecutor(1) as writer:
            pending = None
            for k, z0 in enumerate(range(z_start, shape[0], cz)):
                z1 = min(z0 + cz, shape[0])
                # buffer k % 2 was last used by the write of slab k - 2, finished by now
                slab = src.read(z0, z1, pool, buffers[k % 2])
                if lut is not None:
                    slab = lut[slab]
                if pending is not None:
                    pending.result()
                pending = writer.submit(_write_slab, arr, z0, z1, slab, stage_fp)
                log.info("ingest %s: slices %d-%d of %d read", name, z0, z1 - 1, shape[0])
                del slab
            if pending is not None:
                pending.result()
    except InputError:
        # bad input found while decoding: the partial array is of no use
        shutil.rmtree(run.path / tmp_name, ignore_errors=True)
        raise
    # Any other interruption (Ctrl-C, a killed process, a full disk) leaves the partial array,
    # flagged incomplete under its temporary name; the next ingest of the same input with the
    # same parameters resumes after its last written slab.
    seconds = time.perf_counter() - t0

    # Swap in: the old record goes (it describes the old array), the old array (if any)
    # moves aside, the new one takes its name, is marked complete (which also writes the
    # OME-Zarr metadata), the old one is deleted, and the new record is written last.
    run.forget_stage(stage)
    final, old = run.path / name, run.path / f"{name}_ingest_old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(run.path / tmp_name, final)
    run.voxel_size = vs
    if mapping is not None:
        run.phases = list(mapping.values())
    run.mark_complete(name, source=params["source"], voxel_size_origin=vs_origin,
                      fingerprint=stage_fp)
    shutil.rmtree(old, ignore_errors=True)
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


def _partial_array(run: Run, tmp_name, shape, dtype, chunks, stage_fp, vs):
    """The temporary array to write into, and the first slice still to write (resume)."""
    if tmp_name in run:
        old = run.group[tmp_name]
        prog = old.attrs.get("ingest_progress") or {}
        if (
            isinstance(old, zarr.Array)
            and prog.get("fingerprint") == stage_fp
            and tuple(old.shape) == tuple(shape)
            and old.dtype == dtype
            and tuple(old.chunks) == tuple(chunks)
            and 0 < int(prog.get("z_done", 0)) < shape[0]
        ):
            return old, int(prog["z_done"])
    arr = run.create_array(
        tmp_name, shape=shape, dtype=dtype, chunks=chunks, compressor=image_compressor(),
        attrs={"voxel_size": list(vs) if vs else None,
               "ingest_progress": {"fingerprint": stage_fp, "z_done": 0}},
    )
    return arr, 0


def _write_slab(arr: zarr.Array, z0: int, z1: int, slab: np.ndarray, stage_fp: str) -> None:
    # One row of chunks at a time (zarr encodes the chunks of a row concurrently): the chunk
    # copies and compressed buffers zarr holds stay one row big instead of one slab big.
    cy = arr.chunks[1]
    for y0 in range(0, arr.shape[1], cy):
        arr[z0:z1, y0:y0 + cy] = slab[:, y0:y0 + cy]
    # slabs are written in order by one thread: everything below z1 is on disk
    arr.attrs["ingest_progress"] = {"fingerprint": stage_fp, "z_done": z1}
    if _FAULT_ENV in os.environ:
        _maybe_fault(arr, z1)


#: Fault injection for the interruption tests, as in :mod:`bigvol.store`:
#: ``BIGVOL_FAULT_KILL=<array>:<n>:<marker>`` makes the process SIGKILL itself once ``n``
#: slices of ``<array>`` are written, once (the marker file records that it happened).
_FAULT_ENV = "BIGVOL_FAULT_KILL"


def _maybe_fault(arr: zarr.Array, z_done: int) -> None:
    import signal

    name, n, marker = os.environ[_FAULT_ENV].split(":", 2)
    if arr.path != name or os.path.exists(marker) or z_done < int(n):
        return
    Path(marker).write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
