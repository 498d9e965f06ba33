"""Tiled inference: agreement with whole-slice application, chunk invariance, the model
loaded once per worker, errors, GPU (skipped without CUDA), and ``bigvol segment``."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import dask.array as da  # noqa: E402
from _segdata import TINY, synth  # noqa: E402

import bigvol as bv  # noqa: E402
from bigvol.errors import ConfigError, InputError  # noqa: E402
from bigvol.segment import infer  # noqa: E402
from bigvol.segment.infer import whole_slices  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return synth((6, 96, 112))


@pytest.fixture(scope="module")
def model(data):
    img, truth = data
    return bv.segment.train(img[[1, 4]], truth[[1, 4]], epochs=4, steps_per_epoch=15, **TINY)


@pytest.fixture(scope="module")
def model3(data):
    img, truth = data
    return bv.segment.train(img, truth[[1, 4]], slices=[1, 4], k=3, epochs=2, steps_per_epoch=5, **TINY)


def test_tiled_matches_whole_slices(data, model):
    img, truth = data
    whole = whole_slices(img, model)
    assert (whole == truth).mean() > 0.9  # a model that learnt something
    tiled = bv.segment.predict(da.from_array(img, chunks=(2, 50, 60)), model, tile=64, overlap=16).compute()
    assert tiled.dtype == np.uint8 and tiled.shape == img.shape
    assert (tiled == whole).mean() >= 0.999


@pytest.mark.parametrize("blocks", ["auto", "chunks"])
@pytest.mark.parametrize("chunks", [(6, 96, 112), (2, 37, 45), (1, 96, 112), (1, 20, 30), (4, 96, 13)])
def test_result_does_not_depend_on_chunking(data, model, chunks, blocks):
    img, _ = data
    ref = bv.segment.predict(da.from_array(img, chunks=img.shape), model, tile=64, overlap=16).compute()
    out = bv.segment.predict(da.from_array(img, chunks=chunks), model, tile=64, overlap=16, blocks=blocks)
    assert out.chunks == da.from_array(img, chunks=chunks).chunks
    assert np.array_equal(out.compute(), ref)


def test_probabilities(data, model):
    img, _ = data
    codes = bv.segment.predict(da.from_array(img, chunks=(3, 48, 112)), model, tile=64, overlap=16).compute()
    p = bv.segment.predict(da.from_array(img, chunks=(3, 48, 112)), model, tile=64, overlap=16, probabilities=True)
    assert p.dtype == np.float16 and p.shape == (3,) + img.shape
    p = p.compute().astype(np.float32)
    assert np.allclose(p.sum(0), 1.0, atol=3e-3)
    assert (p.argmax(0) == codes).mean() > 0.999  # float16 rounding may tie near-equal classes
    q = bv.segment.predict(da.from_array(img, chunks=(1, 30, 50)), model, tile=64, overlap=16, probabilities=True)
    assert np.array_equal(q.compute().astype(np.float32), p)
    # a single tile covering each slice equals the whole-slice probabilities
    one = bv.segment.predict(da.from_array(img), model, tile=128, probabilities=True).compute()
    assert np.allclose(one.astype(np.float32), whole_slices(img, model, probabilities=True), atol=1e-3)


def test_test_time_augmentation_is_equivariant_and_tiles_agree(data, model):
    img, truth = data  # 96 x 112: multiples of the pooling factor, so no padding
    views = {
        "quarter turn": (lambda a: np.rot90(a, 1, axes=(-2, -1)), lambda a: np.rot90(a, -1, axes=(-2, -1))),
        "mirror x": (lambda a: a[..., ::-1], lambda a: a[..., ::-1]),
        "mirror y": (lambda a: a[..., ::-1, :], lambda a: a[..., ::-1, :]),
    }

    def gap(tta, name):
        fwd, back = views[name]
        ref = whole_slices(img, model, probabilities=True, tta=tta)
        out = whole_slices(np.ascontiguousarray(fwd(img)), model, probabilities=True, tta=tta)
        return np.abs(back(out) - ref).max()

    # Averaging over a group of views makes the segmentation commute with those views,
    # which the network alone does not.
    assert gap(1, "mirror x") > 1e-3 and gap(1, "quarter turn") > 1e-3
    for name in views:
        assert gap(8, name) < 1e-4, name
    assert gap(4, "mirror x") < 1e-4 and gap(4, "mirror y") < 1e-4
    whole = whole_slices(img, model, tta=8)
    assert (whole == truth).mean() > 0.9
    tiled = bv.segment.predict(da.from_array(img, chunks=(2, 50, 60)), model, tile=64, overlap=16, tta=8)
    assert (tiled.compute() == whole).mean() >= 0.999
    other = bv.segment.predict(da.from_array(img, chunks=(3, 96, 13)), model, tile=64, overlap=16, tta=8,
                               blocks="chunks")
    assert np.array_equal(other.compute(), tiled.compute())


def test_k3_uses_the_neighbouring_slices(data, model3):
    img, _ = data
    whole = whole_slices(img, model3)  # neighbours of the end slices: the nearest slice
    for chunks in [(1, 96, 112), (4, 50, 112)]:
        for blocks in ("auto", "chunks"):
            # one tile per slice: the tiled result is the whole-slice result exactly
            out = bv.segment.predict(da.from_array(img, chunks=chunks), model3, tile=128, blocks=blocks).compute()
            assert np.array_equal(out, whole)
    # a different neighbour changes the answer: the network does read slices z-1 and z+1
    other = img.copy()
    other[2] = other[2][::-1]
    changed = bv.segment.predict(da.from_array(other, chunks=(1, 96, 112)), model3, tile=128).compute()
    assert not np.array_equal(changed[3], whole[3])


def _count_blocks(monkeypatch):
    calls = []
    real = infer._segment_block

    def counting(block, *a, **kw):
        calls.append(block.shape)
        return real(block, *a, **kw)

    monkeypatch.setattr(infer, "_segment_block", counting)
    return calls


def test_one_task_per_block(data, model, monkeypatch):
    img, _ = data
    calls = _count_blocks(monkeypatch)
    x = da.from_array(img, chunks=(2, 48, 56))
    bv.segment.predict(x, model, tile=32, overlap=8, blocks="chunks").compute()
    assert len(calls) == x.npartitions == 12


def test_whole_slice_tasks_compute_each_tile_once(data, model, monkeypatch):
    # xy chunks smaller than the slice: one task per group of whole slices, no xy halo
    img, _ = data
    calls = _count_blocks(monkeypatch)
    x = da.from_array(img, chunks=(2, 48, 56))
    out = bv.segment.predict(x, model, tile=32, overlap=8)
    assert out.chunks == x.chunks
    out.compute()
    assert sorted(calls) == [(2, 96, 112)] * 3
    monkeypatch.setattr(infer, "_SLICES_PER_TASK", 1)
    calls.clear()
    bv.segment.predict(x, model, tile=32, overlap=8).compute()
    assert sorted(calls) == [(1, 96, 112)] * 6
    with pytest.raises(ConfigError, match="blocks"):
        bv.segment.predict(x, model, blocks="slice")


def test_saved_model_by_path(data, model, tmp_path):
    img, _ = data
    path = model.save(tmp_path / "m.safetensors")
    x = da.from_array(img, chunks=(3, 96, 112))
    a = bv.segment.predict(x, model, tile=64).compute()
    b = bv.segment.predict(x, str(path), tile=64).compute()
    assert np.array_equal(a, b)


@pytest.mark.slow
def test_distributed_loads_the_model_once_per_worker(data, model, tmp_path):
    distributed = pytest.importorskip("distributed")
    from bigvol.store import Run

    img, _ = data
    run = Run.create(tmp_path / "run.zarr")
    run.write("raw", img, chunks=(1, 48, 112))
    stack = run.read("raw")  # 12 blocks, read from Zarr by the workers
    path = model.save(tmp_path / "m.safetensors")
    ref = bv.segment.predict(stack, model, tile=64, overlap=16).compute(scheduler="threads")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        out = bv.segment.predict(stack, bv.segment.Model.load(path), tile=64, overlap=16).compute()
        assert np.array_equal(out, ref)
        loads = client.run(lambda: __import__("bigvol.segment.infer", fromlist=["_LOADS"])._LOADS["count"])
        assert all(n <= 1 for n in loads.values()), loads
        assert sum(loads.values()) >= 1
        # an unsaved model travels in one graph key and gives the same answer
        fresh = bv.segment.Model(model.config, model.weights)
        assert fresh.path is None
        out2 = bv.segment.predict(stack, fresh, tile=64, overlap=16).compute()
        assert np.array_equal(out2, ref)


def test_bad_input_is_refused(data, model, tmp_path):
    img, _ = data
    x = da.from_array(img)
    with pytest.raises(InputError, match="must be 3D"):
        bv.segment.predict(x[0], model)
    with pytest.raises(ConfigError, match="overlap"):
        bv.segment.predict(x, model, tile=64, overlap=64)
    with pytest.raises(ConfigError, match="tile"):
        bv.segment.predict(x, model, tile=4)
    with pytest.raises(ConfigError, match="device"):
        bv.segment.predict(x, model, device="tpu")
    for bad in (3, True, "8"):
        with pytest.raises(ConfigError, match="tta must be one of"):
            bv.segment.predict(x, model, tta=bad)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="not a bigvol model file"):
        bv.segment.predict(x, tmp_path / "junk.safetensors")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            bv.segment.predict(x, model, device="cuda").compute()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_cpu(data, model):
    img, _ = data
    x = da.from_array(img, chunks=(3, 96, 112))
    cpu = bv.segment.predict(x, model, tile=64, device="cpu").compute()
    gpu = bv.segment.predict(x, model, tile=64, device="cuda").compute()  # bf16/fp16 autocast
    assert (gpu == cpu).mean() >= 0.99
    fp32 = bv.segment.predict(x, model, tile=64, device="cuda", amp=False).compute()
    assert (fp32 == cpu).mean() >= 0.999


def test_cli_segment_writes_segmentation_and_probabilities(data, model, tmp_path):
    from bigvol.cli import main
    from bigvol.store import Run

    img, _ = data
    run = Run.create(tmp_path / "run.zarr", voxel_size=(50, 30, 30))
    run.write("raw", img, chunks=(3, 48, 56))
    path = model.save(tmp_path / "m.model")
    rc = main(["segment", str(tmp_path / "run.zarr"), "--model", str(path), "--tile", "64"])
    assert rc == 0
    run = Run.open(tmp_path / "run.zarr")
    seg = run.read("segmentation").compute()
    assert np.array_equal(seg, bv.segment.predict(da.from_array(img), model, tile=64).compute())
    assert run.stage("segment")["parameters"]["model_digest"] == model.digest
    rc = main(["segment", str(tmp_path / "run.zarr"), "--model", str(path), "--tile", "64", "--probabilities"])
    assert rc == 0
    run = Run.open(tmp_path / "run.zarr")
    p = run.read("probabilities")
    assert p.shape == (3,) + img.shape and p.dtype == np.float16
    assert (run.read("segmentation").compute() == seg).mean() > 0.999
    rc = main(["segment", str(tmp_path / "run.zarr"), "--model", str(path), "--tile", "64", "--tta", "4"])
    assert rc == 0
    seg4 = Run.open(tmp_path / "run.zarr").read("segmentation").compute()
    assert np.array_equal(seg4, bv.segment.predict(da.from_array(img), model, tile=64, tta=4).compute())
    assert Run.open(tmp_path / "run.zarr").stage("segment")["parameters"]["tta"] == 4
    rc = main(["segment", str(tmp_path / "run.zarr"), "--model", str(tmp_path / "nope.model")])
    assert rc == 2


@pytest.mark.parametrize("tile_max,overlap", [(512, 64), (256, 64), (96, 32), (512, 0)])
def test_even_tiles_cover_every_axis_with_the_overlap(tile_max, overlap):
    for n in list(range(1, 1200, 37)) + [1024, 2000, 3000, 4097]:
        t = infer.even_tile(n, tile_max, overlap)
        assert t <= max(tile_max, n) and (t == n or t % 16 == 0 or t == tile_max)
        starts = infer._starts(n, min(t, n), max(1, min(t, n) - overlap))
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s : s + t] = True
        assert covered.all() and starts[-1] + min(t, n) == n
        gaps = np.diff(starts)
        assert (gaps <= t - overlap).all()  # neighbours overlap by at least ``overlap``
        # no more tiles than the fewest of at most tile_max that cover with the overlap
        if n > tile_max:
            assert len(starts) == int(np.ceil((n - overlap) / (tile_max - overlap)))


def test_class_codes_are_the_first_maximum_like_argmax():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    p = torch.randint(0, 3, (4, 5, 6, 7), generator=g).float()  # many ties
    p = p.permute(0, 1, 3, 2)  # a strided view, as in predict
    assert torch.equal(infer._argmax0(p), p.argmax(0).to(torch.uint8))


def test_default_even_tiles_do_not_depend_on_chunking(model):
    # slices larger than the 512 px tile: the default grid is 2 x 2 even tiles of 336 x 384
    img, _ = synth((2, 600, 700), seed=3)
    assert (infer.even_tile(600, 512, 64), infer.even_tile(700, 512, 64)) == (336, 384)
    ref = bv.segment.predict(da.from_array(img, chunks=img.shape), model).compute()
    whole = whole_slices(img, model)
    assert (ref == whole).mean() >= 0.999
    for chunks, blocks in (((1, 600, 700), "auto"), ((1, 250, 300), "chunks")):
        out = bv.segment.predict(da.from_array(img, chunks=chunks), model, blocks=blocks)
        assert np.array_equal(out.compute(), ref), (chunks, blocks)


def test_a_stack_thinner_than_the_model_context_is_segmented(data, model3):
    # one slice and a k = 3 model: the neighbours are the slice itself ("nearest"), as in
    # the reference; dask's overlap alone refuses a halo deeper than the array
    img, _ = data
    one = img[2:3]
    out = bv.segment.predict(da.from_array(one, chunks=one.shape), model3, tile=64, overlap=16)
    assert out.shape == one.shape
    assert (out.compute() == whole_slices(one, model3)).mean() >= 0.999
