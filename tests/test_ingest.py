"""Ingest: TIFF folders, multi-page TIFFs and Zarr arrays into the run store.

Every test writes real files with tifffile / zarr in tmp_path and ingests into a real Zarr
store on disk.
"""

import hashlib
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import bigvol
from bigvol._ingest import (
    fei_pixel_size,
    imagej_voxel_size,
    list_slices,
    natural_key,
    voxel_size_from_tiff,
    zeiss_pixel_size,
)
from bigvol.cli import main
from bigvol.errors import ConfigError, InputError
from bigvol.store import Run, StoreError

FEI_TEXT = (
    "[User]\r\nDate=01/02/2024\r\n[Beam]\r\nHV=2000\r\n"
    "[Scan]\r\nPixelWidth=4.86e-009\r\nPixelHeight=4.86e-009\r\n"
    "[EScan]\r\nPixelWidth=4.86e-009\r\n"
)
ZEISS_TEXT = (
    "\r\n0\r\n1\r\nAP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 3.721 nm\r\n"
    "AP_PIXEL_SIZE\r\nPixel Size = 3.721 nm\r\nDP_DETECTOR_TYPE\r\nSignal A = InLens\r\n"
)


def stack(shape=(12, 20, 30), dtype=np.uint8, seed=0):
    """Random slices whose first pixel is the slice index, so any reordering shows."""
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max
    a = rng.integers(0, hi, size=shape, dtype=dtype, endpoint=True)
    a[:, 0, 0] = np.arange(shape[0])
    return a


def write_folder(folder, a, pattern="slice_{}.tif", start=1, **kw):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, sl in enumerate(a):
        tifffile.imwrite(folder / pattern.format(i + start), sl, **kw)
    return folder


