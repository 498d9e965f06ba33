"""Small synthetic three-phase stacks shared by the segmentation tests."""

import numpy as np
from scipy import ndimage as ndi

TINY = {"widths": (8, 16), "convs": (1, 1), "crop": 48, "batch_size": 4, "progress": False}


def synth(shape, seed=0):
    """Three phases from smoothed noise, gray levels 40 / 120 / 200, blur and noise."""
    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.normal(size=shape), (1.5, 3, 3))
    truth = np.digitize(f, np.quantile(f, [0.2, 0.55])).astype(np.uint8)
    img = np.array([40, 120, 200], np.float32)[truth]
    img = ndi.gaussian_filter(img, (0, 1, 1)) + rng.normal(0, 20, shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth
