"""The phantom: chunk invariance, determinism, phase fractions, gray levels, every effect's
switch, the slice drift against its true shifts, uint16, the CLI, and clear errors."""

import dask
import numpy as np
import pytest
from dask.callbacks import Callback

from bigvol import synth
from bigvol.cli import main
from bigvol.errors import ConfigError
from bigvol.store import Run

SMALL = {"am_d50_um": 1.5}  # particles that fit a small volume
OFF = {"shine_through": False, "edge_brightening": False, "noise": False, "blur": False,
           "curtaining": 0.0, "brightness_drift": 0.0}


def compute(shape, **kw):
    image, truth = synth.phantom(shape, **kw)
    return dask.compute(image, truth)


@pytest.mark.parametrize("extra", [{}, {"dtype": "uint16", "xy_drift_px": 1.5}])
def test_chunking_does_not_change_values(extra):
    shape = (21, 70, 60)
    kw = dict(seed=5, **SMALL, **extra)
    ref_img, ref_tr = compute(shape, chunks=shape, **kw)
    for chunks in [((3, 1, 8, 9), (33, 37), (13, 47)), (1, 70, 60), (7, 16, 16)]:
        img, tr = compute(shape, chunks=chunks, **kw)
        np.testing.assert_array_equal(img, ref_img)
        np.testing.assert_array_equal(tr, ref_tr)
    assert set(np.unique(ref_tr)) == {0, 1, 2}


def test_one_task_per_chunk_renders_image_and_truth():
    image, truth = synth.phantom((8, 64, 64), seed=1, chunks=(4, 32, 32), **SMALL)
    assert image.shape == truth.shape == (8, 64, 64)
    calls = []

    class Count(Callback):
        def _pretask(self, key, dsk, state):
            if isinstance(key, tuple) and str(key[0]).startswith("phantom-"):
                calls.append(key)

    with Count():
        dask.compute(image, truth)
    assert len(calls) == 8 and len(set(calls)) == 8  # 2 x 2 x 2 chunks, each rendered once


def test_seed_changes_output_and_same_seed_repeats():
    a = compute((8, 64, 64), seed=1, **SMALL)
    b = compute((8, 64, 64), seed=1, **SMALL)
    c = compute((8, 64, 64), seed=2, **SMALL)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert (a[1] != c[1]).mean() > 0.2
    assert (a[0] != c[0]).mean() > 0.5


@pytest.mark.parametrize("am, se", [(0.55, 0.33), (0.35, 0.45)])
def test_phase_fractions_near_the_parameters(am, se):
    # 6.4 x 12.8 x 12.8 um with 2 um particles: ~100 particles in view
    _, truth = synth.phantom((32, 64, 64), seed=0, voxel_size=(200, 200, 200), am_d50_um=2.0,
                             am_fraction=am, se_fraction=se, **OFF)
    f = np.bincount(truth.compute().ravel(), minlength=3) / truth.size
    assert abs(f[2] - am) < 0.04
    assert abs(f[1] - se) < 0.04
    assert abs(f[0] - (1 - am - se)) < 0.04


def test_am_gradient_changes_fraction_along_z():
    _, truth = synth.phantom((40, 64, 64), seed=0, voxel_size=(200, 200, 200), am_d50_um=1.5,
                             am_fraction=0.4, am_gradient=0.3, **OFF)
    t = truth.compute()
    first, last = (t[:10] == 2).mean(), (t[-10:] == 2).mean()
    assert 0.15 < last - first < 0.4


def test_gray_order_and_contrast_ratio():
    img, tr = compute((16, 128, 128), seed=0, **SMALL, **OFF)
    means = [img[tr == c].mean() for c in range(3)]
    assert means[0] < means[1] < means[2]
    assert 0.6 <= means[1] / means[2] <= 0.8
    # without any effect the three gray bands do not overlap: a threshold is exact
    assert img[tr == 0].max() < img[tr == 1].min() and img[tr == 1].max() < img[tr == 2].min()


def _depth_behind(tr):
    """slices to the first solid voxel behind each pore voxel (0 = none in the array)."""
    depth = np.zeros(tr.shape, int)
    for k in range(tr.shape[0] - 2, -1, -1):
        d = np.where(depth[k + 1] > 0, depth[k + 1] + 1, 0)
        d[tr[k + 1] != 0] = 1
        d[tr[k] != 0] = 0
        depth[k] = d
    return depth


