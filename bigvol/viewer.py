"""The run in napari: layers, and the labelling loop (paint -> train -> look -> next slice).

``napari run.zarr`` (the npe2 reader in ``napari.yaml``) and ``bigvol view run.zarr`` open a
run store with its layers, lazily and from its pyramid levels when it has them, so a
1000-slice stack opens at once:

- ``raw``, ``normalized``: multiscale images, scaled by the voxel size (um);
- ``segmentation``, ``threshold``, ``truth``: label layers in the run's phase colours;
- ``uncertainty``: an image (hidden at first), when the run has one;
- ``training labels``: the slice being painted (one 2-D slice in memory, whatever the volume):
  moving to another slice saves the painted one into ``labels/train`` and loads the next.

In napari a label value of 0 is transparent background, and bigvol's phase code 0 is a
phase (pore). So the layers show ``code + 1``; 0 is "not labelled" (bigvol's 255).

:class:`LabellingWidget` is the dock widget: class buttons, save, Train / Fine-tune in a
background thread with a progress bar and a stop button, Predict this slice, Predict all,
Uncertainty and Next slice to label. Every button calls the same stage functions as
``bigvol train`` / ``segment`` / ``suggest`` (:mod:`bigvol.stages`).

This module imports napari and Qt: install them with ``pip install "bigvol[viewer]"``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import dask.array as da
import numpy as np

from .conventions import UNLABELLED, phase_colours
from .store import TRAIN_LABELS, Run

__all__ = ["napari_get_reader", "layer_data", "open_run", "LabellingWidget"]

TRAINING_LAYER = "training labels"
PREDICTION_LAYER = "prediction (this slice)"


# -- reading --------------------------------------------------------------------------------

def napari_get_reader(path):
    """npe2 reader: a function that reads ``path`` when it is a bigvol run store."""
    if isinstance(path, list):
        path = path[0] if len(path) == 1 else None
    if path is None or not Run.is_run(path):
        return None
    return lambda p: layer_data(p[0] if isinstance(p, list) else p)


def _scale(run) -> tuple[float, float, float]:
    vs = run.voxel_size
    return tuple(v / 1000.0 for v in vs) if vs is not None else (1.0, 1.0, 1.0)


def _axes(ndim: int = 3) -> dict:
    """Layer keywords that name the axes ``(z, y, x)`` and their unit (the scale is in um),
    so napari's sliders read z / y / x and its scale bar um."""
    return {"axis_labels": ("z", "y", "x")[-ndim:], "units": ("um",) * ndim}


def _levels(run, name) -> list[da.Array]:
    return [run.read(name)] + [run.read(p) for p in run.pyramid_levels(name)]


def _shown_codes(block: np.ndarray) -> np.ndarray:
    """Phase codes as napari label values: code + 1; UNLABELLED -> 0 (transparent)."""
    out = block.astype(np.uint8) + np.uint8(1)  # 255 + 1 wraps to 0
    return out


def label_colormap(names):
    """napari colours of the phases (value = code + 1), the report's colours."""
    from napari.utils.colormaps import DirectLabelColormap

    colours = {None: "transparent", 0: "transparent"}
    colours.update({i + 1: c for i, c in enumerate(phase_colours(len(names)))})
    return DirectLabelColormap(color_dict=colours)


