"""Structure metrics of a phase volume, as chunked (out-of-core) reductions.

``phases`` is a dask or numpy array of phase codes (0 = pore, 1 = solid electrolyte,
2 = active material); ``voxel_size`` is nm ``(z, y, x)``, ``None`` meaning unit voxels.
"""

__all__: list[str] = []
