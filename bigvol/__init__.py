"""bigvol: out-of-core FIB-SEM segmentation and structure metrics of battery electrodes.

The public API (docs/design.md) is re-exported here. Importing bigvol has no side effects and
does not import PyTorch (the segmentation model imports it when first used).
"""

from ._version import __version__
from . import conventions, errors, store, validate
from . import synth
from ._ingest import ingest
from . import align, destripe, normalize
from . import evaluate, segment
from ._label import label
from . import metrics
from . import compare, report
from .pipeline import run

__all__ = [
    "__version__", "conventions", "errors", "store", "validate", "synth", "ingest", "align", "destripe", "normalize",
    "evaluate", "segment", "label", "metrics", "compare", "report", "run",
]
