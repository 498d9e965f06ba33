import dask.array as da
import numpy as np
import pytest
from dask.callbacks import Callback
from scipy import ndimage as ndi

from bigvol.errors import ConfigError, InputError
from bigvol.metrics import thickness as T
from bigvol.metrics.thickness import local_thickness, max_inscribed_radius, thickness_summary


@pytest.fixture(autouse=True)
def out_of_core(monkeypatch):
    """Every test here runs the out-of-core passes (scratch store, dask graph) unless it
    asks for the in-memory path, which small volumes take by default."""
    monkeypatch.setattr(T, "_IN_MEMORY_VOXELS", 0)


def blobs(shape, seed=0, sigma=2.5, frac=0.5):
    f = ndi.gaussian_filter(np.random.default_rng(seed).random(shape).astype(np.float32), sigma)
    return (f > np.quantile(f, 1 - frac)).astype(np.uint8)


def three_phase(shape, seed=0, sigma=2.0):
    f = ndi.gaussian_filter(np.random.default_rng(seed).random(shape).astype(np.float32), sigma)
    return np.digitize(f, np.quantile(f, [0.3, 0.65])).astype(np.uint8)


class CountTasks(Callback):
    def __init__(self, needle):
        super().__init__()
        self.needle, self.n = needle, 0

    def _pretask(self, key, dsk, state):
        if self.needle in str(key):
            self.n += 1


@pytest.mark.parametrize("in_memory", [False, True], ids=["out-of-core", "in-memory"])
@pytest.mark.parametrize("shape", [(40, 40, 40), (16, 40, 150)])  # rows of several tiles
def test_equals_porespy_diameter_on_isotropic_volume(shape, in_memory, monkeypatch):
    ps = pytest.importorskip("porespy")
    if in_memory:
        monkeypatch.setattr(T, "_IN_MEMORY_VOXELS", 2**40)
    v = blobs(shape, seed=1, sigma=2.5)
    # PoreSpy's "dt" and "bf" methods give the same integer-radius answer; "dt" needs no
    # numba compilation (30 s of test time)
    ref = ps.filters.local_thickness(v.astype(bool), method="dt")  # a radius
    lt = local_thickness(v, 1).compute()
    assert np.abs(lt - 2 * ref).max() <= 1.0  # the issue asks within one voxel
    np.testing.assert_array_equal(lt, 2 * ref)  # same integer-radius convention: equal


@pytest.mark.parametrize(
    "shape, chunks",
    [((24, 30, 28), (7, 11, 13)), ((7, 8, 6), (1, 1, 1)), ((24, 30, 28), (24, 30, 28)),
     ((24, 30, 28), (5, 30, 3))],
    ids=["uneven", "size1", "one", "mixed"],
)
@pytest.mark.parametrize("voxel_size", [None, (50, 30, 30)])
def test_chunk_invariant(shape, chunks, voxel_size):
    v = three_phase(shape, seed=3, sigma=1.5)
    ref = local_thickness(v, 1, voxel_size=voxel_size).compute()
    got = local_thickness(da.from_array(v, chunks=chunks), 1, voxel_size=voxel_size)
    assert got.chunks == da.from_array(v, chunks=chunks).chunks
    np.testing.assert_array_equal(got.compute(), ref)
    assert (ref[v != 1] == 0).all() and (ref[v == 1] > 0).all()


@pytest.mark.parametrize(
    "shape, chunks", [((24, 30, 28), (7, 11, 13)), ((1, 30, 28), (1, 8, 8)),
                      ((70, 9, 80), (70, 9, 80))], ids=["uneven", "one-slice", "tall"])
@pytest.mark.parametrize("voxel_size", [None, (50, 30, 30), (20, 30, 45)])
@pytest.mark.parametrize("phase, max_diameter, dtype", [
    (1, None, np.float32), (2, None, np.float16), (0, 120, np.float32), (1, 0.5, np.float32)])
