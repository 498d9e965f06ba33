"""The labelling loop without a screen: uncertainty, suggestions, painted labels in the
store, training from them, and pyramid levels (equal to a direct downsample, resumable)."""

import json
import os
import signal
import subprocess
import sys

import dask.array as da
import numpy as np
import pytest

import bigvol as bv
from bigvol import stages
from bigvol.cli import main
from bigvol.errors import ConfigError, InputError
from bigvol.pyramid import downsample, n_levels
from bigvol.store import TRAIN_LABELS, Run


def _probabilities(shape=(8, 24, 20), unsure=(5,), seed=0):
    """Confident probabilities, except slices ``unsure`` which are nearly uniform."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([0.2, 0.2, 0.2], size=shape).transpose(3, 0, 1, 2)
    for z in unsure:
        p[:, z] = rng.dirichlet([50, 50, 50], size=shape[1:]).transpose(2, 0, 1)
    return p.astype(np.float32)


@pytest.mark.parametrize("chunks", [(3, 1, 7, 5), (3, 8, 24, 20), (1, 3, 5, 4)])
def test_uncertainty_equals_the_formulas_whatever_the_chunks(chunks):
    p = _probabilities()
    x = da.from_array(p, chunks=chunks)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0).sum(0) / np.log(3)
    s = np.sort(p, axis=0)
    np.testing.assert_allclose(bv.segment.uncertainty(x).compute(), h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bv.segment.uncertainty(x, method="margin").compute(),
                               1 - (s[-1] - s[-2]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="method"):
        bv.segment.uncertainty(x, method="variance")
    with pytest.raises(InputError, match="classes >= 2"):
        bv.segment.uncertainty(p[0])


def test_suggest_ranks_the_slice_with_injected_uncertainty_first(tmp_path, capsys):
    p = _probabilities(unsure=(5,))
    u = bv.segment.uncertainty(p)
    assert bv.segment.suggest_slices(u, 1) == [5]
    # through the run and the command: probabilities -> uncertainty stage -> suggestion
    run = Run.create(tmp_path / "r.zarr")
    run.write("raw", np.zeros(p.shape[1:], np.uint8))
    run.write("probabilities", p.astype(np.float16), fingerprint="p")
    assert main(["suggest", str(tmp_path / "r.zarr"), "--n", "2", "--spacing", "1"]) == 0
    out = capsys.readouterr().out
    assert "label next: slice 5 " in out
    # a labelled slice is never suggested again
    run.write_label_slices({5: np.zeros(p.shape[2:], np.uint8)})
    picked, _, again = stages.suggest(run, 3, spacing=0)
    assert 5 not in picked and again.skipped  # the uncertainty is not computed twice
    with pytest.raises(ConfigError, match="probabilities first"):
        stages.uncertainty(Run.create(tmp_path / "none.zarr"))


def test_painted_labels_are_stored_and_trained_on(tmp_path, capsys):
    img, truth = bv.synth.phantom((8, 64, 64), seed=2, voxel_size=(50, 30, 30), am_d50_um=0.6)
    path = tmp_path / "r.zarr"
    run = Run.create(path, voxel_size=(50, 30, 30))
    run.write("raw", img)
    run.write("truth", truth)
    lab = truth[3].compute().copy()
    lab[:, 48:] = 255  # three quarters of a slice painted
    assert stages.save_labels(run, {3: lab}) == [3]
    d1 = run.fingerprint_of(TRAIN_LABELS)
    assert stages.save_labels(run, {6: truth[6].compute()}) == [3, 6]
    assert run.fingerprint_of(TRAIN_LABELS) != d1
    np.testing.assert_array_equal(run.zarr_array(TRAIN_LABELS)[3], lab)
    assert (run.zarr_array(TRAIN_LABELS)[0] == 255).all()
    # erasing a whole slice removes it from the labelled ones
    assert stages.save_labels(run, {6: np.full((64, 64), 255, np.uint8)}) == [3]
    with pytest.raises(InputError, match="shape"):
        stages.save_labels(run, {1: np.zeros((5, 5), np.uint8)})
    argv = ["train", str(path), "--labels", "store", "--preset", "tiny", "--epochs", "1",
            "--steps-per-epoch", "2", "--crop", "32", "--quiet"]
    assert main(argv) == 0
    model = bv.segment.Model.load(run.paths["model"])
    assert model.record["slices"] == [3]
    assert model.record["class_pixel_counts"] == np.bincount(
        lab[lab != 255], minlength=3).tolist()
    capsys.readouterr()
    assert main(argv) == 0 and "nothing to do" in capsys.readouterr().out
    stages.save_labels(run, {5: truth[5].compute()})  # new paint: trains again
    assert main(argv) == 0 and "nothing to do" not in capsys.readouterr().out


def test_train_stops_when_the_callback_says_so():
    img, truth = bv.synth.phantom((6, 48, 48), seed=1, am_d50_um=0.6)
    seen = []
    model = bv.segment.train(img, truth[[1, 4]], slices=[1, 4], preset="tiny", epochs=3,
                             steps_per_epoch=5, crop=32, batch_size=2, progress=False,
                             callback=lambda p: seen.append(p["step"]) or p["step"] >= 3)
    assert seen == [1, 2, 3] and model.record["stopped"] == "stopped"


def _direct_levels(a, labels, levels):
    """Pyramid levels by hand, whole arrays in memory: the reference."""
    out = []
    for _ in range(levels):
        z, y, x = a.shape
        b = a[:, : y // 2 * 2, : x // 2 * 2].reshape(z, y // 2, 2, x // 2, 2)
        b = b.transpose(0, 1, 3, 2, 4).reshape(z, y // 2, x // 2, 4)
        if labels:
            vals = np.stack([(b == b[..., [i]]).sum(-1) for i in range(4)], -1)
            key = vals.astype(np.int64) * 1000 - b
            a = np.take_along_axis(b, key.argmax(-1)[..., None], -1)[..., 0]
        else:
            a = np.clip(np.rint(b.mean(-1)), 0, 255).astype(np.uint8)
        out.append(a)
    return out


@pytest.mark.parametrize("chunks", [(2, 16, 16), (3, 7, 13), (5, 70, 45)])
def test_pyramid_levels_equal_a_direct_downsample(tmp_path, chunks):
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 256, (5, 70, 45), dtype=np.uint8)
    seg = rng.integers(0, 3, (5, 70, 45), dtype=np.uint8)
    run = Run.create(tmp_path / "r.zarr", voxel_size=(50, 30, 30))
    run.write("raw", raw, chunks=chunks)
    run.write("segmentation", seg, chunks=chunks)
    assert n_levels(raw.shape, 16) == 3
    for name, a, labels in (("raw", raw, False), ("segmentation", seg, True)):
        out = stages.pyramid(run, name, min_size=16)
        assert out.results["levels"] == 3
        for level, ref in enumerate(_direct_levels(a, labels, 3), start=1):
            np.testing.assert_array_equal(run.zarr_array(f"pyramids/{name}/{level}")[...], ref)
        assert stages.pyramid(run, name, min_size=16).skipped
    ome = {m["name"]: m for m in run.group.attrs["ome"]["multiscales"]}
    ds = ome["segmentation"]["datasets"]
    assert [d["path"] for d in ds] == ["segmentation"] + [f"pyramids/segmentation/{i}"
                                                          for i in (1, 2, 3)]
    assert ds[2]["coordinateTransformations"][0]["scale"] == [0.05, 0.12, 0.12]
    # a label level holds only codes that occur below it
    assert set(np.unique(run.zarr_array("pyramids/segmentation/3")[...])) <= {0, 1, 2}
    np.testing.assert_array_equal(downsample(da.from_array(seg, chunks=(1, 1, 1)),
                                             labels=True).compute(), _direct_levels(seg, True, 1)[0])


@pytest.mark.slow
def test_pyramid_resumes_after_sigkill(tmp_path):
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 256, (6, 96, 80), dtype=np.uint8)
    path = tmp_path / "r.zarr"
    Run.create(path).write("raw", raw, chunks=(2, 16, 16))
    marker = tmp_path / "killed"
    code = ("from bigvol import stages; from bigvol.store import Run; "
            f"stages.pyramid(Run.open({str(path)!r}, mode='r+'), 'raw', min_size=16)")
    env = {**os.environ, "BIGVOL_FAULT_KILL": f"pyramids/raw/1:4:{marker}"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL and marker.exists()
    run = Run.open(path, mode="r+")
    assert not run.is_complete("pyramids/raw/1")
    stages.pyramid(run, "raw", min_size=16)
    for level, ref in enumerate(_direct_levels(raw, False, 3), start=1):
        np.testing.assert_array_equal(run.zarr_array(f"pyramids/raw/{level}")[...], ref)


def test_bigvol_run_trains_on_painted_labels_and_writes_pyramids(tmp_path):
    img, truth = bv.synth.phantom((6, 72, 72), seed=3, am_d50_um=0.6)
    path = tmp_path / "r.zarr"
    run = Run.create(path, voxel_size=(50, 30, 30))
    run.write("raw", img)
    run.write("truth", truth)
    stages.save_labels(run, {1: truth[1].compute(), 4: truth[4].compute()})
    cfg = {"run": str(path), "input": {"source": None},
           "segment": {"train": {"labels": "store", "options": {
               "preset": "tiny", "epochs": 1, "steps_per_epoch": 2, "crop": 32,
               "batch_size": 2}}, "probabilities": True},
           "analyze": {"thickness_phases": [], "tortuosity": {"enabled": False}},
           "report": {"enabled": False}, "pyramids": {"min_size": 32}}
    from bigvol.config import load_config
    from bigvol.pipeline import Pipeline

    p = Pipeline(load_config(cfg), progress=False)
    p.stage_normalize()
    p.stage_pyramids("raw", "normalized")
    p.stage_train()
    p.stage_segment()
    p.stage_pyramids("segmentation")
    p.stage_evaluate()
    run = Run.open(path)
    assert run.stage("train")["parameters"]["slices"] == [1, 4]
    assert run.is_complete("uncertainty")
    assert [run.zarr_array(p).shape for p in run.pyramid_levels("segmentation")] == [
        (6, 36, 36), (6, 18, 18)]
    ev = run.stage("evaluate")["results"]
    assert ev["scored_slices"] == [0, 2, 3, 5]  # not the painted slices
    json.dumps(ev)
