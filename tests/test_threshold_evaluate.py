"""The threshold baseline and the evaluation measures against direct numpy / scikit-image."""

import dask.array as da
import numpy as np
import pytest
from skimage.filters import threshold_multiotsu

import bigvol as bv
from bigvol.errors import InputError

CHUNKINGS = [(1, 7, 9), (3, 16, 5), (5, 20, 30), (2, 20, 30)]


def _three_phase(shape, dtype=np.uint8, seed=0, levels=(40, 120, 200), sd=18):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, size=shape).astype(np.uint8)
    img = np.asarray(levels, dtype=float)[truth] + rng.normal(0, sd, size=shape)
    hi = np.iinfo(dtype).max
    return np.clip(img, 0, hi).round().astype(dtype), truth


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_threshold_equals_skimage_multiotsu_uint8(chunks):
    img, _ = _three_phase((5, 20, 30))
    expected = np.digitize(img, threshold_multiotsu(img, classes=3), right=True).astype(np.uint8)
    got = bv.segment.threshold(da.from_array(img, chunks=chunks), classes=3)
    assert got.dtype == np.uint8 and got.chunks == da.from_array(img, chunks=chunks).chunks
    np.testing.assert_array_equal(got.compute(), expected)


def test_threshold_uint16_narrow_range_equals_skimage():
    img, _ = _three_phase((4, 16, 16), dtype=np.uint16, levels=(3000, 3300, 3600), sd=40)
    assert int(img.max()) - int(img.min()) < 1024
    expected = np.digitize(img, threshold_multiotsu(img, classes=3), right=True)
    got = bv.segment.threshold(da.from_array(img, chunks=(3, 9, 7))).compute()
    np.testing.assert_array_equal(got, expected)


def test_threshold_uint16_wide_range_within_a_bin_of_skimage():
    from bigvol.segment._threshold import MAX_OTSU_BINS, thresholds

    img, truth = _three_phase((3, 32, 32), dtype=np.uint16, levels=(8000, 30000, 52000), sd=2500)
    thr = thresholds(da.from_array(img, chunks=(1, 16, 16)))
    width = (int(img.max()) - int(img.min())) / MAX_OTSU_BINS
    ref = threshold_multiotsu(img.astype(np.float64), classes=3, nbins=MAX_OTSU_BINS)
    np.testing.assert_allclose(thr, ref, atol=2 * width)
    seg = bv.segment.threshold(da.from_array(img, chunks=(1, 16, 16))).compute()
    assert (seg == truth).mean() > 0.99


def test_threshold_bad_input():
    with pytest.raises(InputError, match="8- or 16-bit"):
        bv.segment.threshold(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(InputError, match="distinct gray levels"):
        bv.segment.threshold(np.full((2, 4, 4), 7, np.uint8)).compute()
    with pytest.raises(InputError, match="classes"):
        bv.segment.threshold(np.zeros((2, 4, 4), np.uint8), classes=1)


def _reference_confusion(t, p, n=3):
    cm = np.zeros((n, n), np.int64)
    for i in range(n):
        for j in range(n):
            cm[i, j] = np.sum((t == i) & (p == j))
    return cm


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_confusion_and_per_slice_accuracy_match_numpy(chunks):
    rng = np.random.default_rng(1)
    t = rng.integers(0, 3, (5, 20, 30)).astype(np.uint8)
    p = np.where(rng.random(t.shape) < 0.8, t, rng.integers(0, 3, t.shape)).astype(np.uint8)
    t[0, :3] = 255  # unlabelled pixels are ignored
    dt, dp = da.from_array(t, chunks=chunks), da.from_array(p, chunks=(2, 11, 13))
    ref = _reference_confusion(t, p)
    np.testing.assert_array_equal(bv.evaluate.confusion_matrix(dt, dp), ref)
    np.testing.assert_allclose(
        bv.evaluate.confusion_matrix(dt, dp, normalize="true"), ref / ref.sum(1, keepdims=True)
    )
    valid = t != 255
    per_slice = [(t[z][valid[z]] == p[z][valid[z]]).mean() for z in range(t.shape[0])]
    np.testing.assert_allclose(bv.evaluate.accuracy_per_slice(dt, dp), per_slice)
    res = bv.evaluate.evaluate(dt, dp)
    assert res["accuracy"] == pytest.approx((t[valid] == p[valid]).mean())
    from sklearn.metrics import jaccard_score, recall_score

    np.testing.assert_allclose(res["recall"], recall_score(t[valid], p[valid], average=None))
    np.testing.assert_allclose(res["iou"], jaccard_score(t[valid], p[valid], average=None))


def test_hand_built_confusion():
    t = np.array([[[0, 0, 1, 2, 255]]], np.uint8)
    p = np.array([[[0, 1, 1, 2, 0]]], np.uint8)
    np.testing.assert_array_equal(
        bv.evaluate.confusion_matrix(t, p), [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    )
    np.testing.assert_allclose(bv.evaluate.accuracy_per_slice(t, p), [0.75])
    # a slice with no labelled pixel has no accuracy
    t2 = np.concatenate([t, np.full_like(t, 255)])
    acc = bv.evaluate.accuracy_per_slice(t2, np.concatenate([p, p]))
    assert acc[0] == 0.75 and np.isnan(acc[1])


def test_evaluate_bad_input():
    t = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(InputError, match="shape"):
        bv.evaluate.confusion_matrix(t, np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(InputError, match="phase code 3"):
        bv.evaluate.confusion_matrix(t, np.full_like(t, 3))
    with pytest.raises(InputError, match="truth holds phase code 7"):
        bv.evaluate.confusion_matrix(np.full_like(t, 7), t)
    with pytest.raises(InputError, match="integer"):
        bv.evaluate.confusion_matrix(t.astype(float), t)
    with pytest.raises(InputError, match="normalize"):
        bv.evaluate.confusion_matrix(t, t, normalize="pred")