def test_in_memory_path_equals_out_of_core(monkeypatch, shape, chunks, voxel_size, phase,
                                           max_diameter, dtype):
    v = three_phase(shape, seed=4, sigma=1.5)
    x = da.from_array(v, chunks=chunks)
    ref = local_thickness(x, phase, voxel_size=voxel_size, max_diameter=max_diameter,
                          dtype=dtype)
    monkeypatch.setattr(T, "_IN_MEMORY_VOXELS", 2**40)
    got = local_thickness(x, phase, voxel_size=voxel_size, max_diameter=max_diameter,
                          dtype=dtype)
    assert got.chunks == x.chunks and got.dtype == ref.dtype == dtype
    np.testing.assert_array_equal(got.compute(), ref.compute())


def test_in_memory_path_edge_cases(monkeypatch):
    monkeypatch.setattr(T, "_IN_MEMORY_VOXELS", 2**40)
    v = three_phase((12, 14, 16), seed=5)
    assert not local_thickness(v, 7).compute().any()  # absent phase
    with pytest.raises(InputError, match="fills the whole volume"):
        local_thickness(np.ones((6, 5, 4), np.uint8), 1)
    capped = local_thickness(np.ones((6, 5, 4), np.uint8), 1, max_diameter=4).compute()
    assert (capped == 4).all()  # a full phase is measured when the balls are capped
    got = local_thickness(v, 1, voxel_size=(50, 30, 30))
    first = got.compute()
    first[:] = -1  # a user's edit of one result does not reach the next compute
    np.testing.assert_array_equal(got.compute(), T._thickness_in_memory(
        da.from_array(v), 1, (50.0, 30.0, 30.0), np.inf, np.float32))


@pytest.mark.parametrize("side", [5, 8, 13])
@pytest.mark.parametrize("voxel_size", [None, (50, 30, 30)])
def test_centres_marked_per_column_block_do_not_change_the_thickness(monkeypatch, side,
                                                                     voxel_size):
    # the z pass marks ball centres with the neighbours inside its column block only: a
    # ball whose containing neighbour lies across a block edge stays a centre, which must
    # paint nothing new (the scratch chunks follow the blocks, so the in-slice pass's
    # slabs are split across several chunks too)
    import bigvol.metrics.thickness as T

    v = three_phase((24, 30, 28), seed=6, sigma=2.0)
    ref = local_thickness(v, 2, voxel_size=voxel_size).compute()
    monkeypatch.setattr(T, "_column_side", lambda depth: side)
    got = local_thickness(da.from_array(v, chunks=(7, 11, 13)), 2, voxel_size=voxel_size)
    np.testing.assert_array_equal(got.compute(), ref)


