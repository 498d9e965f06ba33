"""bigvol.label: chunked connected components equal scipy.ndimage.label for any chunking."""

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

import bigvol as bv
import bigvol._label as bl
from bigvol.cli import main
from bigvol.errors import ConfigError, InputError
from bigvol.store import Run

STRUCTURE = {6: 1, 18: 2, 26: 3}  # scipy's generate_binary_structure(3, rank)
SHAPE = (13, 17, 19)
# uneven chunkings (none divides the shape), size-1 chunks along each axis, one chunk
CHUNKINGS = [(4, 5, 6), (5, 7, 3), (1, 17, 19), (13, 1, 8), (6, 9, 1), SHAPE]


def scipy_label(mask, connectivity):
    return ndi.label(mask, ndi.generate_binary_structure(3, STRUCTURE[connectivity]))


def assert_equivalent(labels, ref):
    """Same partition: background equal, and the id pairs form a one-to-one mapping."""
    assert labels.shape == ref.shape
    np.testing.assert_array_equal(labels == 0, ref == 0)
    pairs = np.unique(np.stack([labels[ref > 0], ref[ref > 0]], 1).astype(np.int64), axis=0)
    assert len(np.unique(pairs[:, 0])) == len(pairs)
    assert len(np.unique(pairs[:, 1])) == len(pairs)


def random_mask(shape, density, seed):
    return np.random.default_rng(seed).random(shape) < density


def blob_mask(shape, seed, sigma=2.0, fraction=0.45):
    f = ndi.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return f > np.quantile(f, 1 - fraction)


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("kind", ["random", "blobs"])
def test_label_equals_scipy(kind, chunks, connectivity):
    mask = random_mask(SHAPE, 0.3, 1) if kind == "random" else blob_mask(SHAPE, 2)
    ref, n_ref = scipy_label(mask, connectivity)
    labels, n = bv.label(da.from_array(mask, chunks=chunks), connectivity=connectivity)
    assert isinstance(n, int) and n == n_ref
    assert labels.dtype == np.uint32 and labels.chunks == da.from_array(mask, chunks=chunks).chunks
    out = labels.compute()
    assert_equivalent(out, ref)
    np.testing.assert_array_equal(np.unique(out), np.arange(n + 1))  # consecutive 1..n


def test_diagonal_contacts_across_chunk_edges_and_corners():
    # pairs of voxels that touch only across chunk boundaries (chunks of 3: boundary 2|3)
    m = np.zeros((6, 6, 6), bool)
    m[2, 2, 2] = m[3, 3, 3] = True  # by a corner, across the corner of 8 chunks
    m[0, 2, 3] = m[0, 3, 2] = True  # by an edge, across a y/x chunk edge
    m[2, 2, 0] = m[3, 3, 0] = True  # by an edge, across a z/y chunk edge
    m[5, 5, 2] = m[5, 5, 3] = True  # by a face, across an x chunk face
    for conn, expected in ((6, 7), (18, 5), (26, 4)):
        ref, n_ref = scipy_label(m, conn)
        assert n_ref == expected
        labels, n = bv.label(da.from_array(m, chunks=3), connectivity=conn)
        assert n == expected
        assert_equivalent(labels.compute(), ref)


@pytest.mark.parametrize("connectivity", [6, 26])
def test_multiphase_labels_each_value_and_never_crosses_phases(connectivity):
    rng = np.random.default_rng(3)
    phases = rng.choice(np.array([0, 1, 2], np.uint8), size=SHAPE, p=[0.3, 0.35, 0.35])
    ref = np.zeros(SHAPE, np.int64)
    n_ref = 0
    for v in (1, 2):
        lab, k = scipy_label(phases == v, connectivity)
        ref[lab > 0] = lab[lab > 0] + n_ref
        n_ref += k
    labels, n = bv.label(da.from_array(phases, chunks=(4, 5, 6)), connectivity=connectivity)
    assert n == n_ref
    assert_equivalent(labels.compute(), ref)


