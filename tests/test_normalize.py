"""bigvol.normalize: exact histogram matching vs scikit-image, percentile mapping, drift."""

import threading

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage
from skimage.exposure import match_histograms as sk_match

from bigvol import normalize as N
from bigvol.errors import InputError

CHUNKINGS = [
    (1, 24, 19),  # one slice per chunk, whole slices
    (3, 7, 5),  # several slices per chunk, slices split into many uneven xy blocks
    (2, 1, 19),  # size-1 chunks along y
    (9, 24, 19),  # one chunk
]


def _drift_stack(dtype, n=9, shape=(24, 19), seed=0):
    """Three phases with per-slice gain/offset drift and noise (values within dtype)."""
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 4095
    field = ndimage.gaussian_filter(rng.normal(size=(n,) + shape), (0, 1.5, 1.5))
    # The same phase fractions (0.3, 0.3, 0.4) in every slice.
    phases = np.stack([np.digitize(f, np.quantile(f, [0.3, 0.6])) for f in field])
    levels = np.array([0.15, 0.45, 0.8]) * top
    gain = np.linspace(0.7, 1.1, n)[:, None, None]
    offset = np.linspace(0.05, -0.05, n)[:, None, None] * top
    # Detector gain drift scales signal and noise alike; the offset drifts too.
    img = (levels[phases] + rng.normal(0, 0.04 * top, phases.shape)) * gain + offset
    return np.clip(np.rint(img), 0, top).astype(dtype), phases


def _sk_reference(stack, ref):
    ref = ref if ref.ndim == 3 else ref[None]
    return np.stack(
        [np.rint(sk_match(s[None], ref)[0]).astype(stack.dtype) for s in stack]
    )