def test_shine_through_follows_its_formula():
    kw = dict(seed=2, **SMALL, **{**OFF, "shine_through": True}, shine_blur_px=0.0,
              dtype="uint16")
    img, tr = compute((24, 96, 96), **kw)
    clean, tr0 = compute((24, 96, 96), **{**kw, "shine_through": False})
    np.testing.assert_array_equal(tr, tr0)
    solid = tr != 0
    np.testing.assert_array_equal(img[solid], clean[solid])  # only pores change
    depth = _depth_behind(tr)
    a, lam, dz = 1.0, 300.0, 50.0
    depth[depth > 18] = 0  # D = ceil(3 lambda / dz): deeper pores stay dark
    dark = (tr == 0) & (depth == 0)
    dark[-18:] = False  # (the phantom goes on behind the last slice)
    assert (img[dark] == round(0.1 * 65535)).all()
    zz, yy, xx = np.nonzero(depth > 0)
    d = depth[zz, yy, xx]
    behind = clean[zz + d, yy, xx] / 65535.0
    expect = 0.10 + a * np.exp(-d * dz / lam) * (behind - 0.10)
    assert len(d) > 1000
    np.testing.assert_allclose(img[zz, yy, xx] / 65535.0, expect, atol=2e-5)
    # deeper pores shine less
    gain = (img[zz, yy, xx] / 65535.0 - 0.1) / (behind - 0.1)
    assert np.median(gain[d == 1]) > np.median(gain[d == 4]) > 0


def test_edge_brightening_only_brightens_solid_near_pores():
    kw = dict(seed=3, **SMALL, **OFF)
    on, tr = compute((8, 96, 96), **{**kw, "edge_brightening": True})
    off, _ = compute((8, 96, 96), **kw)
    diff = on.astype(int) - off
    assert diff.min() >= 0
    assert (diff[tr == 0] == 0).all()
    from scipy import ndimage

    sq = np.ones((3, 3), bool)  # the Gaussian (radius 4 px) reaches a square around pores
    near = np.stack([ndimage.binary_dilation(tr[k] == 0, sq, iterations=2) for k in range(8)])
    far = np.stack([~ndimage.binary_dilation(tr[k] == 0, sq, iterations=5) for k in range(8)])
    assert diff[near & (tr != 0)].mean() > 10
    far[:, :5] = far[:, -5:] = far[:, :, :5] = far[:, :, -5:] = False  # pores beyond the edge
    assert diff[far].max() <= 1


def test_curtaining_makes_vertical_stripes_and_noise_does_not():
    kw = dict(seed=4, **SMALL, **OFF)
    clean, _ = compute((8, 96, 96), **kw)
    noisy, _ = compute((8, 96, 96), **{**kw, "noise": True})
    striped, _ = compute((8, 96, 96), **{**kw, "curtaining": 0.05})
    d_noise = (noisy.astype(float) - clean).mean(axis=1)  # column means, (z, x)
    d_curt = (striped.astype(float) - clean).mean(axis=1)
    assert d_noise.std() < 1.0  # flat: noise has no column structure
    assert d_curt.std() > 0.03 * 255 * 0.6  # stripes of the requested amplitude
    # constant along y (up to rounding), and correlated from slice to slice
    sd = striped.astype(float) - clean
    assert np.abs(sd - sd.mean(axis=1, keepdims=True)).max() <= 1.0
    assert np.corrcoef(d_curt[0], d_curt[1])[0, 1] > 0.8


def test_noise_is_poisson_gaussian():
    kw = dict(seed=4, **SMALL, **OFF, dtype="uint16")
    clean, tr = compute((8, 96, 96), **kw)
    noisy, _ = compute((8, 96, 96), **{**kw, "noise": True})
    diff = (noisy.astype(float) - clean) / 65535
    assert abs(diff.mean()) < 2e-3
    for phase, level in ((0, 0.10), (2, 0.70)):
        expected = np.sqrt(1.6e-3 * level + 2e-4)
        assert diff[tr == phase].std() == pytest.approx(expected, rel=0.15)


def test_blur_and_brightness_drift_switch():
    kw = dict(seed=4, **SMALL, **OFF)
    clean, tr = compute((32, 64, 64), **kw)
    blurred, _ = compute((32, 64, 64), **{**kw, "blur": True})
    drift, _ = compute((32, 64, 64), **{**kw, "brightness_drift": 0.2})
    assert len(np.unique(clean[tr == 0])) == 1  # sharp: one gray level for pores
    assert len(np.unique(blurred[tr == 0])) > 5
    am = np.array([drift[k][tr[k] == 2].mean() / clean[k][tr[k] == 2].mean()
                   for k in range(32) if (tr[k] == 2).any()])
    assert 0.1 < am.max() - am.min() < 0.6  # +-20 % gain drift, smooth along z
    assert np.abs(np.diff(am)).max() < 0.1
    assert np.abs(np.diff(am, 2)).max() < 0.02  # smooth: no slice-to-slice jumps


def test_xy_drift_matches_true_shifts():
    from skimage.registration import phase_cross_correlation

    kw = dict(seed=6, **SMALL, **OFF)
    shifts = synth.true_shifts((10, 128, 128), seed=6, xy_drift_px=2.0)
    assert shifts.shape == (10, 2) and (shifts[0] == 0).all() and np.abs(shifts[-1]).max() > 0.5
    _, ref = compute((10, 128, 128), **kw)
    img, tr = compute((10, 128, 128), **kw, xy_drift_px=2.0)
    for k in range(10):
        est, _, _ = phase_cross_correlation(tr[k].astype(float), ref[k].astype(float),
                                            upsample_factor=10)
        np.testing.assert_allclose(est, shifts[k], atol=0.35)
    np.testing.assert_array_equal(synth.true_shifts((10, 1, 1), seed=6, xy_drift_px=0), 0)


