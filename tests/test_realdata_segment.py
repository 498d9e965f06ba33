"""Segmentation of real greyscale with any number of classes, from a few labelled slices.

Small crops of the real stacks in ../shared/realdata (ISBI 2012 TEM: membrane / interior;
EPFL FIB-SEM: background / membrane / mitochondrion / vesicle; SegmentPy nano-CT: three
phases on slices of different shapes) go through the same ``bv.segment.train`` /
``predict`` / ``bigvol run`` path as the phantom. The accuracy figures on whole slices are
in benchmarks/bench_realdata.py; here a short, seeded, float32 training must beat the
majority class on slices it did not see, and names and codes must travel.
"""

import json

import numpy as np
import pytest
import tifffile
import yaml

torch = pytest.importorskip("torch")

import bigvol as bv  # noqa: E402
from bigvol.errors import InputError  # noqa: E402
from bigvol.segment.infer import whole_slices  # noqa: E402

SMALL = {"widths": (8, 16, 32), "convs": (1, 1, 1), "crop": 96, "batch_size": 4, "amp": False,
             "progress": False, "validation": None}


def _isbi(realdata):
    raw = tifffile.imread(realdata / "em" / "isbi2012_raw_00-19.tif")[:8, :160, :160]
    lab = tifffile.imread(realdata / "em" / "isbi2012_label_00-19.tif")[:8, :160, :160]
    return raw, lab


def _epfl4(realdata):
    d = realdata / "fibsem"
    sl = (slice(0, 6), slice(224, 416), slice(384, 576))  # a crop holding all four classes
    raw = tifffile.imread(d / "epfl_train27_raw.tif")[sl]
    lab = np.zeros(raw.shape, np.uint8)
    lab[tifffile.imread(d / "epfl_train27_label_membranes.tif")[sl] > 0] = 1
    lab[tifffile.imread(d / "epfl_train27_label_mito.tif")[sl] > 0] = 2
    lab[tifffile.imread(d / "epfl_train27_label_vesicles.tif")[sl] > 0] = 3
    return raw, lab


def test_two_classes_with_adjacent_slices_on_isbi(realdata, tmp_path):
    raw, lab = _isbi(realdata)
    model = bv.segment.train(raw, lab[[2, 5]], slices=[2, 5], k=3, classes=["membrane", "interior"],
                             epochs=4, steps_per_epoch=15, **SMALL)
    assert model.classes == ["membrane", "interior"] and model.n_classes == 2 and model.k == 3
    model = bv.segment.Model.load(model.save(tmp_path / "isbi.safetensors"))
    assert model.classes == ["membrane", "interior"]
    pred = bv.segment.predict(raw, model).compute()
    assert set(np.unique(pred)) <= {0, 1}
    held = [0, 1, 3, 4, 6, 7]
    acc = (pred[held] == lab[held]).mean()
    majority = max((lab[held] == c).mean() for c in (0, 1))
    assert acc > majority + 0.03, (acc, majority)
    np.testing.assert_array_equal(pred, whole_slices(raw, model))  # one tile per slice here


def test_four_classes_on_epfl_fibsem(realdata):
    raw, lab = _epfl4(realdata)
    assert set(np.unique(lab[[1, 4]])) == {0, 1, 2, 3}
    classes = ["background", "membrane", "mitochondrion", "vesicle"]
    model = bv.segment.train(raw[[1, 4]], lab[[1, 4]], classes=classes, epochs=4,
                             steps_per_epoch=15, **SMALL)
    assert model.classes == classes
    proba = bv.segment.predict(raw, model, tile=96, probabilities=True).compute()
    assert proba.shape == (4,) + raw.shape
    np.testing.assert_allclose(proba.astype(np.float32).sum(0), 1, atol=1e-2)
    pred = proba.argmax(0)
    held = [0, 2, 3, 5]
    acc = (pred[held] == lab[held]).mean()
    assert acc > (lab[held] == 0).mean() + 0.03, acc


def test_slices_of_different_shapes_train_one_model(realdata):
    d = realdata / "nanoct"
    groups = [(tifffile.imread(d / f"segmentpy_{s}_raw.tif"), tifffile.imread(d / f"segmentpy_{s}_label.tif"))
              for s in ("499x601", "500x500", "400x400")]
    imgs = [g[0][0, :150, :170] for g in groups[:2]] + [groups[2][0][0, :120, :130]]
    labs = [g[1][0, :150, :170] for g in groups[:2]] + [groups[2][1][0, :120, :130]]
    assert len({im.shape for im in imgs}) == 2
    model = bv.segment.train(imgs, labs, classes=["particle", "phase A", "phase B"], epochs=2,
                             steps_per_epoch=10, **SMALL)
    assert model.n_classes == 3 and model.record["steps"] == 20
    for raw, _ in groups:
        pred = bv.segment.predict(raw[1:2], model).compute()
        assert pred.shape == raw[1:2].shape and pred.max() <= 2


def test_a_label_code_outside_the_classes_is_one_clear_error(realdata):
    raw, lab = _isbi(realdata)
    bad = lab[[2]].copy()
    bad[0, :3, :3] = 2  # a third class in a two-class problem
    with pytest.raises(InputError, match=r"labels\[0\] holds codes \[2\].*\(0\.\.1\) nor 255"):
        bv.segment.train(raw[[2]], bad, classes=["membrane", "interior"], epochs=1,
                         steps_per_epoch=1, **SMALL)


@pytest.mark.slow
def test_bigvol_run_on_a_labelled_real_stack_scores_held_out_slices(realdata, tmp_path):
    raw, lab = _isbi(realdata)
    tifffile.imwrite(tmp_path / "raw.tif", raw)
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    cfg = {
        "run": str(tmp_path / "isbi.zarr"),
        "phases": ["membrane", "interior"],
        "input": {"source": str(tmp_path / "raw.tif"), "truth": str(tmp_path / "lab.tif"),
                  "voxel_size": [50, 4, 4]},
        "segment": {"train": {"labels": "truth", "slices": [2, 5],
                              "options": {"k": 3, "epochs": 2, "steps_per_epoch": 10,
                                          **{k: v for k, v in SMALL.items() if k != "progress"},
                                          "widths": [8, 16, 32], "convs": [1, 1, 1]}},
                    "tile": 96},
        "analyze": {"thickness_phases": [0], "tortuosity": {"enabled": False}},
        "compute": {"chunks": [4, 160, 160]},
    }
    (tmp_path / "isbi.yaml").write_text(yaml.safe_dump(cfg))
    path = bv.run(str(tmp_path / "isbi.yaml"), progress=False)
    m = json.loads((tmp_path / "isbi.metrics.json").read_text())
    assert m["phases"] == ["membrane", "interior"]
    assert m["evaluation"]["scored_slices"] == [0, 1, 3, 4, 6, 7]
    ev = m["evaluation"]["segnet"]
    per_slice = ev["accuracy_per_slice"]
    assert per_slice[2] is None and per_slice[5] is None  # trained on: not scored
    assert set(m["volume_fractions"]) == {"membrane", "interior"}
    model = bv.segment.Model.load(tmp_path / "isbi.model")
    assert model.classes == ["membrane", "interior"]
    html = (tmp_path / "isbi.report.html").read_text()
    assert "membrane" in html and "solid electrolyte" not in html
    assert bv.store.Run.open(path).phases == ["membrane", "interior"]
