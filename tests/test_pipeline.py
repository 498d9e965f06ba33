"""The whole pipeline: resumable after a SIGKILL, the same on every scheduler, clear errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from bigvol.cli import main
from bigvol.pipeline import output_paths, run
from bigvol.store import Run

# Small and quick: threshold segmentation, no tortuosity solve (tested in the metrics tests).
BASE = {
    "input": {"phantom": {"shape": [12, 80, 96], "seed": 3}},
    "segment": {"method": "threshold"},
    "analyze": {"thickness_phases": [1], "tortuosity": {"enabled": False}, "write_labels": True},
    "compute": {"chunks": [4, 40, 48]},
}
ARRAYS = ("raw", "truth", "normalized", "segmentation", "threshold", "thickness/solid electrolyte",
          "labels/all")


def _cfg(path, **over):
    cfg = json.loads(json.dumps(BASE))
    cfg["run"] = str(path)
    for k, v in over.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


def _metrics(run_path):
    m = json.loads(output_paths(run_path)["metrics_json"].read_text())
    for k in ("run", "timings_s"):
        m.pop(k, None)
    return m


def _arrays(run_path):
    r = Run.open(run_path)
    return {name: r.zarr_array(name)[...] for name in ARRAYS if name in r}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    run(_cfg(path), progress=False)
    return path, _arrays(path), _metrics(path)


def _assert_same(path, reference):
    _, arrays, metrics = reference
    got = _arrays(path)
    assert set(got) == set(arrays)
    for name in arrays:
        np.testing.assert_array_equal(got[name], arrays[name], err_msg=name)
    assert _metrics(path) == metrics


@pytest.mark.slow
def test_run_writes_every_output_and_skips_when_up_to_date(reference, tmp_path):
    path, arrays, metrics = reference
    paths = output_paths(path)
    assert all(paths[k].exists() for k in ("metrics_json", "metrics_csv", "report"))
    assert set(arrays) == set(ARRAYS)
    # the thickness pass's distance maps, written beside the run, are gone
    assert not (path.parent / f"{path.name}.scratch").exists()
    assert list(path.parent.glob("*.scratch")) == []
    assert 0 < metrics["volume_fractions"]["active material"] < 1
    assert metrics["evaluation"]["threshold"]["accuracy"] > 0.5
    r = Run.open(path)
    before = {k: v["completed_at"] for k, v in r.stages.items()}
    from bigvol.config import load_config
    from bigvol.pipeline import Pipeline

    p = Pipeline(load_config(_cfg(path)), progress=False)
    p.run_all()
    assert p.ran == [] and set(p.skipped) >= {"synth", "normalize", "segment", "threshold", "analyze"}
    assert {k: v["completed_at"] for k, v in Run.open(path).stages.items()} == before


def _run_in_subprocess(cfg, env_extra, tmp_path):
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    code = (
        "import json, sys; from bigvol.pipeline import run; "
        f"run(json.load(open({str(cfg_path)!r})), progress=False)"
    )
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("array, n", [("segmentation", 3), ("labels/all", 2)])
def test_sigkill_then_restart_equals_uninterrupted_run(reference, tmp_path, array, n):
    path = tmp_path / "killed.zarr"
    marker = tmp_path / "killed.marker"
    proc = _run_in_subprocess(_cfg(path), {"BIGVOL_FAULT_KILL": f"{array}:{n}:{marker}"}, tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert marker.exists()
    r = Run.open(path)
    assert not r.is_complete(array)  # the kill left it visibly incomplete
    flags = r.group[f"_progress/{array}"][...]
    assert 0 < flags.sum() < flags.size
    # restart: finishes from the chunks already written, identical to the uninterrupted run
    run(_cfg(path), progress=False)
    _assert_same(path, reference)


@pytest.mark.slow
def test_local_cluster_of_processes_gives_the_same_result(reference, tmp_path):
    path = tmp_path / "lc.zarr"
    run(_cfg(path, compute={"scheduler": "processes", "workers": 2, "threads_per_worker": 1}),
        progress=False)
    _assert_same(path, reference)


def _wait_for_port(proc, pattern, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        line = proc.stderr.readline()
        if pattern in line:
            return line
    raise TimeoutError(pattern)


@pytest.mark.slow
def test_scheduler_address_with_two_dask_workers(reference, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"tcp://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                               str(port), "--dashboard-address", ":0"],
                              stderr=subprocess.PIPE, text=True)]
    try:
        _wait_for_port(procs[0], "Scheduler at")
        for _ in range(2):
            procs.append(subprocess.Popen([str(bindir / "dask"), "worker", addr, "--nthreads", "1",
                                           "--no-dashboard"], stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(addr, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        path = tmp_path / "addr.zarr"
        assert main(["run", _write_yaml(_cfg(path), tmp_path), "--scheduler", addr, "--quiet"]) == 0
        _assert_same(path, reference)
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def _write_yaml(cfg, tmp_path):
    import yaml

    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


@pytest.mark.slow
def test_killed_worker_mid_stage_still_completes_identically(reference, tmp_path):
    from distributed import LocalCluster

    path = tmp_path / "wk.zarr"
    marker = tmp_path / "worker.marker"
    # the workers inherit the one-shot fault: the first to write 3 segmentation chunks dies
    os.environ["BIGVOL_FAULT_KILL"] = f"segmentation:3:{marker}"
    try:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
    finally:
        del os.environ["BIGVOL_FAULT_KILL"]
    try:
        run(_cfg(path, compute={"scheduler": cluster.scheduler_address}), progress=False)
    finally:
        cluster.close()
    assert marker.exists()  # a worker really was killed during the segmentation stage
    _assert_same(path, reference)


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys):
    # a missing input path
    cfg = {"run": str(tmp_path / "a.zarr"), "input": {"source": str(tmp_path / "nope")}}
    assert main(["run", _write_yaml(cfg, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err and err.strip().count("\n") == 0
    # a run store written by another program is refused, and left untouched
    foreign = tmp_path / "other.zarr"
    g = zarr.open_group(str(foreign), mode="w")
    g.create_array("raw", shape=(2, 2), dtype="u1")
    before = sorted(p.name for p in foreign.rglob("*"))
    assert main(["run", _write_yaml(_cfg(foreign), tmp_path)]) == 2
    assert "not a bigvol run store" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.rglob("*")) == before
    # an output folder that cannot be created (a file stands in its way)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    assert main(["run", _write_yaml(_cfg(blocker / "sub" / "r.zarr"), tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot create the run folder" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["run", _write_yaml(_cfg(ro / "r.zarr"), tmp_path)]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


@pytest.fixture
def small_fs(tmp_path):
    """A real 16 MiB file system (tmpfs) to fill up and to remount read-only."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root with CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_disk_full_and_read_only_file_system_keep_completed_stages(small_fs, tmp_path, capsys):
    path = small_fs / "r.zarr"
    assert main(["run", _write_yaml(_cfg(path), tmp_path), "--quiet"]) == 0
    done, arrays = Run.open(path).stages, _arrays(path)
    capsys.readouterr()
    # the pore thickness is new work for the analyze stage only
    more = _write_yaml(_cfg(path, analyze={"thickness_phases": [1, 0]}), tmp_path)

    def unchanged():
        after = Run.open(path).stages
        for stage in ("synth", "normalize", "segment", "evaluate"):
            assert after[stage] == done[stage]
        r = Run.open(path)
        for name in ("raw", "truth", "normalized", "segmentation", "threshold"):
            np.testing.assert_array_equal(r.zarr_array(name)[...], arrays[name])

    # disk full: a real ENOSPC from the file system
    fd = os.open(small_fs / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == 28
    finally:
        os.close(fd)
    assert main(["run", more, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "disk full" in err and "Traceback" not in err and err.strip().count("\n") == 0
    unchanged()
    # a read-only file system stops root too
    (small_fs / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    assert main(["run", more, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "read-only" in err and "Traceback" not in err and err.strip().count("\n") == 0
    unchanged()
    # space back, writable again: the run completes from where it stopped
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    assert main(["run", more, "--quiet"]) == 0
    unchanged()
    assert "thickness/pore" in Run.open(path)


@pytest.mark.slow
def test_failed_stage_keeps_completed_stages(reference, tmp_path):
    """A run whose segment stage fails (bad model path) keeps the stages done before it."""
    path = tmp_path / "keep.zarr"
    run(_cfg(path), progress=False)
    done = Run.open(path).stages
    with pytest.raises(Exception, match="no model"):
        run(_cfg(path, segment={"method": "segnet", "model": str(tmp_path / "missing.model")}),
            progress=False)
    after = Run.open(path).stages
    for stage in ("synth", "normalize"):
        assert after[stage] == done[stage]
    np.testing.assert_array_equal(Run.open(path).zarr_array("raw")[...], reference[1]["raw"])
    # the run log beside the store tells both runs: stages done, then skipped, then the failure
    lines = output_paths(path)["log"].read_text().splitlines()
    assert sum("run started" in x for x in lines) == 2
    for stage in ("synth", "normalize", "segment", "evaluate", "analyze"):
        assert any(f"stage {stage}: done in" in x for x in lines)
    assert any("stage synth: up to date, skipped" in x for x in lines)
    assert "run failed" in lines[-1] and "no model" in lines[-1]


@pytest.mark.slow
def test_bigvol_demo_runs_the_whole_method_at_a_tiny_size(tmp_path, capsys):
    """The README's `bigvol demo`, shrunk: phantom, normalize, train, segment, analyze, report."""
    out = tmp_path / "demo"
    rc = main([
        "demo", "--out", str(out), "--shape", "8", "64", "64", "--quiet",
        "--set", "segment.train.options={k: 3, epochs: 1, steps_per_epoch: 3, crop: 32, batch_size: 2}",
        "--set", "segment.probabilities=true",
        "--set", "compute.chunks=[4, 32, 32]",
    ])
    assert rc == 0
    printed = capsys.readouterr().out
    paths = output_paths(out / "demo.zarr")
    assert str(paths["report"]) in printed
    m = json.loads(paths["metrics_json"].read_text())
    assert set(m["evaluation"]) == {"segnet", "threshold"}
    assert 0 <= m["evaluation"]["segnet"]["accuracy"] <= 1
    assert len(m["evaluation"]["segnet"]["accuracy_per_slice"]) == 8
    r = Run.open(out / "demo.zarr")
    probs = r.zarr_array("probabilities")[...]
    assert probs.shape == (3, 8, 64, 64) and probs.dtype == np.float16
    np.testing.assert_array_equal(probs.argmax(axis=0), r.zarr_array("segmentation")[...])
    assert r.stage("train")["results"]["slices"] == [1, 3, 5, 7]
    html = paths["report"].read_text()
    assert html.count("data:image/png;base64,") >= 5
