"""Structure metrics of a real segmented electrode equal TauFactor's published numbers.

``../shared/realdata/electrode/taufactor_polaron_nmc_256.tif``: a 256^3 three-phase NMC
cathode (0 pore, 1 carbon-binder, 2 NMC; 390.625 nm voxels) whose volume fractions,
through-connected fractions, face-count surface areas and tortuosity are printed in the
stored outputs of TauFactor's documentation notebooks (00-overview, 01-tortuosity,
02-surface-areas). Every metric is computed out of core on an odd chunking. The
whole-volume tortuosity (minutes on 2 cores) is in benchmarks/bench_realdata_metrics.py; here
a crop is solved and compared with a direct TauFactor call.
"""

import math

import dask.array as da
import numpy as np
import pytest
import tifffile

import bigvol as bv

#: Published (TauFactor notebooks): volume fractions; through-connected fraction along axis
#: 0 for face (6) and corner (26) connectivity; face-count specific surface per voxel.
FRACTIONS = {0: 0.44992, 1: 0.14962, 2: 0.40047}
CONNECTED = {6: {0: 0.9989, 1: 0.9740, 2: 0.9611}, 26: {0: 0.9996, 1: 0.9936, 2: 0.9612}}
SURFACE_PER_VOXEL = {0: 0.30684, 1: 0.34223, 2: 0.14610}


@pytest.fixture(scope="module")
def nmc():
    from conftest import REALDATA

    path = REALDATA / "electrode" / "taufactor_polaron_nmc_256.tif"
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared/realdata beside the project)")
    a = tifffile.imread(path)
    return a, da.from_array(a, chunks=(64, 100, 77))


def test_volume_fractions_equal_the_published_ones(nmc):
    _, d = nmc
    vf = bv.metrics.volume_fractions(d)
    for p, ref in FRACTIONS.items():
        assert vf[p] == pytest.approx(ref, abs=1e-4 / 2)


@pytest.mark.parametrize("connectivity", [6, 26])
def test_through_connected_fractions_equal_the_published_ones(nmc, connectivity):
    _, d = nmc
    t = bv.metrics.percolation(d, connectivity=connectivity)
    got = {ph: f for ph, ax, f in zip(t["phase"], t["axis"], t["connected_fraction"]) if ax == 0}
    for p, ref in CONNECTED[connectivity].items():
        assert got[p] == pytest.approx(ref, abs=1e-4 / 2 + 1e-6), (p, connectivity)


def test_isolated_active_material_is_the_published_3_88_percent(nmc):
    _, d = nmc
    iso = bv.metrics.isolated_fraction(d, 2, axis=0, connectivity=26)
    assert iso == pytest.approx(1 - 0.9612, abs=1e-4)
    assert round(iso, 4) == 0.0388


def test_face_count_surface_equals_taufactor_published_and_direct(nmc):
    a, d = nmc
    raw = bv.metrics.interfaces(d, stereology=False)
    corrected = bv.metrics.interfaces(d)
    for p, ref in SURFACE_PER_VOXEL.items():
        assert raw["surfaces"]["specific_surface_vox-1"][p] == pytest.approx(ref, abs=1e-5)
        # the default applies the stereological 2/3
        assert corrected["surfaces"]["specific_surface_vox-1"][p] == pytest.approx(ref * 2 / 3, abs=1e-5)
    # in physical units: per-voxel value / voxel length
    um = bv.metrics.interfaces(d, voxel_size=(390.625,) * 3, stereology=False)
    assert um["surfaces"]["specific_surface_um-1"][2] == pytest.approx(SURFACE_PER_VOXEL[2] / 0.390625, rel=1e-4)


@pytest.mark.parametrize("axis", [0, 1])
def test_pore_tortuosity_of_a_crop_equals_a_direct_taufactor_solve(nmc, axis):
    tf = pytest.importorskip("taufactor")
    a, _ = nmc
    crop = a[100:148, 40:88, 180:228]
    r = bv.metrics.tortuosity(da.from_array(crop, chunks=(16, 24, 48)), 0, axis=axis, device="cpu")
    img = np.ascontiguousarray(np.moveaxis(crop == 0, axis, 0).astype(np.uint8))
    s = tf.Solver(img, device="cpu")
    s.solve(verbose=False, conv_crit=1e-2)
    ref = float(np.asarray(s.tau).ravel()[0])
    assert r["converged"] and r["method"] == "whole"
    assert r["tau"] == pytest.approx(ref, rel=1e-6)
    assert 1.2 < r["tau"] < 4  # a porous electrode, not a straight channel or a dead end


def test_an_unconverged_solve_reports_no_number(nmc):
    a, _ = nmc
    r = bv.metrics.tortuosity(a[:32, :32, :32], 0, axis=0, device="cpu", iter_limit=5)
    assert r["converged"] is False
    assert math.isnan(r["tau"]) and math.isnan(r["eff_ratio"])