@pytest.mark.parametrize("passes", [1, 2])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_histogram_matching_equals_skimage_per_slice(dtype, chunks, passes):
    s, _ = _drift_stack(dtype)
    out = N.match_histograms(da.from_array(s, chunks=chunks), passes=passes)
    assert out.chunks == da.from_array(s, chunks=chunks).chunks
    out = out.compute()
    assert out.dtype == s.dtype
    np.testing.assert_array_equal(out, _sk_reference(s, s[s.shape[0] // 2]))


@pytest.mark.parametrize("reference", [None, 0, -2, (2, 6)])
def test_one_pass_equals_two_passes_for_the_percentile_method(reference):
    s, _ = _drift_stack(np.uint16, seed=4)
    x = da.from_array(s, chunks=(3, 10, 7))
    one = N.match_histograms(x, method="percentile", reference=reference, passes=1).compute()
    two = N.match_histograms(x, method="percentile", reference=reference, passes=2).compute()
    np.testing.assert_array_equal(one, two)
    assert (one != s).any()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_reference_index_and_pooled_range_equal_skimage(dtype):
    s, _ = _drift_stack(dtype, seed=1)
    x = da.from_array(s, chunks=(2, 10, 8))
    np.testing.assert_array_equal(
        N.match_histograms(x, reference=-2).compute(), _sk_reference(s, s[-2])
    )
    np.testing.assert_array_equal(
        N.match_histograms(x, reference=(2, 6)).compute(), _sk_reference(s, s[2:6])
    )


def test_full_uint16_range_is_exact():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 65536, size=(4, 16, 16), dtype=np.uint16)
    s[1] //= 3
    out = N.match_histograms(da.from_array(s, chunks=(3, 5, 16)), reference=0).compute()
    np.testing.assert_array_equal(out, _sk_reference(s, s[0]))


@pytest.mark.parametrize("passes", [1, 2])
def test_zarr_input_is_read_once_or_twice_and_never_modified(tmp_path, passes):
    s, _ = _drift_stack(np.uint8)
    z = zarr.create_array(tmp_path / "raw.zarr", shape=s.shape, chunks=(2, 12, 10), dtype=s.dtype)
    z[:] = s
    calls = []
    lock = threading.Lock()

    def count(block):
        if block.size:  # not dask's meta probe
            with lock:
                calls.append(block.shape)
        return block

    x = da.from_zarr(z).map_blocks(count, dtype=s.dtype)
    out = N.match_histograms(x, method="histogram", passes=passes).compute()
    np.testing.assert_array_equal(out, _sk_reference(s, s[s.shape[0] // 2]))
    # passes=2: one histogram pass and one mapping pass over the input chunks; passes=1:
    # every chunk once (the reference's chunks are shared by both uses); no re-runs.
    assert len(calls) == passes * x.npartitions
    np.testing.assert_array_equal(z[:], s)


def test_one_pass_holds_about_one_z_row_of_input_chunks():
    """Peak memory depends on the chunk size, not the stack size: with the one-pass graph
    (the mapping tasks reuse the chunks the histogram tasks read) the scheduler must not
    keep every chunk until all histograms are done."""
    from dask.callbacks import Callback

    rng = np.random.default_rng(5)
    s = rng.integers(0, 256, size=(48, 32, 32), dtype=np.uint8)
    x = da.from_array(s, chunks=(2, 16, 16)).map_blocks(lambda b: b + 0, dtype=s.dtype)
    src = set(dask.core.flatten(x.__dask_keys__()))
    live, peak = set(), [0]

    class Track(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            live.intersection_update(state["cache"])
            if key in src:
                live.add(key)
            peak[0] = max(peak[0], len(live))

    with Track(), dask.config.set(scheduler="sync"):
        out = N.match_histograms(x, passes=1).compute()
    np.testing.assert_array_equal(out, _sk_reference(s, s[24]))
    # 4 chunks per z-row, 24 z-rows (96 chunks); a graph that waits for every histogram
    # before mapping (e.g. x + x.sum()) peaks at 96 here. (passes=2 maps a clone: the
    # histogram tasks fuse with the reads and release every chunk at once.)
    per_row = 4
    assert peak[0] <= 3 * per_row, peak[0]


def test_histograms_and_statistics_are_exact():
    s, _ = _drift_stack(np.uint16, seed=2)
    x = da.from_array(s, chunks=(4, 5, 7))
    h = N.slice_histograms(x).compute()
    assert h.shape == (s.shape[0], 65536)
    for z in range(s.shape[0]):
        np.testing.assert_array_equal(h[z], np.bincount(s[z].ravel(), minlength=65536))
    st = dask.compute(N.slice_statistics(x, percentiles=(1, 37.5, 99)))[0]
    np.testing.assert_allclose(st["mean"], s.mean(axis=(1, 2)))
    np.testing.assert_allclose(st["std"], s.std(axis=(1, 2)))
    for q in (1, 37.5, 99):
        np.testing.assert_allclose(st[f"p{q:g}"], np.percentile(s, q, axis=(1, 2)))
    # Statistics after normalization, derived from histograms and LUTs, equal those of the output.
    luts = N.lookup_tables(x, method="percentile", smooth=3)
    out = N.apply_lookup_tables(x, luts).compute()
    after = dask.compute(N.slice_statistics(x, luts=luts, histograms=h))[0]
    np.testing.assert_allclose(after["mean"], out.mean(axis=(1, 2)))
    np.testing.assert_allclose(after["p99"], np.percentile(out, 99, axis=(1, 2)))


def test_percentile_method_maps_percentiles_onto_reference():
    s, _ = _drift_stack(np.uint8, n=7)
    x = da.from_array(s, chunks=(3, 11, 19))
    out = N.match_histograms(x, method="percentile", percentiles=(2, 98), reference=0).compute()
    p = np.percentile(s, [2, 98], axis=(1, 2)).T
    for z in range(s.shape[0]):
        gain = (p[0, 1] - p[0, 0]) / (p[z, 1] - p[z, 0])
        expect = np.clip(np.rint(p[0, 0] + (s[z].astype(float) - p[z, 0]) * gain), 0, 255)
        np.testing.assert_array_equal(out[z], expect.astype(np.uint8))
    # Chunking does not matter.
    one = N.match_histograms(
        da.from_array(s, chunks=-1), method="percentile", percentiles=(2, 98), reference=0
    ).compute()
    np.testing.assert_array_equal(out, one)


@pytest.mark.parametrize("method", ["histogram", "percentile"])
def test_smoothing_is_a_running_median_of_the_mapping(method):
    s, _ = _drift_stack(np.uint8, n=11, seed=4)
    s[5] = np.clip(s[5].astype(int) + 60, 0, 255).astype(np.uint8)  # one odd slice
    ref = N.lookup_tables(da.from_array(s, chunks=-1), method=method).compute()
    if method == "histogram":
        expect = ndimage.median_filter(ref, size=(5, 1), mode="nearest")
    else:
        p = np.percentile(s, [1, 99], axis=(1, 2)).T
        pm = ndimage.median_filter(p, size=(5, 1), mode="nearest")
        r = np.percentile(s[5], [1, 99])
        v = np.arange(256.0)
        expect = np.stack(
            [np.clip(np.rint(r[0] + (v - lo) * (r[1] - r[0]) / (hi - lo)), 0, 255) for lo, hi in pm]
        ).astype(np.uint8)
    for chunks in [(1, 24, 19), (4, 7, 19), (11, 24, 19)]:
        got = N.lookup_tables(da.from_array(s, chunks=chunks), method=method, smooth=5).compute()
        np.testing.assert_array_equal(got, expect)


@pytest.mark.parametrize("method", ["histogram", "percentile"])
def test_drift_of_phase_means_drops_5x(method):
    s, phases = _drift_stack(np.uint8, n=15, shape=(48, 48), seed=5)

    def spread(img):
        out = []
        for k in range(3):
            means = np.array([img[z][phases[z] == k].mean() for z in range(img.shape[0])])
            out.append(means.std() / means.mean())
        return np.array(out)

    out = N.match_histograms(da.from_array(s, chunks=(4, 20, 48)), method=method).compute()
    before, after = spread(s.astype(float)), spread(out.astype(float))
    assert np.all(after * 5 <= before), (before, after)


def test_percentile_method_keeps_fraction_gradient_histogram_flattens_it():
    rng = np.random.default_rng(6)
    n, shape = 12, (64, 64)
    field = ndimage.gaussian_filter(rng.normal(size=(n,) + shape), (0, 2, 2))
    # Bright-phase fraction grows from 0.2 to 0.6 along z; the rest split in two phases.
    frac = np.linspace(0.2, 0.6, n)
    phases = np.empty(field.shape, np.int64)
    for z in range(n):
        t_am = np.quantile(field[z], 1 - frac[z])
        t_pore = np.quantile(field[z], (1 - frac[z]) * 0.4)
        phases[z] = np.where(field[z] > t_am, 2, np.where(field[z] > t_pore, 1, 0))
    gain = np.linspace(0.8, 1.1, n)[:, None, None]
    img = np.array([40.0, 110.0, 200.0])[phases] * gain + rng.normal(0, 6, phases.shape)
    s = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    x = da.from_array(s, chunks=(5, 32, 64))

    def am_fraction(out):
        # Threshold at the middle of the reference slice's two upper gray levels.
        t = 0.5 * (110 + 200) * gain[n // 2, 0, 0]
        return (out > t).mean(axis=(1, 2))

    true = (phases == 2).mean(axis=(1, 2))
    pct = am_fraction(N.match_histograms(x, method="percentile").compute())
    hist = am_fraction(N.match_histograms(x, method="histogram").compute())
    assert np.abs(pct - true).max() < 0.03
    assert pct[-1] - pct[0] > 0.35
    assert hist[-1] - hist[0] < 0.05  # histogram matching forces the reference's fractions


def test_bad_input_errors():
    s, _ = _drift_stack(np.uint8, n=5)
    x = da.from_array(s, chunks=2)
    with pytest.raises(InputError, match="reference slice 5 is outside the stack .*5 slices"):
        N.match_histograms(x, reference=5)
    with pytest.raises(InputError, match="reference slice -6"):
        N.match_histograms(x, reference=-6)
    with pytest.raises(InputError, match=r"reference range \(3, 3\) is empty"):
        N.match_histograms(x, reference=(3, 3))
    with pytest.raises(InputError, match=r"reference range \(2, 9\) is outside"):
        N.match_histograms(x, reference=(2, 9))
    with pytest.raises(InputError, match="dtype float32.*unsigned integer"):
        N.match_histograms(x.astype(np.float32))
    with pytest.raises(InputError, match="dtype int16"):
        N.match_histograms(x.astype(np.int16))
    with pytest.raises(InputError, match="3-D"):
        N.match_histograms(x[0])
    with pytest.raises(InputError, match="empty"):
        N.match_histograms(x[:0])
    with pytest.raises(InputError, match="method must be one of"):
        N.match_histograms(x, method="clahe")
    with pytest.raises(InputError, match="percentiles"):
        N.match_histograms(x, method="percentile", percentiles=(99, 1))
    with pytest.raises(InputError, match="smooth must be an odd"):
        N.match_histograms(x, smooth=4)
    with pytest.raises(InputError, match="passes must be"):
        N.match_histograms(x, passes=3)
    with pytest.raises(InputError, match="passes=1 takes no smooth"):
        N.match_histograms(x, smooth=3, passes=1)
    with pytest.raises(InputError, match="reference slice 5 is outside"):
        N.match_histograms(x, reference=5, passes=1)


# -- on the phantom ---------------------------------------------------------------------------
def _phase_means(img, truth):
    return np.array(
        [[img[z][truth[z] == k].mean() for k in range(3)] for z in range(img.shape[0])]
    )


def _spread(m):
    return m.std(axis=0) / m.mean(axis=0)


@pytest.fixture(scope="module")
def drift_phantom():
    synth = pytest.importorskip("bigvol.synth")
    shape = (24, 384, 384)
    # Default artifacts and drift (brightness_drift=0.2); particles of 2 um so that a 384 px
    # field holds enough of them for the slices' phase fractions to be stable.
    kw = {"seed": 4, "chunks": (8, 384, 384), "am_d50_um": 2.0}
    img, truth = dask.compute(*synth.phantom(shape, **kw))
    steady = synth.phantom(shape, brightness_drift=0.0, **kw)[0].compute()
    return img, truth, steady


@pytest.mark.parametrize("method", ["histogram", "percentile"])
def test_phantom_brightness_drift_spread_drops_5x(method, drift_phantom):
    img, truth, steady = drift_phantom
    out = N.match_histograms(da.from_array(img, chunks=(8, 128, 128)), method=method).compute()
    before, after = _phase_means(img.astype(float), truth), _phase_means(out.astype(float), truth)
    # The figure: std/mean over slices of each true phase's mean gray value. For the
    # pores it has a floor without any drift (shine-through shows the varying material
    # behind them), so it is asserted for electrolyte and active material ...
    assert np.all(_spread(after)[1:] * 5 <= _spread(before)[1:]), (_spread(before), _spread(after))
    # ... and for all three phases relative to the drift-free render of the same phantom.
    ref = _phase_means(steady.astype(float), truth)
    rel_before, rel_after = _spread(before / ref), _spread(after / ref)
    assert np.all(rel_after * 5 <= rel_before), (rel_before, rel_after)


def test_phantom_percentile_keeps_active_material_gradient():
    synth = pytest.importorskip("bigvol.synth")
    from skimage.filters import threshold_multiotsu

    shape = (24, 384, 384)
    img, truth = dask.compute(
        *synth.phantom(shape, seed=4, chunks=(8, 384, 384), am_d50_um=2.0, am_fraction=0.45,
                       am_gradient=0.3, se_fraction=0.25)
    )
    true = (truth == 2).mean(axis=(1, 2))
    t = np.arange(shape[0])
    true_trend = np.polyfit(t, true, 1)[0] * (shape[0] - 1)
    assert true_trend > 0.2
    x = da.from_array(img, chunks=(8, 192, 192))
    trends = {}
    for method in ("percentile", "histogram"):
        out = N.match_histograms(x, method=method).compute()
        seg = np.digitize(out, threshold_multiotsu(out[shape[0] // 2]))
        frac = (seg == 2).mean(axis=(1, 2))
        trends[method] = np.polyfit(t, frac, 1)[0] * (shape[0] - 1)
        if method == "percentile":
            assert np.abs(frac - true).max() < 0.06
    assert trends["percentile"] > 0.8 * true_trend
    assert abs(trends["histogram"]) < 0.05  # histogram matching flattens it


def test_cli_normalize_writes_output_and_statistics(tmp_path, capsys):
    from bigvol.cli import main
    from bigvol.store import Run

    s, _ = _drift_stack(np.uint8, n=6)
    run = Run.create(tmp_path / "r.zarr", voxel_size=(50, 30, 30))
    run.write("raw", da.from_array(s, chunks=(2, 12, 19)))
    assert main(["normalize", str(tmp_path / "r.zarr"), "--reference", "1", "4"]) == 0
    run = Run.open(tmp_path / "r.zarr")
    np.testing.assert_array_equal(run.read("normalized").compute(), _sk_reference(s, s[1:4]))
    np.testing.assert_array_equal(run.read("raw").compute(), s)  # input untouched
    st = run.stage("normalize")["results"]
    np.testing.assert_allclose(st["statistics_before"]["mean"], s.mean(axis=(1, 2)))
    np.testing.assert_allclose(st["statistics_after"]["p50"],
                               np.percentile(run.read("normalized").compute(), 50, axis=(1, 2)))
    assert run.stage("normalize")["parameters"]["steps"][0]["reference"] == [1, 4]
    # bad reference: one line, exit status 2, no traceback
    assert main(["normalize", str(tmp_path / "r.zarr"), "--reference", "7"]) == 2
    assert "reference slice 7 is outside the stack (it has 6 slices" in capsys.readouterr().err


def test_numpy_fallback_without_numba_gives_the_same_result(monkeypatch):
    s, _ = _drift_stack(np.uint16, n=5)
    x = da.from_array(s, chunks=(2, 9, 19))
    compiled = N.match_histograms(x, method="percentile").compute()
    monkeypatch.setitem(N._JIT, "_hist_kernel", None)
    monkeypatch.setitem(N._JIT, "_apply_kernel", None)
    np.testing.assert_array_equal(N.match_histograms(x, method="percentile").compute(), compiled)


@pytest.mark.slow
def test_on_a_local_cluster_of_processes(tmp_path):
    distributed = pytest.importorskip("distributed")
    s, _ = _drift_stack(np.uint16, n=8)
    z = zarr.create_array(tmp_path / "raw.zarr", shape=s.shape, chunks=(3, 12, 10), dtype=s.dtype)
    z[:] = s
    x = da.from_zarr(z)
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster, distributed.Client(cluster):
        hist_out = N.match_histograms(x, reference=(2, 5)).compute()
        pct_out = N.match_histograms(x, method="percentile", smooth=3).compute()
        stats = N.statistics_to_lists(N.slice_statistics(x))
    np.testing.assert_array_equal(hist_out, _sk_reference(s, s[2:5]))
    np.testing.assert_array_equal(pct_out, N.match_histograms(x, method="percentile", smooth=3).compute())
    np.testing.assert_allclose(stats["mean"], s.mean(axis=(1, 2)))


@pytest.mark.parametrize("n, window", [(1, 3), (3, 5), (2, 7), (70, 9), (130, 65)])
def test_smoothing_window_longer_than_stack_or_chunks(n, window):
    rng = np.random.default_rng(n)
    s = (rng.random((n, 10, 10)) * 200 * np.linspace(0.5, 1, n)[:, None, None]).astype(np.uint8)
    ref = ndimage.median_filter(
        N.lookup_tables(da.from_array(s, chunks=-1)).compute(), size=(window, 1), mode="nearest"
    )
    for chunks in [(1, 10, 10), (4, 5, 10)]:
        got = N.lookup_tables(da.from_array(s, chunks=chunks), smooth=window).compute()
        np.testing.assert_array_equal(got, ref)


def test_docstring_examples_run():
    import doctest

    assert doctest.testmod(N).failed == 0
