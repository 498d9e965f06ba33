"""bigvol.destripe: curtaining removal on the phantom, chunk invariance, exact hand-made cases."""

import doctest

import dask
import dask.array as da
import numpy as np
import pytest
from skimage.filters import threshold_multiotsu

from bigvol import destripe as D
from bigvol.errors import InputError


def _stripe_energy(img, clean):
    """Mean over slices of the variance of the column means of (img - clean)."""
    d = img.astype(np.float64) - clean.astype(np.float64)
    return float(np.mean([d[z].mean(axis=0).var() for z in range(d.shape[0])]))


@pytest.fixture(scope="module")
def curtained_phantom():
    synth = pytest.importorskip("bigvol.synth")
    shape = (4, 384, 384)
    kw = {"seed": 5, "chunks": (2, 192, 384)}
    img, truth = dask.compute(*synth.phantom(shape, curtaining=0.03, **kw))
    clean = synth.phantom(shape, curtaining=0.0, **kw)[0].compute()
    return img, clean, truth


def _threshold_accuracy(img, truth, clean):
    t = threshold_multiotsu(clean[0], classes=3)  # thresholds of the stripe-free render
    return float(np.mean(np.digitize(img, t) == truth))


def test_column_method_removes_phantom_curtaining_5x_and_keeps_accuracy(curtained_phantom):
    img, clean, truth = curtained_phantom
    out = D.destripe(da.from_array(img, chunks=(1, 100, 384))).compute()
    assert out.dtype == img.dtype
    before, after = _stripe_energy(img, clean), _stripe_energy(out, clean)
    assert before > 20  # 0.03 of the gray range, squared
    assert after * 5 <= before, (before, after)
    assert _threshold_accuracy(out, truth, clean) >= _threshold_accuracy(img, truth, clean)
    # a stripe-free slice is left almost untouched
    same = D.destripe(da.from_array(clean, chunks=(2, 384, 384))).compute()
    assert _stripe_energy(same, clean) < 0.1 * before


def test_strength_and_max_width(curtained_phantom):
    img, clean, _ = curtained_phantom
    x = da.from_array(img, chunks=(2, 384, 384))
    full = _stripe_energy(D.destripe(x).compute(), clean)
    half = _stripe_energy(D.destripe(x, strength=0.5).compute(), clean)
    narrow = _stripe_energy(D.destripe(x, max_width=8).compute(), clean)
    before = _stripe_energy(img, clean)
    assert full < half < before
    assert full < narrow < before
    assert D.destripe(x, strength=0) is x


def test_wavelet_fft_reduces_narrow_stripes(curtained_phantom):
    img, clean, truth = curtained_phantom
    x = da.from_array(img, chunks=(2, 384, 384))
    out = D.destripe(x, method="wavelet-fft", sigma=2.0).compute()
    assert _stripe_energy(out, clean) < _stripe_energy(img, clean)
    assert _threshold_accuracy(out, truth, clean) >= _threshold_accuracy(img, truth, clean) - 0.005


def test_hand_made_stripes_are_removed_exactly():
    rng = np.random.default_rng(0)
    phases = (rng.random((3, 40, 30)) < 0.5).astype(int)
    img = np.array([30.0, 180.0])[phases]
    stripes = rng.integers(-6, 7, size=(3, 1, 30)).astype(float)
    img = img + rng.integers(-2, 3, size=img.shape)  # a little noise inside the phases
    x = (img + stripes).astype(np.uint8)
    # offsets are defined up to a constant: destriping keeps each slice's mean brightness
    stripes -= stripes.mean(axis=2, keepdims=True)
    out = D.destripe(da.from_array(x, chunks=(2, 7, 11)), classes=2).compute()
    expect = x - stripes
    assert np.abs(out - expect).max() <= 1.5  # medians of noisy columns, rounding
    np.testing.assert_allclose(D.column_offsets(x[1], classes=2), stripes[1, 0], atol=1.5)  # medians of noisy columns


@pytest.mark.parametrize("method", ["column", "wavelet-fft"])
def test_result_does_not_depend_on_chunking(method):
    rng = np.random.default_rng(1)
    x = (rng.random((5, 33, 40)) * 200 + np.arange(40) % 3 * 5).astype(np.uint16)
    ref = np.stack([D._destripe_block(x[z:z + 1], method=method, strength=1.0, classes=3,
                                      iterations=2, max_width=None, wavelet="db10", level=None,
                                      sigma=2.0)[0] for z in range(5)])
    for chunks in [(1, 33, 40), (2, 5, 7), (5, 33, 40), (3, 1, 40)]:
        got = D.destripe(da.from_array(x, chunks=chunks), method=method)
        assert got.chunks == da.from_array(x, chunks=chunks).chunks
        np.testing.assert_array_equal(got.compute(), ref)
    # input never modified, float input stays float
    f = D.destripe(da.from_array(x.astype(np.float32), chunks=2), method=method).compute()
    assert f.dtype == np.float32


def test_docstring_examples_run():
    assert doctest.testmod(D).failed == 0


def test_bad_input_errors():
    x = np.zeros((2, 8, 8), np.uint8)
    with pytest.raises(InputError, match="method must be one of"):
        D.destripe(x, method="notch")
    with pytest.raises(InputError, match="strength must be in"):
        D.destripe(x, strength=2)
    with pytest.raises(InputError, match="3-D"):
        D.destripe(x[0])
    with pytest.raises(InputError, match="empty"):
        D.destripe(x[:, :0])
    with pytest.raises(InputError, match="dtype"):
        D.destripe(x.astype(bool))
    with pytest.raises(InputError, match="wavelet 'nope'"):
        D.destripe(x, method="wavelet-fft", wavelet="nope")
    with pytest.raises(InputError, match="classes"):
        D.destripe(x, classes=1)


def test_cli_destripe(tmp_path):
    from bigvol.cli import main
    from bigvol.store import Run

    rng = np.random.default_rng(2)
    x = (np.array([30, 180])[(rng.random((3, 40, 30)) < 0.5).astype(int)]
         + rng.integers(0, 6, size=(3, 1, 30))).astype(np.uint8)
    run = Run.create(tmp_path / "r.zarr")
    run.write("raw", da.from_array(x, chunks=(2, 20, 16)))
    assert main(["destripe", str(tmp_path / "r.zarr"), "--classes", "2", "--output", "clean"]) == 0
    run = Run.open(tmp_path / "r.zarr")
    np.testing.assert_array_equal(run.read("clean").compute(), D.destripe(x, classes=2).compute())
    assert run.stage("preprocess:clean")["parameters"]["steps"][0]["classes"] == 2
