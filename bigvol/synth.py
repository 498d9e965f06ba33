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

import functools
import math
from dataclasses import dataclass, fields

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.special import ndtri

from .conventions import DEFAULT_CHUNKS
from .errors import ConfigError

__all__ = ["phantom", "true_shifts"]

# gray levels (fraction of the dtype's range)
I_PORE, I_SE, I_AM = 0.10, 0.48, 0.70
SE_TEXTURE = 0.03
Q_SMALL = 0.10  # fraction of the electrolyte carved into small pores
SE_W1, SE_W2 = 0.8, 0.6  # coarse and fine octave of the electrolyte field (0.8^2 + 0.6^2 = 1)
KAPPA = 0.85
SIGMA_LN = 0.35
CRACK_WIDTH_NM = 60.0
GAP_PARTICLE_FRACTION = 0.15
EDGE_SIGMA_PX = 1.2
WALL_FACTOR = 1.0
TRUNCATE = 3.0
N_MC = 40_000

# hash stream keys (one per random field)
_K_F1, _K_F2, _K_CURT1, _K_CURT2, _K_NOISE, _K_F3 = 11, 12, 13, 14, 15, 16
# numpy Generator streams
_S_PARTICLES, _S_DRIFT, _S_BRIGHT = 1, 2, 3


# -- parameters -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Params:
    shape: tuple
    seed: int
    voxel_size: tuple
    dtype: str
    am_fraction: float
    am_d50_um: float
    am_gradient: float
    crack_fraction: float
    se_fraction: float
    se_size_um: float
    small_pores: bool
    contact_gaps: bool
    shine_through: bool
    edge_brightening: bool
    noise: bool
    blur: bool
    curtaining: float
    brightness_drift: float
    xy_drift_px: float
    shine_amplitude: float
    shine_depth_nm: float
    shine_blur_px: float
    edge_amplitude: float
    psf_sigma_px: float
    noise_level: float

    def asdict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # derived geometry of the imaging halos
    @property
    def depth_slices(self) -> int:
        if not self.shine_through or self.shine_amplitude == 0:
            return 0
        return int(math.ceil(3.0 * self.shine_depth_nm / self.voxel_size[0]))

    @property
    def shine_bins(self) -> list[tuple[int, int, float]]:
        """(first depth, last depth, sigma px) of every depth bin: {1, 2}, {3..D}."""
        D = self.depth_slices
        out = []
        for lo, hi in ((1, 2), (3, D)):
            hi = min(hi, D)
            if lo <= hi:
                out.append((lo, hi, self.shine_blur_px * math.sqrt(math.sqrt(lo * hi))))
        return out

    @property
    def halo_xy(self) -> int:
        r1 = 0
        if self.depth_slices:
            r1 = max(_radius(s) for _, _, s in self.shine_bins)
        if self.edge_brightening and self.edge_amplitude:
            r1 = max(r1, _radius(EDGE_SIGMA_PX))
        r2 = _radius(self.psf_sigma_px) if self.blur else 0
        return r1 + r2


def _radius(sigma: float) -> int:
    return int(TRUNCATE * float(sigma) + 0.5) if sigma > 0 else 0


def _check_fraction(name, v, lo=0.0, hi=1.0):
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {v!r}") from None
    if not (np.isfinite(v) and lo <= v <= hi):
        raise ConfigError(f"{name} must be between {lo:g} and {hi:g}, got {v!r}")
    return v


