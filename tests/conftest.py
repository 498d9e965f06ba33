import os
from pathlib import Path

import dask
import pytest

# Tests run on 2 cores: keep dask and torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _sync_free_dask_config():
    with dask.config.set({"scheduler": "threads", "num_workers": 2}):
        yield


#: Real third-party volumes (../shared/realdata beside the project; its README gives their
#: sources and licences). Tests that read them skip cleanly where the folder is absent.
REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


@pytest.fixture
def realdata():
    """The path of ``../shared/realdata``; skips the test where it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data not found at {REALDATA} (../shared/realdata beside the project)")
    return REALDATA
