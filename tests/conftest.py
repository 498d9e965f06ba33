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


@pytest.fixture(scope="session")
def display():
    """An X display for the Qt tests: the one set, else a private Xvfb (Debian's xvfb).

    napari draws with OpenGL, which Qt's offscreen platform lacks; Xvfb with Mesa's
    software renderer has it. Skips with the reason when neither napari nor Xvfb is here.
    """
    import shutil
    import subprocess
    import time

    pytest.importorskip("napari", reason="the viewer extra is not installed: pip install "
                        '"bigvol[viewer]"')
    if os.environ.get("DISPLAY"):
        return os.environ["DISPLAY"]
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no X display and no Xvfb (apt-get install xvfb)")
    for n in range(90, 110):
        if not os.path.exists(f"/tmp/.X{n}-lock"):
            break
    # -terminate: the server ends when its last client (this test process) disconnects;
    # stopping it earlier would break Qt's connection and make Qt exit the process
    subprocess.Popen([xvfb, f":{n}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp",
                      "-terminate"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    for _ in range(100):
        if os.path.exists(f"/tmp/.X11-unix/X{n}"):
            break
        time.sleep(0.05)
    os.environ["DISPLAY"] = f":{n}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    return os.environ["DISPLAY"]
