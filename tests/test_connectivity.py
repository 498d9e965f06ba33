"""Connectivity metrics (component tables, isolated fraction, percolation) and volume
fractions equal in-memory references (scipy, scikit-image, TauFactor, PoreSpy) for any
chunking."""

import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

import bigvol as bv
from bigvol.errors import ConfigError, InputError

STRUCTURE = {6: 1, 18: 2, 26: 3}
SHAPE = (11, 16, 14)
CHUNKINGS = [(4, 5, 6), (1, 16, 14), (11, 3, 1), SHAPE]


def three_phase(shape, seed, sigma=1.2):
    f = ndi.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return np.digitize(f, np.quantile(f, [0.3, 0.62])).astype(np.uint8)


def ref_isolated(phases, phase, axis, faces, connectivity):
    """In memory: scipy labels, then the labels found on the faces."""
    lab, _ = ndi.label(phases == phase, ndi.generate_binary_structure(3, STRUCTURE[connectivity]))
    total = (lab > 0).sum()
    if total == 0:
        return 0.0
    low = set(np.unique(np.take(lab, 0, axis=axis))) - {0}
    high = set(np.unique(np.take(lab, -1, axis=axis))) - {0}
    ok = {"both": low & high, "either": low | high, "low": low, "high": high}[faces]
    return 1.0 - np.isin(lab, list(ok)).sum() / total


@pytest.fixture(scope="module")
def volume():
    return three_phase(SHAPE, 11)


# -- volume fractions -----------------------------------------------------------------------
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_volume_fractions_equal_bincount(volume, chunks):
    vf = bv.metrics.volume_fractions(da.from_array(volume, chunks=chunks))
    ref = np.bincount(volume.ravel(), minlength=3) / volume.size
    assert vf == {0: ref[0], 1: ref[1], 2: ref[2]}
    assert abs(sum(vf.values()) - 1) < 1e-12


def test_volume_fractions_absent_phase_and_other_codes():
    p = np.zeros((2, 3, 4), np.uint16)
    p[0] = 2
    p[1, 0, 0] = 255
    p[1, 0, 1] = 300
    vf = bv.metrics.volume_fractions(da.from_array(p, chunks=(1, 2, 3)))
    assert vf == {0: 10 / 24, 1: 0.0, 2: 12 / 24, 255: 1 / 24, 300: 1 / 24}


# -- component table -------------------------------------------------------------------------
@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_component_table_equals_regionprops_of_the_labels(volume, chunks, connectivity):
    from skimage.measure import regionprops_table

    phases = da.from_array(volume, chunks=chunks)
    t = bv.metrics.component_table(phases, 1, connectivity=connectivity, voxel_size=(50, 30, 20))
    # the ids are those bv.label gives to phases == 1 with the same chunking
    labels, n = bv.label(phases == 1, connectivity=connectivity)
    labels = labels.compute()
    ref, n_ref = ndi.label(volume == 1, ndi.generate_binary_structure(3, STRUCTURE[connectivity]))
    assert n == n_ref == len(t["id"])
    rp = regionprops_table(labels, properties=("label", "area", "bbox"))
    np.testing.assert_array_equal(t["id"], rp["label"])
    np.testing.assert_array_equal(t["voxels"], rp["area"])
    np.testing.assert_allclose(t["volume_um3"], rp["area"] * 50 * 30 * 20 / 1e9)
    for i, ax in enumerate("zyx"):
        np.testing.assert_array_equal(t[f"bbox_min_{ax}"], rp[f"bbox-{i}"])
        np.testing.assert_array_equal(t[f"bbox_max_{ax}"], rp[f"bbox-{i + 3}"])
        low = np.isin(t["id"], np.take(labels, 0, axis=i))
        high = np.isin(t["id"], np.take(labels, -1, axis=i))
        np.testing.assert_array_equal(t[f"touches_{ax}0"], low)
        np.testing.assert_array_equal(t[f"touches_{ax}1"], high)


def test_component_table_hand_built():
    p = np.zeros((2, 5, 6), np.uint8)
    p[:, :, 0] = 2  # a wall spanning z and y at x = 0: 10 voxels
    p[1, 2, 3:5] = 2  # a floating bar: 2 voxels
    t = bv.metrics.component_table(da.from_array(p, chunks=(1, 2, 4)), 2, voxel_size=(100, 10, 10))
    assert t["voxels"].tolist() == [10, 2]
    assert t["volume_um3"].tolist() == pytest.approx([10 * 1e4 / 1e9, 2 * 1e4 / 1e9])
    assert [t[f"bbox_{m}_{a}"][1] for m in ("min", "max") for a in "zyx"] == [1, 2, 3, 2, 3, 5]
    assert t["touches_y0"].tolist() == [True, False] and t["touches_x1"].tolist() == [False, False]
    assert t["touches_z0"].tolist() == [True, False] and t["touches_z1"].tolist() == [True, True]
    empty = bv.metrics.component_table(p, 1)  # absent phase: an empty table, not an error
    assert len(empty["id"]) == 0 and set(empty) == set(t)