def layer_data(path) -> list[tuple]:
    """The run's layers as napari ``(data, kwargs, layer_type)`` tuples, all lazy."""
    run = Run.open(path)
    scale = _scale(run)
    names = run.phases
    out = []
    for name in ("raw", "normalized"):
        if run.is_complete(name):
            levels = _levels(run, name)
            info = np.iinfo(levels[0].dtype) if levels[0].dtype.kind in "ui" else None
            out.append((levels if len(levels) > 1 else levels[0], {
                "name": name, "scale": scale, "multiscale": len(levels) > 1, **_axes(),
                "contrast_limits": (info.min, info.max) if info else (0.0, 1.0),
                "visible": name == "normalized" or not run.is_complete("normalized"),
            }, "image"))
    if run.is_complete("uncertainty"):
        out.append((run.read("uncertainty"), {
            "name": "uncertainty", "scale": scale, "colormap": "inferno", **_axes(),
            "contrast_limits": (0.0, 1.0), "opacity": 0.6, "visible": False}, "image"))
    for name in ("truth", "threshold", "segmentation"):
        if run.is_complete(name):
            levels = [lv.map_blocks(_shown_codes, dtype=np.uint8) for lv in _levels(run, name)]
            out.append((levels if len(levels) > 1 else levels[0], {
                "name": name, "scale": scale, "multiscale": len(levels) > 1, **_axes(),
                "colormap": label_colormap(names), "opacity": 0.5,
                "visible": name == "segmentation",
                "metadata": {"bigvol_run": str(run.path), "phases": names}}, "labels"))
    return out


def open_run(path, viewer, *, widget: bool = True):
    """Add the run's layers (and the labelling widget) to a napari viewer."""
    for data, kwargs, kind in layer_data(path):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    if viewer.dims.ndim == 3:  # napari < 0.9 does not take the viewer's from the layers'
        viewer.dims.axis_labels = ("z", "y", "x")
    if widget:
        w = LabellingWidget(viewer, path)
        viewer.window.add_dock_widget(w, name="bigvol labelling", area="right")
        return w
    return None


# -- the labelling widget ---------------------------------------------------------------------
def _qt():
    from qtpy import QtCore, QtWidgets

    return QtCore, QtWidgets


class LabellingWidget:
    """Placeholder replaced by the Qt class built in :func:`_build` on first use."""

    def __new__(cls, viewer, run_path):
        return _widget_class()(viewer, run_path)


_CLASS = None


def _widget_class():
    global _CLASS
    if _CLASS is None:
        _CLASS = _build()
    return _CLASS