def _check_positive(name, v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {v!r}") from None
    if not (np.isfinite(v) and v > 0):
        raise ConfigError(f"{name} must be a positive number, got {v!r}")
    return v


def _check_triple(name, v, integer):
    try:
        vals = tuple(v)
    except TypeError:
        raise ConfigError(f"{name} must be three numbers (z, y, x), got {v!r}") from None
    if len(vals) != 3:
        raise ConfigError(f"{name} must be three numbers (z, y, x), got {v!r}")
    out = []
    for x in vals:
        if integer:
            if isinstance(x, bool) or not float(x).is_integer() or int(x) < 1:
                raise ConfigError(f"{name} must be three positive integers (z, y, x), got {v!r}")
            out.append(int(x))
        else:
            out.append(_check_positive(name, x))
    return tuple(out)


def _make_params(shape, seed, voxel_size, dtype, **kw) -> _Params:
    shape = _check_triple("shape", shape, integer=True)
    voxel_size = _check_triple("voxel_size", voxel_size, integer=False)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise ConfigError(f"seed must be an integer, got {seed!r}") from None
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    dt = str(np.dtype(dtype)) if dtype in ("uint8", "uint16", np.uint8, np.uint16) else None
    if dt is None:
        try:
            dt = str(np.dtype(dtype))
        except TypeError:
            dt = repr(dtype)
        if dt not in ("uint8", "uint16"):
            raise ConfigError(f"dtype must be 'uint8' or 'uint16', got {dtype!r}")
    am = _check_fraction("am_fraction", kw["am_fraction"], 0.0, 0.7)
    se = _check_fraction("se_fraction", kw["se_fraction"])
    if am + se > 0.97:
        raise ConfigError(
            f"am_fraction + se_fraction must leave room for pores (<= 0.97), got {am} + {se}"
        )
    g = _check_fraction("am_gradient", kw["am_gradient"], -1.0, 1.0)
    if am - abs(g) / 2 < 0 or am + abs(g) / 2 > 0.7:
        raise ConfigError(
            f"am_gradient={g}: the active-material fraction am_fraction +- am_gradient/2 "
            f"must stay within [0, 0.7] (am_fraction={am})"
        )
    if se > 0 and (am + abs(g) / 2) + se / (1 - Q_SMALL) > 0.995:
        raise ConfigError(
            "se_fraction too large for the space the active material leaves "
            f"(am_fraction={am}, am_gradient={g}, se_fraction={se})"
        )
    p = dict(
        am_fraction=am,
        am_gradient=g,
        se_fraction=se,
        crack_fraction=_check_fraction("crack_fraction", kw["crack_fraction"]),
        am_d50_um=_check_positive("am_d50_um", kw["am_d50_um"]),
        se_size_um=_check_positive("se_size_um", kw["se_size_um"]),
        curtaining=_check_fraction("curtaining", kw["curtaining"], 0.0, 0.5),
        brightness_drift=_check_fraction("brightness_drift", kw["brightness_drift"], 0.0, 0.5),
        xy_drift_px=_check_fraction("xy_drift_px", kw["xy_drift_px"], 0.0, 100.0),
        shine_amplitude=_check_fraction("shine_amplitude", kw["shine_amplitude"]),
        shine_depth_nm=_check_positive("shine_depth_nm", kw["shine_depth_nm"]),
        shine_blur_px=_check_fraction("shine_blur_px", kw["shine_blur_px"], 0.0, 20.0),
        edge_amplitude=_check_fraction("edge_amplitude", kw["edge_amplitude"]),
        psf_sigma_px=_check_fraction("psf_sigma_px", kw["psf_sigma_px"], 0.0, 20.0),
        noise_level=_check_fraction("noise_level", kw["noise_level"], 0.0, 20.0),
    )
    for name in ("small_pores", "contact_gaps", "shine_through", "edge_brightening", "noise", "blur"):
        v = kw[name]
        if not isinstance(v, (bool, np.bool_)):
            raise ConfigError(f"{name} must be True or False, got {v!r}")
        p[name] = bool(v)
    return _Params(shape=shape, seed=seed, voxel_size=voxel_size, dtype=dt, **p)


# -- hashing: coordinate-addressable randomness ---------------------------------------------
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_PRIMES = (np.uint64(0xD6E8FEB86659FD93), np.uint64(0xA0761D6478BD642F), np.uint64(0xE7037ED1A0B428DB))


def _mix(h):
    """splitmix64 finalizer on a uint64 array (in place where possible)."""
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return h


def _key(seed: int, stream: int) -> np.uint64:
    h = _mix(np.array([(seed * 0x10001 + stream) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return h[0]


def _hash_coords(key, *coords):
    """A uint64 hash of broadcast integer coordinate arrays and a key."""
    with np.errstate(over="ignore"):
        h = None
        for c, p in zip(coords, _PRIMES):
            t = np.asarray(c, dtype=np.int64).astype(np.uint64) * p
            h = t if h is None else h + t
        h = _mix(h ^ key)
        return _mix(h + _GOLD)


def _lattice_gauss(key, *coords):
    """i.i.d. N(0, 1) values on integer lattice points (hash -> uniform -> inverse CDF)."""
    h = _hash_coords(key, *coords)
    u = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)
    return ndtri(u).astype(np.float32)


def _bspline(t):
    """Lattice index of the first of 4 nodes and the normalized cubic B-spline weights."""
    t = np.asarray(t, dtype=np.float64)
    i = np.floor(t)
    f = t - i
    f2, f3 = f * f, f * f * f
    w = np.stack(
        [(1 - f) ** 3 / 6, (3 * f3 - 6 * f2 + 4) / 6, (-3 * f3 + 3 * f2 + 3 * f + 1) / 6, f3 / 6]
    )
    w /= np.sqrt((w * w).sum(axis=0))
    return i.astype(np.int64) - 1, w.astype(np.float32)


class _LatticeField:
    """The unit-variance lattice field over a region, evaluated slice by slice.

    ``zs``: (nz,) slice coordinates; ``ys``, ``xs``: (1 or nz, n) coordinates in voxels (one
    row per slice when the slices drift). The lattice values of the region are hashed once;
    each slice contracts z, then x, then y over 4 nodes, summed in a fixed order, so a
    voxel's value does not depend on the region it is computed in.
    """

    def __init__(self, key, spacing, zs, ys, xs):
        self.iz, self.wz = _bspline(np.asarray(zs, np.float64) / spacing[0])
        self.iy, self.wy = _bspline(ys / spacing[1])
        self.ix, self.wx = _bspline(xs / spacing[2])
        self.a0, self.b0, self.c0 = int(self.iz.min()), int(self.iy.min()), int(self.ix.min())
        a1, b1, c1 = int(self.iz.max()) + 4, int(self.iy.max()) + 4, int(self.ix.max()) + 4
        self.L = _lattice_gauss(
            key,
            np.arange(self.a0, a1)[:, None, None],
            np.arange(self.b0, b1)[None, :, None],
            np.arange(self.c0, c1)[None, None, :],
        )
        self.wy = self.wy[..., None]  # (4, n, ny, 1)

    def slice(self, k):
        r = k if self.iy.shape[0] > 1 else 0
        iz = self.iz[k] - self.a0
        lz = None
        for j in range(4):
            v = self.L[iz + j] * self.wz[j, k]
            lz = v if lz is None else lz + v
        rx = self.ix[r] - self.c0
        tx = None
        for j in range(4):
            v = lz[:, rx + j] * self.wx[j, r]
            tx = v if tx is None else tx + v
        ry = self.iy[r] - self.b0
        out = None
        for j in range(4):
            v = tx[ry + j]
            v *= self.wy[j, r]
            if out is None:
                out = v
            else:
                out += v
        return out


def _field_2d(key, spacing, zs, xs):
    """Unit-variance lattice field in (z, x) for 1-D ``zs``, ``xs`` (curtaining)."""
    iz, wz = _bspline(zs / spacing[0])
    ix, wx = _bspline(xs / spacing[1])
    a0, a1 = int(iz.min()), int(iz.max()) + 4
    c0, c1 = int(ix.min()), int(ix.max()) + 4
    lat = _lattice_gauss(key, np.arange(a0, a1)[:, None], np.arange(c0, c1)[None, :])
    t = None
    for j in range(4):
        v = lat[iz - a0 + j] * wz[j][:, None]
        t = v if t is None else t + v
    out = None
    for j in range(4):
        v = t[:, ix - c0 + j] * wx[j][None, :]
        out = v if out is None else out + v
    return out


# -- particles ----------------------------------------------------------------------------
@dataclass
class _Particles:
    box: np.ndarray  # (3,) periodic box, nm
    centre: np.ndarray  # (n, 3) nm
    M: np.ndarray  # (n, 3, 3) nm^-2
    ext: np.ndarray  # (n, 3) half extent along each axis, nm
    r: np.ndarray  # (n,) bounding radius, nm
    rmean: np.ndarray  # (n,) equivalent radius, nm
    gain: np.ndarray  # (n,)
    crack_n: np.ndarray  # (n, 2, 3) unit normals (zero = no crack)
    crack_o: np.ndarray  # (n, 2) offsets, nm
    gap_w: np.ndarray  # (n,) gap width nm (0 = none)
    gap_u: np.ndarray  # (n, 3) cap axis
    gap_cos: np.ndarray  # (n,)
    fraction: float  # Monte-Carlo AM fraction inside the array volume


def _rotations(rng, n):
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


def _unit(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@functools.lru_cache(maxsize=16)
def _particles(shape, voxel_size, seed, am, d50_um, gradient, crack_fraction) -> _Particles:
    """Random sequential addition of ellipsoids; deterministic for the arguments."""
    rng = np.random.default_rng([seed, _S_PARTICLES])
    extent = np.array(shape, float) * np.array(voxel_size, float)
    d50 = d50_um * 1000.0
    rmax_bound = 2.0 * d50 / 2 * math.exp(3 * 0.12) * 1.01
    box = extent + 2 * rmax_bound
    mc = rng.random((N_MC, 3)) * extent
    covered = np.zeros(N_MC, bool)
    mc_tree = cKDTree(mc, boxsize=box)
    cap = max(am, 1e-9) + abs(gradient) / 2
    # with a gradient, the array is filled slab by slab (8 slabs along z) to f(z)
    n_slabs = 8
    mc_slab = np.minimum((mc[:, 0] / extent[0] * n_slabs).astype(int), n_slabs - 1)
    slab_n = np.maximum(np.bincount(mc_slab, minlength=n_slabs), 1)
    slab_target = am + gradient * ((np.arange(n_slabs) + 0.5) / n_slabs - 0.5)
    slab_cov = np.zeros(n_slabs)

    cen, Ms, exts, rs, rms = [], [], [], [], []
    placed_c = np.empty((1024, 3))
    placed_r = np.empty(0)
    tree = (None, 0, 0.0)  # (KD-tree of the first n particles, n, their largest radius)
    frac = 0.0
    batch = 64
    while am > 0 and frac < am:
        d = np.clip(d50 * np.exp(rng.normal(0, SIGMA_LN, batch)), 0.45 * d50, 2.0 * d50)
        ln = rng.normal(0, 0.12, (batch, 3))
        ln -= ln.mean(axis=1, keepdims=True)
        semi = d[:, None] / 2 * np.exp(ln)
        R = _rotations(rng, batch)
        new_c = []
        for k in range(batch):
            r = semi[k].max()
            c = None
            kappa = KAPPA
            for _round in range(12):
                cand = rng.random((24, 3)) * box
                if gradient:
                    # the margin above the array wraps onto its first slices
                    zc = np.clip(cand[:, 0] / extent[0], 0, 1)
                    zc[cand[:, 0] > extent[0] + rmax_bound] = 0.0
                    keep = rng.random(24) * cap <= am + gradient * (zc - 0.5)
                    # slabs that reached their target take no more centres
                    slab = np.minimum((zc * n_slabs).astype(int), n_slabs - 1)
                    keep &= slab_cov[slab] < slab_target[slab]
                    cand = cand[keep]
                good = _free(cand, r, kappa, placed_c[: len(placed_r)], placed_r, box, tree)
                if len(good):
                    c = cand[good[0]]
                    break
                kappa *= 0.93
            if c is None:
                continue
            placed_c[len(placed_r)] = c
            placed_r = np.append(placed_r, r)
            if len(placed_r) - tree[1] >= 512:  # rebuild the tree of old particles
                tree = (cKDTree(placed_c[: len(placed_r)], boxsize=box), len(placed_r),
                        placed_r.max())
            if len(placed_r) == len(placed_c):
                placed_c = np.vstack([placed_c, np.empty_like(placed_c)])
            M = R[k] @ np.diag(1.0 / semi[k] ** 2) @ R[k].T
            cov = R[k] @ np.diag(semi[k] ** 2) @ R[k].T
            cen.append(c)
            Ms.append(M)
            exts.append(np.sqrt(np.diag(cov)))
            rs.append(r)
            rms.append(d[k] / 2)
            new_c.append(len(cen) - 1)
            # Monte-Carlo coverage of the array volume; stop at the particle that reaches it
            i = len(cen) - 1
            near = np.asarray(mc_tree.query_ball_point(c, r), dtype=np.intp)
            near = near[~covered[near]]
            diff = mc[near] - c
            diff -= box * np.round(diff / box)
            if len(near):
                q = np.einsum("ni,ij,nj->n", diff, Ms[i], diff)
                covered[near[q <= 1.0]] = True
                frac = covered.mean()
                if gradient:
                    slab_cov = np.bincount(mc_slab, weights=covered, minlength=n_slabs) / slab_n
                    if np.all(slab_cov >= slab_target):
                        break
                elif frac >= am:
                    break
        if not new_c:
            break
    n = len(cen)
    if n == 0:
        z3 = np.zeros((0, 3))
        return _Particles(box, z3, np.zeros((0, 3, 3)), z3, np.zeros(0), np.zeros(0),
                          np.zeros(0), np.zeros((0, 2, 3)), np.zeros((0, 2)), np.zeros(0),
                          z3, np.zeros(0), 0.0)
    rs = np.array(rs)
    rms = np.array(rms)
    gain = 1.0 + rng.normal(0, 0.02, n)
    cracked = rng.random(n) < crack_fraction
    ncr = np.where(cracked, rng.integers(1, 3, n), 0)
    crack_n = _unit(rng, 2 * n).reshape(n, 2, 3)
    crack_n[ncr < 1, 0] = 0
    crack_n[ncr < 2, 1] = 0
    crack_o = rng.uniform(-0.3, 0.3, (n, 2)) * rms[:, None]
    gapped = rng.random(n) < GAP_PARTICLE_FRACTION
    gap_w = np.where(gapped, rng.uniform(40, 100, n), 0.0)
    gap_u = _unit(rng, n)
    gap_cos = np.cos(np.deg2rad(rng.uniform(50, 110, n)))
    return _Particles(
        box=box, centre=np.array(cen), M=np.array(Ms), ext=np.array(exts), r=rs, rmean=rms,
        gain=gain, crack_n=crack_n, crack_o=crack_o, gap_w=gap_w, gap_u=gap_u,
        gap_cos=gap_cos, fraction=float(frac),
    )


def _free(cand, r, kappa, placed_c, placed_r, box, tree):
    """Indices of candidate centres whose bounding sphere keeps the RSA distance.

    Distances are minimum-image (periodic box). Old particles are looked up in a periodic
    KD-tree (scipy's cKDTree), the ones placed since its last rebuild by brute force.
    """
    ok = np.ones(len(cand), bool)
    kd, n_old, rmax_old = tree
    recent_c, recent_r = placed_c[n_old:], placed_r[n_old:]
    if len(recent_r):
        diff = cand[:, None, :] - recent_c[None, :, :]
        diff -= box * np.round(diff / box)
        dist = np.sqrt((diff * diff).sum(-1))
        ok &= np.all(dist >= kappa * (r + recent_r[None, :]), axis=1)
    if kd is not None and len(cand):
        # the K nearest old particles within the largest possible reach; a candidate with K
        # or more of them is treated as blocked (conservative, never an overlap)
        K = 24
        dist, nb = kd.query(cand, k=K, distance_upper_bound=kappa * (r + rmax_old))
        found = np.isfinite(dist)
        rj = np.where(found, placed_r[np.minimum(nb, len(placed_r) - 1)], 0.0)
        ok &= np.all(~found | (dist >= kappa * (r + rj)), axis=1) & ~found[:, -1]
    return np.flatnonzero(ok)


# -- drift --------------------------------------------------------------------------------
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


def _shifts(nz, seed, s):
    out = np.zeros((nz, 2))
    if s > 0 and nz > 1:
        rng = np.random.default_rng([seed, _S_DRIFT])
        out[1:] = np.cumsum(rng.normal(0, s, (nz - 1, 2)), axis=0)
    return out


def _shifts_at(prm: _Params, zs: np.ndarray) -> np.ndarray:
    """Shifts for global slice indices ``zs`` (the last one holds beyond the stack)."""
    s = _shifts(prm.shape[0], prm.seed, prm.xy_drift_px)
    return s[np.clip(zs, 0, prm.shape[0] - 1)]


def _brightness(prm: _Params) -> tuple[np.ndarray, np.ndarray]:
    """Smooth gain ``1 + B u(z)`` and offset ``0.3 B v(z)`` for every slice."""
    nz = prm.shape[0]
    if prm.brightness_drift == 0:
        return np.ones(nz), np.zeros(nz)
    rng = np.random.default_rng([prm.seed, _S_BRIGHT])
    t = (np.arange(nz) + 0.5) / nz
    out = []
    for _ in range(2):
        f = sum(
            rng.uniform(0.3, 1) * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 2 * np.pi))
            for _ in range(2)
        )
        m = np.abs(f).max()
        out.append(f / m if m > 0 else f)
    B = prm.brightness_drift
    return 1.0 + B * out[0], 0.3 * B * out[1]


# -- geometry -------------------------------------------------------------------------------
def _geometry(prm: _Params, P: _Particles, z0, z1, y0, y1, x0, x1):
    """Truth and clean render of the region ``[z0, z1) x [y0, y1) x [x0, x1)`` (global)."""
    vz, vy, vx = prm.voxel_size
    nz, ny, nx = z1 - z0, y1 - y0, x1 - x0
    zs = np.arange(z0, z1)
    sh = _shifts_at(prm, zs)
    drift = bool(np.any(sh))
    # physical coordinates, nm; y and x per slice when the slices drift
    Zc = zs * vz
    yi = np.arange(y0, y1, dtype=np.float64)
    xi = np.arange(x0, x1, dtype=np.float64)
    if drift:
        Yc = (yi[None, :] - sh[:, 0:1]) * vy  # (nz, ny)
        Xc = (xi[None, :] - sh[:, 1:2]) * vx
    else:
        Yc = (yi * vy)[None, :]  # (1, ny)
        Xc = (xi * vx)[None, :]
    amv = np.zeros((nz, ny, nx), np.float32)  # AM brightness (0 = not AM)
    excl = np.zeros((nz, ny, nx), bool)  # particles, cracks and gaps: no electrolyte
    lo = np.array([Zc.min(), Yc.min(), Xc.min()])
    hi = np.array([Zc.max(), Yc.max(), Xc.max()])
    n = len(P.r)
    if n:
        # half extent of the particle or of its gap shell (scaled by 1 + w_g / r_mean)
        reach = P.ext * (1.0 + P.gap_w / P.rmean)[:, None]
        box = P.box
        kmin = np.floor((lo - box) / box).astype(int)
        kmax = np.ceil(hi / box).astype(int)
        for kz in range(kmin[0], kmax[0] + 1):
            for ky in range(kmin[1], kmax[1] + 1):
                for kx in range(kmin[2], kmax[2] + 1):
                    off = np.array([kz, ky, kx]) * box
                    c = P.centre + off
                    hit = np.all((c + reach >= lo) & (c - reach <= hi), axis=1)
                    for i in np.flatnonzero(hit):
                        _render_particle(P, i, c[i], reach[i], Zc, Yc, Xc, drift, amv, excl)
    truth = np.zeros((nz, ny, nx), np.uint8)
    render = np.empty((nz, ny, nx), np.float32)
    se_sp = _se_spacing(prm)
    t1 = _se_threshold(prm, P)
    t2 = float(ndtri(1 - Q_SMALL)) if prm.small_pores else np.inf
    k1, k2, k3 = _key(prm.seed, _K_F1), _key(prm.seed, _K_F2), _key(prm.seed, _K_F3)
    if drift:
        yf, xf = yi[None, :] - sh[:, 0:1], xi[None, :] - sh[:, 1:2]
    else:
        yf, xf = yi[None, :], xi[None, :]
    if prm.se_fraction > 0:
        F1 = _LatticeField(k1, se_sp, zs, yf, xf)
        F2 = _LatticeField(k2, tuple(s / 3 for s in se_sp), zs, yf, xf)
        if prm.small_pores:
            F3 = _LatticeField(k3, tuple(s / 5 for s in se_sp), zs, yf, xf)
    w1, w2 = np.float32(SE_W1), np.float32(SE_W2)
    for k in range(nz):
        a = amv[k]
        isam = a > 0
        tr = truth[k]
        rd = render[k]
        rd[...] = I_PORE
        if prm.se_fraction > 0:
            f2 = F2.slice(k)
            f = F1.slice(k)
            f *= w1
            f += w2 * f2
            se = (f > t1) & ~excl[k]
            del f
            if prm.small_pores:
                se &= F3.slice(k) <= t2
            tr[se] = 1
            tex = f2
            tex *= I_SE * SE_TEXTURE
            tex += I_SE
            np.copyto(rd, tex, where=se)
        tr[isam] = 2
        np.multiply(a, I_AM, out=rd, where=isam)
    return truth, render


def _se_spacing(prm):
    return tuple(prm.se_size_um * 1000.0 / v for v in prm.voxel_size)


def _se_threshold(prm: _Params, P: _Particles) -> float:
    if prm.se_fraction <= 0:
        return np.inf
    q = Q_SMALL if prm.small_pores else 0.0
    am = prm.am_fraction
    p = prm.se_fraction / ((1 - q) * (1 - am))
    p = min(p, 1 - 1e-6)
    return float(ndtri(1 - p))


def _render_particle(P: _Particles, i, c, reach, Zc, Yc, Xc, drift, amv, excl):
    """Rasterize particle ``i`` (centre ``c`` of this periodic image) into the region.

    The quadratic form is split into 2-D parts (float64) summed in float32 in 3-D, always in
    the same order, so a voxel gets the same value in any region.
    """
    z = np.flatnonzero(np.abs(Zc - c[0]) <= reach[0])
    if not len(z):
        return
    za, zb = z[0], z[-1] + 1
    Yr = Yc[za:zb] if drift else Yc
    Xr = Xc[za:zb] if drift else Xc
    yy = np.flatnonzero(np.any(np.abs(Yr - c[1]) <= reach[1], axis=0))
    xx = np.flatnonzero(np.any(np.abs(Xr - c[2]) <= reach[2], axis=0))
    if not len(yy) or not len(xx):
        return
    ya, yb, xa, xb = yy[0], yy[-1] + 1, xx[0], xx[-1] + 1
    dz = (Zc[za:zb] - c[0])[:, None]  # (Z, 1)
    dy = Yr[:, ya:yb] - c[1]  # (1|Z, Y)
    dx = Xr[:, xa:xb] - c[2]  # (1|Z, X)
    M = P.M[i]
    f32 = np.float32
    Pzy = (M[0, 0] * dz * dz + M[1, 1] * dy * dy + 2 * M[0, 1] * dz * dy).astype(f32)
    Qzx = (M[2, 2] * dx * dx + 2 * M[0, 2] * dz * dx).astype(f32)
    Ryx = ((2 * M[1, 2]) * dy[:, :, None] * dx[:, None, :]).astype(f32)  # (1|Z, Y, X)
    q = np.add(Pzy[:, :, None], Qzx[:, None, :])
    q += Ryx
    sub_am = amv[za:zb, ya:yb, xa:xb]
    sub_ex = excl[za:zb, ya:yb, xa:xb]
    gw = P.gap_w[i]
    if gw > 0:
        rho_max = 1.0 + gw / P.rmean[i]
        shell = (q > 1.0) & (q <= f32(rho_max * rho_max))
        if shell.any():
            u = P.gap_u[i]
            ud = _sum3(u[0] * dz, u[1] * dy, u[2] * dx)
            nrm2 = _sum3(dz * dz, dy * dy, dx * dx)
            cs = f32(P.gap_cos[i])
            ud2 = ud * ud
            nrm2 *= cs * cs
            if cs >= 0:
                cap = (ud >= 0) & (ud2 >= nrm2)
            else:
                cap = (ud >= 0) | (ud2 <= nrm2)
            sub_ex |= shell & cap
    inside = q <= 1.0
    if not inside.any():
        return
    sub_ex |= inside
    solid = inside
    for j in range(2):
        n = P.crack_n[i, j]
        if not n.any():
            continue
        s = _sum3(n[0] * dz, n[1] * dy, n[2] * dx)
        s -= f32(P.crack_o[i, j])
        crack = (np.abs(s) < f32(CRACK_WIDTH_NM / 2)) & (q < f32(0.64))
        solid = solid & ~crack
    np.copyto(sub_am, f32(P.gain[i]), where=solid)


def _sum3(a, b, c):
    """``a[z] + b[(z,) y] + c[(z,) x]`` broadcast to 3-D in float32 (fixed order)."""
    f32 = np.float32
    s = np.add(a.astype(f32)[:, :, None], b.astype(f32)[:, :, None])
    return np.add(s, c.astype(f32)[:, None, :])


# -- imaging ------------------------------------------------------------------------------
def _gauss2d(img, sigma):
    if sigma <= 0:
        return img
    return ndimage.gaussian_filter(img, sigma, truncate=TRUNCATE, mode="nearest")


def _render_block(prm: _Params, P: _Particles, gain, offset, zr, yr, xr):
    """One output block: ``(2, z, y, x)`` of the output dtype, [image, truth]."""
    (z0, z1), (y0, y1), (x0, x1) = zr, yr, xr
    D = prm.depth_slices
    # The slices behind a pore are seen in the imaged slice's frame: slice k + d is moved by
    # t = s(k) - s(k + d) (the drift between them), so the region holds |t| more pixels.
    sh = _shifts_at(prm, np.arange(z0, z1 + D)) if D else np.zeros((1, 2))
    m = 0
    if D and np.any(sh):
        m = int(math.ceil(max(np.abs(sh[k + 1 : k + D + 1] - sh[k]).max() for k in range(z1 - z0))))
    h = prm.halo_xy + m
    truth, render = _geometry(prm, P, z0, z1 + D, y0 - h, y1 + h, x0 - h, x1 + h)
    nz, ny, nx = z1 - z0, y1 - y0, x1 - x0
    dt = np.dtype(prm.dtype)
    maxval = float(np.iinfo(dt).max)
    out = np.empty((2, nz, ny, nx), dt)
    out[1] = truth[:nz, h:h + ny, h:h + nx]
    vz = prm.voxel_size[0]
    lam = prm.shine_depth_nm
    pore = truth == 0
    bins = prm.shine_bins if D else []
    blurred = {}  # (bin, slice) -> blurred clean render of that slice

    def layer(b, s):
        key = (b, s)
        if key not in blurred:
            blurred[key] = _gauss2d(render[s], bins[b][2])
        return blurred[key]

    drifting = bool(D and np.any(sh))
    if D and not drifting:  # one backward recursion for all slices
        depth = np.zeros(truth.shape, np.int16)
        for k in range(truth.shape[0] - 2, -1, -1):
            nxt = depth[k + 1]
            d = np.where(nxt > 0, nxt + 1, 0).astype(np.int16)
            d[d > D] = 0
            d[~pore[k + 1]] = 1
            d[~pore[k]] = 0  # only pore voxels shine through
            depth[k] = d

    def depth_map(k):
        """Depth (slices) of the first solid voxel behind each pore voxel of slice k, in
        slice k's frame (integer-rounded drift), 0 = none within D or not a pore."""
        if not drifting:
            return depth[k]
        dm = np.zeros(pore.shape[1:], np.int16)
        todo = pore[k].copy()
        for d in range(1, D + 1):
            solid = ~_translate_int(pore[k + d], sh[k] - sh[k + d], fill=True)
            hit = todo & solid
            dm[hit] = d
            todo &= ~hit
        return dm

    curt = None
    if prm.curtaining > 0:
        zs = np.arange(z0, z1, dtype=np.float64)
        xs = np.arange(x0, x1, dtype=np.float64)
        curt = 0.6 * _field_2d(_key(prm.seed, _K_CURT1), (16.0, 3.0), zs, xs)
        curt += 0.8 * _field_2d(_key(prm.seed, _K_CURT2), (16.0, 12.0), zs, xs)
        curt *= np.float32(prm.curtaining)  # 0.6^2 + 0.8^2 = 1: unit variance
    # the solid behind a pore is a free surface: it shows the full edge effect
    wall = np.float32(WALL_FACTOR * prm.edge_amplitude if prm.edge_brightening else 0.0)
    for k in range(nz):
        img = render[k].copy()
        pk = pore[k]
        if D:
            dk = depth_map(k)
            flat = np.flatnonzero(dk)  # pore voxels with solid within D slices
            if len(flat):
                dd = dk.ravel()[flat]
                imf = img.reshape(-1)
                for b, (lo, hi, _s) in enumerate(bins):
                    for d in range(lo, hi + 1):
                        sel = flat[dd == d]
                        if len(sel):
                            att = np.float32(prm.shine_amplitude * math.exp(-d * vz / lam))
                            v = _sample_shifted(layer(b, k + d), sel, sh[k] - sh[k + d])
                            imf[sel] = np.float32(I_PORE) + att * (v - np.float32(I_PORE - wall))
            for key in [key for key in blurred if key[1] <= k + 1]:
                del blurred[key]
        if prm.edge_brightening and prm.edge_amplitude > 0:
            e = _gauss2d(pk.astype(np.float32), EDGE_SIGMA_PX)
            e *= np.float32(prm.edge_amplitude)
            e[pk] = 0
            img += e
        if prm.blur:
            img = _gauss2d(img, prm.psf_sigma_px)
        img = img[h:h + ny, h:h + nx]
        if curt is not None:
            img += curt[k][None, :]
        g = np.float32(gain[z0 + k])
        o = np.float32(offset[z0 + k])
        if g != 1 or o != 0:
            img *= g
            img += o
        if prm.noise and prm.noise_level > 0:
            img = _add_noise(prm, img, z0 + k, y0, x0)
        img *= np.float32(maxval)
        np.rint(img, out=img)
        np.clip(img, 0, maxval, out=img)
        out[0, k] = img.astype(dt)
    return out


def _translate_int(a: np.ndarray, t, fill) -> np.ndarray:
    """``out[y, x] = a[y - ty, x - tx]`` with ``t`` rounded to whole pixels; ``fill`` outside."""
    ty, tx = (int(round(float(v))) for v in t)
    if ty == 0 and tx == 0:
        return a
    out = np.full_like(a, fill)
    H, W = a.shape
    ys, yd = (slice(0, H - ty), slice(ty, H)) if ty >= 0 else (slice(-ty, H), slice(0, H + ty))
    xs, xd = (slice(0, W - tx), slice(tx, W)) if tx >= 0 else (slice(-tx, W), slice(0, W + tx))
    out[yd, xd] = a[ys, xs]
    return out


def _sample_shifted(img: np.ndarray, flat: np.ndarray, t) -> np.ndarray:
    """Values at the flat indices ``flat`` of ``img`` translated by ``t = (ty, tx)`` pixels:
    ``img(y - ty, x - tx)``, bilinear (the layers are blurred by the shine PSF, so linear
    interpolation is accurate), clamped at the region's edge (the halo covers ``|t|``)."""
    ty, tx = float(t[0]), float(t[1])
    H, W = img.shape
    y, x = np.divmod(flat, W)
    if ty == 0 and tx == 0:
        return img.reshape(-1)[flat]
    py, px = -ty, -tx
    iy, ix = math.floor(py), math.floor(px)
    wy, wx = np.float32(py - iy), np.float32(px - ix)
    y0 = np.clip(y + iy, 0, H - 1)
    y1 = np.clip(y + iy + 1, 0, H - 1)
    x0 = np.clip(x + ix, 0, W - 1)
    x1 = np.clip(x + ix + 1, 0, W - 1)
    top = (1 - wx) * img[y0, x0] + wx * img[y0, x1]
    bot = (1 - wx) * img[y1, x0] + wx * img[y1, x1]
    return (1 - wy) * top + wy * bot


def _add_noise(prm: _Params, img, z, y0, x0):
    Z, Y, X = prm.shape
    ny, nx = img.shape
    with np.errstate(over="ignore"):
        idx = (np.uint64(z) * np.uint64(Y) + np.arange(y0, y0 + ny, dtype=np.uint64))[:, None]
        idx = idx * np.uint64(X) + np.arange(x0, x0 + nx, dtype=np.uint64)[None, :]
        h = _mix(idx ^ _key(prm.seed, _K_NOISE))
        h = _mix(h + _GOLD)
    m16 = np.uint64(0xFFFF)
    s = (h & m16).astype(np.float32)
    for sh in (16, 32, 48):
        s += ((h >> np.uint64(sh)) & m16).astype(np.float32)
    # Irwin-Hall: sum of 4 U(0,1) has mean 2, variance 1/3
    n = (s * np.float32(1 / 65536.0) - np.float32(2.0)) * np.float32(math.sqrt(3.0))
    nl2 = prm.noise_level**2
    var = np.maximum(img, 0) * np.float32(1.6e-3 * nl2) + np.float32(2e-4 * nl2)
    return img + np.sqrt(var) * n


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