@pytest.mark.parametrize("chunks", [(7, 11, 13), (24, 4, 30), (1, 30, 28)])
@pytest.mark.parametrize("voxel_size", [None, (50, 30, 30)])
def test_in_slice_pass_from_the_mask_copy_equals_gathered_slices(monkeypatch, chunks,
                                                                 voxel_size):
    # deep input chunks on large slices go through a slab-chunked copy of the phase mask
    # instead of rechunk; the map must not change (chunks deeper than the 8-slice slabs,
    # shallower, and of one slice)
    import bigvol.metrics.thickness as T

    v = three_phase((24, 30, 28), seed=8, sigma=1.5)
    ref = local_thickness(v, 1, voxel_size=voxel_size).compute()
    monkeypatch.setattr(T, "_GATHER_BYTES", 0)
    masks = []
    copy = T._phase_mask
    monkeypatch.setattr(T, "_phase_mask", lambda *a: masks.append(copy(*a)) or masks[-1])
    got = local_thickness(da.from_array(v, chunks=chunks), 1, voxel_size=voxel_size)
    # slabs of 8 slices, the input's y/x chunks
    assert [m.chunks for m in masks] == [(8,) + tuple(map(min, chunks[1:], v.shape[1:]))]
    np.testing.assert_array_equal(got.compute(), ref)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_slab_exact_anisotropic(axis, n):
    vs = (50.0, 30.0, 20.0)
    shape = [12, 12, 12]
    v = np.zeros(shape, np.uint8)
    sl = [slice(None)] * 3
    sl[axis] = slice(3, 3 + n)
    v[tuple(sl)] = 1
    lt = local_thickness(da.from_array(v, chunks=(5, 7, 4)), 1, voxel_size=vs).compute()
    step = min(vs)
    dt_max = ((n + 1) // 2) * vs[axis]  # nearest outside voxel centre from the middle
    expected = 2 * np.floor(dt_max / step + 1e-9) * step
    assert np.unique(lt[v == 1]).tolist() == [expected]
    assert (lt[v == 0] == 0).all()
    if vs[axis] == step:  # the finest axis: n voxels (even n) or n + 1 (odd n)
        assert expected == (n if n % 2 == 0 else n + 1) * step


def test_sphere_exact_physical_ball_on_anisotropic_voxels():
    vs = (50.0, 30.0, 30.0)
    z, y, x = np.mgrid[:21, :31, :31]
    d2 = ((z - 10) * vs[0]) ** 2 + ((y - 15) * vs[1]) ** 2 + ((x - 15) * vs[2]) ** 2
    v = (d2 < 300.0**2).astype(np.uint8)  # a physical ball of radius 300 nm
    lt = local_thickness(da.from_array(v, chunks=(8, 9, 10)), 1, voxel_size=vs).compute()
    assert np.unique(lt[v == 1]).tolist() == [600.0]  # its diameter, everywhere
    assert max_inscribed_radius(v, 1, voxel_size=vs) == 300.0


def test_two_balls_keep_their_own_diameters():
    z, y, x = np.mgrid[:20, :40, :20]
    big = (z - 10) ** 2 + (y - 12) ** 2 + (x - 10) ** 2 < 8**2
    small = (z - 10) ** 2 + (y - 32) ** 2 + (x - 10) ** 2 < 4**2
    v = (big | small).astype(np.uint8)
    lt = local_thickness(da.from_array(v, chunks=(6, 11, 7)), 1).compute()
    assert np.unique(lt[big]).tolist() == [16.0]
    assert np.unique(lt[small]).tolist() == [8.0]


def test_max_diameter_caps_thick_parts_and_keeps_thin_parts_exact():
    z, y, x = np.mgrid[:20, :40, :20]
    big = (z - 10) ** 2 + (y - 12) ** 2 + (x - 10) ** 2 < 8**2
    small = (z - 10) ** 2 + (y - 32) ** 2 + (x - 10) ** 2 < 4**2
    v = da.from_array((big | small).astype(np.uint8), chunks=(6, 11, 7))
    lt = local_thickness(v, 1, max_diameter=10).compute()
    values, counts = np.unique(lt[big], return_counts=True)
    assert values.tolist() == [8.0, 10.0]  # "about the cap": the digitized rim reads 8
    assert counts[1] / counts.sum() > 0.95
    assert np.unique(lt[small]).tolist() == [8.0]
    # an upper bound above the truth changes nothing
    np.testing.assert_array_equal(local_thickness(v, 1, max_diameter=40).compute(),
                                  local_thickness(v, 1).compute())


def test_paint_pass_lazy_once_per_window_and_scratch_removed(tmp_path):
    import gc

    v = da.from_array(three_phase((30, 40, 36), seed=5, sigma=1.2), chunks=(15, 20, 18))
    lt = local_thickness(v, 2, scratch=tmp_path)  # the radius map is written now
    (folder,) = list(tmp_path.iterdir())
    assert (folder / "map.zarr" / "centres").is_dir()
    assert not (folder / "map.zarr" / "sq_in_slice").exists()  # the first passes' scratch
    assert not (folder / "map.zarr" / "radius_index").exists()
    with CountTasks("_thickness_from_store") as cb:  # windows read straight from the store
        out = lt.compute(optimize_graph=False)  # keep task names: count the real blocks
    blocks = [k for k in dict(lt.__dask_graph__()) if "_thickness_from_store" in str(k)]
    assert cb.n == len(blocks) >= 1  # each window computed once
    ref = local_thickness(v.compute(), 2).compute()
    np.testing.assert_array_equal(out, ref)
    del lt
    gc.collect()
    assert not folder.exists()  # the scratch goes with the array


@pytest.mark.parametrize("window", [12**3, 20**3])
def test_small_paint_windows_equal_one_window(monkeypatch, window):
    # the painting's windows are sized by a memory budget; with a tiny budget every window
    # has centres in its halo on all sides whose balls reach into the core (and past it)
    import bigvol.metrics.thickness as T

    v = np.zeros((30, 64, 60), np.uint8)
    z, y, x = np.mgrid[:30, :64, :60]
    for cz, cy, cx, r in ((12, 20, 18, 11), (15, 44, 40, 13), (8, 50, 12, 6)):
        v[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 < r * r] = 1
    v |= three_phase(v.shape, seed=4, sigma=1.3) == 1
    ref = local_thickness(v, 1, voxel_size=(50, 30, 30)).compute()
    monkeypatch.setattr(T, "_PAINT_TASK_BYTES", 2 * window)
    got = local_thickness(da.from_array(v, chunks=(6, 8, 8)), 1, voxel_size=(50, 30, 30))
    np.testing.assert_array_equal(got.compute(), ref)


def test_painting_windows_read_in_several_z_slabs(monkeypatch):
    # deeper than one stored chunk of the centre map (64 slices): each painting task lists
    # the centres of its window slab by slab, across the slabs' edges
    import bigvol.metrics.thickness as T

    v = np.zeros((150, 20, 24), np.uint8)
    z, y, x = np.mgrid[:150, :20, :24]
    v[(z - 64) ** 2 + (y - 10) ** 2 + (x - 12) ** 2 < 9**2] = 1  # across a slab edge
    v |= three_phase(v.shape, seed=6, sigma=1.5) == 1
    ref = local_thickness(v, 1, voxel_size=(50, 30, 30)).compute()
    monkeypatch.setattr(T, "_PAINT_TASK_BYTES", 10 * 40 * 20 * 24)  # cores of 40 slices
    got = local_thickness(da.from_array(v, chunks=(20, 20, 24)), 1, voxel_size=(50, 30, 30))
    np.testing.assert_array_equal(got.compute(), ref)


def _radius_indices(seed):
    """Radius indices ``floor(EDT / step)`` of a (40, 64, 96) phase on (50, 30, 30) nm
    voxels (edt as the reference), with the kernels' neighbour offsets and containment
    table: the inputs of the centre and painting kernels."""
    import edt

    from bigvol.metrics import _thickness_kernels as K

    sp, step = np.array([50.0, 30.0, 30.0]), 30.0
    v = three_phase((40, 64, 96), seed=seed, sigma=3.0) == 1
    k = np.floor(edt.edt(v.astype(np.uint8), anisotropy=tuple(sp), black_border=False)
                 / step).astype(np.uint16)
    offs = K.neighbour_offsets(sp, 4, near=2)
    return k, sp, step, offs, K.containment_table(int(k.max()), sp, step, offs)


@pytest.mark.parametrize("seed", [1, 2])
def test_paint_kernel_core_equals_whole_window(seed):
    # a core's painting from the centres of its whole window equals the whole window's
    # painting on that core: balls whose centres lie past the core's right edge paint only
    # their rows that reach it (a row's forest is never read past its end)
    from bigvol.metrics import _thickness_kernels as K

    k, sp, step, offs, need = _radius_indices(seed)
    lo, hi = np.zeros(3, np.int64), np.array(k.shape, np.int64)
    c = K.mark_centres(k, lo, hi, offs, need, 124, 4)
    whole = K.paint_balls(c, lo, hi, lo, hi, sp, step)
    for x0 in range(0, 96, 16):
        clo, chi = np.array([12, 20, x0]), np.array([28, 44, x0 + 16])
        core = K.paint_balls(c, clo, chi, lo, hi, sp, step)
        np.testing.assert_array_equal(core, whole[12:28, 20:44, x0:x0 + 16])


@pytest.mark.parametrize("a", [1.0, 0.37, 2.78])
def test_envelope_by_runs_equals_the_whole_line(a):
    # the distance passes take the lower envelope run by run (zeros end a run): the same
    # values, bit for bit, as the envelope of the whole line, with inf (no outside voxel
    # along the first axis) and non-integer voxel sides
    from bigvol.metrics import _thickness_kernels as K

    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 64, 301):
        for p_zero in (0.0, 0.05, 0.5, 0.95, 1.0):
            g = rng.uniform(0, 40, n) ** 2
            g[rng.random(n) < p_zero] = 0.0
            g[rng.random(n) < 0.1] = np.inf
            want, got = np.empty(n), np.empty(n)
            v, zb = np.empty(n, np.int64), np.empty(n + 1)
            K._envelope(g, a, v, zb, want)
            K._envelope_runs(g, a, v, zb, got)
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("a", [1.0, 0.37, 2.78])
def test_lanes_minimum_equals_the_envelope_of_each_lane(a):
    # the z pass takes the minimum of parabolas a whole row of lanes at a time, searching
    # outwards until no lane can get lower, and gives lanes still open 64 rows out their
    # lane's envelope: every lane's values equal its envelope's, bit for bit, with zeros,
    # inf (a slice with no outside voxel) and runs longer than the search (the fallback)
    from bigvol.metrics import _thickness_kernels as K

    rng = np.random.default_rng(5)
    for n, lanes in ((1, 3), (9, 64), (300, 70), (200, 130)):
        for p_zero in (0.0, 0.1, 0.6):
            g = np.floor(rng.uniform(0, 40, (n, lanes))) ** 2
            g[rng.random((n, lanes)) < p_zero] = 0.0
            g[rng.random((n, lanes)) < 0.05] = np.inf
            g[:, :lanes // 3] = np.sort(g[:, :lanes // 3], axis=0)  # long monotone runs
            g[:, -1] = np.where(rng.random(n) < 0.5, 0.0, rng.uniform(0, 5, n) ** 2)
            v, zb = np.empty(n, np.int64), np.empty(n + 1)
            col, ecol = np.empty(n), np.empty(n)
            want = np.empty((n, lanes))
            for i in range(lanes):
                K._envelope_runs(np.ascontiguousarray(g[:, i]), a, v, zb, want[:, i])
            got = np.full((n, lanes), -1.0)
            env, have = np.empty((lanes, n)), np.zeros(lanes, bool)
            for l0, l1 in ((0, lanes // 2), (lanes // 2, lanes)):
                K._min_plus_lanes(g, a, got, l0, l1, env, have, v, zb, col, ecol)
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", [1, 2])
def test_centres_of_cores_equal_those_of_the_whole_window(seed):
    # the centre test bounds only the core it marks (and 2 voxels around it): cores of any
    # size and place give the centres the whole window gives there
    from bigvol.metrics import _thickness_kernels as K

    k, _, _, offs, need = _radius_indices(seed)
    lo, hi = np.zeros(3, np.int64), np.array(k.shape, np.int64)
    whole = K.mark_centres(k, lo, hi, offs, need, 124, 4)
    for clo, chi in (((0, 0, 0), (1, 64, 96)), ((5, 3, 17), (18, 40, 60)),
                     ((39, 61, 90), (40, 64, 96)), ((11, 0, 1), (12, 1, 2))):
        core = K.mark_centres(k, np.array(clo), np.array(chi), offs, need, 124, 4)
        np.testing.assert_array_equal(
            core, whole[clo[0]:chi[0], clo[1]:chi[1], clo[2]:chi[2]])


def test_paint_windows_are_few_and_bounded():
    from bigvol.metrics._chunked import work_chunks

    x = da.zeros((1000, 1024, 1024), np.uint8, chunks=(32, 256, 256))
    # the pipeline's chunks with a 40-voxel halo: cores of whole chunks, windows <= budget
    ch = work_chunks(x, (40, 40, 40), max_window=64 * 2**20, slots=2)
    core = [c[0] for c in ch]
    assert all(c % k == 0 for c, k in zip(core, (32, 256, 256)))
    assert np.prod([c + 80 for c in core]) <= 64 * 2**20
    halo_cost = np.prod([(c + 80) / c for c in core])
    assert halo_cost < 2.5  # (32, 256, 256) cores would cost 12.6x their volume
    # core voxels that cost 5 window voxels each: smaller cores, still under the budget
    ch = work_chunks(x, (40, 40, 40), max_window=64 * 2**20, core_weight=5, slots=2)
    core = [c[0] for c in ch]
    assert np.prod([c + 80 for c in core]) + 5 * np.prod(core) <= 64 * 2**20
    assert np.prod([c + 80 for c in core]) + 5 * np.prod(core) > 32 * 2**20
    # a halo larger than any fitting window: the smallest cores that are still no thinner
    # than the halo (or a whole axis, which needs none)
    ch = work_chunks(x, (300, 300, 300), max_window=64 * 2**20, slots=2)
    assert all(c[0] >= 300 or len(c) == 1 for c in ch)
    assert [c[0] for c in ch] == [320, 1024, 1024]


def test_float16_and_absent_phase():
    v = three_phase((16, 16, 16), seed=2)
    a = local_thickness(v, 0, voxel_size=(50, 30, 30)).compute()
    b = local_thickness(v, 0, voxel_size=(50, 30, 30), dtype=np.float16).compute()
    assert b.dtype == np.float16
    np.testing.assert_array_equal(a.astype(np.float16), b)
    z = local_thickness(v, 7).compute()
    assert z.shape == v.shape and not z.any()


@pytest.mark.slow
def test_distributed_cluster_matches_threads():
    distributed = pytest.importorskip("distributed")
    v = three_phase((20, 26, 24), seed=9)
    ref = local_thickness(v, 1, voxel_size=(50, 30, 30)).compute()
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        lt = local_thickness(da.from_array(v, chunks=(7, 9, 8)), 1, voxel_size=(50, 30, 30))
        got = client.compute(lt).result()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("off_level", [False, True])
def test_summary_matches_numpy(off_level):
    rng = np.random.default_rng(0)
    t = (rng.integers(0, 6, (10, 12, 14)) * 60).astype(np.float32)  # 0 = outside
    if off_level:  # values that are not levels k * 2s, in some chunks only: counted by sorting
        t[:3, :5][t[:3, :5] > 0] += np.float32(7.25)
    s = thickness_summary(da.from_array(t, chunks=(3, 5, 7)), voxel_size=(50, 30, 30), bins=4)
    vals = t[t > 0].astype(np.float64)
    assert s["n_voxels"] == vals.size
    assert s["volume_um3"] == pytest.approx(vals.size * 50 * 30 * 30 * 1e-9)
    assert s["mean_nm"] == pytest.approx(vals.mean())
    assert s["std_nm"] == pytest.approx(vals.std())
    for key, q in (("p05", 5), ("p25", 25), ("median", 50), ("p90", 90), ("p95", 95)):
        assert s[f"{key}_nm"] == np.percentile(vals, q, method="inverted_cdf")
    assert s["max_nm"] == vals.max() and s["min_nm"] == vals.min()
    h, e = np.histogram(vals, bins=4, range=(0, vals.max()))
    np.testing.assert_allclose(s["histogram_volume_fraction"], h / vals.size)
    np.testing.assert_allclose(s["histogram_edges_nm"], e)
    s16 = thickness_summary(da.from_array(t.astype(np.float16), chunks=(3, 5, 7)),
                            voxel_size=(50, 30, 30), bins=4)
    if not off_level:
        assert s16 == s  # the float16 fast path (bit-pattern counts) gives the same numbers
    empty = thickness_summary(np.zeros((3, 3, 3), np.float32))
    assert empty["n_voxels"] == 0 and empty["mean_nm"] == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"phase": 1.5}, "phase"),
        ({"phase": -1}, "phase"),
        ({"phase": 1, "voxel_size": (50, 30)}, "voxel_size"),
        ({"phase": 1, "voxel_size": (50, 0, 30)}, "voxel_size"),
        ({"phase": 1, "dtype": np.int32}, "dtype"),
        ({"phase": 1, "max_diameter": "big"}, "max_diameter"),
    ],
)
def test_bad_arguments(kwargs, match):
    v = three_phase((8, 8, 8))
    with pytest.raises(ConfigError, match=match):
        local_thickness(v, **kwargs)