def test_numpy_input_bool_and_integer_binary_agree():
    m = blob_mask(SHAPE, 4)
    a, na = bv.label(m)
    b, nb = bv.label(da.from_array(m.astype(np.int16), chunks=5))
    assert na == nb
    assert_equivalent(a.compute(), b.compute())


def test_empty_and_full_volumes():
    labels, n = bv.label(da.zeros((5, 6, 7), dtype=bool, chunks=3))
    assert n == 0 and not labels.compute().any()
    labels, n = bv.label(da.ones((5, 6, 7), dtype=bool, chunks=(2, 4, 3)), connectivity=6)
    assert n == 1 and (labels.compute() == 1).all()
    labels, n = bv.label(np.zeros((0, 4, 4), bool))
    assert n == 0 and labels.shape == (0, 4, 4)


def test_each_chunk_is_labelled_once_per_pass(monkeypatch):
    calls = []
    real = bl._cc

    def counting(block, *args):
        calls.append(block.shape)
        return real(block, *args)

    monkeypatch.setattr(bl, "_cc", counting)
    mask = da.from_array(blob_mask((24, 30, 28), 5), chunks=(8, 10, 7))
    nchunks = int(np.prod(mask.numblocks))
    with dask.config.set(scheduler="threads"):
        labels, n = bv.label(mask)
        assert len(calls) == nchunks  # the tables pass: once per chunk, no re-runs
        out = labels.compute()
    assert len(calls) == 2 * nchunks  # the relabel pass: once more per chunk
    ref, n_ref = scipy_label(mask.compute(), 26)
    assert n == n_ref
    assert_equivalent(out, ref)
    calls.clear()
    with dask.config.set(scheduler="threads"):
        iso = bv.metrics.isolated_fraction(mask.astype(np.uint8) * 2, 2)
        t = bv.metrics.percolation(mask)
    assert len(calls) == 2 * nchunks  # the metrics: one labelling per chunk each
    assert 0 <= iso <= 1 and t["n_components"][3] == n_ref  # rows of phase 1 (True)


def test_relabel_by_numpy_lookup_for_many_labels(monkeypatch):
    # chunks with more than _FASTREMAP_MAX local labels are relabelled by a numpy lookup
    monkeypatch.setattr(bl, "_FASTREMAP_MAX", 3)
    mask = random_mask(SHAPE, 0.3, 9)
    ref, n_ref = scipy_label(mask, 6)
    labels, n = bv.label(da.from_array(mask, chunks=(5, 7, 6)), connectivity=6)
    assert n == n_ref
    assert_equivalent(labels.compute(), ref)


def test_input_is_not_modified():
    m = blob_mask(SHAPE, 6).astype(np.uint8) * 2
    before = m.copy()
    bv.label(m)[0].compute()
    bv.metrics.percolation(m)
    np.testing.assert_array_equal(m, before)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.tuples(*[st.integers(1, 9)] * 3),
    chunks=st.tuples(*[st.integers(1, 5)] * 3),
    density=st.floats(0.05, 0.8),
    connectivity=st.sampled_from([6, 18, 26]),
    seed=st.integers(0, 2**16),
)
def test_label_property_any_chunking(shape, chunks, density, connectivity, seed):
    mask = random_mask(shape, density, seed)
    ref, n_ref = scipy_label(mask, connectivity)
    labels, n = bv.label(da.from_array(mask, chunks=chunks), connectivity=connectivity)
    assert n == n_ref
    assert_equivalent(labels.compute(), ref)


# -- bad input ----------------------------------------------------------------------------
def test_float_mask_is_refused():
    with pytest.raises(InputError, match="mask must be boolean or integer.*float64"):
        bv.label(np.zeros((3, 3, 3)))