# -- isolated fraction -----------------------------------------------------------------------
@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_isolated_fraction_equals_in_memory(volume, chunks, connectivity):
    phases = da.from_array(volume, chunks=chunks)
    cases = [(2, axis, faces) for axis in (0, 1, 2) for faces in ("both", "either", "low", "high")]
    for phase, axis, faces in cases + [(0, 1, "both"), (0, 2, "either")]:
        got = bv.metrics.isolated_fraction(
            phases, phase, axis=axis, faces=faces, connectivity=connectivity
        )
        assert got == pytest.approx(
            ref_isolated(volume, phase, axis, faces, connectivity), abs=1e-12
        ), (phase, axis, faces)


def test_isolated_fraction_hand_built_exact():
    p = np.zeros((3, 10, 4), np.uint8)
    p[1, :, 1] = 2  # spans y: 10 voxels
    p[1, 0:3, 3] = 2  # touches y = 0 only: 3 voxels
    p[0, 8:10, 3] = 2  # touches y = 9 only: 2 voxels
    p[2, 5, 3] = 2  # touches neither y face: 1 voxel
    phases = da.from_array(p, chunks=(2, 3, 3))
    f = {faces: bv.metrics.isolated_fraction(phases, 2, axis=1, faces=faces, connectivity=6)
         for faces in ("both", "either", "low", "high")}
    assert f == {"both": 6 / 16, "either": 1 / 16, "low": 3 / 16, "high": 4 / 16}
    # x = 1 and x = 3 are two voxels apart: 26-connectivity merges nothing either
    assert bv.metrics.isolated_fraction(phases, 2, axis=1) == 6 / 16
    assert bv.metrics.isolated_fraction(phases, 1, axis=1) == 0.0  # absent phase


def test_isolated_fraction_equals_taufactor(volume):
    tm = pytest.importorskip("taufactor.metrics")
    phases = da.from_array(volume, chunks=(4, 5, 6))
    for connectivity, rank in STRUCTURE.items():
        for axis, name in enumerate("xyz"):  # TauFactor names array axes 0, 1, 2 x, y, z
            _, through = tm.extract_through_feature(volume, 2, name, connectivity=rank)
            got = bv.metrics.isolated_fraction(phases, 2, axis=axis, connectivity=connectivity)
            # TauFactor counts volumes in float32
            assert got == pytest.approx(1 - through[0], abs=1e-6)


def test_isolated_fraction_equals_porespy(volume):
    ps = pytest.importorskip("porespy")
    im = volume == 2
    phases = da.from_array(volume, chunks=(5, 6, 4))
    for conn, connectivity in (("min", 6), ("max", 26)):
        for axis in range(3):
            kept = ps.filters.trim_nonpercolating_paths(im, axis=axis, conn=conn)
            got = bv.metrics.isolated_fraction(phases, 2, axis=axis, connectivity=connectivity)
            assert got == pytest.approx(1 - kept.sum() / im.sum(), abs=1e-12)
            for faces in ("either", "low", "high"):
                inlets = np.zeros(im.shape, bool)
                if faces in ("either", "low"):
                    np.put_along_axis(inlets, np.zeros([1, 1, 1], int), True, axis)
                if faces in ("either", "high"):
                    idx = np.full([1, 1, 1], im.shape[axis] - 1)
                    np.put_along_axis(inlets, idx, True, axis)
                lost = ps.filters.find_disconnected_voxels(im, inlets=inlets, conn=conn)
                got = bv.metrics.isolated_fraction(
                    phases, 2, axis=axis, faces=faces, connectivity=connectivity
                )
                assert got == pytest.approx(lost.sum() / im.sum(), abs=1e-12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.tuples(*[st.integers(1, 8)] * 3),
    chunks=st.tuples(*[st.integers(1, 4)] * 3),
    connectivity=st.sampled_from([6, 18, 26]),
    axis=st.integers(0, 2),
    faces=st.sampled_from(["both", "either", "low", "high"]),
    seed=st.integers(0, 2**16),
)
def test_isolated_fraction_property(shape, chunks, connectivity, axis, faces, seed):
    p = np.random.default_rng(seed).integers(0, 3, shape).astype(np.uint8)
    got = bv.metrics.isolated_fraction(
        da.from_array(p, chunks=chunks), 2, axis=axis, faces=faces, connectivity=connectivity
    )
    assert got == pytest.approx(ref_isolated(p, 2, axis, faces, connectivity), abs=1e-12)


