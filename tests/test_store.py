"""The run store: a real Zarr v3 group on disk, its arrays, metadata and stage records."""

import json

import dask.array as da
import numpy as np
import pytest
import zarr

import bigvol
from bigvol.conventions import DEFAULT_PHASES
from bigvol.errors import BigvolError, ConfigError
from bigvol.store import Run, StoreError, fingerprint, open_run


def test_create_then_open(tmp_path):
    path = tmp_path / "run.zarr"
    run = Run.create(path, voxel_size=(50, 30, 30))
    assert (path / "zarr.json").exists()
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["node_type"] == "group"
    again = open_run(path)
    assert again.voxel_size == (50.0, 30.0, 30.0)
    assert again.phases == list(DEFAULT_PHASES)
    assert again.stages == {}
    assert again.group.attrs["bigvol"]["version"] == bigvol.__version__
    # create() on an existing run opens it; exist_ok=False refuses
    assert Run.create(path).voxel_size == (50.0, 30.0, 30.0)
    with pytest.raises(StoreError, match="already exists"):
        Run.create(path, exist_ok=False)
    assert run.path == path


def test_create_in_an_existing_empty_folder(tmp_path):
    (tmp_path / "out.zarr").mkdir()
    run = Run.create(tmp_path / "out.zarr", voxel_size=(10, 5, 5))
    assert Run.open(tmp_path / "out.zarr").voxel_size == (10.0, 5.0, 5.0)
    assert run.group.attrs["bigvol"]


def test_open_missing_or_not_a_store(tmp_path):
    with pytest.raises(StoreError, match=r"no run store at .*missing\.zarr"):
        Run.open(tmp_path / "missing.zarr")
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(StoreError, match=r"file\.txt is not a Zarr group"):
        Run.open(tmp_path / "file.txt")
    zarr.create_array(str(tmp_path / "arr.zarr"), shape=(3,), dtype="u1")
    with pytest.raises(StoreError, match=r"arr\.zarr is not a Zarr group"):
        Run.open(tmp_path / "arr.zarr")
    assert issubclass(StoreError, BigvolError)  # the CLI prints it without a traceback


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_foreign_zarr_group_refused_and_untouched(tmp_path, zarr_format):
    path = tmp_path / "foreign.zarr"
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    g.attrs["owner"] = "another program"
    g.create_array("data", shape=(4, 4), dtype="u1")[...] = 7
    files_before = sorted(p.relative_to(path) for p in path.rglob("*"))
    for call in (lambda: Run.open(path), lambda: Run.open(path, mode="r+"),
                 lambda: Run.create(path, voxel_size=(1, 1, 1))):
        with pytest.raises(StoreError, match="not a bigvol run store"):
            call()
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == files_before
    g = zarr.open_group(str(path), mode="r")
    assert dict(g.attrs) == {"owner": "another program"}
    assert (g["data"][...] == 7).all()


@pytest.mark.parametrize("chunks", [(3, 4, 5), (1, 1, 1), (5, 6, 7), None])
def test_write_read_round_trip_any_chunking(tmp_path, chunks):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 65535, (5, 6, 7), dtype=np.uint16)
    run = Run.create(tmp_path / "r.zarr")
    x = da.from_array(a, chunks=(2, 5, 3))  # not the store's chunks: rechunked before writing
    arr = run.write("raw", x, chunks=chunks)
    expect = chunks or (2, 5, 3)
    assert arr.chunks == expect
    assert arr.metadata.dimension_names == ("z", "y", "x")
    back = run.read("raw")
    assert back.chunksize == expect and back.dtype == np.uint16
    np.testing.assert_array_equal(back.compute(), a)
    assert run.is_complete("raw")


def test_incomplete_array_refused_by_read(tmp_path):
    run = Run.create(tmp_path / "r.zarr")
    arr = run.create_array("segmentation", shape=(4, 5, 6), dtype=np.uint8, chunks=(2, 5, 6))
    arr[:2] = 1  # half written, then "interrupted"
    assert not run.is_complete("segmentation")
    with pytest.raises(StoreError, match=r"segmentation is incomplete"):
        run.read("segmentation")
    with pytest.raises(StoreError, match="incomplete"):
        Run.open(tmp_path / "r.zarr").read("segmentation")
    part = run.read("segmentation", allow_incomplete=True).compute()
    assert part[:2].min() == 1 and part[2:].max() == 0
    with pytest.raises(StoreError, match="has no array 'normalized'"):
        run.read("normalized")
    run.mark_complete("segmentation")
    assert run.read("segmentation").shape == (4, 5, 6)


