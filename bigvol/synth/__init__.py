r"""A FIB-SEM phantom of a composite cathode with exact ground truth, lazy and chunked.

:func:`phantom` returns two lazy dask arrays ``(image, truth)`` of shape ``(z, y, x)``:
a BSE rendering (uint8 or uint16) and the phase codes (uint8: ``0`` pore, ``1`` solid
electrolyte, ``2`` active material). Every chunk is generated on its own, and the values for
a given ``seed`` are bit-identical whatever the chunking: the random particle list is drawn
once per seed with :class:`numpy.random.Generator`, every random field is addressed by
global coordinates through an integer hash, and each chunk renders the region it covers
plus the halos its effects need. Compute ``image`` and ``truth`` together
(``dask.compute(image, truth)`` or one ``da.store``): both come from the same task.

Coordinates
-----------
Voxel ``(z, y, x)`` (integer indices) sits at the physical point
``p = (z * vz, (y - sy(z)) * vy, (x - sx(z)) * vx)`` in nm, where ``v = voxel_size`` and
``s(z) = (sy, sx)`` is the slice drift (:func:`true_shifts`, zero by default). The phantom
is defined everywhere, also beyond the array, so a chunk's halo is rendered, never padded.

Microstructure (the truth)
--------------------------
*Active material (AM).* Ellipsoids placed by random sequential addition (RSA) in a periodic
box of size ``extent + 2 d50 e^0.36`` per axis (so nothing repeats inside the array, and no
border is depleted): equivalent diameters ``d`` are log-normal with median ``am_d50_um`` and
``sigma_ln = 0.35``, clipped to ``[0.45, 2] d50``; semi-axes ``d/2 (a, b, c)`` with
``ln a, ln b, ln c ~ N(0, 0.12)`` centred to ``a b c = 1``; uniformly random orientation
``R``. A point ``p`` is inside particle ``i`` when
``q_i(p) = (p - c_i)^T M_i (p - c_i) <= 1``, ``M_i = R_i diag(1/s_i^2) R_i^T``. A candidate
centre is accepted when its bounding sphere (radius ``r = max s``) keeps
``|c_i - c_j| >= kappa (r_i + r_j)`` from every placed particle (minimum image),
``kappa = 0.85`` (particles touch and slightly interpenetrate, as calendered particles do),
lowered by a factor 0.93 after each round of 24 rejected candidates (12 rounds, then the
particle is dropped). Particles are added until a fixed Monte-Carlo sample of 40 000 points
inside the array reaches ``am_fraction``. With ``am_gradient = g`` the centres are drawn
with density proportional to ``f(z) = am_fraction + g (z / Z - 1/2)`` and the array is
filled slab by slab (8 slabs along z) to ``f`` at each slab's centre.
A fraction ``crack_fraction`` of the particles carries one or two internal cracks: planes
``|n . (p - c) - o| < w/2`` (``w = 60 nm``, ``|o| < 0.3 d/2``) restricted to ``q < 0.8^2``;
crack voxels are pore. Each particle has a brightness factor ``g_i ~ 1 + N(0, 0.02)``.

*Contact-loss gaps* (``contact_gaps``). 15 % of the particles carry a gap on a cap of their
surface: ``1 < sqrt(q) <= 1 + w_g / (d/2)`` and ``u . (p - c) >= cos(theta) |p - c|``, with
``w_g ~ U(40, 100) nm``, ``theta ~ U(50, 110) deg``; gap voxels not in a particle are pore.

*Solid electrolyte (SE).* Outside the particles, cracks and gaps, SE where
``F = 0.8 F1 + 0.6 F2 > t1``: ``F1``, ``F2`` unit-variance Gaussian random fields (below)
of lattice spacing ``se_size_um`` and ``se_size_um / 3`` (the coarse network and its
roughness), ``t1 = Phi^{-1}(1 - se_fraction / ((1 - q_small) (1 - am_fraction)))``, so that
the SE fraction is ``se_fraction`` in expectation. *Small pores* (``small_pores``): SE voxels
where a third field ``F3`` (spacing ``se_size_um / 5``) exceeds ``Phi^{-1}(1 - q_small)``,
``q_small = 0.1``, become pore. Pores are the rest: ``1 - am - se`` (~12 % by default).

Gaussian random fields are hash-seeded lattice noise: i.i.d. ``N(0, 1)`` values on an
integer lattice of the given spacing (in nm, so in voxels ``l / voxel_size`` per axis),
drawn from a 64-bit hash (splitmix64) of the lattice point and the seed, interpolated with
the cubic B-spline weights ``w_j(f)`` separably along z, x, y and divided by
``sqrt(sum_j w_j^2)`` per axis, so the field is exactly ``N(0, 1)`` at every voxel. The sums
run in a fixed order over 4 nodes per axis: a voxel's value is bit-identical in any chunk.

BSE rendering (the image), gray values as fractions of the dtype's range
----------------------------------------------------------------------------
1. Clean render ``R``: ``I_pore = 0.10``, ``I_SE = 0.48 (1 + 0.03 F2)``, ``I_AM = 0.70 g_i``
   (electrolyte at 0.69 of active material).
2. Shine-through (``shine_through``): a pore voxel whose first solid voxel behind the
   section plane (``+z``, same ``(y, x)``) is ``d`` slices deeper, ``1 <= d <= D``,
   ``D = ceil(3 lambda / dz)``, shows
   ``I = I_pore + a exp(-d dz / lambda) (I_phase - I_pore)`` with
   ``I_phase = (G_{sigma_k} * R)[z + d] + w``: the clean render of that slice blurred in
   (y, x), more for deeper bins (``{1, 2}`` and ``{3 .. D}``, ``sigma_k = shine_blur_px
   (d_lo d_hi)^(1/4)``), plus ``w = edge_amplitude`` when edge brightening is on (the solid
   behind a pore is a free surface and shows the full edge effect). Defaults
   ``a = shine_amplitude = 1``, ``lambda = shine_depth_nm = 300 nm`` (``D = 18`` at 50 nm).
   Pores with no solid within ``D`` slices stay ``I_pore``.
3. Edge brightening (``edge_brightening``): solid voxels gain
   ``e (G_{1.2 px} * 1[pore])`` (the local pore fraction in the section), ``e =
   edge_amplitude = 0.3``.
4. PSF (``blur``): ``G_{psf_sigma_px} *`` in (y, x), ``psf_sigma_px = 1``.
5. Curtaining (``curtaining = A``): ``+ A S(z, x)``, ``S = 0.6 S1 + 0.8 S2`` unit-variance
   lattice fields in (z, x) of spacing (16 slices, 3 px) and (16 slices, 12 px): constant
   along y (vertical stripes), persisting over ~16 slices.
6. Brightness / contrast drift (``brightness_drift = B``): ``I <- (1 + B u(z)) I + 0.3 B v(z)``
   with ``u, v`` smooth (sums of two random sinusoids of 0.5 - 2 periods over the stack),
   scaled to ``max |u| = max |v| = 1``.
7. Poisson-Gaussian noise (``noise``): ``I + sqrt(alpha I + beta) n``, ``alpha = 1.6e-3 k^2``,
   ``beta = 2e-4 k^2`` (``k = noise_level``), ``n`` of zero mean and unit variance (the sum
   of four hashed 16-bit uniforms, Irwin-Hall), addressed by the voxel index.
8. ``clip(rint(I * maxval), 0, maxval)`` as uint8 (255) or uint16 (65535).

Slice drift (``xy_drift_px = s``): the random walk ``s(0) = 0``, ``s(z) = s(z-1) +
N(0, s^2 I)`` (:func:`true_shifts`) moves the content of slice ``z`` by ``s(z)``: truth and
image are rendered at ``(y - sy(z), x - sx(z))``. Shine-through sees the slices behind in
the imaged slice's frame: slice ``z + d`` is moved by ``s(z) - s(z + d)`` (whole pixels for
the first-solid depth map, bilinear for the blurred layers), so the whole image of slice
``z`` moves with ``s(z)``; the xy halo grows by the largest such difference.

Halos, derived from the parameters: ``D`` slices in +z when shine-through is on; in (y, x)
``max(r_shine, r_edge) + r_psf`` with ``r = int(3 sigma + 0.5)`` (scipy's Gaussian radius).
Cost: one chunk of ``(64, 512, 512)`` holds about 13 bytes per voxel of its region
(chunk plus halos) while it is rendered.

Examples
--------
>>> import dask, numpy as np
>>> from bigvol.synth import phantom
>>> image, truth = phantom((8, 64, 64), seed=1, chunks=(4, 32, 32))
>>> img, tr = dask.compute(image, truth)
>>> img.dtype, tr.dtype, img.shape, int(tr.max()) <= 2
(dtype('uint8'), dtype('uint8'), (8, 64, 64), True)
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ..conventions import DEFAULT_CHUNKS
from ..errors import ConfigError
from ._params import _check_fraction, _check_triple, _make_params, _Params
from ._placement import _Particles, _particles
from ._render import _brightness, _render_block, _shifts

__all__ = ["phantom", "true_shifts"]


# -- public API -----------------------------------------------------------------------------
def phantom(
    shape,
    *,
    seed=0,
    voxel_size=(50, 30, 30),
    chunks=None,
    dtype="uint8",
    am_fraction=0.55,
    am_d50_um=4.0,
    am_gradient=0.0,
    crack_fraction=0.1,
    se_fraction=0.33,
    se_size_um=1.0,
    small_pores=True,
    contact_gaps=True,
    shine_through=True,
    edge_brightening=True,
    noise=True,
    blur=True,
    curtaining=0.03,
    brightness_drift=0.2,
    xy_drift_px=0.0,
    shine_amplitude=1.0,
    shine_depth_nm=300.0,
    shine_blur_px=0.8,
    edge_amplitude=0.3,
    psf_sigma_px=1.0,
    noise_level=1.0,
):
    """A generated FIB-SEM stack of a composite cathode and its exact phase truth.

    The microstructure, the BSE rendering and every artifact are described with their
    formulas in the module docstring (:mod:`bigvol.synth`). Both arrays are lazy and come from
    the same per-chunk task; values for a seed are identical whatever ``chunks``.

    Parameters
    ----------
    shape : (int, int, int)
        ``(z, y, x)`` voxels.
    seed : int
        Seeds the particle list, the random fields, the noise, the drifts.
    voxel_size : (float, float, float)
        nm, ``(z, y, x)`` (z = milling step).
    chunks : tuple or None
        Dask chunks (ints or per-axis tuples, uneven allowed); default
        :data:`bigvol.conventions.DEFAULT_CHUNKS`.
    dtype : {"uint8", "uint16"}
        Image dtype; gray values are fractions of its full range.
    am_fraction, am_d50_um, am_gradient, crack_fraction
        Active material: volume fraction, median equivalent diameter (um), change of the
        fraction from the first to the last slice, fraction of particles with cracks.
    se_fraction, se_size_um
        Solid electrolyte: volume fraction and correlation length of its field (um).
    small_pores, contact_gaps : bool
        Small pores carved from the electrolyte; thin gaps around some particles.
    shine_through, edge_brightening, noise, blur : bool
        Turn the imaging effects on or off.
    curtaining : float
        Standard deviation of the vertical stripes, fraction of the gray range (0 = off).
    brightness_drift : float
        Amplitude ``B`` of the smooth gain (``1 +- B``) and offset (``+- 0.3 B``) drift along z.
    xy_drift_px : float
        Standard deviation of the slice-to-slice random-walk step, px (0 = off).
    shine_amplitude, shine_depth_nm, shine_blur_px
        ``a``, ``lambda`` (nm) and the blur growth of shine-through.
    edge_amplitude, psf_sigma_px, noise_level
        Edge brightening ``e``, PSF sigma (px), noise scale.

    Returns
    -------
    image : dask.array.Array, (z, y, x), uint8 or uint16
    truth : dask.array.Array, (z, y, x), uint8 phase codes (0 pore, 1 SE, 2 AM)

    Raises
    ------
    bigvol.errors.ConfigError
        A parameter out of range (the message names it).

    Examples
    --------
    >>> image, truth = phantom((16, 128, 128), seed=3, chunks=(8, 64, 64))
    >>> image.shape, image.dtype.name, truth.dtype.name
    ((16, 128, 128), 'uint8', 'uint8')
    """
    prm = _make_params(
        shape, seed, voxel_size, dtype,
        am_fraction=am_fraction, am_d50_um=am_d50_um, am_gradient=am_gradient,
        crack_fraction=crack_fraction, se_fraction=se_fraction, se_size_um=se_size_um,
        small_pores=small_pores, contact_gaps=contact_gaps, shine_through=shine_through,
        edge_brightening=edge_brightening, noise=noise, blur=blur, curtaining=curtaining,
        brightness_drift=brightness_drift, xy_drift_px=xy_drift_px,
        shine_amplitude=shine_amplitude, shine_depth_nm=shine_depth_nm,
        shine_blur_px=shine_blur_px, edge_amplitude=edge_amplitude,
        psf_sigma_px=psf_sigma_px, noise_level=noise_level,
    )
    dt = np.dtype(prm.dtype)
    if chunks is None:
        chunks = tuple(min(c, s) for c, s in zip(DEFAULT_CHUNKS, prm.shape))
    try:
        chunks = da.core.normalize_chunks(chunks, prm.shape, dtype=dt)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"chunks {chunks!r} do not fit shape {prm.shape}: {e}") from None
    token = tokenize(prm.asdict(), chunks)
    name = "phantom-" + token
    pkey = "phantom-params-" + token
    # the particle list and the drift curves: one task that every chunk depends on, so that
    # building the graph computes nothing
    dsk = {pkey: (_prepare, prm)}
    bounds = [np.cumsum((0,) + c) for c in chunks]
    for i, j, k in np.ndindex(*(len(c) for c in chunks)):
        zr = (int(bounds[0][i]), int(bounds[0][i + 1]))
        yr = (int(bounds[1][j]), int(bounds[1][j + 1]))
        xr = (int(bounds[2][k]), int(bounds[2][k + 1]))
        dsk[(name, 0, i, j, k)] = (_render_task, pkey, zr, yr, xr)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    both = da.Array(graph, name, chunks=((2,),) + tuple(chunks), dtype=dt,
                    meta=np.empty((0, 0, 0, 0), dt))
    image = both[0]
    truth = both[1].astype(np.uint8) if dt != np.uint8 else both[1]
    return image, truth


def _prepare(prm: _Params):
    P = _particles(
        prm.shape, prm.voxel_size, prm.seed, prm.am_fraction, prm.am_d50_um,
        prm.am_gradient, prm.crack_fraction,
    )
    if not prm.contact_gaps and P.gap_w.any():
        P = _Particles(**{**P.__dict__, "gap_w": np.zeros_like(P.gap_w)})
    gain, offset = _brightness(prm)
    return prm, P, gain, offset


def _render_task(params, zr, yr, xr):
    prm, P, gain, offset = params
    return _render_block(prm, P, gain, offset, zr, yr, xr)


def parameters(**kw) -> dict:
    """The full, validated parameter set of a phantom call (for provenance records)."""
    shape = kw.pop("shape")
    seed = kw.pop("seed", 0)
    vs = kw.pop("voxel_size", (50, 30, 30))
    dtype = kw.pop("dtype", "uint8")
    kw.pop("chunks", None)
    import inspect

    defaults = {
        k: v.default for k, v in inspect.signature(phantom).parameters.items()
        if v.default is not inspect.Parameter.empty
    }
    full = {k: kw.get(k, defaults[k]) for k in defaults if k not in
            ("seed", "voxel_size", "chunks", "dtype")}
    unknown = set(kw) - set(full)
    if unknown:
        raise ConfigError(f"unknown phantom parameter(s): {', '.join(sorted(unknown))}")
    return _make_params(shape, seed, vs, dtype, **full).asdict()


def true_shifts(shape, *, seed=0, xy_drift_px=0.0) -> np.ndarray:
    """The (dy, dx) translation in pixels that the slice drift applies to each slice.

    A random walk: ``s(0) = (0, 0)``, ``s(z) = s(z - 1) + N(0, xy_drift_px^2 I)``. The content
    of slice ``z`` appears moved by ``s(z)``: the image shows at pixel ``(y, x)`` what the
    undrifted phantom shows at ``(y - dy, x - dx)``.

    Parameters
    ----------
    shape : (int, int, int)
        The phantom's shape; only ``shape[0]`` (the number of slices) matters.
    seed : int
    xy_drift_px : float
        Standard deviation of each slice-to-slice step, in pixels (0 = no drift).

    Returns
    -------
    ndarray, shape (z, 2), float64

    Examples
    --------
    >>> true_shifts((4, 8, 8), seed=0, xy_drift_px=0.0).tolist()
    [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    """
    shape = _check_triple("shape", shape, integer=True)
    s = _check_fraction("xy_drift_px", xy_drift_px, 0.0, 100.0)
    return _shifts(shape[0], int(seed), s)