def test_drifted_image_is_the_drift_free_image_moved_shine_through_included(monkeypatch):
    # Whole-pixel drift: every effect but the detector-fixed ones (noise, curtaining) moves
    # with the slice, so the drifted image is the drift-free one translated by s(z) --
    # including what shines through from the slices behind, seen in the imaged slice's frame.
    walk = np.array([[0, 0], [1, -2], [3, -1], [2, 2], [-1, 3], [0, 0], [2, -3], [4, 1],
                     [1, 1], [-2, 0], [0, 2], [3, 3]], float)
    # the renderer reads the walk from its own module (bigvol/synth/_render.py)
    monkeypatch.setattr(synth._render, "_shifts",
                        lambda nz, seed, s: walk[:nz] if s > 0 else np.zeros((nz, 2)))
    kw = dict(seed=3, noise=False, curtaining=0.0, **SMALL)
    shape, m = (12, 64, 72), 6
    img0, tr0 = compute(shape, chunks=(5, 32, 40), **kw)
    img, tr = compute(shape, chunks=(4, 64, 72), xy_drift_px=1.0, **kw)
    assert synth.phantom(shape, **kw)[0] is not None and (img0 != img).any()
    for k, (dy, dx) in enumerate(walk.astype(int)):
        a = img[k, m + dy:shape[1] - m + dy, m + dx:shape[2] - m + dx]
        b = img0[k, m:shape[1] - m, m:shape[2] - m]
        np.testing.assert_array_equal(tr[k, m + dy:shape[1] - m + dy, m + dx:shape[2] - m + dx],
                                      tr0[k, m:shape[1] - m, m:shape[2] - m])
        np.testing.assert_array_equal(a, b, err_msg=f"slice {k}")


def test_uint16_matches_uint8():
    i8, t8 = compute((8, 64, 64), seed=1, **SMALL)
    i16, t16 = compute((8, 64, 64), seed=1, **SMALL, dtype="uint16")
    assert i16.dtype == np.uint16 and t16.dtype == np.uint8 and i16.max() > 255
    np.testing.assert_array_equal(t8, t16)
    assert np.abs(i16 / 257.0 - i8).max() <= 1.0


@pytest.mark.parametrize("kw, word", [
    ({"am_fraction": -0.1}, "am_fraction"),
    ({"se_fraction": 1.5}, "se_fraction"),
    ({"am_fraction": 0.6, "se_fraction": 0.5}, "se_fraction"),
    ({"dtype": "float32"}, "dtype"),
    ({"dtype": "int7"}, "dtype"),
    ({"voxel_size": (50, 0, 30)}, "voxel_size"),
    ({"curtaining": -1}, "curtaining"),
    ({"noise": "yes"}, "noise"),
    ({"chunks": (4, 4)}, "chunks"),
])
def test_bad_parameters_are_named(kw, word):
    with pytest.raises(ConfigError, match=word):
        synth.phantom((8, 32, 32), **kw)


def test_bad_shape_is_named():
    with pytest.raises(ConfigError, match="shape"):
        synth.phantom((8, 0, 32))
    with pytest.raises(ConfigError, match="shape"):
        synth.phantom((8, 32))


def test_cli_writes_the_phantom_into_a_run_store(tmp_path, capsys):
    out = tmp_path / "ph.zarr"
    argv = ["synth", str(out), "--shape", "9", "48", "40", "--chunks", "4", "32", "32",
            "--seed", "3", "--am-d50-um", "1.5", "--xy-drift-px", "1", "--no-shine-through",
            "--curtaining", "0.05"]
    assert main(argv) == 0
    run = Run.open(out)
    img, tr = compute((9, 48, 40), seed=3, am_d50_um=1.5, xy_drift_px=1.0,
                      shine_through=False, curtaining=0.05)
    np.testing.assert_array_equal(run.read("raw").compute(), img)
    np.testing.assert_array_equal(run.read("truth").compute(), tr)
    assert run.zarr_array("raw").chunks == (4, 32, 32)
    rec = run.stage("synth")
    assert rec["parameters"]["shine_through"] is False
    assert rec["parameters"]["curtaining"] == 0.05
    np.testing.assert_allclose(rec["results"]["true_shifts_px"],
                               synth.true_shifts((9, 48, 40), seed=3, xy_drift_px=1.0))
    assert run.voxel_size == (50.0, 30.0, 30.0)
    capsys.readouterr()
    assert main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "bad.zarr"), "--shape", "4", "8", "8",
                 "--se-fraction", "-1"]) == 2
    assert "se_fraction" in capsys.readouterr().err


@pytest.mark.slow
def test_same_values_on_a_local_cluster(tmp_path):
    import distributed

    shape, kw = (12, 64, 48), dict(seed=7, chunks=(5, 32, 24), **SMALL)
    ref = compute(shape, **kw)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=":0", local_directory=tmp_path) as cluster:
        with distributed.Client(cluster) as client:
            image, truth = synth.phantom(shape, **kw)
            img, tr = client.compute([image, truth], sync=True)
    np.testing.assert_array_equal(img, ref[0])
    np.testing.assert_array_equal(tr, ref[1])
