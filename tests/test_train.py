"""Training: a tiny synthetic problem is learnt, reproducibly; labels are validated; models
round-trip through files without pickle; the ``bigvol train`` command."""

import json
import pickle

import numpy as np
import pytest
import scipy.ndimage as ndi

torch = pytest.importorskip("torch")

from _segdata import TINY, synth  # noqa: E402

import bigvol as bv  # noqa: E402
from bigvol.errors import ConfigError, InputError  # noqa: E402
from bigvol.segment.infer import whole_slices  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return synth((8, 80, 80))


def test_learns_a_tiny_problem(data):
    img, truth = data
    model = bv.segment.train(img[[1, 6]], truth[[1, 6]], epochs=5, steps_per_epoch=20, **TINY)
    pred = whole_slices(img, model)
    held_out = [0, 2, 3, 4, 5, 7]
    acc = (pred[held_out] == truth[held_out]).mean()
    assert acc >= 0.9, acc  # stated: >= 0.90 on unseen slices after 100 tiny steps
    rec = model.record
    assert len(rec["history"]) == 5 and rec["steps"] == 100
    assert all(h["val_accuracy"] is not None for h in rec["history"])
    assert model.normalization["mean"] == pytest.approx(img[[1, 6]].mean(), rel=1e-6)
    assert model.normalization["std"] == pytest.approx(img[[1, 6]].std(), rel=1e-6)


def test_same_seed_same_model_other_seed_other_model(data):
    img, truth = data
    opts = dict(epochs=1, steps_per_epoch=4, **TINY)
    a = bv.segment.train(img[[1, 6]], truth[[1, 6]], seed=3, **opts)
    b = bv.segment.train(img[[1, 6]], truth[[1, 6]], seed=3, **opts)
    c = bv.segment.train(img[[1, 6]], truth[[1, 6]], seed=4, **opts)
    assert a.weights.keys() == b.weights.keys()
    assert all(np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert a.digest == b.digest != c.digest


def test_class_weights_balanced_sqrt_and_unknown(data):
    img, truth = data
    opts = dict(epochs=1, steps_per_epoch=1, validation=None, **TINY)
    counts = np.bincount(truth[[1, 6]].ravel(), minlength=3).astype(float)
    balanced = counts.sum() / (3 * counts)
    a = bv.segment.train(img[[1, 6]], truth[[1, 6]], class_weights="balanced", **opts)
    b = bv.segment.train(img[[1, 6]], truth[[1, 6]], class_weights="sqrt", **opts)
    np.testing.assert_allclose(a.record["class_loss_weights"], balanced)
    np.testing.assert_allclose(b.record["class_loss_weights"], np.sqrt(balanced))
    with pytest.raises(ConfigError, match="class_weights.*'sqrt'.*'inverse'"):
        bv.segment.train(img[[1, 6]], truth[[1, 6]], class_weights="inverse", **opts)
    c = bv.segment.train(img[[1, 6]], truth[[1, 6]], class_weights="none", **opts)  # CLI text
    assert c.record["class_loss_weights"] == [1.0, 1.0, 1.0]


def test_soft_dice_loss_equals_a_direct_computation_over_labelled_pixels():
    from bigvol.segment._train import _soft_dice_loss

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 9, 11))
    target = rng.integers(0, 3, size=(2, 9, 11))
    target[0, :4] = 255  # unlabelled: left out of every sum
    target[target == 2] = np.where(rng.random((target == 2).sum()) < 0.5, 255, 0)  # one class absent
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    lab = target != 255
    dice = []
    for c in (0, 1):  # class 2 has no labelled pixel: not averaged
        y = (target == c) & lab
        pc = p[:, c] * lab
        dice.append((2 * (pc * y).sum() + 1e-5) / (pc.sum() + y.sum() + 1e-5))
    got = _soft_dice_loss(torch.tensor(logits), torch.tensor(target), 3)
    assert float(got) == pytest.approx(1 - np.mean(dice), rel=1e-9)
    # a perfect, confident prediction has (almost) no Dice loss
    perfect = torch.nn.functional.one_hot(torch.tensor(np.where(lab, target, 0)), 3)
    assert float(_soft_dice_loss(50.0 * perfect.permute(0, 3, 1, 2).double(),
                                 torch.tensor(target), 3)) < 1e-9


