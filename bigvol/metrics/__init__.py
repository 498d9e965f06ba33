"""Structure metrics of a phase volume, as chunked (out-of-core) reductions.

``phases`` is a dask or numpy array of phase codes (0 = pore, 1 = solid electrolyte,
2 = active material); ``voxel_size`` is nm ``(z, y, x)``, ``None`` meaning unit voxels.
"""

from .connectivity import component_table, isolated_fraction, percolation
from .fractions import volume_fractions
from .interfaces import interfaces
from .thickness import local_thickness, max_inscribed_radius, thickness_summary
from .transport import tortuosity

__all__: list[str] = ["volume_fractions", "isolated_fraction", "percolation", "component_table",
                      "local_thickness", "thickness_summary", "max_inscribed_radius",
                      "tortuosity", "interfaces"]