def test_bad_inputs():
    with pytest.raises(InputError, match="3-D"):
        local_thickness(np.zeros((4, 4), np.uint8), 1)
    with pytest.raises(InputError, match="integer"):
        local_thickness(np.zeros((4, 4, 4), np.float32), 1)
    with pytest.raises(InputError, match="fills the whole volume"):
        local_thickness(np.ones((6, 5, 4), np.uint8), 1)
    v = np.ones((6, 5, 4), np.uint8)
    before = v.copy()
    v[0, 0, 0] = 0
    before[0, 0, 0] = 0
    local_thickness(v, 1).compute()
    np.testing.assert_array_equal(v, before)  # input untouched


def test_electrolyte_thickness_ranks_like_its_particle_size_on_phantoms():
    synth = pytest.importorskip("bigvol.synth")
    vs = (100.0, 60.0, 60.0)  # coarse voxels: a few microstructure lengths in a small volume
    means = []
    for se in (0.5, 1.0, 2.0):
        _, truth = synth.phantom((48, 128, 128), seed=0, voxel_size=vs, se_size_um=se)
        lt = local_thickness(truth, 1, voxel_size=vs)
        means.append(thickness_summary(lt)["mean_nm"])
    assert means[0] < means[1] < means[2]  # cells B and C of the paper: thin vs thick SE
    assert means[2] > 2 * means[0]


