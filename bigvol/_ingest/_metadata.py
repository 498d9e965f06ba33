"""Voxel sizes from the files' metadata, in nm: FEI / Thermo Fisher and Zeiss pixel sizes,
ImageJ and OME-TIFF voxel sizes, the bigvol or OME-Zarr attributes of a Zarr source, and the
table of the length units these formats write."""

from __future__ import annotations

import math
from pathlib import Path

import zarr

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
