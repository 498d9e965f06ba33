"""The project's conventions, in one place: axes, phase codes and names, chunks, file names.

- Axis order is always ``(z, y, x)``: z is the milling direction (slice index), y the image
  rows, x the image columns. The electrode thickness direction defaults to y (axis 1).
- Phase codes ``0, 1, 2`` = pore, solid electrolyte, active material (darkest to brightest
  in BSE) unless a run names others; :data:`UNLABELLED` (255) marks unlabelled voxels of
  training labels and hand labels.
- Voxel sizes are nanometres ``(z, y, x)``; ``None`` means unit voxels (or unknown).
- A run store ``X.zarr`` has its side files beside it: :func:`output_paths`.
"""

from __future__ import annotations

import os
from pathlib import Path

#: axis names, index = axis
AXES = ("z", "y", "x")
#: the default phase names, index = phase code
DEFAULT_PHASES = ("pore", "solid electrolyte", "active material")
#: the code of an unlabelled voxel in training labels and hand labels
UNLABELLED = 255
#: neighbourhoods of the connected-component metrics: sharing a face, an edge, a corner
CONNECTIVITIES = (6, 18, 26)
#: default chunks (z, y, x) of the arrays a run writes (clipped to the array's shape):
#: 2 MiB of uint8, a few slices deep so that per-slice work reads whole chunks
DEFAULT_CHUNKS = (32, 256, 256)


#: display colours of the phases, index = phase code (report figures, viewer layers)
PHASE_COLOURS = ("#3a3a3a", "#f28e2b", "#4e79a7", "#59a14f", "#e15759", "#b07aa1", "#76b7b2",
                 "#edc948", "#ff9da7", "#9c755f")


def phase_colours(n: int) -> list[str]:
    """``n`` display colours, index = phase code (repeating after 10)."""
    return [PHASE_COLOURS[i % len(PHASE_COLOURS)] for i in range(n)]


def run_stem(run_path) -> str:
    """``cells/A.zarr`` -> ``cells/A``; a store without the ``.zarr`` suffix keeps its name
    whole (``cellA.v2`` -> ``cellA.v2``: a dot in a name is not a suffix)."""
    p = os.fspath(run_path).rstrip("/\\")
    return p[: -len(".zarr")] if p.endswith(".zarr") else p


def output_paths(run_path) -> dict[str, Path]:
    """The files written beside the run store ``X.zarr``: ``X.metrics.json``, ``X.metrics.csv``,
    ``X.report.html``, ``X.model`` (the trained SegNet) and ``X.log`` (the run log)."""
    stem = run_stem(run_path)
    return {
        "metrics_json": Path(f"{stem}.metrics.json"),
        "metrics_csv": Path(f"{stem}.metrics.csv"),
        "report": Path(f"{stem}.report.html"),
        "model": Path(f"{stem}.model"),
        "log": Path(f"{stem}.log"),
    }


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under Slurm or taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


__all__ = ["AXES", "DEFAULT_PHASES", "UNLABELLED", "CONNECTIVITIES", "DEFAULT_CHUNKS",
           "PHASE_COLOURS", "phase_colours", "run_stem", "output_paths", "available_cores"]
