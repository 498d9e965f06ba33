"""The random-forest segmenter (``segment.method: forest``): equal to the ilastik-style recipe
done by hand with scikit-image and scikit-learn, chunk-exact, a model file without pickle,
and the same train / segment / run path as the SegNet."""

import json

import dask.array as da
import numpy as np
import pytest
from skimage.feature import multiscale_basic_features
from sklearn.ensemble import RandomForestClassifier

import bigvol as bv
from bigvol.errors import BigvolError, ConfigError, InputError
from bigvol.segment import forest as F


@pytest.fixture(scope="module")
def stack():
    img, truth = bv.synth.phantom((10, 96, 112), seed=5)
    return np.asarray(img), np.asarray(truth)


@pytest.fixture(scope="module")
def model(stack):
    img, truth = stack
    return bv.segment.train_forest(img, truth[[2, 7]], slices=[2, 7], k=3, n_trees=12,
                                   max_pixels=6000, seed=1, threads=2)


def test_strip_features_equal_whole_slice_features(monkeypatch):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(2, 150, 70)).astype(np.float32)
    whole = np.concatenate([multiscale_basic_features(img[i], sigma_min=1, sigma_max=8)
                            for i in range(2)], axis=-1)
    monkeypatch.setattr(F, "_STRIP_PX", 70 * 17)  # strips of 17 rows, halo 35: many strips
    parts = [F.context_features(img, r, 1, 8) for r in F._strips(150, 70, F.feature_halo(8))]
    assert len(parts) == 9
    np.testing.assert_array_equal(np.concatenate(parts, axis=0), whole)


def test_tree_walk_equals_sklearn_predict_proba():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 7)).astype(np.float32)
    y = (X[:, 0] + X[:, 3] ** 2 > 0.7).astype(int) + (X[:, 5] > 1.2)
    clf = RandomForestClassifier(n_estimators=9, random_state=0).fit(X, y)
    m = F.ForestModel({"in_channels": 1, "n_classes": 3, "features": {"n_features": 7},
                       "normalization": {"mean": 0.0, "std": 1.0}}, F.export_trees(clf))
    m.check()
    Xt = rng.normal(size=(5000, 7)).astype(np.float32)
    np.testing.assert_allclose(F.forest_proba(m, Xt), clf.predict_proba(Xt), rtol=0, atol=1e-12)


def test_train_and_predict_equal_the_recipe_by_hand(stack, model):
    """Features of whole slices with skimage, the same pixel draw, sklearn's forest with
    the same seed: the same probabilities as bigvol's out-of-core predict."""
    img, truth = stack
    norm = model.normalization
    x = (img.astype(np.float32) - np.float32(norm["mean"])) / np.float32(norm["std"])

    def feats(z):
        idx = np.clip([z - 1, z, z + 1], 0, img.shape[0] - 1)
        return np.concatenate([multiscale_basic_features(x[i], sigma_min=1, sigma_max=16)
                               for i in idx], axis=-1)

    X = np.concatenate([feats(z).reshape(-1, 60) for z in (2, 7)])
    y = np.concatenate([truth[z].ravel() for z in (2, 7)])
    pick = np.sort(np.random.default_rng(1).choice(y.size, size=6000, replace=False))
    clf = RandomForestClassifier(n_estimators=12, random_state=1).fit(X[pick], y[pick])
    got = bv.segment.predict(da.from_array(img, chunks=(3, 48, 56)), model,
                             probabilities=True).compute()
    for z in (0, 4, 9):
        ref = clf.predict_proba(feats(z).reshape(-1, 60)).T.reshape(3, *img.shape[1:])
        np.testing.assert_allclose(got[:, z].astype(np.float32), ref, atol=1e-3)
    seg = bv.segment.predict(img, model).compute()
    # raw phantom (drift, shine-through), 2 labelled slices: well above the majority class
    # (0.685) and multi-Otsu (0.517)
    assert (seg == truth).mean() > 0.78


def test_prediction_does_not_depend_on_chunks(stack, model):
    img, _ = stack
    a = bv.segment.predict(da.from_array(img, chunks=(1, 96, 112)), model).compute()
    b = bv.segment.predict(da.from_array(img, chunks=(4, 32, 40)), model).compute()
    c = bv.segment.predict(img[:1], model).compute()  # one slice: the halo repeats it
    np.testing.assert_array_equal(a, b)
    assert c.shape == (1, 96, 112)


