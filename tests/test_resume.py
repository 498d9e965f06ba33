"""An interrupted chunked write resumes from the chunks already written, bit-identically."""

import threading
from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import numpy as np
import pytest

from bigvol.store import Run, StoreError


class _Flaky:
    """A per-block function that counts its calls and fails on chosen blocks."""

    def __init__(self, fail_at=()):
        self.fail_at = set(fail_at)
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, block, block_info=None):
        loc = tuple(block_info[0]["chunk-location"])
        with self.lock:
            self.calls.append(loc)
        if loc in self.fail_at:
            raise RuntimeError(f"killed at {loc}")
        return (block.astype(np.uint16) * 3 % 251).astype(np.uint8)


def _source():
    rng = np.random.default_rng(3)
    return rng.integers(0, 255, (9, 20, 30), dtype=np.uint8)


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_interrupted_write_resumes_only_missing_chunks(tmp_path, scheduler):
    src = _source()
    expected = (src.astype(np.uint16) * 3 % 251).astype(np.uint8)
    run = Run.create(tmp_path / "r.zarr")
    x = da.from_array(src, chunks=(4, 8, 16))  # grid 3 x 3 x 2 = 18 chunks
    flaky = _Flaky(fail_at={(2, 1, 1)})
    # an explicit pool, shut down after the failure: the chunks other threads were still
    # writing when the error came back are finished (and flagged) before they are counted
    pool = ThreadPoolExecutor(4)
    with dask.config.set(scheduler=scheduler, pool=pool):
        with pytest.raises(RuntimeError, match="killed"):
            run.write("seg", x.map_blocks(flaky, dtype=np.uint8), fingerprint="f1")
    pool.shutdown(wait=True)
    assert not run.is_complete("seg")
    with pytest.raises(StoreError, match="incomplete"):
        run.read("seg")
    done_before = int(run.group["_progress/seg"][...].sum())
    assert 0 < done_before < 18

    again = _Flaky()
    with dask.config.set(scheduler=scheduler):
        run.write("seg", x.map_blocks(again, dtype=np.uint8), fingerprint="f1")
    assert len(again.calls) == 18 - done_before  # finished chunks are not recomputed
    assert run.is_complete("seg") and "_progress/seg" not in run
    np.testing.assert_array_equal(run.read("seg").compute(), expected)


def test_other_fingerprint_restarts_from_scratch(tmp_path):
    src = _source()
    run = Run.create(tmp_path / "r.zarr")
    x = da.from_array(src, chunks=(4, 8, 16))
    with pytest.raises(RuntimeError):
        run.write("seg", x.map_blocks(_Flaky({(0, 0, 0)}), dtype=np.uint8), fingerprint="f1")
    again = _Flaky()
    run.write("seg", x.map_blocks(again, dtype=np.uint8), fingerprint="f2")
    assert len(again.calls) == 18
    np.testing.assert_array_equal(run.read("seg").compute(), (src.astype(np.uint16) * 3 % 251).astype(np.uint8))


def test_write_rechunks_to_store_chunks_without_loss(tmp_path):
    src = _source()
    run = Run.create(tmp_path / "r.zarr")
    # dask chunks that straddle the store's chunks: unaligned writes would lose data
    arr = run.write("raw", da.from_array(src, chunks=(2, 7, 11)), chunks=(4, 8, 16))
    assert arr.chunks == (4, 8, 16)
    np.testing.assert_array_equal(arr[...], src)
