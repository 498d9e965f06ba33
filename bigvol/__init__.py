"""bigvol: out-of-core FIB-SEM segmentation and structure metrics of battery electrodes.

The public API (docs/design.md) is re-exported here. Importing bigvol has no side effects and
does not import PyTorch (the segmentation model imports it when first used).
"""

from . import (
    align,
    compare,
    conventions,
    destripe,
    errors,
    evaluate,
    metrics,
    normalize,
    report,
    segment,
    store,
    synth,
    validate,
)
from ._ingest import ingest
from ._label import label
from ._version import __version__
from .pipeline import run

__all__ = [
    "__version__", "conventions", "errors", "store", "validate", "synth", "ingest", "align",
    "destripe", "normalize", "evaluate", "segment", "label", "metrics", "compare", "report", "run",
]