def test_loss_choices_are_recorded_and_unknown_ones_refused(data):
    img, truth = data
    opts = dict(epochs=1, steps_per_epoch=2, validation=None, **TINY)
    a = bv.segment.train(img[[1, 6]], truth[[1, 6]], **opts)
    b = bv.segment.train(img[[1, 6]], truth[[1, 6]], loss="ce", **opts)
    assert a.record["options"]["loss"] == "ce+dice" and b.record["options"]["loss"] == "ce"
    # the Dice term changes the gradients, hence the weights (not only the recorded options)
    assert any(not np.array_equal(a.weights[k], b.weights[k]) for k in a.weights)
    with pytest.raises(ConfigError, match="loss must be 'ce' or 'ce\\+dice', got 'dice'"):
        bv.segment.train(img[[1, 6]], truth[[1, 6]], loss="dice", **opts)


def test_sparse_scribbles_are_enough(data):
    img, truth = data
    rng = np.random.default_rng(1)
    labels = np.full((2, 80, 80), 255, np.uint8)
    for i, z in enumerate((1, 6)):
        # Scribbles: 3x3 dots at random places of each class's eroded area, ~5% of pixels.
        for c in range(3):
            inner = ndi.binary_erosion(truth[z] == c, iterations=2)
            ys, xs = np.nonzero(inner)
            pick = rng.choice(len(ys), size=min(len(ys), 12), replace=False)
            for y, x in zip(ys[pick], xs[pick]):
                labels[i, y - 1 : y + 2, x - 1 : x + 2] = c
    assert (labels != 255).mean() < 0.06
    # Too few labels to hold some out: no validation. Dense labels reach ~0.93 here.
    model = bv.segment.train(img[[1, 6]], labels, epochs=5, steps_per_epoch=20, validation=None, **TINY)
    acc = (whole_slices(img, model) == truth).mean()
    assert acc >= 0.85, acc
    assert model.record["best_epoch"] is None and model.record["stopped"] == "epochs"


def test_k3_reads_neighbours_from_the_stack(data):
    img, truth = data
    model = bv.segment.train(img, truth[[0, 7]], slices=[0, 7], k=3, epochs=1, steps_per_epoch=2, **TINY)
    assert model.k == 3 and model.config["in_channels"] == 3
    with pytest.raises(ConfigError, match="slices"):
        bv.segment.train(img[[1, 6]], truth[[1, 6]], k=3, **TINY)
    with pytest.raises(ConfigError, match="odd"):
        bv.segment.train(img, truth[[1]], slices=[1], k=2, **TINY)
    with pytest.raises(InputError, match="outside the stack"):
        bv.segment.train(img, truth[[1]], slices=[8], **TINY)


def test_label_files_give_the_same_model_as_arrays(data, tmp_path):
    import imageio.v3 as iio
    import tifffile

    img, truth = data
    tifffile.imwrite(tmp_path / "a.tif", truth[1])
    iio.imwrite(tmp_path / "b.png", truth[6])
    opts = dict(epochs=1, steps_per_epoch=3, **TINY)
    from_files = bv.segment.train(img[[1, 6]], [tmp_path / "a.tif", str(tmp_path / "b.png")], **opts)
    from_arrays = bv.segment.train(img[[1, 6]], truth[[1, 6]], **opts)
    assert from_files.digest == from_arrays.digest
    # a folder and a multi-page TIFF, via read_labels
    from bigvol.segment import read_labels

    assert np.array_equal(read_labels(tmp_path, slices=[1, 6]), truth[[1, 6]])
    tifffile.imwrite(tmp_path / "stack.tiff", truth[[1, 6]])
    assert np.array_equal(read_labels(tmp_path / "stack.tiff"), truth[[1, 6]])
    with pytest.raises(InputError, match="3 slices"):
        read_labels(tmp_path / "stack.tiff", slices=[1, 2, 3])