def digest(path):
    """Hash of every file under path (names, bytes) and their mtimes."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
        h.update(str(f.stat().st_mtime_ns).encode())
    return h.hexdigest()


def quiet_ingest(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return bigvol.ingest(*args, **kw)


# -- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", [(5, 7, 8), (1, 1, 30), (12, 20, 30), (64, 512, 512)])
def test_folder_round_trip_natural_sort_any_chunking(tmp_path, chunks):
    a = stack((12, 20, 30))
    src = write_folder(tmp_path / "slices", a)  # slice_1 .. slice_12, unpadded
    before = digest(src)
    arr = quiet_ingest(src, tmp_path / "run.zarr", chunks=chunks)
    assert isinstance(arr, zarr.Array)
    assert arr.shape == a.shape and arr.dtype == np.uint8
    assert arr.chunks == tuple(min(c, s) for c, s in zip(chunks, a.shape))
    np.testing.assert_array_equal(arr[...], a)
    run = Run.open(tmp_path / "run.zarr")
    assert run.is_complete("raw")
    np.testing.assert_array_equal(run.read("raw").compute(), a)
    assert digest(src) == before


def test_natural_sort_and_slice_number_choice(tmp_path):
    assert sorted(["s_10.tif", "s_2.tif", "s_1.tif"], key=natural_key) == [
        "s_1.tif", "s_2.tif", "s_10.tif"]
    # the constant run (2024) and a unique but wide run (a timestamp) are not the slice index
    names = [f"run2024_slice_9_t{1000 + 37 * i}.TIF" for i in range(3)]
    names += ["run2024_slice_10_t1200.tiff", "run2024_slice_8_t999.tif"]
    for n in names:
        tifffile.imwrite(tmp_path / n, np.zeros((2, 2), np.uint8))
    # slice 9 three times -> duplicates in that run; the t-run is unique but not consecutive
    with pytest.raises(InputError, match="gap"):
        list_slices(tmp_path)
    for p in tmp_path.iterdir():
        p.unlink()
    for i, t in zip([3, 1, 10, 2, 4, 5, 6, 7, 8, 9], [50, 7, 99, 13, 61, 70, 71, 80, 90, 95]):
        tifffile.imwrite(tmp_path / f"run2024_slice_{i}_t{t}.tif", np.zeros((2, 2), np.uint8))
    got = [p.name for p in list_slices(tmp_path)]
    assert [int(n.split("_")[2]) for n in got] == list(range(1, 11))


def test_multipage_round_trip(tmp_path):
    a = stack((9, 16, 21))
    f = tmp_path / "stack.tif"
    tifffile.imwrite(f, a, photometric="minisblack")
    before = digest(f)
    arr = quiet_ingest(f, tmp_path / "run.zarr", chunks=(4, 5, 6))
    np.testing.assert_array_equal(arr[...], a)
    assert digest(f) == before


def test_multipage_pages_written_one_by_one_compressed(tmp_path):
    a = stack((7, 16, 21))
    f = tmp_path / "stack.tiff"
    with tifffile.TiffWriter(f) as w:
        for sl in a:
            w.write(sl, compression="zlib", contiguous=False)
    arr = quiet_ingest(f, tmp_path / "run.zarr", chunks=(3, 16, 21))
    np.testing.assert_array_equal(arr[...], a)


def test_uint16_folder_and_multipage(tmp_path):
    a = stack((6, 10, 11), dtype=np.uint16)
    src = write_folder(tmp_path / "s", a, pattern="img{:04d}.tiff", start=0)
    arr = quiet_ingest(src, tmp_path / "r1.zarr", chunks=(4, 4, 4))
    assert arr.dtype == np.uint16
    np.testing.assert_array_equal(arr[...], a)
    tifffile.imwrite(tmp_path / "m.tif", a, compression="zlib", photometric="minisblack")
    arr = quiet_ingest(tmp_path / "m.tif", tmp_path / "r2.zarr")
    np.testing.assert_array_equal(arr[...], a)


def test_default_chunks_clipped(tmp_path):
    a = stack((3, 40, 600))
    tifffile.imwrite(tmp_path / "m.tif", a, photometric="minisblack")
    arr = quiet_ingest(tmp_path / "m.tif", tmp_path / "r.zarr")
    assert arr.chunks == (3, 40, 256)  # conventions.DEFAULT_CHUNKS, clipped to the shape
    np.testing.assert_array_equal(arr[...], a)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_source_path_and_object(tmp_path, zarr_format):
    a = stack((10, 13, 17), dtype=np.uint16)
    path = tmp_path / f"src{zarr_format}.zarr"
    z = zarr.create_array(str(path), shape=a.shape, chunks=(3, 5, 7), dtype=a.dtype,
                          zarr_format=zarr_format)
    z[...] = a
    before = digest(path)
    arr = quiet_ingest(str(path), tmp_path / "r.zarr", chunks=(4, 6, 6))
    np.testing.assert_array_equal(arr[...], a)
    arr = quiet_ingest(zarr.open_array(str(path), mode="r"), tmp_path / "r2.zarr")
    np.testing.assert_array_equal(arr[...], a)
    assert digest(path) == before


def test_zarr_v2_big_endian_and_2d_sources(tmp_path):
    a = stack((4, 6, 5), dtype=np.uint16)
    z = zarr.create_array(str(tmp_path / "be.zarr"), shape=a.shape, chunks=(3, 4, 4),
                          dtype=">u2", zarr_format=2)
    z[...] = a
    arr = quiet_ingest(tmp_path / "be.zarr", tmp_path / "r.zarr")
    assert arr.dtype == np.dtype("uint16")
    np.testing.assert_array_equal(arr[...], a)
    z2 = zarr.create_array(str(tmp_path / "one.zarr"), shape=(6, 5), chunks=(4, 4), dtype="u1")
    z2[...] = a[0] % 256
    arr = quiet_ingest(tmp_path / "one.zarr", tmp_path / "r2.zarr")
    np.testing.assert_array_equal(arr[...], (a[0] % 256)[None])
    zf = zarr.create_array(str(tmp_path / "f.zarr"), shape=(2, 3, 3), dtype="f4")
    with pytest.raises(InputError, match=r"f\.zarr: pixel type float32"):
        bigvol.ingest(tmp_path / "f.zarr", tmp_path / "r3.zarr")
    assert zf.shape == (2, 3, 3)


def test_zarr_source_from_a_run_carries_voxel_size(tmp_path):
    a = stack((5, 8, 9))
    tifffile.imwrite(tmp_path / "m.tif", a, photometric="minisblack")
    quiet_ingest(tmp_path / "m.tif", tmp_path / "a.zarr", voxel_size=(40, 7, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "unknown voxel size" warning
        arr = bigvol.ingest(tmp_path / "a.zarr" / "raw", tmp_path / "b.zarr")
    np.testing.assert_array_equal(arr[...], a)
    assert Run.open(tmp_path / "b.zarr").voxel_size == (40.0, 7.0, 7.0)
    # the group itself is not an array: the message says which arrays it holds
    with pytest.raises(InputError, match=r"a\.zarr.*group.*raw"):
        bigvol.ingest(tmp_path / "a.zarr", tmp_path / "c.zarr")
    # and ingesting an array onto itself is refused, the array stays
    with pytest.raises(InputError, match="destination array itself"):
        bigvol.ingest(tmp_path / "a.zarr" / "raw", tmp_path / "a.zarr")
    np.testing.assert_array_equal(Run.open(tmp_path / "a.zarr").read("raw").compute(), a)


def test_rgb_with_identical_channels_is_gray_and_miniswhite_inverted(tmp_path):
    a = stack((4, 9, 10))
    rgb = np.repeat(a[..., None], 3, axis=-1)
    src = write_folder(tmp_path / "rgb", rgb, photometric="rgb")
    np.testing.assert_array_equal(quiet_ingest(src, tmp_path / "r.zarr")[...], a)
    rgba = np.concatenate([rgb, np.full(a.shape + (1,), 255, np.uint8)], axis=-1)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(quiet_ingest(tmp_path / "rgba.tif", tmp_path / "r2.zarr")[...], a)
    planar = np.moveaxis(rgb, -1, 1)  # (z, 3, y, x) planar configuration
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(
        quiet_ingest(tmp_path / "planar.tif", tmp_path / "r3.zarr")[...], a)
    tifffile.imwrite(tmp_path / "white.tif", a, photometric="miniswhite")
    np.testing.assert_array_equal(
        quiet_ingest(tmp_path / "white.tif", tmp_path / "r4.zarr")[...], 255 - a)


# -- voxel size ----------------------------------------------------------------------------
def test_voxel_size_from_imagej_tiff(tmp_path):
    a = stack((4, 8, 9))
    f = tmp_path / "ij.tif"
    tifffile.imwrite(f, a, imagej=True, resolution=(1 / 0.03, 1 / 0.02),
                     metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        arr = bigvol.ingest(f, tmp_path / "r.zarr")
    run = Run.open(tmp_path / "r.zarr")
    assert run.voxel_size == pytest.approx((50.0, 20.0, 30.0))
    assert arr.attrs["voxel_size"] == pytest.approx([50.0, 20.0, 30.0])
    assert run.stage("ingest")["voxel_size_origin"] == "ImageJ metadata"
    # ImageJ's own spelling of micrometres
    assert imagej_voxel_size({"spacing": 0.1, "unit": "\\u00B5m"}, (10, 1), (10, 1)) == (
        pytest.approx(100.0), pytest.approx(100.0), pytest.approx(100.0))
    assert imagej_voxel_size({"spacing": 1.0, "unit": "pixel"}, (1, 1), (1, 1)) is None


def test_voxel_size_fei_and_zeiss_tags(tmp_path):
    sl = stack((1, 8, 9))[0]
    tifffile.imwrite(tmp_path / "fei.tif", sl, extratags=[(34682, "s", 0, FEI_TEXT, True)])
    tifffile.imwrite(tmp_path / "zeiss.tif", sl, extratags=[(34118, "s", 0, ZEISS_TEXT, True)])
    assert voxel_size_from_tiff(tmp_path / "fei.tif") == ((None, 4.86, 4.86), "FEI metadata")
    assert voxel_size_from_tiff(tmp_path / "zeiss.tif") == (
        (None, 3.721, 3.721), "Zeiss SEM metadata")
    # the parsers on dicts as tifffile returns them
    assert fei_pixel_size({"EScan": {"PixelWidth": 1e-8, "PixelHeight": 2e-8}}) == (20.0, 10.0)
    assert fei_pixel_size({"User": {}}) is None
    assert zeiss_pixel_size({"ap_pixel_size": ("Pixel Size", 0.5, "µm")}) == (500.0, 500.0)
    assert zeiss_pixel_size({"ap_image_pixel_size": ("Image Pixel Size", 250, "pm")}) == (
        0.25, 0.25)
    # FEI files have no slice thickness: z from the argument, y and x from the files
    folder = tmp_path / "fei"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"SEM Image - SliceImage - {i + 1:03d}.tif", sl,
                         extratags=[(34682, "s", 0, FEI_TEXT, True)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        bigvol.ingest(folder, tmp_path / "r.zarr", voxel_size=(10, None, None))
    run = Run.open(tmp_path / "r.zarr")
    assert run.voxel_size == (10.0, 4.86, 4.86)
    assert run.stage("ingest")["voxel_size_origin"] == "voxel_size argument + FEI metadata"


def test_voxel_size_from_ome_tiff(tmp_path):
    a = stack((3, 8, 9))
    tifffile.imwrite(tmp_path / "s.ome.tif", a, ome=True, photometric="minisblack",
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.03, "PhysicalSizeY": 0.02,
                               "PhysicalSizeZ": 50, "PhysicalSizeZUnit": "nm"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        arr = bigvol.ingest(tmp_path / "s.ome.tif", tmp_path / "r.zarr")
    np.testing.assert_array_equal(arr[...], a)
    run = Run.open(tmp_path / "r.zarr")
    assert run.voxel_size == pytest.approx((50.0, 20.0, 30.0))
    assert run.stage("ingest")["voxel_size_origin"] == "OME-TIFF metadata"


def test_voxel_size_override_wins(tmp_path):
    a = stack((3, 8, 9))
    f = tmp_path / "ij.tif"
    tifffile.imwrite(f, a, imagej=True, resolution=(1 / 0.03, 1 / 0.03),
                     metadata={"spacing": 0.05, "unit": "um", "axes": "ZYX"})
    bigvol.ingest(f, tmp_path / "r.zarr", voxel_size=(20, 10, 5))
    run = Run.open(tmp_path / "r.zarr")
    assert run.voxel_size == (20.0, 10.0, 5.0)
    ms = run.group.attrs["ome"]["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == pytest.approx(
        [0.02, 0.01, 0.005])


def test_unknown_voxel_size_warns_and_is_recorded_unknown(tmp_path):
    a = stack((3, 8, 9))
    src = write_folder(tmp_path / "s", a)
    Run.create(tmp_path / "r.zarr", voxel_size=(1, 2, 3))  # a value from an earlier input
    with pytest.warns(UserWarning, match=r"voxel size unknown.*--voxel-size"):
        bigvol.ingest(src, tmp_path / "r.zarr")
    run = Run.open(tmp_path / "r.zarr")
    assert run.voxel_size is None
    assert run.stage("ingest")["voxel_size"] is None
    # FEI pixel size alone is not a voxel size: still a warning, naming what is known
    tifffile.imwrite(tmp_path / "fei.tif", a[0], extratags=[(34682, "s", 0, FEI_TEXT, True)])
    with pytest.warns(UserWarning, match=r"no z size.*y = 4\.86 nm"):
        bigvol.ingest(tmp_path / "fei.tif", tmp_path / "r2.zarr")
    assert Run.open(tmp_path / "r2.zarr").voxel_size is None


@pytest.mark.parametrize("bad", [(1, 2), (1, -2, 3), ("a", 1, 1), 5])
def test_bad_voxel_size_or_chunks_argument(tmp_path, bad):
    src = write_folder(tmp_path / "s", stack((2, 4, 4)))
    with pytest.raises(ConfigError, match="voxel_size"):
        bigvol.ingest(src, tmp_path / "r.zarr", voxel_size=bad)
    with pytest.raises(ConfigError, match="chunks"):
        quiet_ingest(src, tmp_path / "r.zarr", chunks=bad)
    assert not (tmp_path / "r.zarr" / "raw").exists()


# -- bad input -----------------------------------------------------------------------------
def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match=r"nope.*no such file or folder"):
        bigvol.ingest(tmp_path / "nope", tmp_path / "r.zarr")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a slice")
    with pytest.raises(InputError, match=r"empty: the folder holds no TIFF"):
        bigvol.ingest(tmp_path / "empty", tmp_path / "r.zarr")
    assert not (tmp_path / "r.zarr").exists()


def test_slice_with_other_shape_or_dtype(tmp_path):
    a = stack((5, 8, 9))
    src = write_folder(tmp_path / "s", a)
    tifffile.imwrite(src / "slice_4.tif", a[3, :7])
    with pytest.raises(InputError, match=r"slice_4\.tif: slice shape \(y, x\) = \(7, 9\) differs "
                                         r"from \(8, 9\) of the first slice slice_1\.tif"):
        bigvol.ingest(src, tmp_path / "r.zarr")
    tifffile.imwrite(src / "slice_4.tif", a[3].astype(np.uint16))
    with pytest.raises(InputError, match=r"slice_4\.tif: pixel type uint16 differs from uint8"):
        bigvol.ingest(src, tmp_path / "r.zarr")
    tifffile.imwrite(tmp_path / "mixed.tif", a[0])
    tifffile.imwrite(tmp_path / "mixed.tif", a[1, :5], append=True)
    with pytest.raises(InputError, match=r"mixed\.tif, page 1: page shape \(5, 9\)"):
        bigvol.ingest(tmp_path / "mixed.tif", tmp_path / "r.zarr")


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint32])
def test_unsupported_dtype_names_file_and_dtype(tmp_path, dtype):
    f = tmp_path / "slices.tif"
    tifffile.imwrite(f, np.ones((2, 4, 4), dtype), photometric="minisblack")
    with pytest.raises(InputError, match=rf"slices\.tif: pixel type {np.dtype(dtype)}"):
        bigvol.ingest(f, tmp_path / "r.zarr")


def test_colour_slices_refused_with_file_named(tmp_path):
    a = stack((5, 8, 9))
    rgb = np.repeat(a[..., None], 3, axis=-1)
    rgb[3, 2, 4, 1] += 1  # slice 4 is really in colour
    src = write_folder(tmp_path / "s", rgb, photometric="rgb")
    with pytest.raises(InputError, match=r"slice_4\.tif: a colour image .*\(2, 4\)"):
        quiet_ingest(src, tmp_path / "r.zarr")
    tifffile.imwrite(tmp_path / "m.tif", rgb, photometric="rgb")
    with pytest.raises(InputError, match=r"m\.tif, page 3: a colour image"):
        quiet_ingest(tmp_path / "m.tif", tmp_path / "r.zarr")
    assert not Run.open(tmp_path / "r.zarr").is_complete("raw")
    assert not (tmp_path / "r.zarr" / "raw").exists()
    # a hyperstack with channels
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((3, 2, 8, 9), np.uint8), imagej=True,
                     metadata={"axes": "ZCYX"})
    with pytest.raises(InputError, match=r"c\.tif: holds a hyperstack of 3 slices x 2 channels"):
        bigvol.ingest(tmp_path / "c.tif", tmp_path / "r.zarr")


def test_corrupt_and_truncated_tiffs(tmp_path):
    a = stack((6, 30, 40))
    src = write_folder(tmp_path / "s", a)
    (src / "slice_3.tif").write_bytes(b"this is no TIFF at all")
    with pytest.raises(InputError, match=r"slice_3\.tif: not a readable TIFF"):
        bigvol.ingest(src, tmp_path / "r.zarr")
    data = (src / "slice_2.tif").read_bytes()
    (src / "slice_3.tif").write_bytes(data[: len(data) - 300])  # pixel data cut short
    with pytest.raises(InputError, match=r"slice_3\.tif: truncated"):
        bigvol.ingest(src, tmp_path / "r.zarr")
    (src / "slice_3.tif").write_bytes(data[:50])  # cut inside the header
    with pytest.raises(InputError, match=r"slice_3\.tif: not a readable TIFF"):
        bigvol.ingest(src, tmp_path / "r.zarr")
    (src / "slice_3.tif").write_bytes(b"")
    with pytest.raises(InputError, match=r"slice_3\.tif"):
        bigvol.ingest(src, tmp_path / "r.zarr")
    f = tmp_path / "m.tif"
    tifffile.imwrite(f, a, photometric="minisblack")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"m\.tif: (corrupt|truncated)"):
        bigvol.ingest(f, tmp_path / "r.zarr")
    # compressed data that fail to decode are found while streaming, still naming the file
    g = tmp_path / "z"
    g.mkdir()
    for i, sl in enumerate(a):
        tifffile.imwrite(g / f"z_{i}.tif", sl, compression="zlib")
    page = tifffile.TiffFile(g / "z_4.tif").pages.first
    off, n = page.dataoffsets[0], page.databytecounts[0]
    raw = bytearray((g / "z_4.tif").read_bytes())
    raw[off: off + n] = b"\x00" * n
    (g / "z_4.tif").write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"z_4\.tif: corrupt TIFF"):
        quiet_ingest(g, tmp_path / "r.zarr", chunks=(2, 30, 40))
    assert not Run.open(tmp_path / "r.zarr").is_complete("raw")


def test_gap_in_numbering(tmp_path):
    a = stack((5, 4, 4))
    src = write_folder(tmp_path / "s", a, pattern="slice_{:03d}.tif")
    (src / "slice_003.tif").unlink()
    with pytest.raises(InputError, match=r"gap: slice_002\.tif is followed by slice_004\.tif "
                                         r"\(number 3 missing\).*--allow-gaps"):
        bigvol.ingest(src, tmp_path / "r.zarr")
    arr = quiet_ingest(src, tmp_path / "r.zarr", allow_gaps=True)
    np.testing.assert_array_equal(arr[...], a[[0, 1, 3, 4]])
    assert Run.open(tmp_path / "r.zarr").stage("ingest")["parameters"]["allow_gaps"] is True


def test_odd_file_in_folder(tmp_path):
    a = stack((3, 4, 4))
    src = write_folder(tmp_path / "s", a)
    tifffile.imwrite(src / "overview.tif", a[0])
    with pytest.raises(InputError, match=r"overview\.tif does not follow the naming of the other"):
        bigvol.ingest(src, tmp_path / "r.zarr")
    (src / "slice_1.tif").rename(src / "slice_01.tif")  # padding may differ, still one pattern
    (src / "overview.tif").unlink()
    np.testing.assert_array_equal(quiet_ingest(src, tmp_path / "r.zarr")[...], a)


def test_long_digit_runs_in_names(tmp_path):
    # a 25-digit acquisition id (constant) and a 20-digit timestamp (unique, wide) do not
    # overflow, and are not taken for the slice number
    for i in (1, 3, 2):
        name = f"id1234567890123456789012345_s{i}_t{10**19 + 7919 * i**3}.tif"
        tifffile.imwrite(tmp_path / name, np.full((2, 2), i, np.uint8))
    got = list_slices(tmp_path)
    assert [int(p.name.split("_s")[1].split("_")[0]) for p in got] == [1, 2, 3]


def test_duplicate_slice_numbers(tmp_path):
    src = write_folder(tmp_path / "s", stack((3, 4, 4)))
    tifffile.imwrite(src / "slice_02.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match=r"same slice number 2"):
        bigvol.ingest(src, tmp_path / "r.zarr")


# -- failure safety, provenance, re-runs ----------------------------------------------------
def test_failed_ingest_keeps_previous_complete_array(tmp_path):
    a = stack((6, 10, 12))
    good = write_folder(tmp_path / "good", a)
    run_path = tmp_path / "r.zarr"
    quiet_ingest(good, run_path, voxel_size=(50, 30, 30), chunks=(2, 5, 5))
    run = Run.open(run_path)
    before_stage = run.stage("ingest")
    before = digest(run_path / "raw")

    # caught by the header checks (gap)
    bad = write_folder(tmp_path / "bad", stack((6, 10, 12), seed=1), pattern="s_{:02d}.tif")
    (bad / "s_04.tif").unlink()
    with pytest.raises(InputError, match="gap"):
        bigvol.ingest(bad, run_path, chunks=(2, 5, 5))
    # caught only when the pixels are decoded, after two slabs were written
    rgb = np.repeat(stack((6, 10, 12), seed=2)[..., None], 3, axis=-1)
    rgb[5, 0, 0, 2] ^= 1
    colour = write_folder(tmp_path / "colour", rgb, photometric="rgb")
    with pytest.raises(InputError, match=r"slice_6\.tif: a colour image"):
        quiet_ingest(colour, run_path, chunks=(2, 5, 5))

    run = Run.open(run_path)
    assert run.is_complete("raw")
    assert digest(run_path / "raw") == before
    np.testing.assert_array_equal(run.read("raw").compute(), a)
    assert run.stage("ingest") == before_stage
    assert run.voxel_size == (50.0, 30.0, 30.0)
    assert sorted(p.name for p in run_path.iterdir()) == ["raw", "zarr.json"]


@pytest.mark.slow
def test_killed_ingest_resumes_and_keeps_old_array(tmp_path):
    a = stack((10, 12, 14))
    src = write_folder(tmp_path / "s", a)
    run_path = tmp_path / "r.zarr"
    old = stack((3, 4, 4), seed=5)
    tifffile.imwrite(tmp_path / "old.tif", old, photometric="minisblack")
    quiet_ingest(tmp_path / "old.tif", run_path)
    marker = tmp_path / "killed"
    code = (
        f"import bigvol; bigvol.ingest({str(src)!r}, {str(run_path)!r}, chunks=(2, 5, 5), voxel_size=(5, 5, 5))"

    )
    env = dict(os.environ, BIGVOL_FAULT_KILL=f"raw_partial:6:{marker}")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert res.returncode == -signal.SIGKILL and marker.exists(), res.stderr
    run = Run.open(run_path)
    # the killed ingest left the previous array complete and untouched, the new one incomplete
    np.testing.assert_array_equal(run.read("raw").compute(), old)
    assert not run.is_complete("raw_partial")
    with pytest.raises(StoreError, match="incomplete"):
        run.read("raw_partial")
    assert run.group["raw_partial"].attrs["slab_progress"]["z_done"] == 6
    # the same ingest again resumes at slice 6, and equals an uninterrupted ingest
    arr = bigvol.ingest(src, run_path, chunks=(2, 5, 5), voxel_size=(5, 5, 5))
    np.testing.assert_array_equal(arr[...], a)
    run = Run.open(run_path)
    assert run.stage("ingest")["resumed_at_slice"] == 6
    assert "raw_partial" not in run and run.is_complete("raw")
    # a different input does not resume from someone else's partial array
    code2 = code.replace("voxel_size=(5, 5, 5)", "voxel_size=(6, 6, 6)")
    res = subprocess.run([sys.executable, "-c", code2], env=dict(env, BIGVOL_FAULT_KILL=(
        f"raw_partial:4:{tmp_path / 'k2'}")), capture_output=True, timeout=120)
    assert res.returncode == -signal.SIGKILL
    assert Run.open(run_path).group["raw_partial"].attrs["slab_progress"]["z_done"] == 4
    arr = bigvol.ingest(src, run_path, chunks=(2, 5, 5), voxel_size=(7, 7, 7))
    assert Run.open(run_path).stage("ingest")["resumed_at_slice"] == 0
    np.testing.assert_array_equal(arr[...], a)


def test_stage_record_fingerprint_and_skip(tmp_path):
    a = stack((4, 6, 7))
    src = write_folder(tmp_path / "s", a)
    run_path = tmp_path / "r.zarr"
    bigvol.ingest(src, run_path, voxel_size=(50, 30, 30), chunks=(2, 6, 7))
    rec = Run.open(run_path).stage("ingest")
    assert rec["outputs"] == ["raw"]
    assert rec["parameters"]["chunks"] == [2, 6, 7]
    assert rec["parameters"]["voxel_size"] == [50.0, 30.0, 30.0]
    assert rec["source"] == str(src)
    assert rec["shape"] == [4, 6, 7] and rec["dtype"] == "uint8"
    assert rec["version"] == bigvol.__version__
    # same input and parameters: nothing is rewritten
    bigvol.ingest(src, run_path, voxel_size=(50, 30, 30), chunks=(2, 6, 7))
    assert Run.open(run_path).stage("ingest") == rec
    # a changed slice (content and mtime) changes the input fingerprint and is re-ingested
    b = a.copy()
    b[2] = 7
    tifffile.imwrite(src / "slice_3.tif", b[2])
    os.utime(src / "slice_3.tif", ns=(1, 1))
    arr = bigvol.ingest(src, run_path, voxel_size=(50, 30, 30), chunks=(2, 6, 7))
    rec2 = Run.open(run_path).stage("ingest")
    assert rec2["input_fingerprint"] != rec["input_fingerprint"]
    np.testing.assert_array_equal(arr[...], b)


def test_store_argument_may_be_a_run_and_other_name(tmp_path):
    a = stack((3, 5, 5))
    tifffile.imwrite(tmp_path / "m.tif", a, photometric="minisblack")
    run = Run.create(tmp_path / "r.zarr", voxel_size=(9, 9, 9))
    arr = bigvol.ingest(tmp_path / "m.tif", run, name="reference", voxel_size=(9, 9, 9))
    np.testing.assert_array_equal(arr[...], a)
    assert Run.open(tmp_path / "r.zarr").stage("ingest:reference")["outputs"] == ["reference"]


def test_foreign_store_refused(tmp_path):
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["owner"] = "someone"
    tifffile.imwrite(tmp_path / "m.tif", stack((2, 4, 4)), photometric="minisblack")
    with pytest.raises(StoreError, match="not a bigvol run store"):
        quiet_ingest(tmp_path / "m.tif", tmp_path / "other.zarr")
    assert sorted(p.name for p in (tmp_path / "other.zarr").iterdir()) == ["zarr.json"]


# -- CLI -----------------------------------------------------------------------------------
def test_cli_ingest(tmp_path, capsys):
    a = stack((5, 6, 7))
    src = write_folder(tmp_path / "s", a, pattern="s{:02d}.tif")
    (src / "s03.tif").unlink()
    rc = main(["ingest", str(src), str(tmp_path / "r.zarr"), "--voxel-size", "50", "30", "30"])
    err = capsys.readouterr().err
    assert rc == 2 and "s02.tif is followed by s04.tif" in err and "Traceback" not in err
    rc = main(["ingest", str(src), str(tmp_path / "r.zarr"), "--voxel-size", "50", "30", "30",
               "--chunks", "2", "3", "3", "--allow-gaps"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1
    assert "(4, 6, 7) uint8" in lines[0] and "chunks (2, 3, 3)" in lines[0]
    assert "50 x 30 x 30 nm" in lines[0]
    run = Run.open(tmp_path / "r.zarr")
    np.testing.assert_array_equal(run.read("raw").compute(), a[[0, 1, 3, 4]])
    assert run.read("raw").chunksize == (2, 3, 3)
    rc = main(["ingest", str(src), str(tmp_path / "r.zarr"), "--voxel-size", "50", "30", "30",
               "--chunks", "2", "3", "3", "--allow-gaps"])
    assert rc == 0 and "up to date" in capsys.readouterr().out
    # 'auto' takes an entry from the files (none here: a one-line warning, voxel size unknown)
    rc = main(["ingest", str(src), str(tmp_path / "r.zarr"), "--voxel-size", "50", "auto",
               "auto", "--allow-gaps"])
    assert rc == 0 and "voxel size unknown" in capsys.readouterr().out
    assert Run.open(tmp_path / "r.zarr").voxel_size is None


def test_incomplete_bigvol_array_is_not_a_source(tmp_path):
    run = Run.create(tmp_path / "a.zarr")
    run.create_array("raw", shape=(2, 3, 3), dtype=np.uint8, chunks=(1, 3, 3))
    with pytest.raises(InputError, match=r"a\.zarr/raw: an incomplete bigvol array"):
        bigvol.ingest(tmp_path / "a.zarr" / "raw", tmp_path / "b.zarr")


def test_docstring_examples():
    import doctest
    import importlib
    import pkgutil

    import bigvol._ingest as pkg

    # the package and each of its modules (the examples live in _sources and _metadata)
    mods = [pkg] + [importlib.import_module(f"{pkg.__name__}.{m.name}")
                    for m in pkgutil.iter_modules(pkg.__path__)]
    failed = attempted = 0
    for mod in mods:
        res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        failed += res.failed
        attempted += res.attempted
    assert failed == 0 and attempted >= 5