def _build():
    QtCore, QtWidgets = _qt()

    class _LabellingWidget(QtWidgets.QWidget):
        """Paint labels, train, predict, see the uncertainty, jump to the next slice."""

        def __init__(self, viewer, run_path):
            super().__init__()
            self.viewer = viewer
            self.run = Run.open(run_path, mode="r+")
            self.names = self.run.phases
            self.image = "normalized" if self.run.is_complete("normalized") else "raw"
            self.shape = self.run.zarr_array(self.image).shape
            self.z = None
            self.loaded = None  # the slice as loaded, to know whether it was painted
            self._progress = {"step": 0, "steps": 1}
            self._stop = threading.Event()
            self._worker = None
            self._build_ui()
            self.layer = viewer.add_labels(
                np.zeros(self.shape[1:], np.uint8), name=TRAINING_LAYER,
                scale=_scale(self.run)[1:], colormap=label_colormap(self.names), **_axes(2))
            self.layer.metadata["bigvol_run"] = str(self.run.path)
            viewer.dims.events.current_step.connect(self._on_step)
            self.load_slice(self.current_z())
            self._timer = QtCore.QTimer(self)
            self._timer.timeout.connect(self._show_progress)

        # -- layout ---------------------------------------------------------------------
        def _build_ui(self):
            lay = QtWidgets.QVBoxLayout(self)
            lay.addWidget(QtWidgets.QLabel(f"<b>{self.run.path.name}</b>: paint a class, "
                                           "then Train"))
            self.class_buttons = []
            for i, (name, colour) in enumerate(zip(self.names, phase_colours(len(self.names)))):
                b = QtWidgets.QPushButton(f"{i}  {name}")
                b.setStyleSheet(f"border-left: 14px solid {colour}; text-align: left;")
                b.clicked.connect(lambda _=False, i=i: self.select_class(i))
                lay.addWidget(b)
                self.class_buttons.append(b)
            form = QtWidgets.QFormLayout()
            self.method = QtWidgets.QComboBox()
            self.method.addItems(["segnet", "forest"])  # forest: ilastik-style, ~1 min on CPU
            form.addRow("model", self.method)
            self.epochs = QtWidgets.QSpinBox(minimum=1, maximum=1000, value=4)
            self.steps = QtWidgets.QSpinBox(minimum=1, maximum=10000, value=25)
            self.finetune = QtWidgets.QCheckBox("fine-tune the current model")
            self.finetune.setChecked(True)
            form.addRow("epochs", self.epochs)
            form.addRow("steps per epoch", self.steps)
            lay.addLayout(form)
            lay.addWidget(self.finetune)
            for text, slot in (("Save labels", self.save_labels),
                               ("Train / Fine-tune", self.train),
                               ("Stop", self.stop),
                               ("Predict this slice", self.predict_slice),
                               ("Predict all", self.predict_all),
                               ("Uncertainty", self.show_uncertainty),
                               ("Next slice to label", self.next_slice)):
                b = QtWidgets.QPushButton(text)
                b.clicked.connect(lambda _=False, slot=slot: slot())
                lay.addWidget(b)
                setattr(self, "button_" + text.split()[0].lower().replace("/", ""), b)
            self.bar = QtWidgets.QProgressBar()
            self.status = QtWidgets.QLabel("")
            self.status.setWordWrap(True)
            lay.addWidget(self.bar)
            lay.addWidget(self.status)
            lay.addStretch(1)

        def say(self, text: str) -> None:
            self.status.setText(text)

        # -- painting ---------------------------------------------------------------------
        def current_z(self) -> int:
            return int(self.viewer.dims.current_step[0]) if self.viewer.dims.ndim >= 3 else 0

        def select_class(self, code: int) -> None:
            self.layer.selected_label = code + 1
            self.layer.mode = "paint"
            self.viewer.layers.selection.active = self.layer

        def load_slice(self, z: int) -> None:
            z = int(np.clip(z, 0, self.shape[0] - 1))
            data = np.zeros(self.shape[1:], np.uint8)
            if TRAIN_LABELS in self.run:
                data = _shown_codes(self.run.group[TRAIN_LABELS][z])
            self.z, self.loaded = z, data.copy()
            self.layer.data = data
            self.layer.name = TRAINING_LAYER
            self.say(f"slice {z}: " + ("labelled" if z in self.run.labelled_slices()
                                       else "not labelled yet"))

        def save_labels(self) -> list[int]:
            """Write the painted slice into ``labels/train`` (if it changed)."""
            shown = np.asarray(self.layer.data)
            if self.z is not None and not np.array_equal(shown, self.loaded):
                codes = shown.astype(np.int16) - 1
                codes[shown == 0] = UNLABELLED
                from . import stages

                labelled = stages.save_labels(self.run, {self.z: codes.astype(np.uint8)})
                self.loaded = shown.copy()
                self.say(f"saved slice {self.z}; labelled slices: {labelled}")
            return self.run.labelled_slices()

        def _on_step(self, event=None) -> None:
            z = self.current_z()
            if z != self.z:
                self.save_labels()
                self.load_slice(z)

        # -- training ---------------------------------------------------------------------
        def train_options(self) -> dict:
            model = self.run.paths["model"]
            if self.method.currentText() == "forest":  # trained anew on all painted labels
                return {"k": 1}
            opts = {"epochs": self.epochs.value(), "steps_per_epoch": self.steps.value(),
                    "crop": min(224, *self.shape[1:]), "batch_size": 4}
            if self.finetune.isChecked() and model.exists():
                opts["init"] = str(model)
            return opts

        def train(self, *, background: bool = True):
            """Train (or fine-tune) on the painted slices; in a thread unless told not to."""
            if not self.save_labels():
                self.say("paint some labels first")
                return None
            from . import stages

            self._stop.clear()
            opts = self.train_options()

            def callback(p):
                self._progress.update(step=p["step"], steps=p["steps"])
                return self._stop.is_set()

            method = self.method.currentText()

            def work():
                if method == "forest":
                    return stages.train(self.run, "store", options=opts, image=self.image,
                                        method="forest")
                return stages.train(self.run, "store", options=opts, callback=callback,
                                    image=self.image)

            return self._start(work, "training", background,
                               done=lambda out: self.say(out.summary))

        def stop(self) -> None:
            self._stop.set()
            self.say("stopping after this step ...")

        def _start(self, work, what, background, done):
            if not background:
                result = work()
                done(result)
                return result
            from napari.qt.threading import create_worker

            self._worker = create_worker(work)
            self._worker.returned.connect(done)
            self._worker.errored.connect(lambda e: self.say(f"{what} failed: {e}"))
            self._worker.finished.connect(self._timer.stop)
            self._progress.update(step=0, steps=1)
            self._timer.start(200)
            self.say(f"{what} ...")
            self._worker.start()
            return self._worker

        def _show_progress(self):
            self.bar.setMaximum(int(self._progress["steps"]))
            self.bar.setValue(int(self._progress["step"]))

        # -- looking ----------------------------------------------------------------------
        def _model(self):
            from .segment import Model

            path = self.run.paths["model"]
            if not path.exists():
                self.say("train a model first")
                return None
            return Model.load(path)

        def predict_slice(self):
            """The model's codes on the current slice, as a layer (seconds)."""
            from .segment import predict

            model = self._model()
            if model is None:
                return None
            z = self.current_z()
            codes = predict(self.run.read(self.image), model)[z].compute()
            shown = _shown_codes(codes)
            if PREDICTION_LAYER in self.viewer.layers:
                self.viewer.layers[PREDICTION_LAYER].data = shown
            else:
                self.viewer.add_labels(shown, name=PREDICTION_LAYER, scale=_scale(self.run)[1:],
                                       colormap=label_colormap(self.names), opacity=0.5,
                                       **_axes(2))
            self.say(f"predicted slice {z}")
            return codes

        def predict_all(self, *, background: bool = True):
            """The segment stage on every slice (with probabilities), then the uncertainty."""
            from . import stages
            from .segment import ForestModel, Model

            model = Model.load(self.run.paths["model"])
            method = "forest" if isinstance(model, ForestModel) else "segnet"

            def work():
                out = stages.segment(self.run, model=model, method=method,
                                     probabilities=True, image=self.image)
                stages.uncertainty(self.run)
                return out

            return self._start(work, "segmenting", background, done=self._refresh)

        def _refresh(self, out=None):
            for data, kwargs, kind in layer_data(self.run.path):
                if kwargs["name"] in ("segmentation", "uncertainty"):
                    if kwargs["name"] in self.viewer.layers:
                        self.viewer.layers.remove(kwargs["name"])
                    getattr(self.viewer, f"add_{kind}")(data, **kwargs)
            if out is not None:
                self.say(out.summary)

        def show_uncertainty(self):
            from . import stages

            out = stages.uncertainty(self.run)
            self._refresh()
            self.viewer.layers["uncertainty"].visible = True
            self.say(out.summary)
            return out

        def next_slice(self) -> int | None:
            """Jump to the most uncertain slice not labelled yet."""
            from . import stages

            self.save_labels()
            picked, means, _ = stages.suggest(self.run, 1, spacing=2)
            if not picked:
                self.say("every slice is labelled")
                return None
            step = list(self.viewer.dims.current_step)
            step[0] = picked[0]
            self.viewer.dims.current_step = tuple(step)
            self.say(f"label slice {picked[0]} next (mean uncertainty {means[0]:.3f})")
            return picked[0]

    return _LabellingWidget


def make_widget(napari_viewer):
    """npe2 widget contribution: the labelling widget on the run of the active layer."""
    for layer in napari_viewer.layers:
        path = layer.metadata.get("bigvol_run")
        if path and Path(path).exists():
            return LabellingWidget(napari_viewer, path)
    raise ValueError("open a bigvol run store first (napari run.zarr or bigvol view)")
