import os

import dask
import pytest

# Tests run on 2 cores: keep dask and torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _sync_free_dask_config():
    with dask.config.set({"scheduler": "threads", "num_workers": 2}):
        yield
