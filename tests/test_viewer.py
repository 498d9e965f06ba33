"""The napari viewer on a real Qt (Xvfb with Mesa's software OpenGL): the reader's layers,
painting saved into the run, training and predicting from the widget, the next slice."""

import sys

import numpy as np
import pytest

import bigvol as bv
from bigvol import stages
from bigvol.cli import main
from bigvol.store import TRAIN_LABELS, Run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("display")]


@pytest.fixture
def run_path(tmp_path):
    img, truth = bv.synth.phantom((6, 80, 72), seed=4, voxel_size=(50, 30, 30), am_d50_um=0.6)
    path = tmp_path / "cell.zarr"
    run = Run.create(path, voxel_size=(50, 30, 30))
    run.write("raw", img, chunks=(3, 40, 36))
    run.write("truth", truth, chunks=(3, 40, 36))
    stages.pyramid(run, "raw", min_size=32)
    return path


def test_reader_gives_the_run_layers_with_scales_and_levels(run_path, tmp_path):
    from bigvol.viewer import napari_get_reader

    assert napari_get_reader(str(tmp_path / "not-a-run")) is None
    layers = napari_get_reader(str(run_path))(str(run_path))
    by_name = {kw["name"]: (data, kw, kind) for data, kw, kind in layers}
    assert set(by_name) == {"raw", "truth"}
    data, kw, kind = by_name["raw"]
    assert kind == "image" and kw["multiscale"]
    assert [d.shape for d in data] == [(6, 80, 72), (6, 40, 36), (6, 20, 18)]
    assert kw["scale"] == pytest.approx((0.05, 0.03, 0.03))
    # every layer names its axes and the unit of its scale (sliders z / y / x, scale bar um)
    for _, kw_, _ in layers:
        assert kw_["axis_labels"] == ("z", "y", "x") and kw_["units"] == ("um",) * 3
    data, kw, kind = by_name["truth"]
    assert kind == "labels" and kw["metadata"]["phases"] == list(bv.store.Run.open(
        run_path).phases)
    # shown as code + 1: pore (0) is not napari's transparent background
    truth = Run.open(run_path).zarr_array("truth")[...]
    np.testing.assert_array_equal(np.asarray(data), truth + 1)


def test_paint_train_predict_and_next_slice_in_the_widget(run_path, make_napari_viewer):
    from bigvol.viewer import PREDICTION_LAYER, TRAINING_LAYER, open_run

    viewer = make_napari_viewer()
    widget = open_run(run_path, viewer)
    assert {"raw", "truth", TRAINING_LAYER} <= {layer.name for layer in viewer.layers}
    assert tuple(viewer.dims.axis_labels) == ("z", "y", "x")
    assert [str(u) for u in viewer.layers[TRAINING_LAYER].units] == ["micrometer"] * 2
    truth = Run.open(run_path).zarr_array("truth")[...]
    layer = viewer.layers[TRAINING_LAYER]
    # paint slices 1 and 4 (with the truth, as a user would with the brush), moving the
    # z slider in between: the painted slice is saved when the user leaves it
    for z in (1, 4):
        step = list(viewer.dims.current_step)
        step[0] = z
        viewer.dims.current_step = tuple(step)
        assert widget.z == z
        painted = np.zeros(truth.shape[1:], np.uint8)
        painted[:, :40] = truth[z][:, :40] + 1
        layer.data = painted
    widget.select_class(2)
    assert layer.selected_label == 3 and layer.mode == "paint"
    assert widget.save_labels() == [1, 4]
    stored = Run.open(run_path).zarr_array(TRAIN_LABELS)[...]
    np.testing.assert_array_equal(stored[4][:, :40], truth[4][:, :40])
    assert (stored[4][:, 40:] == 255).all() and (stored[0] == 255).all()
    # back on slice 1 the layer shows what was painted there
    step = list(viewer.dims.current_step)
    step[0] = 1
    viewer.dims.current_step = tuple(step)
    np.testing.assert_array_equal(layer.data[:, :40], truth[1][:, :40] + 1)

    widget.epochs.setValue(1)
    widget.steps.setValue(3)
    out = widget.train(background=False)
    assert not out.skipped and out.results["slices"] == [1, 4]
    codes = widget.predict_slice()
    model = bv.segment.Model.load(Run.open(run_path).paths["model"])
    ref = bv.segment.predict(Run.open(run_path).read("raw"), model)[1].compute()
    np.testing.assert_array_equal(codes, ref)
    np.testing.assert_array_equal(viewer.layers[PREDICTION_LAYER].data, ref + 1)

    widget.predict_all(background=False)
    run = Run.open(run_path, mode="r+")
    assert run.is_complete("segmentation") and run.is_complete("uncertainty")
    assert {"segmentation", "uncertainty"} <= {layer.name for layer in viewer.layers}
    # inject doubt into slice 3: the suggestion jumps there
    p = run.zarr_array("probabilities")[...]
    p[:, 3] = np.float16(1 / 3)
    run.write("probabilities", p, chunks=run.zarr_array("probabilities").chunks,
              fingerprint="edited")
    assert widget.next_slice() == 3 and viewer.dims.current_step[0] == 3


def test_view_without_napari_says_how_to_install(monkeypatch, capsys, run_path):
    monkeypatch.setitem(sys.modules, "napari", None)  # as if napari were not installed
    assert main(["view", str(run_path)]) == 2
    assert 'pip install "bigvol[viewer]"' in capsys.readouterr().err


def test_training_runs_in_the_background_and_stops_on_request(run_path, make_napari_viewer,
                                                              qtbot):
    from bigvol.viewer import open_run

    truth = Run.open(run_path).zarr_array("truth")[...]
    stages.save_labels(Run.open(run_path, mode="r+"), {2: truth[2]})
    viewer = make_napari_viewer()
    widget = open_run(run_path, viewer)
    widget.epochs.setValue(50)  # far more than the test waits for
    widget.steps.setValue(25)
    results = []
    worker = widget.train()
    worker.returned.connect(results.append)
    # the progress bar follows the steps while the viewer keeps handling events
    qtbot.waitUntil(lambda: widget.bar.maximum() == 50 * 25 and widget.bar.value() >= 2,
                    timeout=60_000)
    widget.stop()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    (out,) = results
    assert out.results["stopped"] == "stopped" and out.results["steps"] < 50 * 25
    assert Run.open(run_path).paths["model"].exists()


def test_the_widget_trains_and_predicts_with_the_random_forest(run_path, make_napari_viewer):
    from bigvol.viewer import TRAINING_LAYER, open_run

    viewer = make_napari_viewer()
    widget = open_run(run_path, viewer)
    truth = Run.open(run_path).zarr_array("truth")[...]
    painted = np.zeros(truth.shape[1:], np.uint8)
    painted[::3, ::3] = truth[2][::3, ::3] + 1  # strokes on a ninth of slice 2
    step = list(viewer.dims.current_step)
    step[0] = 2
    viewer.dims.current_step = tuple(step)
    viewer.layers[TRAINING_LAYER].data = painted
    widget.method.setCurrentText("forest")
    out = widget.train(background=False)
    assert "random forest" in out.summary
    model = bv.segment.Model.load(Run.open(run_path).paths["model"])
    assert isinstance(model, bv.segment.ForestModel)
    codes = widget.predict_slice()
    np.testing.assert_array_equal(
        codes, bv.segment.predict(Run.open(run_path).read("raw"), model)[2].compute())
    assert (codes == truth[2]).mean() > 0.7
    out = widget.predict_all(background=False)
    assert "(forest," in out.summary and Run.open(run_path).is_complete("uncertainty")