def test_bad_labels_are_refused_with_a_clear_message(data, tmp_path):
    img, truth = data
    bad = truth[[1, 6]].copy()
    bad[1, 5, 5] = 7
    with pytest.raises(InputError, match=r"labels\[1\] holds codes \[7\]"):
        bv.segment.train(img[[1, 6]], bad, **TINY)
    with pytest.raises(InputError, match=r"shape \(80, 70\) but its image slice has shape \(80, 80\)"):
        bv.segment.train(img[[1, 6]], truth[[1, 6], :, :70], **TINY)
    with pytest.raises(InputError, match="2 image slices but 1 label"):
        bv.segment.train(img[[1, 6]], truth[[1]], **TINY)
    with pytest.raises(InputError, match="no pixel"):
        bv.segment.train(img[[1]], np.full((1, 80, 80), 255, np.uint8), **TINY)
    with pytest.raises(InputError, match="no pixel of class"):
        bv.segment.train(img[[1]], np.minimum(truth[[1]], 1), **TINY)
    with pytest.raises(InputError, match="missing.tif does not exist"):
        bv.segment.train(img[[1]], [tmp_path / "missing.tif"], **TINY)
    with pytest.raises(InputError, match="integer class codes"):
        bv.segment.train(img[[1]], truth[[1]] + 0.5, **TINY)
    unchanged = truth.copy()
    bv.segment.train(img[[1, 6]], truth[[1, 6]], epochs=1, steps_per_epoch=1, **TINY)
    assert np.array_equal(truth, unchanged)  # inputs are never modified


def test_save_load_round_trip_gives_identical_predictions(data, tmp_path):
    img, truth = data
    model = bv.segment.train(img[[1, 6]], truth[[1, 6]], epochs=1, steps_per_epoch=3, **TINY)
    path = model.save(tmp_path / "m.safetensors")
    loaded = bv.segment.Model.load(path)
    assert loaded.digest == model.digest
    assert loaded.config["training"] == json.loads(json.dumps(model.record))
    assert loaded.classes == ["pore", "solid electrolyte", "active material"]
    assert np.array_equal(whole_slices(img, loaded), whole_slices(img, model))
    # The file is safetensors: an 8-byte header length, then a JSON header.
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert json.loads(header["__metadata__"]["bigvol_model"])["widths"] == [8, 16]


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(InputError, match="does not exist"):
        bv.segment.Model.load(tmp_path / "nothing.safetensors")
    (tmp_path / "text.safetensors").write_text("hello, I am not a model")
    with pytest.raises(InputError, match="is not a bigvol model file"):
        bv.segment.Model.load(tmp_path / "text.safetensors")
    with open(tmp_path / "pickled.pt", "wb") as f:
        pickle.dump({"weights": np.zeros(3)}, f)
    with pytest.raises(InputError, match="is not a bigvol model file"):
        bv.segment.Model.load(tmp_path / "pickled.pt")
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="not a bigvol model"):
        bv.segment.Model.load(tmp_path / "other.safetensors")


