import dask.array as da
import numpy as np
import pytest
from scipy import ndimage as ndi

from bigvol.errors import ConfigError, InputError
from bigvol.metrics.interfaces import interfaces


def three_phase(shape, seed=0, sigma=2.0):
    f = ndi.gaussian_filter(np.random.default_rng(seed).random(shape).astype(np.float32), sigma)
    return np.digitize(f, np.quantile(f, [0.3, 0.65])).astype(np.uint8)


PAIRS = [(0, 1), (0, 2), (1, 2)]


def area(r, a, b):
    """The a/b interface area per volume from the ``pairs`` columns."""
    u = r["unit"]
    cols = r["pairs"]
    i = next(i for i, (x, y) in enumerate(zip(cols["phase_a"], cols["phase_b"])) if (x, y) == (a, b))
    return cols[f"area_per_volume_{u}-1"][i]


def surface(r, p):
    return r["surfaces"][f"specific_surface_{r['unit']}-1"][r["surfaces"]["phase"].index(p)]


def flat(r):
    """Every number of the result, keyed by its place (for the chunk-invariance check)."""
    out = {}
    for k, v in r.items():
        if isinstance(v, dict):
            for c, vals in v.items():
                for i, x in enumerate(vals):
                    out[f"{k}.{c}.{i}"] = x
        else:
            out[k] = v
    return out


def test_faces_equal_taufactor_face_counting_times_two_thirds():
    tm = pytest.importorskip("taufactor.metrics")
    v = three_phase((36, 40, 32), seed=1)
    r = interfaces(da.from_array(v, chunks=(10, 13, 32)), method="faces")
    ref = tm.interfacial_areas(v, device="cpu")  # raw face counts per voxel volume
    for a, b in PAIRS:
        assert area(r, a, b) == pytest.approx(ref[(a, b)] * 2 / 3, rel=1e-9)


def test_marching_cubes_equal_taufactor_marching_cubes():
    tm = pytest.importorskip("taufactor.metrics")
    v = three_phase((36, 40, 32), seed=2)
    r = interfaces(da.from_array(v, chunks=(9, 17, 11)), method="marching_cubes")
    ref = tm.specific_surface_area(v, method="marching_cubes", smoothing=False, device="cpu")
    for p in range(3):
        assert surface(r, p) == pytest.approx(ref[str(p)], rel=1e-5)
    # pair areas rebuild the phase surfaces: S_1 = A_01 + A_12 (phase 1 lies between 0 and 2)
    s1 = area(r, 0, 1) + area(r, 1, 2)
    assert s1 == pytest.approx(surface(r, 1), rel=1e-6)


def test_tpb_equals_taufactor_edge_count():
    tm = pytest.importorskip("taufactor.metrics")
    v = three_phase((24, 26, 28), seed=3, sigma=1.0)
    r = interfaces(da.from_array(v, chunks=(5, 26, 9)))
    x, y, z = v.shape
    edges = z * (x - 1) * (y - 1) + x * (y - 1) * (z - 1) + y * (x - 1) * (z - 1)
    count = float(tm.triple_phase_boundary(v.astype(np.int64))) * edges
    assert r["tpb_length_per_volume_vox-2"] * v.size * 1.5 == pytest.approx(count, rel=1e-6)


@pytest.mark.parametrize("method", ["faces", "marching_cubes"])
@pytest.mark.parametrize(
    "shape, chunks",
    [((6, 7, 5), (1, 1, 1)), ((12, 14, 10), (5, 7, 3)), ((12, 14, 10), (12, 14, 10))],
    ids=["size1", "uneven", "one"],
)
def test_chunk_invariant(method, shape, chunks):
    v = three_phase(shape, seed=4, sigma=1.2)
    ref = flat(interfaces(v, voxel_size=(50, 30, 30), method=method))
    got = flat(interfaces(da.from_array(v, chunks=chunks), voxel_size=(50, 30, 30), method=method))
    assert got.keys() == ref.keys()
    for k in ref:
        if k not in ("method", "unit"):
            assert got[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k


@pytest.mark.parametrize("vs", [(1.0, 1.0, 1.0), (50.0, 30.0, 30.0)])
def test_sphere_area_with_faces_within_two_percent(vs):
    r_nm = 20 * vs[1]
    shape = tuple(int(2 * r_nm / s) + 6 for s in vs)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g - (n - 1) / 2) * s) ** 2 for g, n, s in zip(grids, shape, vs))
    v = (d2 < r_nm**2).astype(np.uint8)
    res = interfaces(da.from_array(v, chunks=(17, 19, 23)), voxel_size=vs, n_phases=2)
    area_um2 = surface(res, 1) * res["volume_um3"]
    true = 4 * np.pi * (r_nm / 1000) ** 2
    assert area_um2 == pytest.approx(true, rel=0.02)
    assert area(res, 0, 1) == surface(res, 1)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_flat_interface_exact(axis):
    vs = (50.0, 30.0, 20.0)
    v = np.zeros((6, 8, 10), np.uint8)
    sl = [slice(None)] * 3
    sl[axis] = slice(3, None)
    v[tuple(sl)] = 2
    other = [vs[i] * v.shape[i] for i in range(3) if i != axis]
    plane_um2 = other[0] * other[1] * 1e-6
    vol_um3 = np.prod(v.shape) * np.prod(vs) * 1e-9
    f = interfaces(da.from_array(v, chunks=(4, 3, 7)), voxel_size=vs, method="faces")
    assert area(f, 0, 2) == pytest.approx(plane_um2 * 2 / 3 / vol_um3, rel=1e-12)
    assert area(f, 0, 1) == 0 and area(f, 1, 2) == 0
    m = interfaces(da.from_array(v, chunks=(4, 3, 7)), voxel_size=vs, method="marching_cubes")
    # the mesh spans voxel centres: the plane minus a half-voxel rim on each side
    n = [v.shape[i] - 1 for i in range(3) if i != axis]
    s = [vs[i] for i in range(3) if i != axis]
    mc_um2 = n[0] * s[0] * n[1] * s[1] * 1e-6
    assert area(m, 0, 2) == pytest.approx(mc_um2 / vol_um3, rel=1e-6)


def test_tpb_straight_line_exact():
    vs = (50.0, 30.0, 20.0)
    n = 8
    v = np.zeros((n, n, n), np.uint8)
    v[n // 2:, : n // 2, :] = 1
    v[n // 2:, n // 2:, :] = 2  # three blocks meet along one line parallel to x
    r = interfaces(da.from_array(v, chunks=(3, 5, 4)), voxel_size=vs)
    vol_um3 = n**3 * np.prod(vs) * 1e-9
    line_um = n * vs[2] / 1000
    assert r["tpb_length_per_volume_um-2"] == pytest.approx(line_um * 2 / 3 / vol_um3, rel=1e-12)


def test_ignores_unlabelled_and_checks_arguments():
    v = three_phase((10, 10, 10), seed=6)
    w = v.copy()
    w[0] = 255
    r = interfaces(w, method="faces")
    assert all(np.isfinite(x) for k, x in flat(r).items() if k not in ("method", "unit"))
    with pytest.raises(ConfigError, match="method"):
        interfaces(v, method="gradient")
    with pytest.raises(ConfigError, match="n_phases"):
        interfaces(v, n_phases=1)
    with pytest.raises(ConfigError, match="marching_cubes"):
        interfaces(v, n_phases=4, method="marching_cubes")
    with pytest.raises(ConfigError, match="voxel_size"):
        interfaces(v, voxel_size=(1, 2))
    with pytest.raises(InputError, match="3-D"):
        interfaces(v[0])
