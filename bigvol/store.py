"""The run store: one Zarr v3 group per run.

Layout (docs/design.md)::

    run.zarr/
      raw, normalized, segmentation   (z, y, x) arrays
      probabilities                   (c, z, y, x) float16, optional
      labels/<phase>                  connected components, optional

Every array carries ``{"bigvol": {"complete": bool, ...}}`` in its attributes. An array is
created with ``complete = False`` and marked complete only after its last chunk is written,
so an interrupted write never leaves an array that looks finished (:meth:`Run.array` refuses
incomplete arrays unless asked).

The root group carries

- ``voxel_size``: nanometres ``(z, y, x)`` or ``None`` when unknown,
- ``phases``: the phase names, index = phase code (``0 = pore, 1 = solid electrolyte,
  2 = active material`` by default),
- ``bigvol_stages``: per stage, the provenance record ``{parameters, fingerprint, version,
  completed_at, outputs}``, written last,
- ``ome``: OME-Zarr (NGFF 0.5) ``multiscales`` metadata, one entry per image array, with the
  voxel size as the level-0 scale in micrometres, so napari / Fiji / neuroglancer open them.

The store is the only place that does I/O with Zarr; stages stay lazy functions of dask
arrays.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from ._version import __version__
from .conventions import DEFAULT_PHASES, UNLABELLED, output_paths
from .errors import InputError, StoreError
from .validate import check_phase_names, check_voxel_size

IMAGE_ARRAYS = ("raw", "normalized", "segmentation")
#: the arrays of phase codes / labels (downsampled by mode in pyramids, shown as labels)
LABEL_ARRAYS = ("segmentation", "threshold", "truth", "labels/train")
#: training labels painted in the viewer (or imported): class codes, UNLABELLED elsewhere
TRAIN_LABELS = "labels/train"


def default_compressor(level: int = 3):
    """Blosc-zstd with bit shuffling: fast, multithreaded, and small on phase codes."""
    return zarr.codecs.BloscCodec(cname="zstd", clevel=level, shuffle="bitshuffle")


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (parameters, upstream fingerprints, version)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=_jsonable).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, os.PathLike)):
        return os.fspath(o)
    if isinstance(o, (tuple, set, frozenset)):
        return list(o)
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Run:
    """A bigvol run store (a Zarr v3 group on disk).

    Examples
    --------
    >>> run = Run.create("run.zarr", voxel_size=(50, 30, 30))       # doctest: +SKIP
    >>> run.write("raw", image)                                      # doctest: +SKIP
    >>> run.read("raw")                                               # doctest: +SKIP
    dask.array<...>
    """

    def __init__(self, group: zarr.Group, path: Path):
        self.group = group
        self.path = Path(path)

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        voxel_size: Sequence[float] | None = None,
        phases: Sequence[str] = DEFAULT_PHASES,
        exist_ok: bool = True,
    ) -> Run:
        """Create a run store, or open it when it exists and ``exist_ok``.

        An existing store not written by bigvol is refused (it is never overwritten).
        """
        path = Path(path)
        # an existing empty folder (made beforehand, e.g. by a job scheduler) is created into
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            if not exist_ok:
                raise StoreError(f"{path} already exists")
            run = cls.open(path, mode="r+")
            if voxel_size is not None:
                run.voxel_size = voxel_size
            return run
        group = zarr.open_group(str(path), mode="w-", zarr_format=3)
        group.attrs.update(
            {
                "bigvol": {"version": __version__, "created_at": _now()},
                "voxel_size": _voxel_size_attr(voxel_size),
                "phases": check_phase_names(phases),
                "bigvol_stages": {},
            }
        )
        return cls(group, path)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> Run:
        """Open an existing run store (read-only by default)."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"no run store at {path}")
        try:
            group = zarr.open_group(str(path), mode=mode)
        except Exception as e:  # zarr raises several types for "not a group"
            raise StoreError(f"{path} is not a Zarr group: {e}") from None
        if "bigvol" not in group.attrs:
            raise StoreError(
                f"{path} is a Zarr group but not a bigvol run store (no 'bigvol' attribute); "
                "refusing to write into a store made by another program"
            )
        return cls(group, path)

    @classmethod
    def is_run(cls, path) -> bool:
        """Whether ``path`` is a bigvol run store (without raising)."""
        try:
            cls.open(path)
        except StoreError:
            return False
        return True

    # -- metadata ------------------------------------------------------------------------
    @property
    def voxel_size(self) -> tuple[float, float, float] | None:
        vs = self.group.attrs.get("voxel_size")
        return None if vs is None else tuple(float(v) for v in vs)

    @voxel_size.setter
    def voxel_size(self, value):
        self.refresh()
        self.group.attrs["voxel_size"] = _voxel_size_attr(value)
        self._write_ome()

    @property
    def phases(self) -> list[str]:
        """Phase (class) names, index = code in ``segmentation``."""
        return list(self.group.attrs.get("phases", DEFAULT_PHASES))

    @phases.setter
    def phases(self, names):
        names = check_phase_names(names)
        self.refresh()
        if names != self.phases:  # no write when unchanged (a read-only or full disk)
            self.group.attrs["phases"] = names

    @property
    def paths(self) -> dict[str, Path]:
        """The files beside the store (:func:`bigvol.conventions.output_paths`)."""
        return output_paths(self.path)

    @property
    def stages(self) -> dict[str, dict]:
        self.refresh()
        return dict(self.group.attrs.get("bigvol_stages", {}))

    def stage(self, name: str) -> dict | None:
        """The provenance record of a completed stage, or None."""
        return self.stages.get(name)

    def record_stage(
        self,
        name: str,
        *,
        parameters: Mapping[str, Any],
        fingerprint: str,
        outputs: Sequence[str] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> dict:
        """Record that a stage completed. Call it last, after every output is written."""
        rec = {
            "parameters": json.loads(json.dumps(dict(parameters), default=_jsonable)),
            "fingerprint": fingerprint,
            "version": __version__,
            "completed_at": _now(),
            "outputs": list(outputs),
        }
        if extra:
            rec.update(json.loads(json.dumps(dict(extra), default=_jsonable)))
        stages = self.stages  # fresh from disk: another process may have recorded a stage
        stages[name] = rec
        self.group.attrs["bigvol_stages"] = stages
        return rec

    def forget_stage(self, name: str) -> None:
        stages = self.stages
        if stages.pop(name, None) is not None:
            self.group.attrs["bigvol_stages"] = stages

    def refresh(self) -> None:
        """Re-read the group's attributes from disk. Another process (a ``bigvol`` command
        beside an open viewer, a worker) may have recorded stages since this handle was
        opened; stage records are read and updated from the fresh attributes, so a write
        from this handle never drops theirs."""
        self.group = zarr.open_group(str(self.path), mode="r+" if not self.group.read_only
                                     else "r")

    # -- arrays --------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        try:
            self.group[name]
        except KeyError:
            return False
        return True

    def create_array(
        self,
        name: str,
        *,
        shape: Sequence[int],
        dtype,
        chunks: Sequence[int],
        dimension_names: Sequence[str] | None = None,
        fill_value=0,
        compressor=None,
        attrs: Mapping[str, Any] | None = None,
        overwrite: bool = True,
    ) -> zarr.Array:
        """Create (or replace) an array, marked incomplete until :meth:`mark_complete`."""
        shape = tuple(int(s) for s in shape)
        chunks = tuple(min(int(c), max(s, 1)) for c, s in zip(chunks, shape))
        if dimension_names is None:
            dimension_names = ("c", "z", "y", "x")[-len(shape):] if len(shape) <= 4 else None
        arr = self.group.create_array(
            name,
            shape=shape,
            dtype=np.dtype(dtype),
            chunks=chunks,
            compressors=compressor or default_compressor(),
            fill_value=fill_value,
            dimension_names=dimension_names,
            overwrite=overwrite,
        )
        meta = {"complete": False, "created_at": _now()}
        arr.attrs.update({"bigvol": meta, **dict(attrs or {})})
        return arr

    def mark_complete(self, name: str, **info) -> None:
        arr = self.group[name]
        meta = dict(arr.attrs.get("bigvol", {}))
        meta.update(info, complete=True, completed_at=_now())
        arr.attrs["bigvol"] = meta
        if name in IMAGE_ARRAYS or name.startswith(("labels/", "pyramids/")):
            self._write_ome()

    def is_complete(self, name: str) -> bool:
        return name in self and bool(self.group[name].attrs.get("bigvol", {}).get("complete"))

    def zarr_array(self, name: str, *, allow_incomplete: bool = False) -> zarr.Array:
        if name not in self:
            raise StoreError(f"{self.path} has no array {name!r}")
        arr = self.group[name]
        if not isinstance(arr, zarr.Array):
            raise StoreError(f"{self.path}/{name} is a group, not an array")
        if not allow_incomplete and not arr.attrs.get("bigvol", {}).get("complete"):
            raise StoreError(
                f"{self.path}/{name} is incomplete (its stage was interrupted or failed); "
                "run the stage again"
            )
        return arr

    def array_names(self, group: str) -> list[str]:
        """The arrays in a sub-group of the run (``thickness``, ``labels``), sorted."""
        if group not in self:
            return []
        try:
            return sorted(self.group[group].array_keys())
        except AttributeError:  # an array, not a group
            return []

    def pyramid_levels(self, name: str) -> list[str]:
        """The complete pyramid levels of ``name`` (``pyramids/<name>/1``, ``/2``, ...) in
        order, up to the first missing one (:mod:`bigvol.pyramid`)."""
        out = []
        while self.is_complete(path := f"pyramids/{name}/{len(out) + 1}"):
            out.append(path)
        return out

    # -- training labels -----------------------------------------------------------------
    def labelled_slices(self) -> list[int]:
        """The slices of :data:`TRAIN_LABELS` that hold at least one labelled voxel."""
        if TRAIN_LABELS not in self:
            return []
        return list(self.group[TRAIN_LABELS].attrs.get("labelled_slices", []))

    def write_label_slices(self, slices: Mapping[int, np.ndarray], *, shape=None) -> list[int]:
        """Write whole slices of training labels (class codes, ``UNLABELLED`` elsewhere).

        The array :data:`TRAIN_LABELS` (uint8, one chunk row per slice, so a slice is
        written alone) is created with the shape of ``raw`` (or ``shape``) on first use.
        Its attributes keep the labelled slices and a digest of their content, which the
        train stage hashes: new paint retrains, the same labels do not. Returns the
        labelled slices.
        """
        if TRAIN_LABELS not in self:
            shape = tuple(shape or self.zarr_array("raw").shape)
            self.create_array(TRAIN_LABELS, shape=shape, dtype=np.uint8,
                              chunks=(1, min(512, shape[1]), min(512, shape[2])),
                              fill_value=UNLABELLED, attrs={"labelled_slices": []})
        arr = self.group[TRAIN_LABELS]
        labelled = set(arr.attrs.get("labelled_slices", []))
        for z, lab in slices.items():
            z = int(z) % arr.shape[0]
            lab = np.asarray(lab)
            if lab.shape != arr.shape[1:]:
                raise InputError(f"labels of slice {z} have shape {lab.shape}, the stack's "
                                 f"slices {arr.shape[1:]}")
            arr[z] = lab.astype(np.uint8)
            (labelled.add if (lab != UNLABELLED).any() else labelled.discard)(z)
        h = hashlib.sha256()
        for z in sorted(labelled):
            h.update(str(z).encode())
            h.update(np.ascontiguousarray(arr[z]).tobytes())
        arr.attrs.update({"labelled_slices": sorted(labelled), "digest": h.hexdigest()[:16]})
        self.mark_complete(TRAIN_LABELS, fingerprint=h.hexdigest()[:16])
        return sorted(labelled)

    def fingerprint_of(self, name: str) -> str | None:
        """The fingerprint of the stage that wrote the array ``name`` (None if unknown):
        what a stage reading it hashes, so that it reruns when the array changes."""
        if name not in self:
            return None
        meta = self.group[name].attrs.get("bigvol", {})
        return meta.get("fingerprint")

    def read(self, name: str, *, allow_incomplete: bool = False) -> da.Array:
        """The array as a lazy dask array with the store's chunks."""
        arr = self.zarr_array(name, allow_incomplete=allow_incomplete)
        return da.from_zarr(arr)

    def write(
        self,
        name: str,
        data: da.Array | np.ndarray,
        *,
        chunks: Sequence[int] | None = None,
        attrs: Mapping[str, Any] | None = None,
        fingerprint: str | None = None,
        resume: bool = True,
        compute_kwargs: Mapping[str, Any] | None = None,
    ) -> zarr.Array:
        """Stream a dask array into the store chunk by chunk, then mark it complete.

        The dask array is rechunked to the store's chunks first (concurrent partial writes
        into one Zarr chunk from several tasks lose data). Each task writes one chunk and
        then sets that chunk's flag in ``_progress/<name>``; completion is recorded last.

        Resuming: when ``resume`` and an *incomplete* array of the same name, shape, dtype,
        chunks and ``fingerprint`` exists (an interrupted earlier write of the same
        computation), only the chunks whose flag is not set are computed and written. As
        every chunk is a deterministic function of the inputs, the result is identical to an
        uninterrupted write.
        """
        return self.write_arrays(
            {name: data}, chunks=chunks, attrs={name: attrs} if attrs else None,
            fingerprint=fingerprint, resume=resume, compute_kwargs=compute_kwargs,
        )[name]

    def write_arrays(
        self,
        arrays: Mapping[str, da.Array | np.ndarray],
        *,
        chunks: Sequence[int] | None = None,
        attrs: Mapping[str, Mapping[str, Any]] | None = None,
        fingerprint: str | None = None,
        resume: bool = True,
        compute_kwargs: Mapping[str, Any] | None = None,
    ) -> dict[str, zarr.Array]:
        """Write several arrays of one shape in one pass, as :meth:`write` does one.

        For outputs computed together (the phantom's image and truth come from one task per
        chunk): each chunk task writes the same chunk of every array, so shared work runs
        once.
        """
        datas = {k: v if isinstance(v, da.Array) else da.from_array(v) for k, v in arrays.items()}
        shapes = {tuple(d.shape) for d in datas.values()}
        if len(shapes) != 1:
            raise ValueError(f"write_arrays needs arrays of one shape, got {shapes}")
        shape = shapes.pop()
        first = next(iter(datas.values()))
        chunks = tuple(chunks) if chunks is not None else tuple(c[0] for c in first.chunks)
        chunks = tuple(min(int(c), max(s, 1)) for c, s in zip(chunks, shape))
        targets, flags = {}, {}
        for name, data in datas.items():
            targets[name], flags[name] = self._open_or_create_for_write(
                name, data, chunks, (attrs or {}).get(name), fingerprint, resume)
        datas = {k: d.rechunk(targets[k].chunks) for k, d in datas.items()}
        done = np.logical_and.reduce([f[...].astype(bool) for f in flags.values()])
        todo = [idx for idx in np.ndindex(done.shape) if not done[idx]]
        if todo:
            names = list(datas)
            writes = da.map_blocks(
                _write_blocks, *(datas[k] for k in names),
                targets=[targets[k] for k in names], flags=[flags[k] for k in names],
                dtype=np.uint8, block_info=True,
                chunks=tuple((1,) * len(c) for c in datas[names[0]].chunks),
                meta=np.empty((0,) * len(shape), dtype=np.uint8),
            )
            # only the keys of unfinished chunks: the array optimizer culls the graph to them
            keys = [(writes.name, *idx) for idx in todo]
            from dask.base import compute_as_if_collection

            compute_as_if_collection(
                da.Array, writes.__dask_graph__(), keys, **dict(compute_kwargs or {})
            )
        for name in datas:
            self.mark_complete(name)
            del self.group[f"_progress/{name}"]
        return targets

    def _open_or_create_for_write(self, name, data, chunks, attrs, fingerprint, resume):
        """The target array and its chunk flags: reused when resuming the same write."""
        progress_name = f"_progress/{name}"
        if resume and fingerprint is not None and name in self and progress_name in self:
            old = self.group[name]
            meta = old.attrs.get("bigvol", {})
            if (
                not meta.get("complete")
                and meta.get("fingerprint") == fingerprint
                and tuple(old.shape) == tuple(data.shape)
                and old.dtype == data.dtype
                and tuple(old.chunks) == chunks
            ):
                return old, self.group[progress_name]
        arr = self.create_array(name, shape=data.shape, dtype=data.dtype, chunks=chunks,
                                attrs=attrs, dimension_names=None)
        if fingerprint is not None:
            meta = dict(arr.attrs["bigvol"])
            meta["fingerprint"] = fingerprint
            arr.attrs["bigvol"] = meta
        grid = tuple(len(c) for c in da.core.normalize_chunks(arr.chunks, arr.shape))
        flags = self.group.create_array(
            progress_name, shape=grid, dtype=np.uint8, chunks=(1,) * len(grid),
            fill_value=0, overwrite=True, compressors=None,
        )
        return arr, flags

    # -- sequential slab writes (ingest) ---------------------------------------------------
    def write_slabs(self, name: str, read_slab, *, shape, dtype, chunks, fingerprint: str,
                    source_dtype=None, compressor=None, attrs=None) -> int:
        """Write an array slab by slab along z from ``read_slab(z0, z1, buffer)``, resumably.

        For sources read in order (a folder of TIFF slices, a multi-page TIFF): one slab of
        ``chunks[0]`` slices is read (into one of two buffers of ``source_dtype``, used in
        turn) while the previous one is written, one row of chunks at a time, into the
        partial array ``<name>_partial``. After each slab its end is recorded, so an
        interrupted write of the same ``fingerprint`` resumes after its last written slab
        with the same result. :meth:`swap_in` then gives the array its name. Peak memory:
        two slabs. Returns the slice the write resumed at (0 for a fresh write).
        """
        from concurrent.futures import ThreadPoolExecutor

        arr, z_start = self._partial_array(name, shape, dtype, chunks, fingerprint,
                                           compressor, attrs)
        cz = arr.chunks[0]
        buffers = [np.empty((min(cz, shape[0]), *shape[1:]), source_dtype or dtype)
                   for _ in range(2)]
        with ThreadPoolExecutor(1) as writer:
            pending = None
            for k, z0 in enumerate(range(z_start, shape[0], cz)):
                z1 = min(z0 + cz, shape[0])
                # buffer k % 2 was last used by the write of slab k - 2, finished by now
                slab = read_slab(z0, z1, buffers[k % 2])
                if pending is not None:
                    pending.result()
                pending = writer.submit(_write_slab, arr, z0, z1, slab, fingerprint)
                del slab
            if pending is not None:
                pending.result()
        return z_start

    def _partial_array(self, name, shape, dtype, chunks, fingerprint, compressor, attrs):
        tmp = f"{name}_partial"
        if tmp in self:
            old = self.group[tmp]
            prog = old.attrs.get("slab_progress") or {}
            if (isinstance(old, zarr.Array) and prog.get("fingerprint") == fingerprint
                    and tuple(old.shape) == tuple(shape) and old.dtype == dtype
                    and tuple(old.chunks) == tuple(chunks)
                    and 0 < int(prog.get("z_done", 0)) < shape[0]):
                return old, int(prog["z_done"])
        arr = self.create_array(tmp, shape=shape, dtype=dtype, chunks=chunks,
                                compressor=compressor, attrs={
                                    **dict(attrs or {}),
                                    "slab_progress": {"fingerprint": fingerprint, "z_done": 0}})
        return arr, 0

    def swap_in(self, name: str, **info) -> zarr.Array:
        """The finished ``<name>_partial`` becomes ``name`` (an old ``name`` is deleted only
        after the new one is in place) and is marked complete with ``info``."""
        import shutil

        final, old = self.path / name, self.path / f"{name}_old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(self.path / f"{name}_partial", final)
        self.mark_complete(name, **info)
        shutil.rmtree(old, ignore_errors=True)
        return self.group[name]

    def discard_partial(self, name: str) -> None:
        import shutil

        shutil.rmtree(self.path / f"{name}_partial", ignore_errors=True)

    # -- OME-Zarr ------------------------------------------------------------------------
    def _write_ome(self) -> None:
        """Write NGFF 0.5 ``multiscales`` (one per image array) on the root group."""
        vs = self.voxel_size
        scale_um = [v / 1000.0 for v in vs] if vs is not None else [1.0, 1.0, 1.0]
        unit = "micrometer" if vs is not None else None
        axes = [
            {"name": ax, "type": "space", **({"unit": unit} if unit else {})}
            for ax in ("z", "y", "x")
        ]
        multiscales = []
        for name in IMAGE_ARRAYS:
            if not (self.is_complete(name) and self.group[name].ndim == 3):
                continue
            datasets = []
            for level, path in enumerate([name, *self.pyramid_levels(name)]):
                f = 2.0 ** level  # level l: 2^l x coarser in y and x; voxel centres shift
                t = [{"type": "scale", "scale": [scale_um[0], scale_um[1] * f, scale_um[2] * f]}]
                if level:
                    t.append({"type": "translation", "translation": [
                        0.0, scale_um[1] * (f - 1) / 2, scale_um[2] * (f - 1) / 2]})
                datasets.append({"path": path, "coordinateTransformations": t})
            multiscales.append({"name": name, "axes": axes, "datasets": datasets})
        ome = {"version": "0.5", "multiscales": multiscales}
        self.refresh()
        self.group.attrs["ome"] = ome

    # -- summary -------------------------------------------------------------------------
    def summary(self) -> str:
        """:meth:`info` as text (``bigvol info``)."""
        info = self.info()
        vs = info["voxel_size_nm"]
        lines = [
            f"run store    {info['path']}",
            "voxel size   " + ("unknown" if vs is None else
                               " x ".join(f"{v:g}" for v in vs) + " nm (z, y, x)"),
            f"phases       {', '.join(f'{i}={n}' for i, n in enumerate(info['phases']))}",
            f"size on disk {_human_bytes(info['bytes_on_disk'])}",
            "arrays:",
        ]
        for name, a in info["arrays"].items():
            lines.append(f"  {name:<16} {tuple(a['shape'])} {a['dtype']:<8} chunks "
                         f"{tuple(a['chunks'])}  {_human_bytes(a['bytes_on_disk'])}"
                         + ("" if a["complete"] else "  INCOMPLETE"))
        lines.append("completed stages:" + ("" if info["stages"] else " none"))
        lines += [f"  {name:<16} {when}" for name, when in info["stages"].items()]
        return "\n".join(lines)

    def info(self) -> dict:
        """Shape, dtype, chunks, completeness and size on disk of every array; stages."""
        arrays = {}

        def visit(group, prefix=""):
            for key, node in sorted(group.members()):
                full = f"{prefix}{key}"
                if full.startswith("_progress"):
                    continue
                if isinstance(node, zarr.Array):
                    arrays[full] = {
                        "shape": list(node.shape),
                        "dtype": str(node.dtype),
                        "chunks": list(node.chunks),
                        "complete": bool(node.attrs.get("bigvol", {}).get("complete")),
                        "bytes_on_disk": _du(self.path / full),
                    }
                else:
                    visit(node, full + "/")

        visit(self.group)
        return {
            "path": str(self.path),
            "voxel_size_nm": self.voxel_size,
            "phases": self.phases,
            "arrays": arrays,
            "bytes_on_disk": _du(self.path),
            "stages": {k: v.get("completed_at") for k, v in self.stages.items()},
        }


def read_region(arr, region) -> np.ndarray:
    """``arr[region]`` read one stored chunk at a time.

    ``region`` holds an int or a slice (step >= 1) per axis. Reading a plane of a Zarr
    array in one call decodes every chunk it crosses at once (zarr gathers them
    concurrently): a 3000 x 2000 plane of float32 chunks (64, 256, 256) would hold ~1.5 GB.
    Chunk by chunk, at most one decoded chunk is held besides the result.
    """
    shape = arr.shape
    chunks = getattr(arr, "chunks", shape)
    norm = []
    for r, n in zip(region, shape):
        if isinstance(r, slice):
            start, stop, step = r.indices(n)
            norm.append((start, stop, step, True))
        else:
            i = int(r) + (n if int(r) < 0 else 0)
            norm.append((i, i + 1, 1, False))
    out_shape = [len(range(a, b, st)) for a, b, st, _ in norm]
    out = np.empty(out_shape, dtype=arr.dtype)
    if 0 in out_shape:
        return out[tuple(slice(None) if keep else 0 for *_, keep in norm)]

    def spans(axis):
        a, b, st, _ = norm[axis]
        c = chunks[axis]
        for c0 in range((a // c) * c, b, c):
            c1 = min(c0 + c, b)
            first = a + -(-(max(c0, a) - a) // st) * st  # first index >= c0 in a, a+st, ...
            if first < c1:
                yield slice(first, c1, st), slice((first - a) // st,
                                                  (first - a) // st + len(range(first, c1, st)))

    for s0, o0 in spans(0):
        for s1, o1 in spans(1):
            for s2, o2 in spans(2):
                out[o0, o1, o2] = arr[s0, s1, s2]
    return out[tuple(slice(None) if keep else 0 for *_, keep in norm)]



def _write_slab(arr: zarr.Array, z0: int, z1: int, slab: np.ndarray, fingerprint: str) -> None:
    # One row of chunks at a time (zarr encodes the chunks of a row concurrently): the chunk
    # copies and compressed buffers zarr holds stay one row big instead of one slab big.
    cy = arr.chunks[1]
    for y0 in range(0, arr.shape[1], cy):
        arr[z0:z1, y0:y0 + cy] = slab[:, y0:y0 + cy]
    # slabs are written in order by one thread: everything below z1 is on disk
    arr.attrs["slab_progress"] = {"fingerprint": fingerprint, "z_done": z1}
    if _FAULT_ENV in os.environ:
        _maybe_fault(arr.path, z1)


def _write_blocks(*blocks, targets, flags, block_info=None):
    """Write one chunk of each target not yet flagged, then flag it (one flag per chunk)."""
    for i, (block, target, flag) in enumerate(zip(blocks, targets, flags)):
        idx = tuple(block_info[i]["chunk-location"])
        if flag[idx]:
            continue  # written before an interruption
        loc = block_info[i]["array-location"]
        target[tuple(slice(a, b) for a, b in loc)] = block
        flag[idx] = 1
        if _FAULT_ENV in os.environ:
            _maybe_fault(target.path, int(np.asarray(flag[...]).sum()))
    return np.ones((1,) * blocks[0].ndim, dtype=np.uint8)


#: Fault injection for the interruption tests: ``BIGVOL_FAULT_KILL=<array>:<n>:<marker>``
#: makes the process SIGKILL itself once ``n`` chunks (:meth:`Run.write`) or slices
#: (:meth:`Run.write_slabs`) of ``<array>`` are written, once (the marker file records that
#: it happened). A real kill, not a simulated exception.
_FAULT_ENV = "BIGVOL_FAULT_KILL"


def fault_point(name: str, done: int) -> None:
    """Test hook: with ``BIGVOL_FAULT_KILL=<name>:<n>:<marker>`` set, SIGKILL this process
    once ``done >= n`` for ``name`` (an array, or ``train`` for training epochs)."""
    if _FAULT_ENV in os.environ:
        _maybe_fault(name, done)


def _maybe_fault(array_path: str, done: int) -> None:
    import signal

    name, n, marker = os.environ[_FAULT_ENV].split(":", 2)
    if array_path != name or os.path.exists(marker) or done < int(n):
        return
    Path(marker).write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def _voxel_size_attr(vs) -> list[float] | None:
    if isinstance(vs, str) and vs == "unknown":
        return None
    vs = check_voxel_size(vs)
    return None if vs is None else list(vs)


def open_run(path, mode: str = "r") -> Run:
    """Open an existing run store."""
    return Run.open(path, mode=mode)


__all__ = ["Run", "StoreError", "open_run", "fingerprint", "default_compressor", "read_region",
           "fault_point",
           "IMAGE_ARRAYS", "LABEL_ARRAYS", "TRAIN_LABELS"]