def test_fine_tuning_starts_from_the_init_model_and_keeps_its_inputs(data, tmp_path):
    img, truth = data
    opts = {"crop": 48, "batch_size": 4, "progress": False, "validation": None}
    first = bv.segment.train(img, truth[[1, 6]], widths=(8, 16), convs=(1, 1), k=3,
                             slices=[1, 6], epochs=5, steps_per_epoch=20, **opts)
    acc_first = (whole_slices(img, first) == truth).mean()
    path = first.save(tmp_path / "first.safetensors")
    # New labels on other slices, of a brighter acquisition: the fine-tuned model keeps the
    # architecture, k and the input normalization of the model it starts from.
    brighter = img.astype(np.float32) * 0.9 + 20
    tuned = bv.segment.train(brighter, truth[[3, 4]], slices=[3, 4], init=path, epochs=1,
                             steps_per_epoch=3, lr=1e-4, **opts)
    assert tuned.k == 3 and tuned.config["widths"] == [8, 16] and tuned.classes == first.classes
    assert tuned.normalization == first.normalization
    assert tuned.record["init"] == {"path": str(path), "digest": first.digest}
    # 3 small steps move the weights a little, from the first model's, not from scratch.
    conv = "encoders.0.0.weight"  # the first convolution
    step = np.abs(tuned.weights[conv] - first.weights[conv]).max()
    assert 0 < step < 0.1 * np.abs(first.weights[conv]).max()
    assert (whole_slices(img, tuned) == truth).mean() >= acc_first - 0.02
    # What would change the network is refused, naming the option.
    with pytest.raises(ConfigError, match="k=1.*takes k=3"):
        bv.segment.train(img, truth[[3]], slices=[3], init=first, k=1, **opts)
    with pytest.raises(ConfigError, match="classes"):
        bv.segment.train(img, truth[[3]], slices=[3], init=first, classes=["a", "b", "c"], **opts)
    with pytest.raises(ConfigError, match="widths"):
        bv.segment.train(img, truth[[3]], slices=[3], init=first, widths=(8, 32), **opts)
    with pytest.raises(InputError, match="nothing.safetensors.*does not exist"):
        bv.segment.train(img, truth[[3]], slices=[3], init=tmp_path / "nothing.safetensors", **opts)


def test_cli_train_writes_a_model_and_records_the_stage(data, tmp_path, capsys):
    import tifffile

    from bigvol.cli import main
    from bigvol.store import Run

    img, truth = data
    run = Run.create(tmp_path / "run.zarr", voxel_size=(50, 30, 30))
    run.write("raw", img, chunks=(4, 40, 40))
    tifffile.imwrite(tmp_path / "l1.tif", truth[1])
    tifffile.imwrite(tmp_path / "l6.tif", truth[6])
    out = tmp_path / "m.model"
    argv = [
        "train", str(tmp_path / "run.zarr"), "--labels", str(tmp_path / "l1.tif"),
        str(tmp_path / "l6.tif"), "--slices", "1", "6", "--preset", "tiny", "--epochs", "1",
        "--steps-per-epoch", "2", "--crop", "48", "--out", str(out), "--quiet",
    ]
    assert main(argv) == 0
    model = bv.segment.Model.load(out)
    assert model.record["slices"] == [1, 6]
    rec = Run.open(tmp_path / "run.zarr").stage("train")
    assert rec["results"]["model"] == str(out) and rec["results"]["model_digest"] == model.digest
    # the same command again: up to date, the model is not trained again
    capsys.readouterr()
    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    assert Run.open(tmp_path / "run.zarr").stage("train") == rec
    # fine-tuning from that model
    out2 = tmp_path / "m2.model"
    rc = main(["train", str(tmp_path / "run.zarr"), "--labels", str(tmp_path / "l6.tif"),
               "--slices", "6", "--init", str(out), "--epochs", "1", "--steps-per-epoch", "1",
               "--crop", "48", "--out", str(out2), "--quiet"])
    assert rc == 0
    tuned = bv.segment.Model.load(out2)
    assert tuned.record["init"]["digest"] == model.digest and tuned.config["widths"] == model.config["widths"]
    # bad labels: one line, exit status 2
    bad = truth[1].copy()
    bad[0, 0] = 9
    tifffile.imwrite(tmp_path / "bad.tif", bad)
    rc = main(["train", str(tmp_path / "run.zarr"), "--labels", str(tmp_path / "bad.tif"),
               "--slices", "1", "--preset", "tiny", "--quiet", "--out", str(out)])
    assert rc == 2