def test_same_seed_same_model_and_file_round_trip(stack, model, tmp_path):
    img, truth = stack
    again = bv.segment.train_forest(img, truth[[2, 7]], slices=[2, 7], k=3, n_trees=12,
                                    max_pixels=6000, seed=1, threads=1)
    assert again.digest == model.digest
    path = model.save(tmp_path / "f.model")
    back = bv.segment.Model.load(path)
    assert isinstance(back, bv.segment.ForestModel) and back.digest == model.digest
    assert back.classes == list(bv.conventions.DEFAULT_PHASES) and back.k == 3
    with pytest.raises(ConfigError, match="no PyTorch network"):
        back.module()
    with pytest.raises(ConfigError, match="random forest, which cannot be fine-tuned"):
        bv.segment.train(img, truth[[2]], slices=[2], init=path)
    # a damaged file: an index out of range is refused at load, naming the file
    from safetensors.numpy import save_file
    w = dict(model.weights)
    w["left"] = w["left"].copy()
    w["left"][0] = 10**9
    meta = {"bigvol_model": json.dumps(dict(model.config, format="bigvol-forest")),
            "format": "bigvol-forest"}
    save_file(w, str(tmp_path / "bad.model"), metadata=meta)
    with pytest.raises(InputError, match="bad.model.*inconsistent"):
        bv.segment.Model.load(tmp_path / "bad.model")


def test_scribbles_slices_of_different_shapes_and_bad_labels(stack):
    img, truth = stack
    lab = np.full((2, 96, 112), 255, np.uint8)
    lab[:, ::7, ::5] = truth[[2, 7], ::7, ::5]  # sparse strokes
    m = bv.segment.train_forest([img[2], img[7, :80, :90]], [lab[0], lab[1, :80, :90]],
                                n_trees=5, classes=["a", "b", "c"])
    assert m.classes == ["a", "b", "c"] and m.record["pixels"] == int((lab[0] != 255).sum()
                                                                      + (lab[1, :80, :90] != 255).sum())
    bad = lab.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(InputError, match="codes \\[7\\]"):
        bv.segment.train_forest(img, bad, slices=[2, 7], n_trees=2)
    with pytest.raises(ConfigError, match="k must be"):
        bv.segment.train_forest(img, lab, slices=[2, 7], k=2)


def test_pipeline_and_cli_with_the_forest(tmp_path, capsys):
    from bigvol.cli import main
    from bigvol.pipeline import run
    from bigvol.store import Run

    cfg = {"run": str(tmp_path / "f.zarr"),
           "input": {"phantom": {"shape": [12, 80, 96], "seed": 3}},
           "segment": {"method": "forest", "train": {"labels": "truth", "n_slices": 2},
                       "forest": {"k": 3, "n_trees": 10, "max_pixels": 5000},
                       "probabilities": True},
           "analyze": {"thickness_phases": [1], "tortuosity": {"enabled": False}},
           "compute": {"chunks": [4, 40, 48]}}
    run(cfg, progress=False)
    r = Run.open(tmp_path / "f.zarr")
    model = bv.segment.Model.load(tmp_path / "f.model")
    assert isinstance(model, bv.segment.ForestModel) and model.n_trees == 10
    seg = r.zarr_array("segmentation")[...]
    assert "uncertainty" in r and (seg == r.zarr_array("truth")[...]).mean() > 0.8
    assert "forest" in (tmp_path / "f.report.html").read_text()  # the report names the model
    # bigvol segment reads the forest file and writes the same codes (without probabilities)
    assert main(["segment", str(tmp_path / "f.zarr"), "--model", str(tmp_path / "f.model")]) == 0
    assert "(forest," in capsys.readouterr().out
    np.testing.assert_array_equal(Run.open(tmp_path / "f.zarr").zarr_array("segmentation")[...],
                                  seg)
    # the train command refuses SegNet options with --method forest, in one line
    code = main(["train", str(tmp_path / "f.zarr"), "--labels", "truth", "--slices", "3",
                 "--method", "forest", "--epochs", "3"])
    assert code != 0 and "--method forest does not take --epochs" in capsys.readouterr().err
    code = main(["segment", str(tmp_path / "f.zarr"), "--model", str(tmp_path / "f.model"),
                 "--tta", "4"])
    assert code != 0 and "tta=4 apply to the SegNet" in capsys.readouterr().err
    with pytest.raises(BigvolError, match="is a forest model"):
        bv.stages.segment(r, method="segnet", model=tmp_path / "f.model")