def test_failed_write_leaves_array_incomplete(tmp_path):
    run = Run.create(tmp_path / "r.zarr")

    def boom(block, block_info=None):
        if block_info[0]["chunk-location"] == (1, 0, 0):
            raise RuntimeError("disk full")
        return block

    x = da.zeros((4, 4, 4), dtype=np.uint8, chunks=2).map_blocks(boom, dtype=np.uint8)
    with pytest.raises(RuntimeError, match="disk full"):
        run.write("normalized", x)
    assert not run.is_complete("normalized")
    with pytest.raises(StoreError, match="incomplete"):
        run.read("normalized")
    ome = dict(run.group.attrs).get("ome", {"multiscales": []})
    assert "normalized" not in [m["name"] for m in ome["multiscales"]]


def test_ome_zarr_multiscales_with_voxel_size_in_micrometres(tmp_path):
    run = Run.create(tmp_path / "r.zarr", voxel_size=(50, 30, 20))
    run.write("raw", da.zeros((4, 6, 8), dtype=np.uint8, chunks=(2, 3, 4)))
    run.write("segmentation", da.ones((4, 6, 8), dtype=np.uint8, chunks=(2, 3, 4)))
    meta = json.loads((tmp_path / "r.zarr" / "zarr.json").read_text())
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    by_name = {m["name"]: m for m in ome["multiscales"]}
    assert set(by_name) == {"raw", "segmentation"}
    for name, m in by_name.items():
        assert [a["name"] for a in m["axes"]] == ["z", "y", "x"]
        assert all(a["type"] == "space" and a["unit"] == "micrometer" for a in m["axes"])
        (ds,) = m["datasets"]
        assert ds["path"] == name
        (t,) = ds["coordinateTransformations"]
        assert t["type"] == "scale"
        assert t["scale"] == pytest.approx([0.05, 0.03, 0.02])
        # the dataset path resolves to a 3-d array of the group
        assert zarr.open_group(str(tmp_path / "r.zarr"), mode="r")[ds["path"]].ndim == 3
    # a new voxel size rewrites the scales
    run.voxel_size = (100, 10, 10)
    ome = Run.open(tmp_path / "r.zarr").group.attrs["ome"]
    assert ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0][
        "scale"] == pytest.approx([0.1, 0.01, 0.01])


def test_voxel_size_unknown_and_invalid(tmp_path):
    run = Run.create(tmp_path / "r.zarr")
    assert run.voxel_size is None
    run.voxel_size = np.array([50, 30, 30])
    assert run.voxel_size == (50.0, 30.0, 30.0)
    for bad in [(1, 2), (0, 1, 1), (1, float("nan"), 1), "big", (1, -1, 1)]:
        with pytest.raises(ConfigError, match="voxel_size"):
            run.voxel_size = bad
    assert run.voxel_size == (50.0, 30.0, 30.0)
    run.voxel_size = None
    assert Run.open(tmp_path / "r.zarr").voxel_size is None


def test_stage_records(tmp_path):
    run = Run.create(tmp_path / "r.zarr")
    fp = fingerprint({"sigma": 2.0}, "abc")
    assert fp == fingerprint({"sigma": 2.0}, "abc") != fingerprint({"sigma": 2.5}, "abc")
    rec = run.record_stage(
        "normalize", parameters={"method": "histogram", "reference": np.int64(12),
                                 "window": (1, 2)},
        fingerprint=fp, outputs=["normalized"], extra={"input_fingerprint": "xyz"},
    )
    reopened = Run.open(tmp_path / "r.zarr")
    got = reopened.stage("normalize")
    assert got == rec
    assert got["parameters"] == {"method": "histogram", "reference": 12, "window": [1, 2]}
    assert got["fingerprint"] == fp and got["outputs"] == ["normalized"]
    assert got["version"] == bigvol.__version__ and got["input_fingerprint"] == "xyz"
    assert got["completed_at"].endswith("+00:00")
    assert reopened.stage("segment") is None
    run.forget_stage("normalize")
    assert Run.open(tmp_path / "r.zarr").stages == {}


def test_info(tmp_path):
    run = Run.create(tmp_path / "r.zarr", voxel_size=(50, 30, 30))
    run.write("raw", da.arange(60, dtype=np.uint8, chunks=60).reshape(3, 4, 5).rechunk(2))
    run.create_array("labels/pore", shape=(3, 4, 5), dtype=np.uint32, chunks=(3, 4, 5))
    run.record_stage("ingest", parameters={}, fingerprint="f")
    info = run.info()
    assert info["voxel_size_nm"] == (50.0, 30.0, 30.0)
    assert set(info["arrays"]) == {"raw", "labels/pore"}
    raw = info["arrays"]["raw"]
    assert raw["shape"] == [3, 4, 5] and raw["dtype"] == "uint8" and raw["chunks"] == [2, 2, 2]
    assert raw["complete"] and not info["arrays"]["labels/pore"]["complete"]
    assert 0 < raw["bytes_on_disk"] < info["bytes_on_disk"]
    assert list(info["stages"]) == ["ingest"]
