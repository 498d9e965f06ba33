"""``bigvol info RUN.zarr``: in-process through ``bigvol.cli.main`` and as the console script."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from bigvol.cli import main
from bigvol.store import Run


@pytest.fixture
def run_path(tmp_path):
    """A store with an ingested raw array, a complete and an incomplete array, two stages."""
    a = (np.arange(6 * 20 * 30) % 251).astype(np.uint8).reshape(6, 20, 30)
    tifffile.imwrite(tmp_path / "stack.tif", a, photometric="minisblack")
    path = tmp_path / "run.zarr"
    assert main(["ingest", str(tmp_path / "stack.tif"), str(path),
                 "--voxel-size", "50", "30", "30", "--chunks", "4", "16", "16"]) == 0
    run = Run.open(path, mode="r+")
    run.write("segmentation", da.zeros((6, 20, 30), dtype=np.uint8, chunks=(6, 20, 30)))
    run.record_stage("segment", parameters={"method": "threshold"}, fingerprint="abc")
    run.create_array("normalized", shape=(6, 20, 30), dtype=np.uint8, chunks=(6, 10, 10))
    return path


def _check_text(out: str, path: Path):
    lines = out.splitlines()
    assert lines[0].split() == ["run", "store", str(path)]
    assert "voxel size   50 x 30 x 30 nm (z, y, x)" in out
    assert "phases       0=pore, 1=solid electrolyte, 2=active material" in out
    raw = next(ln for ln in lines if ln.strip().startswith("raw "))
    assert "(6, 20, 30) uint8" in raw and "chunks (4, 16, 16)" in raw
    assert "INCOMPLETE" not in raw
    norm = next(ln for ln in lines if ln.strip().startswith("normalized "))
    assert "chunks (6, 10, 10)" in norm and norm.endswith("INCOMPLETE")
    size_line = next(ln for ln in lines if ln.startswith("size on disk"))
    assert size_line.split()[-1] in ("B", "KiB", "MiB")
    stages = lines[lines.index("completed stages:") + 1:]
    assert [s.split()[0] for s in stages] == ["ingest", "segment"]


def test_info_text(run_path, capsys):
    assert main(["info", str(run_path)]) == 0
    _check_text(capsys.readouterr().out, run_path)


def test_info_json_matches_store(run_path, capsys):
    assert main(["info", str(run_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["voxel_size_nm"] == [50.0, 30.0, 30.0]
    assert info["arrays"]["raw"] | {"bytes_on_disk": 0} == {
        "shape": [6, 20, 30], "dtype": "uint8", "chunks": [4, 16, 16], "complete": True,
        "bytes_on_disk": 0}
    assert info["arrays"]["normalized"]["complete"] is False
    total = sum(f.stat().st_size for f in run_path.rglob("*") if f.is_file())
    assert info["bytes_on_disk"] == total
    assert set(info["stages"]) == {"ingest", "segment"}


def test_info_unknown_voxel_size_and_no_stages(tmp_path, capsys):
    Run.create(tmp_path / "empty.zarr")
    assert main(["info", str(tmp_path / "empty.zarr")]) == 0
    out = capsys.readouterr().out
    assert "voxel size   unknown" in out and "completed stages: none" in out


def test_info_errors_are_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"bigvol info: error: no run store at {tmp_path / 'nothing.zarr'}"
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    assert main(["info", str(tmp_path / "foreign.zarr")]) == 2
    err = capsys.readouterr().err
    assert "not a bigvol run store" in err and "Traceback" not in err


def _console_script() -> str:
    exe = Path(sys.executable).parent / ("bigvol.exe" if os.name == "nt" else "bigvol")
    found = str(exe) if exe.exists() else shutil.which("bigvol")
    if found is None:
        pytest.fail("the bigvol console script is not installed (pip install -e .)")
    return found


@pytest.mark.slow
def test_info_console_script(run_path):
    exe = _console_script()
    res = subprocess.run([exe, "info", str(run_path)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    _check_text(res.stdout, run_path)
    res = subprocess.run([exe, "info", str(run_path / "missing")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2
    assert "error: no run store at" in res.stderr and "Traceback" not in res.stderr
