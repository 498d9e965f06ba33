"""The sources an ingest reads: a folder of TIFF slices (listed in natural order, with its
numbering checked), one multi-page TIFF, or a Zarr array, each a :class:`_Source` whose
headers are validated when it is opened (page layout, dtype and colour model, byte ranges
inside the file) and which decodes one slab of slices at a time."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr

from ..errors import InputError
from ..store import fingerprint
from ._metadata import _zarr_voxel_size, voxel_size_from_tiff

_TIFF_SUFFIXES = (".tif", ".tiff")
_READ_THREADS = max(1, min(4, os.cpu_count() or 1))
_GRAY_DTYPES = (np.dtype("uint8"), np.dtype("uint16"))


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
