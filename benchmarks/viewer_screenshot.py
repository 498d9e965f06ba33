"""The figure of docs/viewer.png: a run in napari with the bigvol labelling widget.

Copies a run (default: the demo's), paints a few strokes of each class on one slice from
its truth, runs Predict all (probabilities) and Uncertainty from the widget, and saves a
screenshot of the whole window. Needs an X display::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/viewer_screenshot.py \\
        bigvol-demo/demo.zarr docs/viewer.png
"""

import shutil
import sys
import tempfile
from pathlib import Path

import napari
import numpy as np
from skimage.io import imsave

from bigvol.store import Run
from bigvol.viewer import TRAINING_LAYER, open_run


def main(src, out):
    tmp = Path(tempfile.mkdtemp()) / "run.zarr"
    shutil.copytree(src, tmp)
    model = Path(str(src).removesuffix(".zarr") + ".model")
    if model.exists():
        shutil.copy(model, Path(str(tmp).removesuffix(".zarr") + ".model"))
    viewer = napari.Viewer()
    viewer.window.resize(1500, 950)
    widget = open_run(tmp, viewer)
    z = Run.open(tmp).zarr_array("raw").shape[0] // 2
    step = list(viewer.dims.current_step)
    step[0] = z
    viewer.dims.current_step = tuple(step)
    truth = Run.open(tmp).zarr_array("truth")[z]
    painted = np.zeros(truth.shape, np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(60):  # short horizontal strokes, each inside one class
        y, x = rng.integers(5, truth.shape[0] - 5), rng.integers(5, truth.shape[1] - 25)
        c = truth[y, x]
        seg = truth[y - 1:y + 2, x:x + 20] == c
        painted[y - 1:y + 2, x:x + 20][seg] = c + 1
    viewer.layers[TRAINING_LAYER].data = painted
    widget.save_labels()
    widget.predict_all(background=False)
    widget.show_uncertainty()
    viewer.layers["segmentation"].visible = False
    viewer.layers.selection.active = viewer.layers[TRAINING_LAYER]
    widget.say(f"slice {z}: strokes saved; uncertainty shown (bright = unsure)")
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # lay the dock widget out before the window is grabbed
    imsave(out, viewer.screenshot(canvas_only=False))
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