# -- percolation -------------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("connectivity", [6, 26])
def test_percolation_equals_in_memory(volume, chunks, connectivity):
    t = bv.metrics.percolation(da.from_array(volume, chunks=chunks), connectivity=connectivity)
    assert len(t["phase"]) == 9 and all(len(v) == 9 for v in t.values())
    structure = ndi.generate_binary_structure(3, STRUCTURE[connectivity])
    for row in range(9):
        phase, axis = t["phase"][row], t["axis"][row]
        lab, n = ndi.label(volume == phase, structure)
        total = (lab > 0).sum()
        low = set(np.unique(np.take(lab, 0, axis=axis))) - {0}
        high = set(np.unique(np.take(lab, -1, axis=axis))) - {0}
        frac = lambda ids: np.isin(lab, list(ids)).sum() / total  # noqa: E731
        assert t["axis_name"][row] == "zyx"[axis]
        assert t["phase_fraction"][row] == pytest.approx(total / volume.size)
        assert t["connected_fraction"][row] == pytest.approx(frac(low & high))
        assert t["dead_end_fraction"][row] == pytest.approx(frac(low ^ high))
        assert t["enclosed_fraction"][row] == pytest.approx(1 - frac(low | high))
        assert t["isolated_fraction"][row] == pytest.approx(
            ref_isolated(volume, phase, axis, "both", connectivity)
        )
        assert t["n_components"][row] == n
        assert t["n_spanning"][row] == len(low & high)


def test_percolation_absent_phase_and_json():
    import json

    p = np.zeros((4, 5, 6), np.uint8)
    p[:, 2, :] = 2
    t = bv.metrics.percolation(da.from_array(p, chunks=(3, 2, 4)))
    json.dumps(t)  # plain lists: ready for JSON (and pandas.DataFrame)
    rows = {(ph, a): i for i, (ph, a) in enumerate(zip(t["phase"], t["axis"]))}
    r = rows[(1, 1)]  # phase 1 is absent: zeros, not an error
    assert (t["n_components"][r], t["connected_fraction"][r], t["phase_fraction"][r]) == (0, 0.0, 0.0)
    r = rows[(2, 1)]  # the plane at y = 2 touches neither y face
    assert (t["connected_fraction"][r], t["enclosed_fraction"][r]) == (0.0, 1.0)
    r = rows[(2, 0)]
    assert (t["connected_fraction"][r], t["n_spanning"][r]) == (1.0, 1)
    r = rows[(0, 1)]  # pores: one block on each side of the plane, one face each
    assert (t["n_components"][r], t["dead_end_fraction"][r]) == (2, 1.0)


# -- bad input --------------------------------------------------------------------------------
def test_bad_arguments_are_refused(volume):
    with pytest.raises(InputError, match="phases must be boolean or integer.*float32"):
        bv.metrics.isolated_fraction(volume.astype(np.float32))
    with pytest.raises(ConfigError, match="axis 3 is out of range"):
        bv.metrics.isolated_fraction(volume, 2, axis=3)
    with pytest.raises(ConfigError, match="axis must be"):
        bv.metrics.isolated_fraction(volume, 2, axis="y")
    with pytest.raises(ConfigError, match="faces must be one of 'both', 'either', 'low', 'high'"):
        bv.metrics.isolated_fraction(volume, 2, faces="top")
    with pytest.raises(ConfigError, match="connectivity must be 6, 18 or 26"):
        bv.metrics.percolation(volume, connectivity=8)
    with pytest.raises(ConfigError, match="phase must be an integer"):
        bv.metrics.component_table(volume, "2")
    with pytest.raises(ConfigError, match="voxel_size must be three positive"):
        bv.metrics.component_table(volume, 2, voxel_size=(50, 0, 30))
    with pytest.raises(InputError, match="phases must be boolean or integer"):
        bv.metrics.volume_fractions(volume.astype(float))
    assert bv.metrics.isolated_fraction(volume, 2, axis=-2) == bv.metrics.isolated_fraction(
        volume, 2, axis=1
    )