@pytest.mark.parametrize("voxel", [390.625, 10.0])
def test_auto_histogram_bins_follow_the_voxel_size(voxel):
    """Every thickness level 2js gets a bin of its own (or m whole levels per bin), never
    a comb of empty bins narrower than the voxel."""
    rng = np.random.default_rng(1)
    v = (ndi.gaussian_filter(rng.random((40, 40, 40)), 2) > 0.5).astype(np.uint8)
    vs = (voxel,) * 3
    lt = np.asarray(local_thickness(v, 1, voxel_size=vs))
    s = thickness_summary(lt, voxel_size=vs)
    edges = np.asarray(s["histogram_edges_nm"])
    frac = np.asarray(s["histogram_volume_fraction"])
    levels = np.unique(lt[lt > 0])
    np.testing.assert_allclose(levels / (2 * voxel), np.round(levels / (2 * voxel)))  # 2js
    assert len(frac) <= 50 and frac.sum() == pytest.approx(1.0)
    width = np.diff(edges[1:])
    assert np.allclose(width, width[0]) and width[0] % (2 * voxel) == pytest.approx(0, abs=1e-6)
    if width[0] == 2 * voxel:  # one level per bin: the histogram is the level counts
        counts = np.array([(lt == lv).sum() for lv in levels]) / (lt > 0).sum()
        assert np.count_nonzero(frac) == len(levels)
        np.testing.assert_allclose(np.sort(frac[frac > 0]), np.sort(counts))
    # no level sits on an edge
    assert not np.isin(levels, edges).any()