def test_read_labels_takes_the_given_slices_of_a_whole_stack_label_file(tmp_path, data):
    import tifffile

    from bigvol.segment import read_labels

    _, truth = data
    tifffile.imwrite(tmp_path / "stack.tif", truth)  # one page per slice of the volume
    np.testing.assert_array_equal(read_labels(tmp_path / "stack.tif", slices=[1, 6]), truth[[1, 6]])
    tifffile.imwrite(tmp_path / "two.tif", truth[[1, 6]])  # one page per labelled slice
    np.testing.assert_array_equal(read_labels(tmp_path / "two.tif", slices=[1, 6]), truth[[1, 6]])
    with pytest.raises(InputError, match="2 label images .* but 3 slices"):
        read_labels(tmp_path / "two.tif", slices=[1, 6, 7])


@pytest.mark.slow
def test_killed_training_resumes_from_its_checkpoint_bit_identically(tmp_path):
    """bigvol train killed (SIGKILL) after epoch 2 of 4, run again: the same weights as an
    uninterrupted training, bit for bit (a step budget, no time limit)."""
    import os
    import signal
    import subprocess
    import sys

    from bigvol.store import Run

    img, truth = bv.synth.phantom((6, 64, 64), seed=3, am_d50_um=0.6)
    models = {}
    for name in ("whole", "killed"):
        path = tmp_path / f"{name}.zarr"
        run = Run.create(path)
        run.write("raw", img)
        run.write("truth", truth)
        argv = [sys.executable, "-m", "bigvol.cli", "train", str(path), "--labels", "truth",
                "--slices", "1", "4", "--preset", "tiny", "--epochs", "4",
                "--steps-per-epoch", "3", "--crop", "32", "--batch-size", "2", "--quiet",
                "--out", str(tmp_path / "model")]  # the same --out: the same fingerprint
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if name == "killed":
            marker = tmp_path / "killed.marker"
            proc = subprocess.run(argv, env={**env, "BIGVOL_FAULT_KILL": f"train:2:{marker}"},
                                  capture_output=True, timeout=300)
            assert proc.returncode == -signal.SIGKILL and marker.exists()
            assert (tmp_path / "model.checkpoint").exists()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert not (tmp_path / "model.checkpoint").exists()
        models[name] = bv.segment.Model.load(tmp_path / "model")
    a, b = models["whole"], models["killed"]
    assert a.record["steps"] == b.record["steps"] == 12
    assert a.record["resumed_at_epoch"] == 0 and b.record["resumed_at_epoch"] == 2
    for key in a.weights:
        np.testing.assert_array_equal(a.weights[key], b.weights[key], err_msg=key)


def test_default_length_is_sized_to_the_device_and_logged(data, caplog):
    # the README's example trains with the defaults: on the CPU that must be minutes (600
    # steps), decided by the device type and never by a clock, with a line saying how long
    img, truth = data
    with caplog.at_level("INFO", logger="bigvol.segment._train"):
        model = bv.segment.train(img[[1, 6]], truth[[1, 6]], steps_per_epoch=1, patience=None,
                                 device="cpu", **TINY)
    from bigvol.segment._train import DEFAULT_EPOCHS

    assert DEFAULT_EPOCHS["cpu"] * 50 <= 600 < DEFAULT_EPOCHS["cuda"] * 50
    assert model.record["options"]["epochs"] == DEFAULT_EPOCHS["cpu"]
    assert model.record["steps"] == DEFAULT_EPOCHS["cpu"]
    text = caplog.text
    assert f"training {DEFAULT_EPOCHS['cpu']} steps" in text
    assert "s/step on cpu" in text and "take about" in text