@pytest.mark.parametrize("connectivity", [4, 8, 0, True, 26.0, "26"])
def test_bad_connectivity_is_refused(connectivity):
    with pytest.raises(ConfigError, match="connectivity must be 6, 18 or 26"):
        bv.label(np.zeros((3, 3, 3), bool), connectivity=connectivity)


def test_non_3d_mask_is_refused():
    with pytest.raises(InputError, match=r"3-D \(z, y, x\).*\(4, 4\)"):
        bv.label(np.zeros((4, 4), bool))


# -- run store and CLI ----------------------------------------------------------------------
@pytest.fixture
def run_with_segmentation(tmp_path):
    rng = np.random.default_rng(7)
    f = ndi.gaussian_filter(rng.random((12, 20, 18)), 1.5)
    seg = np.digitize(f, np.quantile(f, [0.3, 0.6])).astype(np.uint8)
    run = Run.create(tmp_path / "run.zarr", voxel_size=(50, 30, 30))
    run.write("segmentation", da.from_array(seg, chunks=(5, 7, 6)))
    return run, seg


def test_write_labels_all_and_one_phase(run_with_segmentation):
    run, seg = run_with_segmentation
    name, n = bl.write_labels(run, "all", connectivity=18)
    assert name == "labels/all"
    out = run.read(name).compute()
    ref = np.zeros(seg.shape, np.int64)
    n_ref = 0
    for v in (0, 1, 2):
        lab, k = scipy_label(seg == v, 18)
        ref[lab > 0] = lab[lab > 0] + n_ref
        n_ref += k
    assert n == n_ref and out.min() >= 1  # every voxel, pores included, is labelled
    assert_equivalent(out, ref)
    name, n = bl.write_labels(run, "active material")
    assert name == "labels/active_material"
    ref, n_ref = scipy_label(seg == 2, 26)
    assert n == n_ref
    assert_equivalent(run.read(name).compute(), ref)
    assert run.group[name].chunks == run.group["segmentation"].chunks
    assert run.group[name].attrs["n_components"] == n


def test_cli_label(run_with_segmentation, capsys):
    run, seg = run_with_segmentation
    assert main(["label", str(run.path), "--phase", "0", "--connectivity", "6"]) == 0
    ref, n_ref = scipy_label(seg == 0, 6)
    assert_equivalent(Run.open(run.path).read("labels/pore").compute(), ref)
    assert str(n_ref) in capsys.readouterr().out
    assert main(["label", str(run.path), "--phase", "carbon"]) == 2
    assert "phase must be a phase code" in capsys.readouterr().err


# -- a real cluster gives the same answers as threads ------------------------------------
@pytest.mark.slow
def test_distributed_cluster_same_as_threads(tmp_path):
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(8)
    f = ndi.gaussian_filter(rng.random((16, 24, 20)), 1.5)
    seg = np.digitize(f, np.quantile(f, [0.3, 0.6])).astype(np.uint8)
    z = zarr.create_array(tmp_path / "seg.zarr", shape=seg.shape, chunks=(5, 9, 7), dtype="u1")
    z[:] = seg
    phases = da.from_zarr(str(tmp_path / "seg.zarr"))

    def everything():
        labels, n = bv.label(phases == 2)
        return (
            labels.compute(), n,
            bv.metrics.component_table(phases, 1, voxel_size=(50, 30, 30)),
            bv.metrics.isolated_fraction(phases, 2, axis=1),
            bv.metrics.percolation(phases, connectivity=6),
            bv.metrics.volume_fractions(phases),
        )

    threaded = everything()
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster, distributed.Client(cluster):
        clustered = everything()
    np.testing.assert_array_equal(clustered[0], threaded[0])
    assert clustered[1] == threaded[1]
    for k in threaded[2]:
        np.testing.assert_array_equal(clustered[2][k], threaded[2][k])
    assert clustered[3:] == threaded[3:]
    ref, n_ref = scipy_label(seg == 2, 26)
    assert threaded[1] == n_ref
    assert_equivalent(threaded[0], ref)
